"""What `tiering run` imports: every module a process imports stays resident for its whole
life, and `run`'s is the base of design.md invariant 6 (base + concurrency x part size; README
"Upload memory"). The read path's codecs, the metrics library, boto3's resource layer, the
log dir watcher and s3transfer's manager are for other commands or the daemon only."""

from __future__ import annotations

import subprocess
import sys

NOT_FOR_RUN_ONCE = ("boto3", "prometheus_client", "cramjam", "lz4", "zstandard", "snappy", "watchdog",
                    "s3transfer.manager", "kafka", "tiering.read.reader", "tiering.daemon")

_PROBE = """
import sys
from tiering.cli.main import main
try:
    main(sys.argv[1:])      # the config does not exist: the command line is parsed, then refused
except SystemExit:
    pass
# what `run --once` opens past its config: the store adapter and the offload pass
import tiering.wiring, tiering.upload.offload_pass, tiering.store.s3, tiering.cli.run
print(" ".join(sorted(sys.modules)))
"""


def _imported(*argv: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_run_imports_neither_the_other_commands_nor_the_daemons_modules():
    imported = _imported("run", "--once", "--config", "no-such-tiering.toml")
    assert "tiering.cli.run" in imported and "tiering.kafka.walk" in imported
    assert {name for name in NOT_FOR_RUN_ONCE if name in imported} == set()


def test_without_a_command_every_command_is_listed_and_a_named_one_parses_alone():
    listed = subprocess.run([sys.executable, "-m", "tiering", "--help"], capture_output=True, text=True)
    assert listed.returncode == 0
    for command in ("run", "status", "verify", "cat", "rollback", "resume", "demo"):
        assert command in listed.stdout
    alone = subprocess.run([sys.executable, "-m", "tiering", "--debug", "cat", "--help"], capture_output=True, text=True)
    assert alone.returncode == 0 and alone.stdout.startswith("usage: tiering cat")
