"""The fault suite's fixtures: its scale (`--soak` runs the long variants), its seed, and the
numbers each fault class reports (printed at the end of the run)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import FAULT_REPORT_KEY

# Every random choice of the suite (kill moments, faults, what the broker writes) comes from
# this seed; TIERING_FAULT_SEED replays another run's.
DEFAULT_SEED = 20261122


@pytest.fixture
def soak(request) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("TIERING_FAULT_SEED", DEFAULT_SEED))


@pytest.fixture
def fault_report(request):
    """Call with a fault class and its numbers; they are printed in the run's summary.

    They travel on the test's report (user_properties), which pytest-xdist sends from the
    worker that ran the test to the process that prints the summary."""
    def report(fault_class: str, **numbers) -> None:
        line = f"{fault_class} [{request.node.name}]: " + ", ".join(f"{k}={v}" for k, v in numbers.items())
        request.node.user_properties.append((FAULT_REPORT_KEY, line))
    return report
