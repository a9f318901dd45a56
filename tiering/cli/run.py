"""`tiering run --config F [--once]`: offload every eligible rolled segment (a daemon, or one pass)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from tiering.cli.main import add_config_argument
from tiering.config import load_config
from tiering.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, ConfigError, TieringError
from tiering.journal import JournalError
from tiering.observability.logging import configure_logging
from tiering.upload.offload_pass import PassReport
from tiering.wiring import open_daemon, open_offloader, open_store


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("run", help="offload rolled segments (a daemon; --once for one pass)")
    add_config_argument(parser)
    parser.add_argument("--once", action="store_true", help="one full pass, then exit")
    return parser


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    refuse_whole_bucket(args.config, config)
    log = configure_logging(sys.stdout)
    if args.once:
        store = open_store(config)
        offloader = open_offloader(config, store, log)
        try:
            return exit_code_for(offloader.run_pass())
        finally:
            offloader.journal.close()
            store.close()
    return _daemon(args.config, config, log)


def refuse_whole_bucket(config_path: str, config: Any) -> None:
    """`run` deletes from the store (total retention, the daemon's sweep of orphans and stale
    multipart uploads); with an empty prefix our layout root is the bucket's root, and every
    other writer that happens to use our key layout there is in reach.

    Refused at start (exit 2, nothing done yet) rather than run with remote deletion turned
    off: a daemon that uploads but silently keeps data past the total retention the operator
    set breaks that contract (cost, compliance) with nothing louder than a warning, while a
    refused start is seen at once and fixed by one line. The read-only commands (status,
    verify, cat) and rollback, which deletes only keys it computed for one partition, still
    work with an empty prefix.
    """
    if config.store.prefix == "" and not config.store.allow_whole_bucket:
        raise ConfigError(config_path, [
            f"store.prefix is empty, so total retention and the sweep would delete anywhere in bucket "
            f"{config.store.bucket!r}; set store.prefix (e.g. \"cluster-a/\"), or set "
            "store.allow_whole_bucket = true if nothing else writes to that bucket"])


def _daemon(config_path: str, config: Any, log: Any) -> int:
    daemon = open_daemon(config_path, config, log)
    try:
        daemon.start_endpoints()
    except OSError as exc:
        daemon.journal.close()
        raise TieringError(f"metrics.listen {config.metrics.listen}: cannot listen ({exc.strerror}); "
                           "free the port or change metrics.listen (\"\" disables it)") from None
    except (TieringError, ConfigError):     # the Kafka-protocol endpoint's listen or TLS files
        if daemon.http is not None:
            daemon.http.close()
        daemon.journal.close()
        raise
    interrupts = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            log.warning("second interrupt: exiting at once; the next start settles uploads left open")
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)
        daemon.request_stop()

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop())
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())
    try:
        finished = daemon.run()
    except JournalError as exc:
        # The journal cannot be written (state.dir full, its disk failing): stop as a crash
        # would, which every step is made to survive. Uploads in flight are abandoned with
        # their rows saying `uploading`; the next start settles them. A graceful stop would
        # have to write the journal too.
        log.error("journal write failed; stopping", error=str(exc))
        daemon.store.cancel_transfers()
        print(f"tiering: {exc}", file=sys.stderr)
        sys.stdout.flush()
        os._exit(EXIT_FAILED)
    daemon.journal.close()
    if not finished:
        # A worker is stuck in a request the cancel cannot reach; its journal row says
        # `uploading`, and the next start settles it. Exit now rather than hang past systemd's stop timeout.
        sys.stdout.flush()
        os._exit(EXIT_OK)
    daemon.store.close()
    return EXIT_OK


def exit_code_for(report: PassReport) -> int:
    """0 when everything eligible is remote and retention did its work; 1 (and one summary line)
    when anything failed; otherwise 3 (one line per log dir) when a broker's lock stopped local
    deletion."""
    if report.fatal is not None:
        print(f"tiering: {report.fatal}", file=sys.stderr)
        return EXIT_FAILED
    for log_dir, detail in report.retention.blocked:
        print(f"tiering: {log_dir}: local retention refused, {detail}; stop the broker, or set "
              f"local_delete = \"kafka-admin\" to let it delete while it runs", file=sys.stderr)
    if report.ok:
        return EXIT_REFUSED if report.retention.blocked else EXIT_OK
    parts = []
    if report.failures:
        parts.append(f"{len(report.failures)} segment(s) could not be offloaded")
    if report.anomalies:
        parts.append(f"{len(report.anomalies)} log-dir entr{'y was' if len(report.anomalies) == 1 else 'ies were'} skipped")
    if report.retention.failures:
        parts.append(f"{len(report.retention.failures)} retention step(s) failed")
    if report.config_error:
        parts.append(f"topic configs could not be read from Kafka ({report.config_error})")
    print(f"tiering: {' and '.join(parts)}; see the log events above or 'tiering status'", file=sys.stderr)
    return EXIT_FAILED
