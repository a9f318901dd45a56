"""`tiering run --config F [--once]`: offload every eligible rolled segment."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tiering.cli.main import add_config_argument
from tiering.config import load_config
from tiering.errors import EXIT_FAILED, EXIT_OK
from tiering.observability.logging import configure_logging
from tiering.upload.offload_pass import PassReport
from tiering.wiring import open_offloader, open_store

PASS_INTERVAL_SECONDS = 30.0


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("run", help="offload rolled segments (a daemon; --once for one pass)")
    add_config_argument(parser)
    parser.add_argument("--once", action="store_true", help="one full pass, then exit")
    return parser


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    log = configure_logging(sys.stdout)
    store = open_store(config)
    offloader = open_offloader(config, store, log)
    try:
        if args.once:
            return exit_code_for(offloader.run_pass())
        return _loop(offloader, log)
    finally:
        offloader.journal.close()
        store.close()


def _loop(offloader, log) -> int:
    """Pass after pass until SIGTERM/SIGINT; a pass in progress finishes its uploads first."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("tiering started", pass_interval_seconds=PASS_INTERVAL_SECONDS)
    while not stop.is_set():
        report = offloader.run_pass()
        if report.fatal is not None:
            print(f"tiering: {report.fatal}", file=sys.stderr)
        stop.wait(PASS_INTERVAL_SECONDS)
    log.info("tiering stopped")
    return EXIT_OK


def exit_code_for(report: PassReport) -> int:
    """0 when everything eligible is remote; 1 (and one summary line) when anything was not."""
    if report.fatal is not None:
        print(f"tiering: {report.fatal}", file=sys.stderr)
        return EXIT_FAILED
    if report.ok:
        return EXIT_OK
    parts = []
    if report.failures:
        parts.append(f"{len(report.failures)} segment(s) could not be offloaded")
    if report.anomalies:
        parts.append(f"{len(report.anomalies)} log-dir entr{'y was' if len(report.anomalies) == 1 else 'ies were'} skipped")
    print(f"tiering: {' and '.join(parts)}; see the log events above or 'tiering status'", file=sys.stderr)
    return EXIT_FAILED
