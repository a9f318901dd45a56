"""The endpoint's partition source (tiering.serve.source) on a simulated broker and a real S3
server over HTTP: one partition whose first segments are only in the store, the middle in
rolled local segments and the end in the active segment. Consecutive fetches from the log
start return every batch exactly once, byte-identical with the broker's files, across the tier
boundaries; max_bytes, out-of-range offsets, the live end, read_committed (aborted list and
last stable offset), offsets by timestamp and concurrent fetches at their exact boundaries.
kafka-python's reader is the independent judge of the records."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import pytest
from kafka.record import MemoryRecords

from tests.conftest import BUCKET, Env
from tiering.config import load_config
from tiering.kafka.batches import HEADER_SIZE, parse_header
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.logdir import scan_log_dirs
from tiering.kafka.names import segment_file_name
from tiering.kafka.records import CONTROL_COMMIT, build_batch, control_record
from tiering.serve.source import (KAFKA_STORAGE_ERROR, OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, AbortedTxn,
                                  PartitionSource, PartitionState)
from tiering.simulate import SimulatedBroker
from tiering.upload.segment import offload_segment, target_for
from tiering.wiring import open_store

pytestmark = pytest.mark.integration

TOPIC = "orders"
TXN = "payments"
BIG = 1 << 30
T0 = 1_700_000_000_000     # the first record's timestamp; each next one 10 ms later


class Clock:
    """The source's monotonic clock, moved by the test (never the wall clock)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def now_ms(self) -> int:
        return int(self.now * 1000)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Tiered:
    config_path: Path
    broker: SimulatedBroker
    original: dict[str, bytes]       # every segment's .log bytes, in offset order, per topic
    bases: dict[str, list[int]]      # segment base offsets before anything was deleted
    store_bases: dict[str, list[int]]
    log_start: dict[str, int]


def batches_of(data: bytes) -> list[tuple[int, int, bytes]]:
    """(base offset, last offset, bytes) of each whole batch in `data`."""
    out, position = [], 0
    while position < len(data):
        header = parse_header(data[position:position + HEADER_SIZE])
        out.append((header.base_offset, header.last_offset, data[position:position + header.size]))
        position += header.size
    assert position == len(data), "a batch was cut"
    return out


def kafka_python_records(data: bytes, *, controls: bool = False) -> list[tuple]:
    """(offset, timestamp, key, value, producer id, transactional, control) by kafka-python."""
    out = []
    batches = MemoryRecords(data)
    while (batch := batches.next_batch()) is not None:
        assert batch.validate_crc()
        if batch.is_control_batch and not controls:
            continue
        for r in batch:
            out.append((r.offset, r.timestamp, r.key, r.value, batch.producer_id, batch.is_transactional,
                        batch.is_control_batch))
    return out


def committed_view(data: bytes, aborted: list[AbortedTxn]) -> list[tuple]:
    """What Kafka's consumer keeps under read_committed (CompletedFetch): a transactional batch
    of a producer inside an aborted transaction (entered at its first offset, left at its abort
    marker) is dropped, control batches never shown."""
    pending = sorted((a.first_offset, a.producer_id) for a in aborted)
    aborting: set[int] = set()
    out = []
    batches = MemoryRecords(data)
    while (batch := batches.next_batch()) is not None:
        records = list(batch)
        last = records[-1].offset if records else batch.base_offset
        while pending and pending[0][0] <= last:
            aborting.add(pending.pop(0)[1])
        if batch.is_control_batch:
            aborting.discard(batch.producer_id)
            continue
        if batch.is_transactional and batch.producer_id in aborting:
            continue
        out += [(r.offset, r.key, r.value) for r in records]
    return out


