"""Links, FIFOs and lying bytes in the broker's directories, which the broker's user can write
and a root `tiering` reads and writes: a link planted under a name we create is never
followed (its target is neither written nor handed to the broker's user), a link or FIFO in
place of a file we read is never read (its content reaches neither the store nor a message)
and never hangs us, a restored `.log` that is not Kafka batches is refused before it gets its
real name, and a hostile key cannot reach the operator's terminal raw.

The planting is done by a real unprivileged user the test creates (the tests run as root, as
the project's machines and CI do), with the broker's files handed to that user first."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

import crc32c
import pytest

from tests.conftest import BUCKET, bucket_snapshot, run_cli
from tests.integration.test_offload import remote_manifests
from tests.integration.test_rollback import OFFLOAD_ALL, build, offload, orders_files, orders_remote
from tiering.config import load_config
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.upload.segment import BadSegment, offload_segment, target_for
from tiering.wiring import open_store

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BROKER_USER = "tiering-broker"
SECRET = (b"root:$6$planted-secret-line$only-root-may-read-this:20000:0:99999:7:::\n"
          b"daemon:*:20000:0:99999:7:::\n")
KINDS = ("log", "index", "timeindex", "txnindex", "snapshot")


def broker_user() -> pwd.struct_passwd:
    """A real unprivileged user standing for the broker's (created once, if missing)."""
    if os.geteuid() != 0:
        pytest.skip("planting links as another user needs root (to create that user and run as it)")
    try:
        return pwd.getpwnam(BROKER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", BROKER_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(BROKER_USER)


def hand_to(user: pwd.struct_passwd, log_dir: Path) -> None:
    """The log dir and everything in it belong to the broker's user, as on a real broker."""
    for path in [log_dir, *log_dir.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def as_user(user: pwd.struct_passwd, directory: Path, *command: str) -> None:
    """Run a command as the broker's user inside `directory` (entered before the switch, so
    the test's root-only parent directories need not be opened up)."""
    subprocess.run(list(command), cwd=directory, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                   check=True, capture_output=True, timeout=30)


def root_secret(directory: Path, name: str) -> Path:
    """A 0600 root file: what the broker's user must never get to write, own or read."""
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def untouched(path: Path) -> bool:
    info = os.stat(path)
    return path.read_bytes() == SECRET and (info.st_uid, info.st_gid) == (0, 0) and stat.S_IMODE(info.st_mode) == 0o600


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_links_planted_under_rollbacks_temporary_names_are_never_followed_by_a_root_rollback(env, s3, tmp_path,
                                                                                           fault_report):
    user = broker_user()
    broker, before = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    hand_to(user, env.log_dir)
    secrets = tmp_path / "root-only"
    targets: list[Path] = []

    def plant(directory: Path, name: str) -> None:
        target = root_secret(secrets, f"target-{len(targets)}")
        targets.append(target)
        as_user(user, directory, "ln", "-s", str(target), name)

    # Every temporary name the restore of both partitions and its checkpoint updates use.
    for p in (0, 1):
        part = env.log_dir / f"orders-{p}"
        for base, manifest in orders_remote(s3, p).items():
            for kind in {o["kind"] for o in manifest["objects"]} & set(KINDS):
                offset = manifest["end_offset"] + 1 if kind == "snapshot" else base
                plant(part, f"{offset:020d}.{kind}.restore.tmp")
        plant(part, "leader-epoch-checkpoint.tmp")
    plant(env.log_dir, "log-start-offset-checkpoint.tmp")

    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert result.returncode == 0, result.stderr
    assert all(untouched(t) for t in targets), [t.name for t in targets if not untouched(t)]
    assert orders_files(env.log_dir) == before          # the restore itself went as usual
    links = [p for p in env.log_dir.rglob("*") if p.is_symlink()]
    assert not links, links                              # the planted links were removed, never followed
    owners = {p.stat().st_uid for p in env.log_dir.rglob("*")}
    assert owners == {user.pw_uid}                      # and everything restored is the broker's user's
    fault_report("links under rollback's temporary names", planted=len(targets), targets_written=0, chowned=0)
    broker.close()


def test_a_directory_under_a_temporary_name_is_refused_in_one_line(env, s3):
    user = broker_user()
    broker, _ = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    hand_to(user, env.log_dir)
    base = max(orders_remote(s3, 0))
    as_user(user, env.log_dir / "orders-0", "mkdir", f"{base:020d}.index.restore.tmp")
    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("tiering: orders-0: ") and f"{base:020d}.index.restore.tmp is a directory" in line
    assert not (env.log_dir / "orders-0" / f"{base:020d}.log").exists()
    broker.close()


def _segment_with_snapshot(env):
    broker = SimulatedBroker(env.log_dir, segment_bytes=8_000, seed=5)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 200, value_size=100)
    broker.checkpoint()
    scan = scan_log_dirs([env.log_dir])
    partition = next(p for p in scan.partitions if p.topic == "orders")
    segment = next(s for s in partition.segments if s.snapshot_path is not None)
    return broker, partition, segment


def _offload(env, partition, segment):
    config = load_config(env.write_config())
    store = open_store(config)
    try:
        return offload_segment(target_for(segment, partition, config.store.prefix, config.store.hash_prefix, 1,
                                          "feedfacefeedface"), store, lambda: 0)
    finally:
        store.close()


def _bucket_bytes(s3) -> list[bytes]:
    return [s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in bucket_snapshot(s3)]


def test_a_snapshot_swapped_for_a_link_after_the_scan_is_never_uploaded(env, s3, tmp_path, fault_report):
    user = broker_user()
    broker, partition, segment = _segment_with_snapshot(env)
    hand_to(user, env.log_dir)
    secret = root_secret(tmp_path / "root-only", "shadow")
    # Between the scan and the upload, the broker's user swaps the snapshot for a link.
    assert segment.snapshot_path is not None
    as_user(user, segment.snapshot_path.parent, "ln", "-sf", str(secret), segment.snapshot_path.name)
    with pytest.raises(BadSegment) as refused:
        _offload(env, partition, segment)
    assert str(segment.snapshot_path) in str(refused.value) and "symbolic link" in str(refused.value)
    assert not any(SECRET.strip() in body for body in _bucket_bytes(s3))
    assert not remote_manifests(s3)
    fault_report("snapshot swapped for a link", uploaded=0, secret_in_store=0)
    broker.close()


def test_a_log_swapped_for_a_link_after_the_scan_is_never_uploaded(env, s3, tmp_path):
    user = broker_user()
    broker, partition, segment = _segment_with_snapshot(env)
    hand_to(user, env.log_dir)
    secret = root_secret(tmp_path / "root-only", "shadow")
    as_user(user, segment.log_path.parent, "ln", "-sf", str(secret), segment.log_path.name)
    with pytest.raises(BadSegment) as refused:
        _offload(env, partition, segment)
    assert "symbolic link" in str(refused.value)
    assert not any(SECRET.strip() in body for body in _bucket_bytes(s3))
    broker.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("swapped", ["log", "snapshot", "index"])
def test_a_fifo_swapped_in_for_a_segment_file_after_the_scan_is_refused_not_waited_on(env, s3, swapped):
    broker, partition, segment = _segment_with_snapshot(env)
    path = {"log": segment.log_path, "snapshot": segment.snapshot_path,
            "index": dict(segment.index_paths).get("index")}[swapped]
    assert path is not None
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(BadSegment) as refused:
        _offload(env, partition, segment)
    assert str(path) in str(refused.value) and "FIFO" in str(refused.value)
    assert not remote_manifests(s3)
    broker.close()


def test_checkpoints_that_are_links_are_not_read_and_never_quoted(env, s3, tmp_path, fault_report):
    user = broker_user()
    broker = SimulatedBroker(env.log_dir, segment_bytes=8_000, seed=5)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 200, value_size=100)
    broker.checkpoint()
    hand_to(user, env.log_dir)
    secret = root_secret(tmp_path / "root-only", "shadow")
    for directory, name in [(env.log_dir, "replication-offset-checkpoint"), (env.log_dir, "log-start-offset-checkpoint"),
                            (env.log_dir, "meta.properties"), (env.log_dir / "orders-0", "partition.metadata")]:
        as_user(user, directory, "ln", "-sf", str(secret), name)
    config = env.write_config()
    outputs = []
    for args in (["status"], ["status", "--json"], ["run", "--once"], ["verify"]):
        result = run_cli(*args, "--config", str(config))
        outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
    text = "\n".join(outputs)
    assert b"planted-secret-line" not in text.encode() and "root:$6$" not in text
    document = json.loads(outputs[1])
    reasons = {Path(a["path"]).name: a["reason"] for a in document["anomalies"]}
    for name in ("replication-offset-checkpoint", "log-start-offset-checkpoint", "meta.properties"):
        assert "symbolic link" in reasons.get(name, ""), reasons
    assert untouched(secret)
    fault_report("checkpoint links", read=0, quoted=0)
    broker.close()


