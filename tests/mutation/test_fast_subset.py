"""The fast subset of the mutation run (README, Mutation testing), in every CI run.

mutmut mutates two small modules that decide what a consumer sees and what is offloaded
(`read/visibility.py`, `kafka/eligibility.py`) and runs, per mutant, the unit tests that
reach it (the unit test files of those modules). Every mutant must be killed except the equivalents the README lists, so a test
weakened until it no longer catches a mutant fails here, not only in the full run. The whole
run (~40 s on one core) is in a copy of the tree: mutmut writes `mutants/` beside the
sources it is given."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["tiering/read/visibility.py", "tiering/kafka/eligibility.py"]
TESTS = ["tests/unit/test_visibility.py", "tests/unit/test_read_core.py", "tests/unit/test_eligibility_snapshot.py",
         "tests/unit/test_logdir.py", "tests/unit/test_boundaries_core.py"]
# README's equivalent mutants of these modules: `>hh` read as `>HH` (a marker type is 0 or 1).
EQUIVALENT = {"tiering.read.visibility.x_marker_type__mutmut_"}
STATUS = re.compile(r"^\s*(tiering\.\S+): (\w[\w ]*)$")


def _config() -> str:
    quoted = lambda items: "[" + ", ".join(f'"{i}"' for i in items) + "]"     # noqa: E731
    return f"""
[tool.mutmut]
source_paths = ["tiering"]
only_mutate = {quoted(MODULES)}
pytest_add_cli_args_test_selection = {quoted(TESTS)}
also_copy = ["tests", "bench"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-n", "0"]

[tool.pytest.ini_options]
timeout = 300
"""


@pytest.mark.timeout(900)
def test_every_mutant_of_the_fast_subset_is_killed_or_a_listed_equivalent(tmp_path):
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        pytest.fail("mutmut is not installed: pip install -e '.[test]' installs it", pytrace=False)
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "tiering", tree / "tiering", ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("tests", "bench"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
    (tree / "pyproject.toml").write_text(_config())
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = subprocess.run([str(mutmut), "run", "--max-children", "1"], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=840)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    listed = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=120)
    statuses = {}
    for line in listed.stdout.splitlines():
        found = STATUS.match(line)
        if found:
            statuses[found.group(1)] = found.group(2)
    assert len(statuses) > 50, listed.stdout[-2000:]         # both modules were mutated
    alive = sorted(name for name, status in statuses.items()
                   if status not in ("killed", "timeout")
                   and not any(name.startswith(prefix) for prefix in EQUIVALENT))
    assert alive == [], f"mutants no test kills: {alive} (see `mutmut show NAME` in a run of the README)"