def upload_and_drop(config, log_dir: Path, topic: str, bases: list[int], *, upload: bool = True) -> None:
    """Upload the listed rolled segments through the real upload code, then delete them
    locally as local retention does (the broker's log start moves on restart)."""
    partition = next(p for p in scan_log_dirs([log_dir]).partitions if p.topic == topic)
    store = open_store(config)
    try:
        for segment in partition.segments:
            if segment.base_offset in bases and upload:
                offload_segment(target_for(segment, partition, config.store.prefix, False, 1, f"{segment.base_offset:016x}"),
                                store, lambda: T0)
    finally:
        store.close()
    for base in bases:
        for ext in ("log", "index", "timeindex", "txnindex", "snapshot"):
            (partition.path / segment_file_name(base, ext)).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def tiered(tmp_path_factory, moto_endpoint) -> Tiered:
    """`orders`: 9 segments; the first dropped everywhere (as remote retention would), the
    next four only in the store, then rolled local ones, then the active segment. Plain batches
    of every codec, committed and aborted transactions in each tier. `payments`: everything
    local, an aborted transaction and one still open at the end."""
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=BUCKET)
    root = tmp_path_factory.mktemp("serve-source")
    env = Env(root, moto_endpoint, root / "kafka-logs", root / "state")
    config_path = env.write_config()
    config = load_config(config_path)
    ticks = itertools.count(T0, 10)
    broker = SimulatedBroker(env.log_dir, segment_bytes=6 * 1024, index_interval_bytes=1024, seed=7,
                             clock_ms=lambda: next(ticks))
    broker.create_topic(TOPIC, 1)
    codecs = itertools.cycle(["none", "gzip", "snappy", "lz4", "zstd"])
    for i in range(60):
        broker.produce(TOPIC, 0, 7, codec=next(codecs), value_size=90, batch_records=7, headers=i % 2 == 0)
        if i % 4 == 1:
            broker.produce_transaction(TOPIC, 0, 3, commit=i % 8 != 1, value_size=90)
    broker.create_topic(TXN, 1)
    broker.produce(TXN, 0, 10, batch_records=5)
    broker.produce_transaction(TXN, 0, 4, commit=False)
    broker.produce(TXN, 0, 5, batch_records=5)
    open_txn_first = broker.next_offset(TXN, 0)
    log = broker.logs[TopicPartition(TXN, 0)]          # a transaction left open: no marker yet
    records = [(next(ticks), b"k", b"open", ())]
    log.append(build_batch(open_txn_first, records, producer_id=4242, producer_epoch=0, base_sequence=0,
                           transactional=True), 1, records[0][0])
    broker.produce(TXN, 0, 5, batch_records=5)
    broker.checkpoint()

    scan = {p.topic: p for p in scan_log_dirs([env.log_dir]).partitions}
    original = {t: b"".join(s.log_path.read_bytes() for s in scan[t].segments) for t in (TOPIC, TXN)}
    bases = {t: [s.base_offset for s in scan[t].segments] for t in (TOPIC, TXN)}
    assert len(bases[TOPIC]) >= 8
    store_bases = bases[TOPIC][1:5]
    upload_and_drop(config, env.log_dir, TOPIC, bases[TOPIC][:1], upload=False)
    upload_and_drop(config, env.log_dir, TOPIC, store_bases)
    broker.restart()
    yield Tiered(config_path, broker, original, bases,
                 {TOPIC: store_bases, TXN: []}, {TOPIC: bases[TOPIC][1], TXN: 0})
    broker.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(tiered, clock):
    config = load_config(tiered.config_path)
    config = replace(config, read=replace(config.read, chunk_bytes=4096, buffer_pool_bytes=16 * 4096,
                                          prefetch_bytes=4 * 4096))
    made = PartitionSource.from_config(config, clock=clock)
    yield made
    made.close()


def expected_from(tiered: Tiered, topic: str, offset: int, hw: int | None = None) -> bytes:
    """The broker's bytes from the batch holding `offset` up to `hw`."""
    return b"".join(data for base, last, data in batches_of(tiered.original[topic])
                    if last >= offset and (hw is None or base < hw))


def read_all(source, topic: str, offset: int, max_bytes: int, read_committed: bool = False):
    """Consecutive fetches from `offset` to the live end: (bytes, tiers, aborted, fetches)."""
    out, tiers, aborted, fetches = [], [], [], 0
    while True:
        result = source.fetch(topic, 0, offset, max_bytes, read_committed)
        assert result.error == 0, result
        fetches += 1
        if not result.records:
            return b"".join(out), tiers, aborted, fetches
        batches = batches_of(result.records)
        assert batches[0][0] <= offset <= batches[0][1] or batches[0][0] >= offset
        out.append(result.records)
        tiers.append(result.tier)
        aborted += [a for a in result.aborted if a not in aborted]
        offset = batches[-1][1] + 1


# -- the stream across tiers -------------------------------------------------------------------

