"""`tiering status --config F [--json]`: local, remote and pending segments per partition."""

from __future__ import annotations

import argparse
import json
import sys

from tiering.cli.main import add_config_argument
from tiering.config import Config, load_config
from tiering.errors import EXIT_FAILED, EXIT_OK
from tiering.journal import Journal
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.logdir import scan_log_dirs
from tiering.status import PartitionStatus, build_status
from tiering.store.errors import StoreError
from tiering.store.manifest import ManifestError, parse_manifest
from tiering.units import format_bytes
from tiering.wiring import open_store


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("status", help="what is local, remote and pending, per partition")
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    document, rows, store_error = collect(config)
    if args.json:
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(rows, document)
    if store_error:
        print(f"tiering: remote columns unavailable: {store_error}", file=sys.stderr)
    return EXIT_FAILED if store_error else EXIT_OK


def collect(config: Config) -> tuple[dict, list[PartitionStatus], str | None]:
    scan = scan_log_dirs(config.kafka.log_dirs)
    records = []
    if (config.state.dir / "journal.sqlite").exists():
        journal = Journal(config.state.dir)
        records = journal.all()
        journal.close()
    store = open_store(config)
    listing, store_error = None, None
    try:
        listing = list(store.list_objects(config.store.prefix))
    except StoreError as exc:
        store_error = str(exc)

    def end_offset_of(key: str) -> int | None:
        try:
            return parse_manifest(store.get_bytes(key), key).end_offset
        except (StoreError, ManifestError):
            return None

    rows = build_status(scan, records, listing, TopicFilter(config.kafka.include, config.kafka.exclude), end_offset_of)
    store.close()
    document = {
        "partitions": [r.to_json() for r in rows],
        "anomalies": [{"path": a.path, "reason": a.reason} for a in scan.anomalies],
        "store": {"bucket": config.store.bucket, "prefix": config.store.prefix, "error": store_error},
    }
    return document, rows, store_error


def print_table(rows: list[PartitionStatus], document: dict) -> None:
    header = ("PARTITION", "LOCAL", "REMOTE", "PENDING", "HIGHEST REMOTE", "TIERED", "LAST ERROR")
    table = [header]
    for r in rows:
        remote = "?" if r.remote_segments is None else f"{r.remote_segments} ({format_bytes(r.remote_bytes or 0)})"
        table.append((f"{r.topic}-{r.partition}", f"{r.local_segments} ({format_bytes(r.local_bytes)})", remote,
                      str(r.pending_segments), "-" if r.highest_remote_offset is None else str(r.highest_remote_offset),
                      "yes" if r.tiering_enabled else "no", (r.last_error or "")[:100]))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    reasons = [(f"{r.topic}-{r.partition}", s) for r in rows for s in r.not_tiered]
    if reasons:
        print("\nNot tiered:")
        for name, skipped in reasons:
            print(f"  {name} @{skipped.base_offset}: {skipped.reason}")
    if document["anomalies"]:
        print("\nSkipped in the log dirs:")
        for anomaly in document["anomalies"]:
            print(f"  {anomaly['path']}: {anomaly['reason']}")
