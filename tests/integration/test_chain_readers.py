"""Everything that reads the store reads the partition's chain: three brokers' uploads of one
partition, with their own segment boundaries, one base offset uploaded twice and overlaps
resolved by leader epoch (tests/integration/chain_store.py has the layout)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import BUCKET, PREFIX, run_cli
from tests.integration.chain_store import LOCAL_FIRST, LOG_END, PIECES, TOPIC, TOPIC_ID, chain  # noqa: F401 (a fixture)
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.journal import Journal, SegmentState
from tiering.kafka.batches import scan_segment
from tiering.kafka.checkpoints import TopicPartition, parse_offset_checkpoint
from tiering.kafka.logdir import scan_log_dirs
from tiering.kafka.names import segment_file_name
from tiering.reconcile import rebuild_journal
from tiering.store.keys import KeyLayout
from tiering.wiring import open_reader, open_store

pytestmark = pytest.mark.integration


def test_reader_serves_the_chain_pieces_each_offset_once_newer_epoch_winning(chain):
    path, brokers, manifests, truth = chain
    config = load_config(path)
    assert [o for o, _ in truth] == list(range(LOG_END))
    with open_reader(config, scan=scan_log_dirs([brokers[1].log_dir])) as reader:
        old_leader = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 300)]
    assert [o for o, _ in old_leader] == list(range(300, 340))
    assert all(old != new for old, new in zip(old_leader, truth[300:340]))     # they diverge
    with open_reader(config) as reader:
        view = reader.catalog.partition(TOPIC, 0)
        assert [(r.base_offset, r.last_offset, r.link_base, r.manifest_key) for r in view.remote] == \
            [(first, last, base, manifests[(n, base)][0]) for n, base, first, last in PIECES]
        assert view.first_local_offset == LOCAL_FIRST
        records = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 0)]
        # from inside the piece 380..419 that starts inside broker 3's segment [260..419]
        from_inside = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 390)]
        from_overlap = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 310)]
        raw = [(b.header.base_offset, b.header.last_offset) for b in reader.batches(TOPIC, 0, 0)]
    assert records == truth
    assert from_inside == truth[390:]
    assert from_overlap == truth[310:]
    assert raw == [(o, o + 9) for o in range(0, LOG_END, 10)]      # whole batches, each once


def test_cat_prints_every_offset_of_the_chain_once_in_order(chain):
    path, _, _, truth = chain
    done = run_cli("cat", "--config", str(path), TOPIC, "0", "--from-offset", "0")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["offset"] for line in lines] == list(range(LOG_END))
    assert [base64.b64decode(line["value"]) for line in lines] == [v for _, v in truth]


def test_journal_rebuilt_in_a_cluster_holds_this_brokers_uploads_only(chain, env):
    path, _, manifests, _ = chain
    config = load_config(path)
    store = open_store(config)
    try:
        rows = {}
        for broker in (1, 2, 3):
            journal = Journal(env.root / f"state-{broker}")
            try:
                count, problems = rebuild_journal(journal, store, config.store.layout, SystemClock(), own_broker=broker)
                assert not problems
                rows[broker] = {(r.id.base_offset, r.end_offset, r.manifest_key) for r in journal.all()}
                assert count == len(rows[broker])
                assert all(r.state is SegmentState.UPLOADED for r in journal.all())
            finally:
                journal.close()
    finally:
        store.close()
    expected = {n: {(base, manifests[(n, base)][1].end_offset, manifests[(n, base)][0])
                    for (b, base) in manifests if b == n} for n in (1, 2, 3)}
    assert rows == expected
    # broker 3's own upload at base 0 ends at 59, broker 1's at 99: each journal has its own
    assert (0, 59, manifests[(3, 0)][0]) in rows[3] and (0, 99, manifests[(1, 0)][0]) in rows[1]
    assert {base for base, _, _ in rows[3]} == {0, 260}


def test_verify_notes_the_chains_overlaps_and_compares_local_copies_with_the_same_offsets_only(chain, env, s3):
    path, brokers, _, _ = chain
    config = env.root / "broker-2.toml"     # broker 2's log dir: [0..149] [150..279] [280..379] ...
    config.write_text(path.read_text().replace(f'"{env.log_dir}"', f'"{brokers[2].log_dir}"'))
    # the claim a cluster-mode upload takes on its start offset: no orphan of an upload
    claim = KeyLayout(PREFIX).partition(TOPIC, TOPIC_ID, 0).claim_key(280)
    s3.put_object(Bucket=BUCKET, Key=claim, Body=b"{}")
    done = run_cli("verify", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    name = f"{TOPIC}-0 ({TOPIC_ID})"
    assert done.stdout.splitlines() == [
        f"{name}: offsets 0..59 uploaded twice (broker 3 0..59 no epoch and broker 1 0..99 epoch 0); "
        "served: 0..59 from broker 1",
        f"{name}: offsets 260..339 uploaded twice (broker 1 200..339 epoch 0 and broker 3 260..419 no epoch); "
        "served: 260..279 from broker 1, 280..339 from broker 2",
        f"{name}: offsets 280..339 uploaded twice (broker 1 200..339 epoch 0 and broker 2 280..379 epoch 1); "
        "served: 280..339 from broker 2",
        f"{name}: offsets 280..379 uploaded twice (broker 3 260..419 no epoch and broker 2 280..379 epoch 1); "
        "served: 280..379 from broker 2",
        # broker 2's own upload [280..379] is compared with its local copy; the others' uploads
        # at base 0 end elsewhere than its [0..149], and are not
        "verified 6 manifests, 30 objects, 1 local copies: 0 problem(s), 0 orphaned object(s) without a manifest",
    ]


def test_rollback_on_a_follower_restores_the_chain_as_a_log_kafka_loads(chain, env):
    path, brokers, manifests, truth = chain
    done = run_cli("rollback", "--config", str(path), "--topic", TOPIC, "--confirm")
    assert done.returncode == 0, done.stdout + done.stderr
    directory = brokers[3].partition_dir(TOPIC, 0)
    names = sorted(p.name for p in directory.iterdir() if p.name[:20].isdigit())
    # one segment per piece, named for its first offset: whole uploads with their files, the
    # pieces cut from an upload (200..279 of broker 1's [200..339], 380..419 of broker 3's
    # [260..419]) as their .log alone (the broker rebuilds their indexes when it loads them)
    whole = {0: 100, 100: 200, 280: 380}
    expected = {segment_file_name(b, "log") for b in (0, 100, 200, 280, 380, LOCAL_FIRST)}
    expected |= {segment_file_name(b, k) for b in whole for k in ("index", "timeindex")}
    expected |= {segment_file_name(n, "snapshot") for n in whole.values()}
    expected |= {segment_file_name(LOCAL_FIRST, k) for k in ("index", "timeindex", "snapshot")}
    assert set(names) == expected, sorted(set(names) ^ expected)
    for base, following in ((0, 100), (100, 200), (200, 280), (280, 380), (380, LOCAL_FIRST)):
        log = directory / segment_file_name(base, "log")
        with open(log, "rb") as f:
            summary = scan_segment(f, log.stat().st_size, base, following)
        assert (summary.first_offset, summary.last_offset) == (base, following - 1)
    with open_reader(load_config(path), scan=scan_log_dirs([brokers[3].log_dir])) as reader:
        view = reader.catalog.partition(TOPIC, 0)
        assert view.first_local_offset == 0 and view.remote == ()
        assert [(r.offset, r.value) for r in reader.records(TOPIC, 0, 0)] == truth
    starts = parse_offset_checkpoint((brokers[3].log_dir / "log-start-offset-checkpoint").read_text())
    assert starts[TopicPartition(TOPIC, 0)] == 0


def test_an_unusable_manifest_in_the_chain_refuses_reads_of_the_store_only(chain, s3):
    path, _, _, truth = chain
    bad = f"{KeyLayout(PREFIX).partition(TOPIC, TOPIC_ID, 0).root}{10:020d}-{'e' * 16}.manifest.json"
    s3.put_object(Bucket=BUCKET, Key=bad, Body=b"not a manifest")
    local = run_cli("cat", "--config", str(path), TOPIC, "0", "--from-offset", str(LOCAL_FIRST + 10))
    assert local.returncode == 0, local.stderr
    assert [json.loads(line)["offset"] for line in local.stdout.splitlines()] == list(range(LOCAL_FIRST + 10, LOG_END))
    remote = run_cli("cat", "--config", str(path), TOPIC, "0", "--from-offset", "0")
    assert remote.returncode == 1 and remote.stdout == ""
    assert len(remote.stderr.splitlines()) == 1 and bad in remote.stderr and "Traceback" not in remote.stderr