@pytest.mark.parametrize("max_bytes", [1, 1500, 9000, BIG])
def test_consecutive_fetches_from_log_start_return_every_batch_once_byte_identical_across_tiers(
        tiered, source, max_bytes):
    start = tiered.log_start[TOPIC]
    state = source.state(TOPIC, 0)
    assert state == PartitionState(start, tiered.broker.next_offset(TOPIC, 0), tiered.broker.next_offset(TOPIC, 0))
    data, tiers, _, fetches = read_all(source, TOPIC, start, max_bytes)
    assert data == expected_from(tiered, TOPIC, start)
    # Never two tiers in one fetch; the tiers in order, each one reached.
    assert [t for t, _ in itertools.groupby(tiers)] == ["store", "local", "active"]
    if max_bytes == 1:
        assert fetches == len(batches_of(data)) + 1          # one batch per fetch, then the end
    assert kafka_python_records(data) == kafka_python_records(expected_from(tiered, TOPIC, start))


def test_a_fetch_stops_where_the_store_ends_and_the_next_one_starts_on_local_disk(tiered, source):
    first_local = tiered.bases[TOPIC][5]
    store_part = batches_of(expected_from(tiered, TOPIC, tiered.store_bases[TOPIC][-1]))
    last_store = [b for b in store_part if b[1] < first_local]
    result = source.fetch(TOPIC, 0, last_store[-1][0], BIG, False)
    assert result.tier == "store" and result.records == last_store[-1][2]
    result = source.fetch(TOPIC, 0, first_local, BIG, False)
    assert result.tier == "local" and batches_of(result.records)[0][0] == first_local


def test_max_bytes_whole_batches_exact_fit_one_byte_less_and_one_batch_larger_than_max(tiered, source):
    for offset in (tiered.log_start[TOPIC], tiered.bases[TOPIC][6] + 3, tiered.bases[TOPIC][-1]):
        batches = batches_of(expected_from(tiered, TOPIC, offset))
        one, two, three = (len(b[2]) for b in batches[:3])
        fetch = lambda m: source.fetch(TOPIC, 0, offset, m, False).records   # noqa: E731
        assert fetch(one + two) == batches[0][2] + batches[1][2]                 # exact fit
        assert fetch(one + two - 1) == batches[0][2]                             # one byte less
        assert fetch(one + two + three - 1) == batches[0][2] + batches[1][2]
        assert fetch(one) == batches[0][2]
        assert fetch(one - 1) == batches[0][2]                                   # larger than max: whole
        assert fetch(0) == batches[0][2]
        assert batches[0][0] <= offset <= batches[0][1]                          # the batch holding it


def test_out_of_range_at_exact_boundaries_and_the_live_end_answers_nothing_without_error(tiered, source):
    start, hw = tiered.log_start[TOPIC], tiered.broker.next_offset(TOPIC, 0)
    below = source.fetch(TOPIC, 0, start - 1, BIG, False)
    assert (below.error, below.records, below.state.log_start_offset) == (OFFSET_OUT_OF_RANGE, b"", start)
    at_start = source.fetch(TOPIC, 0, start, 1, False)
    assert at_start.error == 0 and batches_of(at_start.records)[0][0] == start and at_start.tier == "store"
    last = source.fetch(TOPIC, 0, hw - 1, BIG, False)
    assert last.error == 0 and batches_of(last.records)[-1][1] == hw - 1 and last.tier == "active"
    for read_committed in (False, True):
        at_hw = source.fetch(TOPIC, 0, hw, BIG, read_committed)
        assert (at_hw.error, at_hw.records, at_hw.aborted, at_hw.state.high_watermark) == (0, b"", (), hw)
        above = source.fetch(TOPIC, 0, hw + 1, BIG, read_committed)
        assert (above.error, above.records) == (OFFSET_OUT_OF_RANGE, b"")
    assert source.fetch(TOPIC, 0, -1, BIG, False).error == OFFSET_OUT_OF_RANGE


def test_unknown_partitions_and_names_that_are_not_topics(tiered, source):
    for topic, partition in ((TOPIC, 1), ("nope", 0), ("../kafka-logs/orders", 0), ("", 0), ("..", 0),
                             (TOPIC, -1)):
        result = source.fetch(topic, partition, 0, BIG, False)
        assert (result.error, result.state) == (UNKNOWN_TOPIC_OR_PARTITION, None), (topic, partition)
        assert source.state(topic, partition) is None
        assert source.offset_for_timestamp(topic, partition, T0) is None


def test_topics_lists_the_log_dirs_partitions_with_their_topic_ids(tiered, source):
    import base64
    import uuid
    topics = source.topics()
    assert set(topics) == {TOPIC, TXN}
    want = uuid.UUID(bytes=base64.urlsafe_b64decode(tiered.broker.topic_ids[TOPIC] + "=="))
    assert topics[TOPIC].topic_id == want and topics[TOPIC].partitions == (0,)


