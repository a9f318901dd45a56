"""`tiering demo`: the whole offload path on an embedded S3-compatible server (moto's server
mode on loopback) and a simulated broker, narrated on stdout."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import boto3

from tiering.cli.run import exit_code_for
from tiering.cli.cat import record_json
from tiering.cli.status import print_table, collect
from tiering.config import load_config
from tiering.errors import UsageError
from tiering.observability.logging import configure_logging
from tiering.simulate import SimulatedBroker
from tiering.verify import verify_store
from tiering.kafka.logdir import scan_log_dirs
from tiering.wiring import open_offloader, open_reader, open_store

BUCKET = "kafka-tier"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3_server() -> tuple[Any, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise UsageError("the demo needs the embedded S3 server: pip install 'tiering[demo]'") from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's per-request access log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def populate(broker: SimulatedBroker) -> None:
    """Topics that exercise every rule: codecs, transactions, a held-back high watermark,
    a compacted topic, an internal topic, and directories the broker is deleting or moving."""
    broker.create_topic("orders", 2)
    broker.create_topic("clicks", 1)
    broker.create_topic("payments", 1, segment_bytes=48 * 1024)
    broker.create_topic("users", 1, compacted=True)
    broker.create_topic("__consumer_offsets", 1)
    for partition, codec in ((0, "gzip"), (1, "snappy")):
        broker.produce("orders", partition, 3000, codec=codec, value_size=200, headers=True)
    broker.produce("clicks", 0, 3000, codec="lz4", value_size=200)
    broker.hold_high_watermark("clicks", 0, broker.next_offset("clicks", 0) - 1500)
    for i in range(40):
        broker.produce_transaction("payments", 0, 40, commit=i % 4 != 0, codec="zstd", value_size=150)
    broker.produce("users", 0, 2000, value_size=200)
    broker.produce("__consumer_offsets", 0, 2000, value_size=200)
    (broker.log_dir / f"gone-0.{'a' * 32}-delete").mkdir()
    (broker.log_dir / f"orders-7.{'b' * 32}-future").mkdir()


def write_config(directory: Path, endpoint: str, log_dir: Path) -> Path:
    path = directory / "tiering.toml"
    path.write_text(f"""\
[kafka]
log_dirs = ["{log_dir}"]

[store]
bucket = "{BUCKET}"
prefix = "demo-cluster/"
endpoint_url = "{endpoint}"
region = "us-east-1"
addressing_style = "path"

[upload]
concurrency = 4
part_size_bytes = "5MiB"

[topics."orders"]                  # local disk keeps ~300 KiB per partition; the rest is remote only
local_retention_bytes = "300KiB"

[state]
dir = "{directory / 'state'}"

