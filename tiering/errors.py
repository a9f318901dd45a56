"""Errors the command line turns into one line on stderr and a documented exit code.

Exit codes (design.md): 0 success, 1 the operation failed, 2 usage or configuration error,
3 refused for safety.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130   # Ctrl-C / SIGTERM: the shell's convention for death by SIGINT


class TieringError(Exception):
    """An error meant for an operator: a message that says what, where and what to do."""

    exit_code = EXIT_FAILED


class ConfigError(TieringError):
    """The configuration is unusable; `problems` holds one line per problem."""

    exit_code = EXIT_USAGE

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class UsageError(TieringError):
    exit_code = EXIT_USAGE


class RefusedError(TieringError):
    exit_code = EXIT_REFUSED
