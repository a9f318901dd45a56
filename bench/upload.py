"""Upload throughput: drain a backlog of rolled segments to an S3 server, beside aws-cli and rclone.

Method: a simulated broker writes a backlog (default 768 MiB of eligible segments, 24 of
32 MiB over 8 partitions, ~1 KB records in batches of `--batch-bytes`, default 16 KiB)
into a temporary log dir; an S3 server (moto's server mode, or with `--server versitygw` the
Go gateway scripts/fetch-s3-server builds) runs on loopback in a process of its own. Then,
in the same run and against the same server, in alternating order:

1. `tiering run --once` uploads every eligible segment with its index files and manifest;
2. `aws s3 cp --recursive` uploads the same .log and index files (hard links in a staging
   dir) to another prefix, with the same concurrency and part size;
3. `rclone copy` (where installed) the same, `--transfers 8`, the same part size.

Each uploader runs as a child process; its CPU time (user + system) and peak RSS come from
wait4()'s rusage, so the S3 server's own work is not counted in them; it is reported beside
("server CPU s/GB", from /proc/PID/stat over the run), since the server shares the 2 cores
and what one uploader's requests cost it slows that uploader. The page cache is warm for
every uploader (the files were just written). MB/s is payload bytes / wall time (1 MB =
10^6 bytes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from bench.daemon_env import (BUCKET, ENV, Gateway, Server, cpu_seconds, self_signed_certificate, state_dir,
                               write_config)
from bench.machine import describe, save_result
from tiering.kafka.batches import scan_segment
from tiering.kafka.eligibility import TopicFilter, plan_partition
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker

SEGMENT_BYTES = 32 * 1024 * 1024
PARTITIONS = 8
VALUE_BYTES = 1000
DEFAULT_BATCH_BYTES = 16 * 1024
CONCURRENCY = 8
PART_BYTES = 16 * 1024 * 1024
# alternating, so neither uploader always runs first (or on a colder server)
ORDER = ("tiering", "aws-cli", "rclone", "rclone", "aws-cli", "tiering")


def add_arguments(parser) -> None:
    parser.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES,
                        help="record batch size of the backlog (default 16 KiB, Kafka's batch.size)")
    parser.add_argument("--uploaders", default=",".join(dict.fromkeys(ORDER)),
                        help="which of tiering, aws-cli, rclone to run (comma-separated; default all)")
    parser.add_argument("--server", choices=("moto", "versitygw"), default="moto",
                        help="the S3 server uploaded to (default moto; versitygw is built by scripts/fetch-s3-server)")
    parser.add_argument("--https", action="store_true",
                        help="serve HTTPS (a self-signed certificate): botocore then does not "
                             "sign the payload's SHA-256, as against a production store")


def build_backlog(log_dir: Path, mib: int, batch_bytes: int = DEFAULT_BATCH_BYTES) -> list[Path]:
    """Write at least `mib` MiB of rolled segments in batches of about `batch_bytes` (records of
    about 1 KB); returns the files an offloader must copy."""
    batch_records = max(1, batch_bytes // (VALUE_BYTES + 24))
    broker = SimulatedBroker(log_dir, segment_bytes=SEGMENT_BYTES, seed=1,
                             clock_ms=lambda: 1_700_000_000_000)
    broker.create_topic("backlog", PARTITIONS)
    per_partition = -(-mib * 1024 * 1024 // PARTITIONS)
    for p in range(PARTITIONS):
        while broker.next_offset("backlog", p) * (VALUE_BYTES + 24) < per_partition:
            broker.produce("backlog", p, 16 * batch_records, value_size=VALUE_BYTES, batch_records=batch_records)
        broker.roll("backlog", p)
    broker.close()
    scan = scan_log_dirs([log_dir])
    files = []
    for partition in scan.partitions:
        for segment, verdict in plan_partition(partition, scan.log_dirs[0], TopicFilter()):
            if verdict.eligible:
                files.append(segment.log_path)
                files += [path for _, path in segment.index_paths]
                if segment.snapshot_path:
                    files.append(segment.snapshot_path)
    return files


def integrity_walk_cpu(files: list[Path]) -> float:
    """CPU seconds of the pre-upload integrity walk alone (every batch's CRC-32C and the file's)."""
    started = time.process_time()
    for path in files:
        if path.suffix == ".log":  # scan_segment: the one-pass walker fed 1 MiB pieces
            base = int(path.stem)
            with open(path, "rb", buffering=0) as stream:
                scan_segment(stream, path.stat().st_size, base, None)
    return time.process_time() - started


def measure(argv: list[str], env: dict, server_pid: int) -> dict:
    """One uploader's run: its wall time, CPU and peak RSS, and the CPU the server spent meanwhile."""
    server_before = cpu_seconds(server_pid)
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    server_cpu = cpu_seconds(server_pid) - server_before
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: {argv[0]} failed with exit {code}: {stderr.strip()[-500:]}")
    return {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": usage.ru_maxrss * 1024, "server_cpu_seconds": server_cpu}


def remote_bytes(client, prefix: str) -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        total += sum(item["Size"] for item in page.get("Contents", []))
    return total


def main(args) -> int:
    mib = args.mib or 800  # comes out at >= 768 MiB of eligible segments (24 of 32 MiB)
    work = Path(tempfile.mkdtemp(prefix="tiering-bench-"))
    tls = self_signed_certificate(work) if args.https else None
    try:
        server = Gateway(work / "versitygw", tls) if args.server == "versitygw" else Server(tls)
    except FileNotFoundError as error:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"bench: {error}") from None
    endpoint, client = server.endpoint, server.client
    env = {**ENV, "AWS_CA_BUNDLE": str(tls[0])} if tls else ENV
    try:
        log_dir = work / "logs"
        files = build_backlog(log_dir, mib, args.batch_bytes)
        payload = sum(f.stat().st_size for f in files)
        config = write_config(work, log_dir, endpoint, prefix="tiering/", port=None, concurrency=CONCURRENCY,
                              # only the upload is measured: the backlog's 2023 timestamps are past
                              # the default total retention, which would delete what was uploaded
                              extra=f"part_size_bytes = {PART_BYTES}\n[retention]\nretention_ms = -1\n"
                                    'local_delete = "off"')
        staging = work / "staging"
        for f in files:
            target = staging / f.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)
        aws_config = work / "aws-config"
        aws_config.write_text(f"[default]\ns3 =\n  max_concurrent_requests = {CONCURRENCY}\n"
                              f"  multipart_threshold = {PART_BYTES}\n  multipart_chunksize = {PART_BYTES}\n")
        aws = shutil.which("aws", path=os.path.dirname(sys.executable)) or shutil.which("aws")
        if aws is None:
            raise SystemExit("bench: aws-cli is not installed: pip install -e '.[bench]'")
        rclone = shutil.which("rclone", path=os.path.dirname(sys.executable)) or shutil.which("rclone")
        commands = {
            "tiering": ([sys.executable, "-m", "tiering", "run", "--once", "--config", str(config)], env, "tiering/"),
            "aws-cli": ([aws, "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", endpoint,
                         str(staging), f"s3://{BUCKET}/awscli/"], {**env, "AWS_CONFIG_FILE": str(aws_config)}, "awscli/"),
        }
        if rclone is not None:
            # rclone copy: the same concurrency (files at once), part size and multipart cutoff
            commands["rclone"] = ([rclone, "copy", "--config", "", "--transfers", str(CONCURRENCY),
                                   *(["--ca-cert", str(tls[0])] if tls else []),
                                   "--s3-upload-concurrency", "1", "--s3-chunk-size", f"{PART_BYTES >> 20}Mi",
                                   "--s3-upload-cutoff", f"{PART_BYTES >> 20}Mi", str(staging),
                                   f":s3,provider=Other,endpoint='{endpoint}',access_key_id={env['AWS_ACCESS_KEY_ID']},"
                                   f"secret_access_key={env['AWS_SECRET_ACCESS_KEY']}:{BUCKET}/rclone/"], env, "rclone/")
        os.sync()  # the backlog's dirty pages are on disk before anything is timed
        # Warm the server (imports, first allocations) so the first measured run is not charged for it.
        client.upload_file(str(files[0]), BUCKET, "warm-up")
        walk = integrity_walk_cpu(files)
        wanted = set(args.uploaders.split(","))
        if wanted - set(ORDER):
            raise SystemExit(f"bench: unknown uploaders {sorted(wanted - set(ORDER))}; choose from {sorted(set(ORDER))}")
        commands = {name: command for name, command in commands.items() if name in wanted}
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        # Start-up: each uploader once more over nothing to upload (an empty log dir, an empty
        # directory), twice; what a daemon pays once, `run --once` on every backlog.
        empty = work / "empty"
        empty.mkdir()
        empty_config = write_config(work, empty, endpoint, prefix="startup/", port=None, concurrency=CONCURRENCY)
        nothing = {str(config): str(empty_config), str(staging): str(empty)}
        startup = {name: min(measure([nothing.get(a, a) for a in argv], run_env, server.process.pid)["cpu_seconds"]
                             for _ in range(2))
                   for name, (argv, run_env, _) in commands.items()}
        for name in (n for n in ORDER if n in commands):
            argv, run_env, prefix = commands[name]
            server.reset()
            shutil.rmtree(state_dir(work, "tiering/"), ignore_errors=True)
            run = measure(argv, run_env, server.process.pid)
            run["stored_bytes"] = remote_bytes(client, prefix)
            if run["stored_bytes"] < payload:
                raise SystemExit(f"bench: {name} left {run['stored_bytes']} bytes in the store, "
                                 f"expected at least {payload}")
            runs[name].append(run)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    result = {"benchmark": "upload", "machine": describe(), "backlog_bytes": payload, "files": len(files),
              "batch_bytes": args.batch_bytes, "concurrency": CONCURRENCY, "part_size_bytes": PART_BYTES,
              "server": f"{server.label} (loopback, {'HTTPS' if tls else 'HTTP'})",
              "integrity_walk_cpu_seconds_per_gb": walk / (payload / 1e9), "runs": {}}
    for name, measured in runs.items():
        result["runs"][name] = {
            "mb_per_second": payload / min(r["wall_seconds"] for r in measured) / 1e6,
            "cpu_seconds_per_gb": min(r["cpu_seconds"] for r in measured) / (payload / 1e9),
            "peak_rss_mib": max(r["peak_rss_bytes"] for r in measured) / 2**20,
            "startup_cpu_seconds": startup[name],
            "cpu_seconds_per_gb_after_startup": (min(r["cpu_seconds"] for r in measured) - startup[name])
                                                / (payload / 1e9),
            "server_cpu_seconds_per_gb": min(r["server_cpu_seconds"] for r in measured) / (payload / 1e9),
            "each": measured,
        }
    if not save_result("upload", result, args.json):
        return 0
    m = result["machine"]
    print(f"upload benchmark: {payload / 2**20:.0f} MiB in {len(files)} files, batches of ~{args.batch_bytes} B, "
          f"concurrency {CONCURRENCY}, "
          f"part {PART_BYTES // 2**20} MiB, {server.label} server on loopback over {'HTTPS' if tls else 'HTTP'}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, "
          f"Linux {m['kernel']}, Python {m['python']}")
    print(f"better of 2 runs each (wall and CPU each), order {', '.join(n for n in ORDER if n in runs)}")
    print(f"{'':10}{'MB/s':>8}{'CPU s/GB':>10}{'start-up CPU s':>16}{'CPU s/GB after it':>19}"
          f"{'peak RSS MiB':>14}{'server CPU s/GB':>17}  wall s / CPU s (each run)")
    for name, r in result["runs"].items():
        each = ", ".join(f"{x['wall_seconds']:.1f} / {x['cpu_seconds']:.2f}" for x in r["each"])
        print(f"{name:10}{r['mb_per_second']:8.1f}{r['cpu_seconds_per_gb']:10.2f}{r['startup_cpu_seconds']:16.2f}"
              f"{r['cpu_seconds_per_gb_after_startup']:19.2f}{r['peak_rss_mib']:14.1f}"
              f"{r['server_cpu_seconds_per_gb']:17.2f}  {each}")
    print(f"of which tiering's integrity walk (batch CRCs before upload): "
          f"{result['integrity_walk_cpu_seconds_per_gb']:.2f} CPU s/GB")
    return 0
