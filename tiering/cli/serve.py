"""`tiering serve --config F`: the read-only Kafka-protocol endpoint alone (issue 20)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from prometheus_client import CollectorRegistry

from tiering.cli.main import add_config_argument
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.errors import EXIT_OK, ConfigError, TieringError
from tiering.observability.http import HealthServer
from tiering.observability.logging import configure_logging


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("serve", help="serve both tiers to Kafka consumers (read-only Kafka protocol)")
    add_config_argument(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from tiering.serve.wiring import open_endpoint, open_source
    config = load_config(args.config)
    if not config.serve.listen:
        raise ConfigError(args.config, ["serve.listen: not set; set it in [serve] (e.g. \"127.0.0.1:9093\") "
                                        "to serve the Kafka protocol"])
    log = configure_logging(sys.stdout)
    registry = CollectorRegistry()
    source = open_source(config, registry, SystemClock())
    endpoint, watch = open_endpoint(config, source, registry, log)
    http = None
    try:
        try:
            endpoint.start()
        except OSError as exc:
            raise TieringError(f"serve.listen {config.serve.listen}: cannot listen "
                               f"({exc.strerror or exc}); free the port or change serve.listen") from None
        if config.metrics.listen:
            try:
                http = HealthServer(config.metrics.listen, registry, lambda: (True, "ok"), lambda: (True, "ok"))
            except OSError as exc:
                raise TieringError(f"metrics.listen {config.metrics.listen}: cannot listen ({exc.strerror}); "
                                   "free the port or change metrics.listen (\"\" disables it)") from None
            http.start()
        if watch is not None:
            watch.start()
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        log.info("kafka-protocol endpoint stopping")
        return EXIT_OK
    finally:
        if http is not None:
            http.close()
        if watch is not None:
            watch.close()
        endpoint.stop()
        source.close()