# -- read_committed -----------------------------------------------------------------------------

def test_read_committed_stops_at_the_last_stable_offset_and_lists_the_aborts_it_returns(tiered, source):
    hw = tiered.broker.next_offset(TXN, 0)
    state = source.state(TXN, 0)
    lso = 10 + 5 + 5        # ten plain, four aborted + marker, five plain: the open one starts at 20
    assert state == PartitionState(0, hw, lso) and lso < hw
    # The reader's own (whole-segment) computation agrees.
    view = source._live(TXN, 0).view
    assert source.reader._last_stable_offset(view, hw) == lso
    pid = next(r[4] for r in kafka_python_records(tiered.original[TXN]) if r[0] == 10)
    committed = source.fetch(TXN, 0, 0, BIG, True)
    assert batches_of(committed.records)[-1][1] == lso - 1                     # nothing at or above the LSO
    assert committed.aborted == (AbortedTxn(pid, 10),)
    assert committed_view(committed.records, list(committed.aborted)) == \
        [(o, k, v) for o, _, k, v, *_ in kafka_python_records(expected_from(tiered, TXN, 0, lso)) if not 10 <= o < 14]
    at_lso = source.fetch(TXN, 0, lso, BIG, True)
    assert (at_lso.error, at_lso.records) == (0, b"")                            # waits there, no error
    uncommitted = source.fetch(TXN, 0, 0, BIG, False)
    assert uncommitted.records == expected_from(tiered, TXN, 0) and uncommitted.aborted == ()
    # A range that ends before the aborted transaction, or starts after its marker: not listed.
    assert source.fetch(TXN, 0, 0, 1, True).aborted == ()
    two = batches_of(expected_from(tiered, TXN, 0))[:2]
    assert [b[1] for b in two] == [4, 9]
    below = source.fetch(TXN, 0, 0, len(two[0][2]) + len(two[1][2]), True)     # up to 9: begins at 10
    assert batches_of(below.records)[-1][1] == 9 and below.aborted == ()
    assert source.fetch(TXN, 0, 15, BIG, True).aborted == ()
    assert source.fetch(TXN, 0, 14, 1, True).aborted == (AbortedTxn(pid, 10),)   # the marker itself


def test_read_committed_across_tiers_keeps_what_kafkas_consumer_keeps(tiered, source):
    start = tiered.log_start[TOPIC]
    for max_bytes in (700, BIG):
        data, _, aborted, _ = read_all(source, TOPIC, start, max_bytes, read_committed=True)
        assert data == expected_from(tiered, TOPIC, start)        # no open transaction: LSO == HW
        every = kafka_python_records(data, controls=True)
        markers = {(r[4], r[0]) for r in every if r[6]}
        # The aborted transactions: exactly those whose data is in the range (every 8th round, from
        # round 1), each with its first offset, spread over the three tiers.
        assert len(aborted) >= 6
        for a in aborted:
            assert any(pid == a.producer_id and off > a.first_offset for pid, off in markers)
        kept = committed_view(data, aborted)
        hidden = {r[0] for r in every if r[4] in {a.producer_id for a in aborted} and not r[6]}
        assert [r[0] for r in kept] == [r[0] for r in every if not r[6] and r[0] not in hidden]
        assert len(hidden) == 3 * len(aborted)


# -- the live end ---------------------------------------------------------------------------------

def test_a_tailing_consumer_sees_appends_and_a_roll_after_the_refresh_interval(tmp_path, tiered, clock):
    ticks = itertools.count(T0, 10)
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=2048, seed=1, clock_ms=lambda: next(ticks))
    broker.create_topic("tail", 1)
    broker.produce("tail", 0, 10, batch_records=5)
    config = load_config(Env(tmp_path, "", tmp_path / "logs", tmp_path / "state").write_config())
    config = replace(config, store=load_config(tiered.config_path).store)
    source = PartitionSource.from_config(config, clock=clock)
    try:
        assert source.fetch("tail", 0, 10, BIG, False).records == b""
        broker.produce("tail", 0, 40, batch_records=5)          # rolls a few times
        assert source.fetch("tail", 0, 10, BIG, False).records == b""     # the state is 0.5 s old at most
        clock.sleep(0.5)
        data, tiers, _, _ = read_all(source, "tail", 10, 300)
        files = b"".join(p.read_bytes() for p in sorted((tmp_path / "logs" / "tail-0").glob("*.log")))
        assert data == b"".join(d for base, last, d in batches_of(files) if base >= 10)
        assert set(tiers) == {"local", "active"}
        # Held high watermark (followers behind): the checkpoint bounds what is served.
        broker.hold_high_watermark("tail", 0, 35)
        clock.sleep(0.5)
        assert source.state("tail", 0).high_watermark == 35
        assert batches_of(source.fetch("tail", 0, 30, BIG, False).records)[-1][1] == 34
        assert source.fetch("tail", 0, 36, BIG, False).error == OFFSET_OUT_OF_RANGE
        # Offsets by timestamp: nothing at or above the high watermark.
        stamps = {r[0]: r[1] for r in kafka_python_records(files)}
        assert source.offset_for_timestamp("tail", 0, stamps[34]) == (34, stamps[34])
        assert source.offset_for_timestamp("tail", 0, stamps[34] + 1) is None
    finally:
        source.close()
        broker.close()


