import textwrap
from pathlib import Path

import pytest

from tiering.config import load_config, parse_config
from tiering.errors import ConfigError
from tiering.units import parse_duration_ms, parse_size

DESIGN_EXAMPLE = """
[kafka]
log_dirs = ["/var/lib/kafka/data"]
include = ["*"]
exclude = []

[store]
bucket = "kafka-tier"
prefix = "cluster-a/"
endpoint_url = "https://cos.ap-guangzhou.myqcloud.com"
region = "us-east-1"
addressing_style = "auto"
storage_class = "STANDARD"

[upload]
concurrency = 4
rate_limit_bytes_per_second = 0
part_size_bytes = 16777216

[retention]
local_retention_ms = -2
local_retention_bytes = -2
retention_ms = 604800000
retention_bytes = -1
local_delete = "unlink"

[topics."orders"]
local_retention_ms = 3600000

[read]
buffer_pool_bytes = 268435456
chunk_bytes = 4194304
prefetch_bytes = 33554432
rate_limit_bytes_per_second = 0

[state]
dir = "/var/lib/tiering"

[metrics]
listen = "127.0.0.1:9464"
"""


def load(text: str):
    import tomllib
    return parse_config(tomllib.loads(textwrap.dedent(text)), source="t.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return list(info.value.problems)


def test_design_example_parses_with_per_topic_override_inheriting_defaults():
    config = load(DESIGN_EXAMPLE)
    assert config.kafka.log_dirs == (Path("/var/lib/kafka/data"),)
    assert config.upload.part_size_bytes == 16 * 1024 * 1024
    assert config.retention_for("orders").local_retention_ms == 3_600_000
    assert config.retention_for("orders").retention_ms == 604_800_000
    assert config.retention_for("other").local_retention_ms == -2


def test_human_units():
    config = load("""
        [kafka]
        log_dirs = ["/d"]
        [store]
        bucket = "b"
        [upload]
        part_size_bytes = "64MiB"
        rate_limit_bytes_per_second = "100MB"
        [retention]
        retention_ms = "7d"
        local_retention_ms = "12h"
    """)
    assert config.upload.part_size_bytes == 64 * 1024**2
    assert config.upload.rate_limit_bytes_per_second == 100_000_000
    assert config.retention.retention_ms == 7 * 86_400_000
    assert config.retention.local_retention_ms == 12 * 3_600_000


def test_one_line_per_problem_with_the_documented_wording():
    found = problems("""
        [kafka]
        log_dirs = ["/d"]
        [store]
        bucket = "b"
        [upload]
        concurrency = 0
        concurency = 3
        part_size_bytes = "1MiB"
    """)
    assert "upload.concurrency: must be >= 1, got 0" in found
    assert any(p.startswith("upload.concurency: unknown key") for p in found)
    assert any(p.startswith("upload.part_size_bytes: must be between 5MiB and 5GiB") for p in found)
    assert len(found) == 3


def test_local_retention_above_total_is_an_error_also_in_topic_overrides():
    found = problems("""
        [kafka]
        log_dirs = ["/d"]
        [store]
        bucket = "b"
        [retention]
        retention_ms = "1d"
        local_retention_ms = "2d"
        [topics."orders"]
        local_retention_bytes = -1
        retention_bytes = 1000
    """)
    assert found == [
        "retention.local_retention_ms: must not exceed retention_ms (86400000), got 172800000",
        'topics."orders".local_retention_bytes: must not exceed retention_bytes (1000), got -1',
    ]


def test_required_sections_credentials_and_bad_values():
    found = problems("""
        [store]
        aws_secret_access_key = "x"
        addressing_style = "sideways"
        [metrics]
        listen = "nonsense"
    """)
    assert "[kafka]: missing section" in found
    assert "store.bucket: required" in found
    assert any(p.startswith("store.aws_secret_access_key: credentials never go in this file") for p in found)
    assert any(p.startswith("store.addressing_style: must be one of") for p in found)
    assert any(p.startswith("metrics.listen:") for p in found)
    assert all("\n" not in p for p in found)


def test_load_config_reports_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert "file not found" in info.value.problems[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems[0].startswith("not valid TOML")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[kafka]\nlog_dirs = ["logs"]\n[store]\nbucket = "b"\n[state]\ndir = "st"\n')
    config = load_config(path)
    assert config.kafka.log_dirs == (tmp_path / "logs",)
    assert config.state.dir == tmp_path / "st"


@pytest.mark.parametrize("text,expected", [
    ("4096", 4096), (4096, 4096), ("16MiB", 16 * 1024**2), ("1.5 GiB", 1536 * 1024**2), ("2kb", 2000), ("-1", -1)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [
    (500, 500), ("30s", 30_000), ("5m", 300_000), ("7d", 604_800_000), ("1w", 604_800_000), ("-2", -2)])
def test_parse_duration(text, expected):
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize("bad", ["ten", "5 parsecs", True, 1.5, "1.5 B"])
def test_bad_quantities_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_kafka_admin_needs_a_well_formed_bootstrap_address():
    base = DESIGN_EXAMPLE.replace('local_delete = "unlink"', 'local_delete = "kafka-admin"')
    [line] = problems(base)
    assert line.startswith('kafka.bootstrap_servers: required for local_delete = "kafka-admin" (used by retention, topics."orders")')
    bad = base.replace('exclude = []', 'exclude = []\nbootstrap_servers = "10.0.0.1:9092,broker-2"')
    assert problems(bad) == ["kafka.bootstrap_servers: 'broker-2' is not host:port (a comma-separated list, "
                             'e.g. "10.0.0.1:9092,10.0.0.2:9092")']
    good = load(base.replace('exclude = []', 'exclude = []\nbootstrap_servers = "10.0.0.1:9092, [::1]:9093"'))
    assert good.retention.local_delete == "kafka-admin"


def test_pin_dirs_and_the_retention_interval():
    config = load(DESIGN_EXAMPLE.replace('dir = "/var/lib/tiering"', 'dir = "/var/lib/tiering"\n'
                                         'pin_dirs = ["/data1/pins"]') + '\n[daemon]\nretention_interval_ms = "1min"\n')
    assert config.state.pin_roots == (Path("/data1/pins"), Path("/var/lib/tiering/pins"))
    assert config.daemon.retention_interval_ms == 60_000
    assert load(DESIGN_EXAMPLE).daemon.retention_interval_ms == 300_000


def test_read_chunks_are_whole_pages_and_the_pool_holds_two():
    found = problems("""
        [kafka]
        log_dirs = ["/d"]
        [store]
        bucket = "b"
        [read]
        chunk_bytes = 10000
        buffer_pool_bytes = 12000
    """)
    assert found == ["read.chunk_bytes: must be a multiple of 4096 (4KiB), got 10000",
                     "read.buffer_pool_bytes: must hold at least two chunks (20000), got 12000"]


def test_allow_whole_bucket_defaults_off_and_the_layout_follows_prefix_and_hash():
    config = load(DESIGN_EXAMPLE)
    assert config.store.allow_whole_bucket is False
    assert (config.store.layout.prefix, config.store.layout.hash_prefix) == ("cluster-a/", False)
    allowed = load(DESIGN_EXAMPLE.replace('prefix = "cluster-a/"', 'prefix = "tiered"\nallow_whole_bucket = true\nhash_prefix = true'))
    assert allowed.store.allow_whole_bucket is True
    assert (allowed.store.layout.prefix, allowed.store.layout.hash_prefix) == ("tiered/", True)
    assert problems(DESIGN_EXAMPLE.replace('prefix = "cluster-a/"', 'allow_whole_bucket = "yes"')) == [
        "store.allow_whole_bucket: must be true or false, got 'yes'"]


def test_store_checksum_defaults_to_crc32c_and_takes_off_only():
    base = '[kafka]\nlog_dirs = ["/k"]\n[state]\ndir = "/s"\n[store]\nbucket = "b"\nprefix = "p/"\n'
    assert load(base).store.checksum == "crc32c"
    assert load(base + 'checksum = "off"\n').store.checksum == "off"
    assert problems(base + 'checksum = "md5"\n') == ["store.checksum: must be one of crc32c, off, got 'md5'"]
