"""`tiering demo`: an end-to-end run on an embedded S3-compatible server and a simulated broker."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("demo", help="end-to-end demo on an embedded S3 server")
    parser.add_argument("--keep", action="store_true", help="keep the demo's log dir, state and config")
    parser.add_argument("--real-kafka", action="store_true",
                        help="run on a real Apache Kafka broker (needs Java 17+ and Maven; fetched the first time)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.real_kafka:
        from tiering.realkafka.demo import run_real_kafka_demo
        return run_real_kafka_demo(sys.stdout, keep=args.keep)
    from tiering.demo import run_demo
    return run_demo(sys.stdout, keep=args.keep)