[metrics]
listen = ""
""")
    return path


def run_demo(out: TextIO, keep: bool = False) -> int:
    server, endpoint = start_s3_server()
    # moto accepts any credentials; they reach boto3 through the standard chain (environment)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo-secret")
    workdir = Path(tempfile.mkdtemp(prefix="tiering-demo-"))
    log = configure_logging(out)
    try:
        say = lambda text="": print(text, file=out, flush=True)  # noqa: E731
        say(f"== S3-compatible server (moto) on {endpoint}, bucket '{BUCKET}'")
        boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)

        log_dir = workdir / "kafka-logs"
        broker = SimulatedBroker(log_dir, segment_bytes=256 * 1024, seed=7)
        populate(broker)
        config_path = write_config(workdir, endpoint, log_dir)
        say(f"== simulated broker log dir: {log_dir}")
        say(f"== configuration ({config_path}):\n{config_path.read_text()}")
        config = load_config(config_path)

        store = open_store(config)
        offloader = open_offloader(config, store, log)
        say("== pass 1: tiering run --once")
        first = offloader.run_pass()
        say(f"   uploaded {len(first.uploaded)} segments ({first.uploaded_bytes} bytes) in {first.seconds:.2f}s")
        say(f"   retention: {first.retention.count('local')} segments of orders deleted locally after their "
            f"upload was checked (local_retention_bytes = 300KiB)")
        _show_status(config, say)

        say("\n== the broker keeps producing; followers catch up on clicks-0 (HW released)")
        broker.produce("orders", 0, 1500, codec="gzip", value_size=200)
        broker.hold_high_watermark("clicks", 0, None)
        broker.roll("clicks", 0)
        say("== pass 2: only the new eligible segments go")
        second = offloader.run_pass()
        say(f"   uploaded {len(second.uploaded)} segments ({second.uploaded_bytes} bytes)")
        say("== pass 3: nothing left to do")
        third = offloader.run_pass()
        say(f"   uploaded {len(third.uploaded)} segments")
        _show_status(config, say)

        say("\n== tiering verify")
        report = verify_store(store, config.store.layout, scan_log_dirs(config.kafka.log_dirs))
        say(f"   {report.manifests} manifests, {report.objects} objects, {report.local_copies} local copies "
            f"checked: {len(report.problems)} problems")
        sample = next(m for m in first.uploaded if m.topic != "orders")   # still local too
        remote = store.get_bytes(sample.object("log").key, sample.object("log").size)
        local = (broker.partition_dir(sample.topic, sample.partition) / f"{sample.base_offset:020d}.log").read_bytes()
        say(f"   {sample.object('log').key}: {len(remote)} bytes, byte-identical to the local segment: {remote == local}")
        cold_ok = _show_cold_read(config, broker, say)
        offloader.journal.close()
        store.close()
        broker.close()
        rollback_ok = _show_rollback(config_path, config, broker, say)
        ok = (exit_code_for(third) == 0 and not report.problems and remote == local
              and first.retention.count("local") > 0 and not first.retention.failures and cold_ok and rollback_ok)
        say("\n== demo " + ("finished: every eligible segment is in the store, verified and read back; orders "
                            "is rolled back to local disk" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        server.stop()
        if keep:
            print(f"== kept {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _show_cold_read(config: Any, broker: SimulatedBroker, say: Any) -> bool:
    """Read orders-0 from offset 0 (its first segments are in the store only) and payments-0
    at both isolation levels, through the tiered reader."""
    say("\n== tiering cat orders 0 --from-offset 0 (the oldest segments are remote only now)")
    with open_reader(config) as reader:
        records = list(reader.records("orders", 0, 0))
        stats = reader.pool.stats()
        view = reader.catalog.partition("orders", 0)
        say(f"   {record_json(records[0])}")
        produced = broker.next_offset("orders", 0)
        contiguous = [r.offset for r in records] == list(range(produced))
        say(f"   {len(records)} records, offsets 0..{records[-1].offset} with none missing: {contiguous}; "
            f"{len(view.remote)} segments read from the store, local from offset {view.first_local_offset}; "
            f"{stats.loads} chunk reads, pool hit ratio {stats.hit_ratio:.2f}")
        uncommitted = sum(1 for _ in reader.records("payments", 0, 0, "read_uncommitted"))
        committed = sum(1 for _ in reader.records("payments", 0, 0, "read_committed"))
    say(f"   payments-0: {uncommitted} records read_uncommitted, {committed} read_committed "
        "(every 4th transaction aborted; transaction markers never shown)")
    return contiguous and bool(view.remote) and committed == uncommitted * 3 // 4


def _show_rollback(config_path: Path, config: Any, broker: SimulatedBroker, say: Any) -> bool:
    """Roll orders back to local disk with the real command line: the dry run's plan, then the
    restore, then every offset read from local segments only."""
    command = [sys.executable, "-m", "tiering", "rollback", "--config", str(config_path), "--topic", "orders"]
    say("\n== the broker restarts (and stops again): its log starts move up to the first local segments")
    broker.restart()
    say("== tiering rollback --topic orders (dry run)")
    dry = subprocess.run(command, capture_output=True, text=True)
    for line in dry.stdout.splitlines():
        say(f"   {line}")
    say("== tiering rollback --topic orders --confirm")
    done = subprocess.run([*command, "--confirm"], capture_output=True, text=True)
    summary = next((json.loads(line) for line in done.stdout.splitlines()
                    if line.startswith("{") and json.loads(line).get("event") == "rollback finished"), None)
    if done.returncode != 0 or summary is None:
        say(f"   rollback failed (exit {done.returncode}): {done.stderr.strip()}")
        return False
    say(f"   restored {summary['segments_restored']} segments ({summary['bytes_restored']} bytes) in "
        f"{summary['seconds']} s; log start lowered {summary['log_start_lowered']}; tiering is off for orders")
    with open_reader(config) as reader:
        view = reader.catalog.partition("orders", 0)
        offsets = [r.offset for r in reader.records("orders", 0, 0)]
    local_only = not view.remote and view.first_local_offset == 0
    say(f"   orders-0 now starts at offset {view.first_local_offset} on local disk; {len(offsets)} records read "
        f"without the store: {local_only and offsets == list(range(broker.next_offset('orders', 0)))}")
    return dry.returncode == 0 and local_only and offsets == list(range(broker.next_offset("orders", 0)))


def _show_status(config: Any, say: Any) -> None:
    say("== tiering status")
    document, rows, _ = collect(config)
    print_table(rows, document)