def transaction_batch(broker: SimulatedBroker, topic: str, producer_id: int, *, marker: bool = False) -> int:
    """Append one transactional batch (or its commit marker) without closing it; its offset."""
    log = broker.logs[TopicPartition(topic, 0)]
    offset = log.next_offset
    if marker:
        key, value = control_record(CONTROL_COMMIT)
        batch = build_batch(offset, [(T0, key, value, ())], producer_id=producer_id, producer_epoch=0,
                            transactional=True, control=True)
    else:
        batch = build_batch(offset, [(T0, b"k", b"v", ())], producer_id=producer_id, producer_epoch=0,
                            base_sequence=0, transactional=True)
    return log.append(batch, 1, T0)


class FixedHighWatermarks:
    """The cluster's answer to ListOffsets latest, set by the test (None: unreachable)."""

    def __init__(self, value: int | None):
        self.value = value
        self.asked = 0

    def latest(self, topic: str, partition: int) -> int | None:
        self.asked += 1
        return self.value

    def close(self) -> None:
        pass


def test_in_cluster_mode_the_clusters_high_watermark_wins_over_the_lagging_checkpoint(tmp_path, tiered, clock):
    broker = SimulatedBroker(tmp_path / "logs", seed=2, auto_checkpoint=False)
    broker.create_topic("live", 1)
    broker.produce("live", 0, 20, batch_records=5)
    broker.checkpoint()                                          # the checkpoint says 20 ...
    broker.produce("live", 0, 20, batch_records=5)               # ... the broker has 40
    config = load_config(Env(tmp_path, "", tmp_path / "logs", tmp_path / "state").write_config())
    config = replace(config, store=load_config(tiered.config_path).store)
    cluster = FixedHighWatermarks(35)
    source = PartitionSource.from_config(config, clock=clock, high_watermarks=cluster)
    try:
        assert source.state("live", 0).high_watermark == 35
        assert batches_of(source.fetch("live", 0, 0, BIG, False).records)[-1][1] == 34
        for _ in range(5):
            source.fetch("live", 0, 35, BIG, False)
        assert cluster.asked == 1                                # asked once per refresh interval
        cluster.value = None                                     # unreachable: the checkpoint
        clock.sleep(0.5)
        assert source.state("live", 0).high_watermark == 20
        assert cluster.asked == 2
        # The last stable offset follows the high watermark: a transaction whose commit marker is
        # at the high watermark itself is still open below it.
        first = transaction_batch(broker, "live", 777)
        broker.produce("live", 0, 5, batch_records=5)
        marker = transaction_batch(broker, "live", 777, marker=True)
        broker.produce("live", 0, 5, batch_records=5)
        for hw, lso in ((first, first), (first + 1, first), (marker, first), (marker + 1, marker + 1),
                        (marker + 6, marker + 6)):
            cluster.value = hw
            clock.sleep(0.5)
            assert source.state("live", 0) == PartitionState(0, hw, lso), hw
            committed = source.fetch("live", 0, 0, BIG, True)
            assert batches_of(committed.records)[-1][1] == lso - 1
    finally:
        source.close()
        broker.close()


# -- sequential consumers reuse their stream ----------------------------------------------------

