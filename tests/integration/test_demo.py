"""The README's first command: `tiering demo` runs end to end and says it succeeded only when
every step checked out (upload, retention, verify, cold read, rollback)."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_the_demo_runs_end_to_end():
    result = run_cli("demo", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    out = result.stdout
    assert "with none missing: True" in out
    assert "rollback plan for topic orders (dry run: nothing was changed)" in out
    assert "records read without the store: True" in out
    assert out.rstrip().endswith("orders is rolled back to local disk")
