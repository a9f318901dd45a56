"""Entry point: parse arguments, dispatch, and turn every error into one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from tiering import __version__
from tiering.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, TieringError
from tiering.files import NotRegularFile


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, instead of argparse's usage dump
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from tiering.cli import cat, demo, resume, rollback, run, serve, status, verify

    parser = _Parser(prog="tiering", description="Tiered storage sidecar for Apache Kafka brokers.")
    parser.add_argument("--version", action="version", version=f"tiering {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in (run, serve, status, verify, cat, rollback, resume, demo):
        sub = module.add_parser(commands)
        sub.set_defaults(handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"tiering: {exc.source}: {problem}", file=sys.stderr)
        code = exc.exit_code
    except TieringError as exc:
        print(f"tiering: {exc}", file=sys.stderr)
        code = exc.exit_code
    except NotRegularFile as exc:
        # a link or FIFO where a broker file should be (cat of a swapped segment, say): named, never read
        print(f"tiering: {exc}; move it aside or wait for the broker to replace it", file=sys.stderr)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        print("tiering: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        print(f"tiering: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback, "
              "and report it)", file=sys.stderr)
        code = EXIT_FAILED
    sys.stdout.flush()
    raise SystemExit(code)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="path of tiering.toml")
