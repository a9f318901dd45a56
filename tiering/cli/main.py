"""Entry point: parse arguments, dispatch, and turn every error into one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from tiering import __version__
from tiering.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, TieringError
from tiering.files import NotRegularFile


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, instead of argparse's usage dump
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


COMMANDS = ("run", "serve", "status", "verify", "cat", "rollback", "resume", "demo")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `only` (one of COMMANDS): then only that command's
    module is imported."""
    parser = _Parser(prog="tiering", description="Tiered storage sidecar for Apache Kafka brokers.")
    parser.add_argument("--version", action="version", version=f"tiering {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS if only is None else (only,):
        module = importlib.import_module(f"tiering.cli.{name}")
        sub = module.add_parser(commands)
        sub.set_defaults(handler=module.main)
    return parser


def _named_command(argv: Sequence[str]) -> str | None:
    """The command the arguments name (the first that is not an option: the global options
    take no value), if it is one of ours. Only its module is imported: whatever a process
    imports stays resident for its whole life, and `run`'s is design.md invariant 6's base
    (the read path's codecs, say, are `cat`'s, not `run`'s)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_named_command(arguments)).parse_args(arguments)
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
