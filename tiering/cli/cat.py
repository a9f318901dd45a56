"""`tiering cat`: a partition's records from an offset on, from whichever tier holds them."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import BinaryIO, TextIO

from tiering.cli.main import add_config_argument
from tiering.config import load_config
from tiering.errors import EXIT_OK
from tiering.kafka.records import Record
from tiering.read.visibility import ISOLATION_LEVELS, READ_UNCOMMITTED
from tiering.wiring import open_reader


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("cat", help="print a partition's records from an offset, from either tier")
    add_config_argument(parser)
    parser.add_argument("topic")
    parser.add_argument("partition", type=_non_negative)
    parser.add_argument("--from-offset", type=_non_negative, required=True, metavar="N")
    parser.add_argument("--count", type=_non_negative, metavar="K", help="stop after K records (default: all)")
    parser.add_argument("--format", choices=("json", "raw"), default="json",
                        help="json: one record per line; raw: the record batches' bytes as stored")
    parser.add_argument("--isolation", choices=ISOLATION_LEVELS, default=READ_UNCOMMITTED)
    return parser


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        with open_reader(config) as reader:
            if args.format == "json":
                _write_json(reader.records(args.topic, args.partition, args.from_offset, args.isolation),
                            args.count, sys.stdout)
            else:
                _write_raw(reader, args, sys.stdout.buffer)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def record_json(record: Record) -> str:
    return json.dumps({
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _b64(record.key),
        "value": _b64(record.value),
        "headers": [[name, _b64(value)] for name, value in record.headers],
    }, separators=(",", ":"))


def _write_json(records, count: int | None, out: TextIO) -> None:
    if count == 0:
        return
    for n, record in enumerate(records, 1):
        out.write(record_json(record) + "\n")
        if count is not None and n >= count:
            break
    out.flush()


def _write_raw(reader, args: argparse.Namespace, out: BinaryIO) -> None:
    """Whole batches as stored (a batch may begin below --from-offset); --count counts the
    records at or above it."""
    if args.count == 0:
        return
    written = 0
    for batch in reader.batches(args.topic, args.partition, args.from_offset, args.isolation):
        out.write(batch.data)
        written += batch.header.last_offset + 1 - max(batch.header.base_offset, args.from_offset)
        if args.count is not None and written >= args.count:
            break
    out.flush()


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")