class CountingStore:
    """The real S3 store, counting the GETs of offset indexes (what planning a read costs)."""

    def __init__(self, store):
        self._store = store
        self.index_gets = 0

    def get_bytes(self, key, max_bytes):
        if key.endswith(".index"):
            self.index_gets += 1
        return self._store.get_bytes(key, max_bytes)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_consecutive_fetches_continue_one_stream_and_an_idle_one_is_closed(tiered, clock):
    config = load_config(tiered.config_path)
    config = replace(config, read=replace(config.read, chunk_bytes=4096, buffer_pool_bytes=16 * 4096,
                                          prefetch_bytes=4 * 4096))
    store = CountingStore(open_store(config))
    source = PartitionSource.from_config(config, store, clock=clock)
    try:
        start = tiered.log_start[TOPIC]
        inside = [b for b in batches_of(expected_from(tiered, TOPIC, start)) if b[1] < tiered.bases[TOPIC][2]]
        offset = inside[1][0]           # not the segment's first batch: its plan reads the index
        for batch in inside[1:]:
            assert source.fetch(TOPIC, 0, offset, 1, False).records == batch[2]
            offset = batch[1] + 1
        assert store.index_gets == 1                             # planned once, then continued
        # A consumer that comes back after the idle time plans again.
        offset = inside[2][0]
        source.fetch(TOPIC, 0, inside[1][0], 1, False)
        clock.sleep(31)
        source.fetch(TOPIC, 0, tiered.bases[TOPIC][-1], 1, False)    # another reader's fetch sweeps
        assert source.fetch(TOPIC, 0, offset, 1, False).records == inside[2][2]
        assert store.index_gets == 3
    finally:
        source.close()
        store.close()


# -- offsets by timestamp -------------------------------------------------------------------------

