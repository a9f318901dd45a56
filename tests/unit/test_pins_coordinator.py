"""The coordinator's use of pins, against a store in memory: a segment the broker deleted
after it was pinned is uploaded from its pin, whatever the listing it was offered from, and a
partition whose tiering is not known yet keeps its pins until it is."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from tests.integration.test_cli_and_recovery import ListLog
from tests.unit.memstore import MemoryStore
from tests.unit.test_pins_lock import broker  # noqa: F401  (the fixture)
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.journal import Journal
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.logdir import scan_log_dirs
from tiering.kafka.topicconfig import TopicConfig, TopicConfigs
from tiering.upload.coordinator import UploadCoordinator
from tiering.upload.pins import PinStore


@pytest.fixture
def setup(tmp_path, broker):
    path = tmp_path / "tiering.toml"
    path.write_text(f"""
[kafka]
log_dirs = ["{broker.log_dir}"]
[store]
bucket = "b"
prefix = "p/"
endpoint_url = "http://127.0.0.1:9"
region = "us-east-1"
[upload]
concurrency = 1
[state]
dir = "{tmp_path / 'state'}"
[metrics]
listen = ""
""")
    config = load_config(path)
    log = ListLog()
    store = MemoryStore()
    coordinator = UploadCoordinator(config, store, Journal(config.state.dir), SystemClock(), log,
                                    stop_on_fatal=False, pins=PinStore(config.state.pin_roots, log))
    yield broker, coordinator, store, config
    coordinator.shutdown(5)


def scan(broker):
    result = scan_log_dirs([broker.log_dir])
    return next(p for p in result.partitions if p.topic == "orders"), result.log_dirs[0]


def delete_like_the_broker(broker, base: int) -> None:
    directory = broker.partition_dir("orders", 0)
    for path in sorted(directory.glob(f"{base:020d}.*")):
        path.rename(path.with_name(path.name + ".deleted"))
    for path in directory.glob(f"{base:020d}.*.deleted"):
        path.unlink()


def uploaded_logs(store: MemoryStore) -> dict[int, bytes]:
    return {int(key.rsplit("/", 1)[1].split("-")[0]): data for key, data in store.objects.items()
            if key.endswith(".log")}


def test_a_segment_deleted_between_the_scan_and_its_offer_is_uploaded_from_its_pin(setup):
    broker, coordinator, store, config = setup
    partition, state = scan(broker)
    first = partition.segments[0]
    data = first.log_path.read_bytes()
    coordinator.offer(partition, state, TopicFilter())          # pinned, queued, not sent yet
    # A reconcile scan lists the segment; the broker then deletes it; the offer of that listing
    # comes after. The partition looks changed (the scan of a newer roll, say), so it is planned
    # again from the stale listing.
    broker.produce("orders", 0, 1, value_size=100)
    stale, state = scan(broker)
    delete_like_the_broker(broker, first.base_offset)
    coordinator.offer(stale, state, TopicFilter())
    coordinator.offer(*scan(broker), TopicFilter())
    coordinator.drain()
    assert uploaded_logs(store).get(first.base_offset) == data
    assert not list((config.state.dir / "pins").rglob("*.log"))


def configs(**topics: dict) -> TopicConfigs:
    return TopicConfigs(True, MappingProxyType({t: TopicConfig(MappingProxyType(e)) for t, e in topics.items()}))


def test_pins_wait_while_the_topics_config_is_not_known_and_are_let_go_when_it_says_not_tiered(setup):
    broker, coordinator, store, config = setup
    partition, state = scan(broker)
    rolled = [s for s in partition.segments if not s.is_active]
    assert len(rolled) >= 3
    coordinator.offer(partition, state, TopicFilter())
    # Cluster mode comes on (a restart): the topic's config is not read from Kafka yet, and the
    # broker deletes the oldest segment meanwhile.
    delete_like_the_broker(broker, rolled[0].base_offset)
    unknown = TopicFilter(configs=configs())
    assert coordinator.offer(*scan(broker), unknown).queued == 0
    pins = config.state.dir / "pins"
    assert len(list(pins.rglob("*.log"))) == len(rolled)
    # Known and tiered: the deleted segment goes from its pin with the others.
    coordinator.offer(*scan(broker), TopicFilter(configs=configs(orders={"cleanup.policy": ("delete", "TOPIC")})))
    coordinator.drain()
    assert set(uploaded_logs(store)) == {s.base_offset for s in rolled}


def test_pins_are_let_go_when_kafka_says_the_topic_is_not_tiered(setup):
    broker, coordinator, store, config = setup
    partition, state = scan(broker)
    coordinator.offer(partition, state, TopicFilter())
    assert list((config.state.dir / "pins").rglob("*.log"))
    compacted = TopicFilter(configs=configs(orders={"cleanup.policy": ("compact", "TOPIC")}))
    coordinator.offer(*scan(broker), compacted)
    assert not list((config.state.dir / "pins").rglob("*.log"))
