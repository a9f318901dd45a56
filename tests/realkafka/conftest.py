"""A real Apache Kafka broker for the tests in this directory.

The jars are fetched on demand (tiering.realkafka.fetch, the same code as scripts/fetch-kafka
and .ci/run), so `pytest` alone is enough on a machine with Java and Maven. Without Java or
Maven these tests skip with one line saying what to install, except in CI (CI=true), where a
missing broker fails the run instead: CI must prove the real-broker paths, not skip them.

One broker is shared by all the tests here (a JVM start costs 5-30 s on this machine); each
test uses its own topics, state dir and (reset) bucket, and the sidecar's config includes only
that test's topics.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Env
from tiering.realkafka.broker import Broker, BrokerError
from tiering.realkafka.cluster import Cluster
from tiering.realkafka.fetch import FetchError, fetch, is_fetched, kafka_version

_BROKERS: list[Broker] = []
_CLUSTERS: list[Cluster] = []
# How long each cluster start took (seconds), for the report at the end of the session.
CLUSTER_STARTS: list[float] = []


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real-broker tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    if shutil.which("java") is None:
        _unavailable("real-broker tests need Java 17+: apt-get install openjdk-17-jre-headless maven")
    if shutil.which("mvn") is None and not is_fetched():
        _unavailable("real-broker tests need Maven to fetch Kafka: apt-get install maven")
    try:
        return fetch(quiet=True)
    except FetchError as e:
        _unavailable(f"Apache Kafka {kafka_version()} could not be fetched: {e}")


def start_broker(workdir: Path, libs: Path, **kwargs) -> Broker:
    broker = Broker(workdir, libs, **kwargs)
    _BROKERS.append(broker)
    try:
        broker.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    return broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory, kafka_libs):
    # One broker for the whole directory (tests that stop or kill it start it again). A deleted
    # topic's dir stays `-delete` (and deleted segments `.deleted`) for 5 minutes, so a test on
    # a loaded machine still sees them.
    broker = start_broker(tmp_path_factory.mktemp("broker"), kafka_libs,
                          extra_props={"file.delete.delay.ms": "300000"})
    yield broker
    broker.stop()
    if broker.running():
        broker.kill()


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory, kafka_libs) -> Cluster:
    """Three KRaft nodes (broker + controller each, a 3-voter quorum) for one test module:
    default RF=3, min.insync.replicas=2, automatic leader rebalancing off. Tests make their own
    topics; a test that kills a node starts it again before it ends."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), kafka_libs)
    _CLUSTERS.append(cluster)
    try:
        CLUSTER_STARTS.append(cluster.start())
    except BrokerError as e:
        pytest.fail(f"the 3-node cluster did not start: {e}", pytrace=False)
    yield cluster
    # The dirs are the test's own: no need for a controlled shutdown of each node.
    cluster.kill_all()


@pytest.fixture
def cluster(kafka_cluster) -> Cluster:
    """The module's cluster for one test: a node the test left killed is started again after it."""
    yield kafka_cluster
    kafka_cluster.revive()


@pytest.fixture
def sidecars_for(cluster, s3, s3_endpoint, tmp_path):
    """`sidecars_for(topics, **options)`: three sidecars on the cluster (tests/realkafka/sidecars.py);
    their daemons are killed after the test whatever its outcome."""
    from tests.realkafka.sidecars import make_sidecars
    made = []

    def make(topics, **options):
        group = make_sidecars(cluster, tmp_path, s3_endpoint, topics, **options)
        made.append(group)
        return group
    yield make
    for group in made:
        for sidecar in group.values():
            sidecar.kill()


@pytest.fixture
def kenv(tmp_path, s3, s3_endpoint, kafka_broker) -> Env:
    """The sidecar's Env on the shared broker's log dir (its state and config in this test's dir)."""
    return Env(tmp_path, s3_endpoint, kafka_broker.log_dir, tmp_path / "state")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in _BROKERS:
            report.sections.append((f"broker log ({broker.workdir})", broker.tail(60)))
        for cluster in _CLUSTERS:
            if cluster.running():
                report.sections.append((f"cluster logs ({cluster.workdir})", cluster.tail(25)))


def pytest_sessionfinish(session):
    # A broker left running by an interrupted test is ours to end (by its pid only).
    for broker in _BROKERS:
        if broker.running():
            broker.kill()
    for cluster in _CLUSTERS:
        cluster.kill_all()
    if CLUSTER_STARTS:
        print(f"\n3-node cluster starts: {', '.join(f'{s:.1f}s' for s in CLUSTER_STARTS)}")
