"""The Kafka fetcher's cache: where it lives, and that a finished fetch is never repeated."""

import pytest

from tiering.realkafka import fetch as fetcher


def test_the_cache_honours_xdg_cache_home_and_the_version_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("TIERING_KAFKA_VERSION", "3.9.1")
    assert fetcher.kafka_home() == tmp_path / "tiering" / "kafka-3.9.1"
    monkeypatch.delenv("TIERING_KAFKA_VERSION")
    assert fetcher.kafka_home() == tmp_path / "tiering" / f"kafka-{fetcher.DEFAULT_VERSION}"


def test_a_completed_fetch_is_not_repeated_and_an_incomplete_one_needs_maven(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))          # no mvn, no java
    home = fetcher.kafka_home("4.1.1")
    (home / "libs").mkdir(parents=True)
    with pytest.raises(fetcher.FetchError, match="mvn not found"):
        fetcher.fetch("4.1.1")                                     # libs without the marker: not done
    (home / ".complete").write_text("4.1.1\n")
    assert fetcher.fetch("4.1.1") == home / "libs"                 # done: nothing is run


def test_the_generated_pom_names_the_broker_and_one_logging_backend():
    arts = {a for _, a, _ in fetcher._artifacts("4.1.1")}
    assert {"kafka_2.13", "kafka-tools", "log4j-core", "log4j-slf4j-impl"} <= arts
    assert "slf4j-reload4j" in fetcher._exclusions("3.9.1") and fetcher._exclusions("4.1.1") == ""
