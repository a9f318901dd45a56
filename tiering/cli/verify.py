"""`tiering verify --config F`: remote objects against their manifests (and local copies)."""

from __future__ import annotations

import argparse
import sys

from tiering.cli.main import add_config_argument
from tiering.cli.printable import escaped
from tiering.config import load_config
from tiering.errors import EXIT_FAILED, EXIT_OK
from tiering.kafka.logdir import scan_log_dirs
from tiering.verify import verify_store
from tiering.wiring import open_store


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("verify", help="check remote objects against manifests and local copies")
    add_config_argument(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = open_store(config)
    try:
        report = verify_store(store, config.store.layout, scan_log_dirs(config.kafka.log_dirs))
    finally:
        store.close()
    for note in report.chain_notes:
        print(escaped(note))      # a chain's gaps and overlaps: the readers resolve them
    for problem in report.problems:
        print(escaped(f"{problem.key}: {problem.reason}"))   # keys and reasons come from the store
    print(f"verified {report.manifests} manifests, {report.objects} objects, {report.local_copies} local copies: "
          f"{len(report.problems)} problem(s), {len(report.orphans)} orphaned object(s) without a manifest")
    if report.problems:
        print(f"tiering: verify found {len(report.problems)} problem(s) in s3://{config.store.bucket}/{config.store.prefix}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