def test_offset_for_timestamp_finds_the_first_record_at_or_after_it_in_every_tier(tiered, source):
    start, hw = tiered.log_start[TOPIC], tiered.broker.next_offset(TOPIC, 0)
    every = [r for r in kafka_python_records(tiered.original[TOPIC], controls=True) if start <= r[0] < hw]
    assert [r[1] for r in every] == sorted(r[1] for r in every)       # rising: the answer is exact
    picks = [every[0], every[1], every[len(every) // 3], every[len(every) // 2], every[-2], every[-1]]
    picks += [r for r in every if r[0] in (tiered.bases[TOPIC][5], tiered.bases[TOPIC][-1])]   # tier borders
    # The last record of each segment: its largest timestamp (the manifest's, the time index's last entry).
    picks += [r for r, nxt in zip(every, every[1:]) if nxt[0] in tiered.bases[TOPIC][2:]]
    assert len(picks) == 8 + len(tiered.bases[TOPIC]) - 2
    for offset, timestamp, *_ in picks:
        assert source.offset_for_timestamp(TOPIC, 0, timestamp) == (offset, timestamp)
        following = next(r for r in every if r[1] > timestamp - 1)
        assert source.offset_for_timestamp(TOPIC, 0, timestamp - 1) == (following[0], following[1])
        after = next((r for r in every if r[1] >= timestamp + 1), None)
        assert source.offset_for_timestamp(TOPIC, 0, timestamp + 1) == (after and (after[0], after[1]))
    assert source.offset_for_timestamp(TOPIC, 0, 0) == (every[0][0], every[0][1])    # before the log start
    assert source.offset_for_timestamp(TOPIC, 0, every[-1][1] + 1) is None


# -- threads ----------------------------------------------------------------------------------------

def test_several_threads_fetching_at_once_each_read_every_batch_once(tiered, source):
    start = tiered.log_start[TOPIC]
    expected = expected_from(tiered, TOPIC, start)
    results, errors = {}, []

    def consume(n: int) -> None:
        try:
            results[n] = read_all(source, TOPIC, start if n % 2 == 0 else start, (n + 1) * 700, n % 3 == 0)[0]
        except BaseException as exc:      # reported below, with the thread's number
            errors.append((n, exc))
    threads = [threading.Thread(target=consume, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(results[n] == expected for n in range(6))
    stats = source.reader.pool.stats()
    assert stats.peak_slabs_in_use <= stats.slabs


# -- the store changing under the source ----------------------------------------------------------

def test_objects_deleted_or_damaged_in_the_store_answer_out_of_range_or_a_storage_error(tiered, tmp_path, clock):
    base = load_config(tiered.config_path)
    config = replace(base, kafka=replace(base.kafka, log_dirs=(tmp_path / "logs",)),
                     store=replace(base.store, prefix="damaged/"))
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=2048, seed=9)
    broker.create_topic("gone", 1)
    broker.produce("gone", 0, 80, batch_records=5)
    bases = [s.base_offset for s in scan_log_dirs([tmp_path / "logs"]).partitions[0].segments]
    upload_and_drop(config, tmp_path / "logs", "gone", bases[:3])
    broker.restart()
    s3 = boto3.session.Session().client("s3", endpoint_url=base.store.endpoint_url, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="damaged/")["Contents"]]
    source = PartitionSource.from_config(config, clock=clock)
    try:
        assert source.state("gone", 0).log_start_offset == 0          # the store's listing is now kept
        # Remote retention deletes the first segment: the read fails, the listing is asked again,
        # and the offset is out of range (the consumer then resets to the new log start).
        for key in keys:
            if f"/{bases[0]:020d}-" in key:
                s3.delete_object(Bucket=BUCKET, Key=key)
        gone = source.fetch("gone", 0, 0, BIG, False)
        assert (gone.error, gone.state.log_start_offset) == (OFFSET_OUT_OF_RANGE, bases[1])
        # A damaged object: a storage error saying what is wrong, not a traceback.
        log_key = next(k for k in keys if f"/{bases[1]:020d}-" in k and k.endswith(".log"))
        size = s3.head_object(Bucket=BUCKET, Key=log_key)["ContentLength"]
        s3.put_object(Bucket=BUCKET, Key=log_key, Body=b"\x00" * 12 + b"\x7f" * (size - 12))
        damaged = source.fetch("gone", 0, bases[1], BIG, False)
        assert damaged.error == KAFKA_STORAGE_ERROR and damaged.records == b""
        assert "gone-0" in damaged.detail and log_key in damaged.detail, damaged.detail
        # The next segment (intact) is still served.
        assert source.fetch("gone", 0, bases[2], BIG, False).tier == "store"
    finally:
        source.close()
        broker.close()


def test_local_retention_moving_the_first_local_offset_brings_in_the_stores_copies_at_once(tiered, tmp_path, clock):
    base = load_config(tiered.config_path)
    config = replace(base, kafka=replace(base.kafka, log_dirs=(tmp_path / "logs",)),
                     store=replace(base.store, prefix="moved/"))
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=2048, seed=4)
    broker.create_topic("moved", 1)
    broker.produce("moved", 0, 60, batch_records=5)
    files = b"".join(p.read_bytes() for p in sorted((tmp_path / "logs" / "moved-0").glob("*.log")))
    bases = [s.base_offset for s in scan_log_dirs([tmp_path / "logs"]).partitions[0].segments]
    source = PartitionSource.from_config(config, clock=clock)
    try:
        assert read_all(source, "moved", 0, BIG)[0] == files            # all local; the store listed empty
        upload_and_drop(config, tmp_path / "logs", "moved", bases[:2])   # long before the listing is due
        broker.restart()
        clock.sleep(0.5)
        assert source.state("moved", 0).log_start_offset == 0
        data, tiers, _, _ = read_all(source, "moved", 0, BIG)
        assert data == files and tiers[0] == "store"
    finally:
        source.close()
        broker.close()


def test_fetches_of_rolled_local_segments_leave_them_out_of_the_page_cache(tiered, source):
    from tests.integration.test_read import cached_share, cold_file
    rolled = [s for s in scan_log_dirs([tiered.config_path.parent / "kafka-logs"]).partitions
              if s.topic == TOPIC][0].segments[:-1]
    assert len(rolled) >= 2 and rolled[0].base_offset == tiered.bases[TOPIC][5]
    for segment in rolled:
        cold_file(segment.log_path)
        assert cached_share(segment.log_path)[0] == 0
    offset, tiers = rolled[0].base_offset, set()
    while offset < tiered.bases[TOPIC][-1]:
        result = source.fetch(TOPIC, 0, offset, 1000, False)
        tiers.add(result.tier)
        offset = batches_of(result.records)[-1][1] + 1
    assert tiers == {"local"}
    for segment in rolled:
        share, how = cached_share(segment.log_path)
        assert share == 0, f"{segment.log_path.name}: {share:.0%} cached after fetches through the source ({how})"
    rolled[0].log_path.read_bytes()        # the same bytes read plainly, as the broker does: cached
    assert cached_share(rolled[0].log_path)[0] == 1.0


def test_a_partition_created_after_it_was_asked_for_is_found_after_the_refresh_interval(tmp_path, tiered, clock):
    config = load_config(Env(tmp_path, "", tmp_path / "logs", tmp_path / "state").write_config())
    config = replace(config, store=load_config(tiered.config_path).store)
    broker = SimulatedBroker(tmp_path / "logs", seed=5)
    source = PartitionSource.from_config(config, clock=clock)
    try:
        assert source.fetch("late", 0, 0, BIG, False).error == UNKNOWN_TOPIC_OR_PARTITION
        broker.create_topic("late", 1)
        broker.produce("late", 0, 5)
        assert source.state("late", 0) is None                 # remembered as unknown for a moment
        clock.sleep(0.5)
        assert source.state("late", 0) == PartitionState(0, 5, 5)
        assert source.fetch("late", 0, 0, BIG, False).error == 0
    finally:
        source.close()
        broker.close()


def test_a_store_that_refuses_every_request_keeps_the_last_listing_and_answers_storage_errors(tiered, tmp_path, clock):
    from urllib.parse import urlparse

    from tests.faults.proxy import FaultProxy
    from tiering.store.errors import StoreError
    base = load_config(tiered.config_path)
    url = urlparse(base.store.endpoint_url)
    proxy = FaultProxy(url.hostname, url.port)
    config = replace(base, kafka=replace(base.kafka, log_dirs=(tmp_path / "logs",)),
                     store=replace(base.store, prefix="refused/", endpoint_url=proxy.endpoint))
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=2048, seed=6)
    broker.create_topic("refused", 1)
    broker.produce("refused", 0, 60, batch_records=5)
    bases = [s.base_offset for s in scan_log_dirs([tmp_path / "logs"]).partitions[0].segments]
    upload_and_drop(config, tmp_path / "logs", "refused", bases[:2])
    broker.restart()
    hw = broker.next_offset("refused", 0)
    source = PartitionSource.from_config(config, clock=clock)
    try:
        proxy.fatal = "AccessDenied"
        with pytest.raises(StoreError):           # never listed: what the store holds is not known
            source.state("refused", 0)
        assert source.fetch("refused", 0, bases[2], BIG, False).error == KAFKA_STORAGE_ERROR
        proxy.fatal = None
        clock.sleep(0.5)
        assert source.state("refused", 0) == PartitionState(0, hw, hw)
        proxy.fatal = "AccessDenied"
        clock.sleep(31)                            # the listing is due again: refused
        assert source.state("refused", 0) == PartitionState(0, hw, hw)      # the last listing holds
        assert source.fetch("refused", 0, bases[2], BIG, False).tier == "local"
        refused = source.fetch("refused", 0, 0, BIG, False)
        assert refused.error == KAFKA_STORAGE_ERROR and "AccessDenied" in refused.detail
        assert source.state("refused", 0) == PartitionState(0, hw, hw)      # still
        proxy.fatal = None
        clock.sleep(31)
        assert source.fetch("refused", 0, 0, BIG, False).tier == "store"
    finally:
        source.close()
        broker.close()
        proxy.close()