@pytest.mark.timeout(120)
def test_fifos_in_place_of_checkpoints_do_not_hang_a_scan_an_upload_or_status(env, s3, fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=8_000, seed=5)
    broker.create_topic("orders", 2)
    for p in (0, 1):
        broker.produce("orders", p, 200, value_size=100)
    broker.checkpoint()
    fifos = [env.log_dir / "cleaner-offset-checkpoint", env.log_dir / "log-start-offset-checkpoint",
             env.log_dir / "meta.properties", env.log_dir / "orders-0" / "leader-epoch-checkpoint",
             env.log_dir / "orders-1" / "partition.metadata"]
    for path in fifos:
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    config = env.write_config()
    run = run_cli("run", "--config", str(config), "--once", timeout=60)
    assert "Traceback" not in run.stderr
    assert ("orders", 0, 0) in remote_manifests(s3)    # the partition with a FIFO for its epochs still goes up
    status = run_cli("status", "--config", str(config), "--json", timeout=60)
    reasons = {a["path"]: a["reason"] for a in json.loads(status.stdout)["anomalies"]}
    for path in fifos[:3]:
        assert "FIFO" in reasons.get(str(path), ""), reasons
    rows = {r["partition"]: r for r in json.loads(status.stdout)["partitions"] if r["topic"] == "orders"}
    assert "FIFO" in json.dumps(rows[1])                # orders-1's partition.metadata is reported
    fault_report("FIFOs in place of checkpoints", fifos=len(fifos), hung=0)
    broker.close()


