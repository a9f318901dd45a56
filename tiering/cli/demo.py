"""`tiering demo`: an end-to-end run on an embedded S3-compatible server and a simulated broker."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("demo", help="end-to-end demo on an embedded S3 server")
    parser.add_argument("--keep", action="store_true", help="keep the demo's log dir, state and config")
    return parser


def main(args: argparse.Namespace) -> int:
    from tiering.demo import run_demo
    return run_demo(sys.stdout, keep=args.keep)
