"""The fault suite's fixtures: its scale (`--soak` runs the long variants), its seed, and the
numbers each fault class reports (printed at the end of the run)."""

from __future__ import annotations

import os

import pytest

# Every random choice of the suite (kill moments, faults, what the broker writes) comes from
# this seed; TIERING_FAULT_SEED replays another run's.
DEFAULT_SEED = 20261122

_REPORTS: list[tuple[str, dict]] = []


@pytest.fixture
def soak(request) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("TIERING_FAULT_SEED", DEFAULT_SEED))


@pytest.fixture
def fault_report(request):
    """Call with a fault class and its numbers; they are printed in the run's summary."""
    def report(fault_class: str, **numbers) -> None:
        _REPORTS.append((f"{fault_class} [{request.node.name}]", numbers))
    return report


def pytest_terminal_summary(terminalreporter):
    if _REPORTS:
        terminalreporter.section("fault suite: what each fault class did")
        for name, numbers in _REPORTS:
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