@pytest.mark.timeout(120)
def test_a_fifo_at_a_restored_segments_name_is_refused_in_one_line_not_waited_on(env, s3):
    broker, _ = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    base = max(orders_remote(s3, 0))
    fifo = env.log_dir / "orders-0" / f"{base:020d}.log"
    os.mkfifo(fifo)
    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", timeout=60)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("tiering: orders-0: ") and str(fifo) in line and "FIFO" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)        # left where it is
    assert not [p for p in (env.log_dir / "orders-0").iterdir() if p.name.endswith(".restore.tmp")]
    broker.close()


def test_a_restored_log_that_matches_its_crc_but_is_not_batches_is_refused_before_rename(env, s3, fault_report):
    broker, before = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    manifests = orders_remote(s3, 0)
    base = max(manifests)
    doc = manifests[base]
    entry = next(o for o in doc["objects"] if o["kind"] == "log")
    garbage = bytes(range(256)) * (entry["size"] // 256 + 1)
    garbage = garbage[:entry["size"]]
    # The store's copy is garbage, and its manifest vouches for it: size, CRC-32C and ETag agree.
    etag = s3.put_object(Bucket=BUCKET, Key=entry["key"], Body=garbage)["ETag"].strip('"')
    entry.update(crc32c=f"{crc32c.crc32c(garbage):08x}", etag=etag)
    manifest_key = entry["key"].rsplit(".", 1)[0] + ".manifest.json"
    s3.put_object(Bucket=BUCKET, Key=manifest_key, Body=json.dumps(doc).encode())
    part = env.log_dir / "orders-0"
    names_before = {p.name for p in part.iterdir()}

    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert result.returncode == 1
    line = next(line for line in result.stderr.strip().splitlines() if "orders-0" in line)
    assert "Traceback" not in result.stderr
    assert "not valid Kafka batches" in line and entry["key"] in line
    names_after = {p.name for p in part.iterdir()}
    assert names_after - names_before <= {"leader-epoch-checkpoint"}, names_after - names_before
    assert not (part / f"{base:020d}.log").exists() and not (part / f"{base:020d}.index").exists()
    assert {k: v for k, v in orders_files(env.log_dir).items() if k.startswith("orders-1/")} == \
        {k: v for k, v in before.items() if k.startswith("orders-1/")}     # the other partition is restored
    fault_report("restored .log that is not batches", refused=1, renamed=0)
    broker.close()


def test_verify_never_prints_a_hostile_key_raw(env, s3, fault_report):
    broker, _ = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    doc = orders_remote(s3, 0)[max(orders_remote(s3, 0))]
    directory = next(o for o in doc["objects"] if o["kind"] == "log")["key"].rsplit("/", 1)[0]
    # A manifest-like key beside the real ones whose name would retitle, clear and recolour
    # the operator's terminal if printed raw. It is not in our layout, so it is not ours:
    # verify neither counts it nor prints it; and any key verify does print goes through
    # `escaped` (tests/unit/test_files.py), so a raw escape cannot reach the terminal either way.
    hostile = f"{directory}/\x1b]0;owned\x07\x1b[2J\x1b[31m.manifest.json"
    s3.put_object(Bucket=BUCKET, Key=hostile, Body=b"{}")
    assert hostile in bucket_snapshot(s3)
    result = run_cli("verify", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout + result.stderr
    assert "0 orphaned object(s)" in result.stdout
    fault_report("terminal escapes in a key", printed_raw=0)
    broker.close()