def test_an_unreachable_cluster_is_asked_again_only_after_the_retry_interval(clock):
    import socket

    from tiering.serve.watermarks import KafkaHighWatermarks
    with socket.socket() as closed:          # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cluster = KafkaHighWatermarks(f"127.0.0.1:{port}", clock.monotonic, timeout_ms=500, bootstrap_timeout_ms=500)
    try:
        assert cluster.latest(TOPIC, 0) is None and cluster.error
        first_error = cluster.error
        cluster.error = None
        clock.sleep(4.9)
        assert cluster.latest(TOPIC, 0) is None and cluster.error is None      # not asked: still backing off
        clock.sleep(0.1)
        assert cluster.latest(TOPIC, 0) is None and cluster.error              # asked again
        assert "127.0.0.1" in first_error
    finally:
        cluster.close()


def test_the_endpoints_source_reports_its_pool_hit_ratio(tiered):
    from prometheus_client import CollectorRegistry

    from tiering.clock import SystemClock
    from tiering.serve.wiring import open_source
    registry = CollectorRegistry()
    source = open_source(load_config(tiered.config_path), registry, SystemClock())
    try:
        assert registry.get_sample_value("tiering_serve_pool_hit_ratio") == 0.0     # nothing read yet
        start = tiered.log_start[TOPIC]
        data, tiers, _, _ = read_all(source, TOPIC, start, 1 << 20)
        assert data == expected_from(tiered, TOPIC, start, source.state(TOPIC, 0).high_watermark)
        stats = source.reader.pool.stats()
        assert stats.gets > 0 and "store" in tiers
        assert registry.get_sample_value("tiering_serve_pool_hit_ratio") == stats.hit_ratio > 0.0
    finally:
        source.close()
