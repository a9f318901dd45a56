"""TOML configuration parsed once, at the edge, into frozen dataclasses.

Every problem is collected and reported as one line (`upload.concurrency: must be >= 1, got
0`) so an operator fixes a file in one go instead of one error per restart. Unknown keys are
errors: a misspelt retention key silently falling back to a default is how data goes missing.
Credentials are never read from this file; the S3 client uses the standard AWS chain.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from tiering.errors import ConfigError
from tiering.store.keys import KeyLayout
from tiering.units import parse_duration_ms, parse_size

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest multipart part (except the last)
MAX_PART_SIZE = 5 * 1024**3
LOCAL_DELETE_MODES = ("unlink", "kafka-admin", "off")
ADDRESSING_STYLES = ("auto", "path", "virtual")
# store.checksum: "crc32c" sends the walk's CRC-32C with every PUT and part for the store to
# verify; "off" sends none (stores that reject checksum headers).
CHECKSUM_MODES = ("crc32c", "off")


@dataclass(frozen=True)
class KafkaConfig:
    log_dirs: tuple[Path, ...]
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    bootstrap_servers: str | None = None


@dataclass(frozen=True)
class StoreConfig:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    storage_class: str = "STANDARD"
    # Extension of design.md: a short hash of topic id and partition in front of each
    # partition's keys spreads request load across S3 key partitions.
    hash_prefix: bool = False
    # Extension of design.md: how long a request may wait to connect, and for each read of
    # the answer, before botocore gives up on the attempt and retries it (a stalled store).
    connect_timeout_ms: int = 10_000
    read_timeout_ms: int = 60_000
    # Extension of design.md: with an empty prefix our layout root is the bucket's root, and
    # `run` (whose total retention and sweep delete from the store) refuses to start unless
    # this says the bucket is this deployment's alone (see tiering.cli.run).
    allow_whole_bucket: bool = False
    # Extension of design.md: an AWS shared-credentials file (e.g. systemd's LoadCredential=
    # in $CREDENTIALS_DIRECTORY), so the secret is not in the process's environment; None:
    # boto3's standard chain.
    credentials_file: Path | None = None
    # Extension of design.md: the checksum sent with each upload for the store to verify
    # (CHECKSUM_MODES).
    checksum: str = "crc32c"

    @property
    def layout(self) -> KeyLayout:
        """The keys this deployment owns (tiering.store.keys.KeyLayout.parse)."""
        return KeyLayout(self.prefix, self.hash_prefix)


@dataclass(frozen=True)
class UploadConfig:
    concurrency: int = 4
    rate_limit_bytes_per_second: int = 0
    part_size_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class RetentionPolicy:
    """Kafka's meanings: -1 unlimited; -2 (local only) the same as the total value."""

    local_retention_ms: int = -2
    local_retention_bytes: int = -2
    retention_ms: int = 7 * 86_400_000
    retention_bytes: int = -1
    local_delete: str = "unlink"


@dataclass(frozen=True)
class ReadConfig:
    buffer_pool_bytes: int = 256 * 1024 * 1024
    chunk_bytes: int = 4 * 1024 * 1024
    prefetch_bytes: int = 128 * 1024 * 1024
    rate_limit_bytes_per_second: int = 0


@dataclass(frozen=True)
class StateConfig:
    dir: Path = Path("/var/lib/tiering")
    # Extension of design.md: where hard links pin segments not yet uploaded (same file system
    # as the log dir; never inside it). Each log dir uses the first on its file system, then
    # `dir`/pins.
    pin_dirs: tuple[Path, ...] = ()

    @property
    def pin_roots(self) -> tuple[Path, ...]:
        return (*self.pin_dirs, self.dir / "pins")


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class DaemonConfig:
    """How `tiering run` (without --once) watches and cleans up (an extension of design.md)."""

    watch: bool = True                        # inotify hints; the reconcile scan runs either way
    reconcile_interval_ms: int = 60_000
    shutdown_grace_ms: int = 8_000            # uploads in flight get this long after SIGTERM
    sweep_interval_ms: int = 3_600_000        # stale multipart uploads and orphans
    retention_interval_ms: int = 300_000      # Kafka's log.retention.check.interval.ms
    stale_multipart_ms: int = 3_600_000
    orphan_ms: int = 86_400_000
    fatal_retry_ms: int = 60_000              # uploads pause this long after the store refuses them


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster mode (kafka.bootstrap_servers set; an extension of design.md, issue 19)."""

    metadata_refresh_ms: int = 10_000     # leadership is asked for this often; stale after 2x
    chain_refresh_ms: int = 30_000        # a partition's manifests from every broker, listed again
    claim_timeout_ms: int = 600_000       # another broker's claim without a manifest is abandoned after
    claims: str = "auto"                  # conditional-PUT claims: "auto" (if the store has it), "on", "off"


CLAIM_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ServeConfig:
    """The Kafka-protocol endpoint (issue 20; an extension of design.md). listen "" = off."""

    listen: str = ""
    advertised_host: str = ""                 # "": the listen host (this host's name if a wildcard)
    peers: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))  # broker id -> "host:port"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None           # set: client certificates are required (mutual TLS)
    allow_plaintext: bool = False             # plaintext on a non-loopback address
    topic_allowlist: Mapping[str, tuple[str, ...]] | None = None  # client cert subject -> topic patterns
    max_connections: int = 128
    max_request_bytes: int = 1024 * 1024
    max_inflight_bytes: int = 16 * 1024 * 1024   # per connection: the largest answer it is sent

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig
    store: StoreConfig
    upload: UploadConfig = field(default_factory=UploadConfig)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    topics: Mapping[str, RetentionPolicy] = field(default_factory=lambda: MappingProxyType({}))
    read: ReadConfig = field(default_factory=ReadConfig)
    state: StateConfig = field(default_factory=StateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    @property
    def cluster_mode(self) -> bool:
        """With bootstrap servers the sidecar follows the cluster's leadership (issue 19)."""
        return bool(self.kafka.bootstrap_servers)

    def retention_for(self, topic: str) -> RetentionPolicy:
        return self.topics.get(topic, self.retention)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raises ConfigError with one line per problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, ["file not found: pass --config with the path of a tiering.toml"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror}"]) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    return parse_config(document, source=source, base_dir=Path(path).resolve().parent)


def parse_config(document: Mapping[str, Any], *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    reader = _Reader(document, base_dir or Path.cwd())
    config = reader.config()
    if reader.problems:
        raise ConfigError(source, reader.problems)
    assert config is not None
    return config


def _loopback(host: str) -> bool:
    import ipaddress
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False      # a name other than localhost may resolve anywhere


class _Reader:
    """Walks the document, collecting one problem line per bad key instead of stopping."""

    def __init__(self, document: Mapping[str, Any], base_dir: Path):
        self.document = document
        self.base_dir = base_dir
        self.problems: list[str] = []

    def config(self) -> Config | None:
        known = {"kafka", "store", "upload", "retention", "topics", "read", "state", "metrics", "daemon", "cluster",
                 "serve"}
        self._unknown("", self.document, known)
        kafka = self._kafka(self._table("kafka", required=True))
        store = self._store(self._table("store", required=True))
        upload = self._upload(self._table("upload"))
        retention = self._retention("retention", self._table("retention"), RetentionPolicy())
        topics = {}
        for topic, table in self._table("topics").items():
            if not isinstance(table, Mapping):
                self.problems.append(f"topics.{topic}: must be a table of retention keys")
                continue
            topics[topic] = self._retention(f'topics."{topic}"', table, retention)
        read = self._read(self._table("read"))
        state = self._state(self._table("state"))
        metrics = self._metrics(self._table("metrics"))
        daemon = self._daemon(self._table("daemon"))
        cluster = self._cluster(self._table("cluster"))
        serve = self._serve(self._table("serve"))
        admin = [name for name, policy in (("retention", retention), *((f'topics."{t}"', p) for t, p in topics.items()))
                 if policy.local_delete == "kafka-admin"]
        if admin and not kafka.bootstrap_servers:
            self.problems.append(f"kafka.bootstrap_servers: required for local_delete = \"kafka-admin\" "
                                 f"(used by {', '.join(admin)}): the broker's address, e.g. \"127.0.0.1:9092\"")
        if self.problems:
            return None
        return Config(kafka, store, upload, retention, MappingProxyType(topics), read, state, metrics, daemon,
                      cluster, serve)

    # -- sections --------------------------------------------------------------------

    def _kafka(self, t: Mapping[str, Any]) -> KafkaConfig:
        self._unknown("kafka", t, {"log_dirs", "include", "exclude", "bootstrap_servers"})
        log_dirs = self._strings("kafka", t, "log_dirs", None)
        if log_dirs is not None and not log_dirs:
            self.problems.append("kafka.log_dirs: must list at least one log directory")
        bootstrap = self._string("kafka", t, "bootstrap_servers", None)
        for server in (bootstrap.split(",") if bootstrap else ()):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                self.problems.append(f"kafka.bootstrap_servers: {server.strip()!r} is not host:port "
                                     "(a comma-separated list, e.g. \"10.0.0.1:9092,10.0.0.2:9092\")")
        return KafkaConfig(
            log_dirs=tuple(self._path(d) for d in (log_dirs or ())),
            include=tuple(self._strings("kafka", t, "include", ["*"]) or ()),
            exclude=tuple(self._strings("kafka", t, "exclude", []) or ()),
            bootstrap_servers=bootstrap or None,
        )

    def _store(self, t: Mapping[str, Any]) -> StoreConfig:
        self._unknown("store", t, {"bucket", "prefix", "endpoint_url", "region", "addressing_style",
                                   "storage_class", "hash_prefix", "connect_timeout_ms", "read_timeout_ms",
                                   "allow_whole_bucket", "credentials_file", "checksum"})
        for secret in ("aws_access_key_id", "aws_secret_access_key", "access_key", "secret_key"):
            if secret in t:
                self.problems.append(f"store.{secret}: credentials never go in this file; use an instance "
                                     "role, store.credentials_file or the standard AWS chain")
        bucket = self._string("store", t, "bucket", None) or ""
        credentials = self._string("store", t, "credentials_file", "")
        prefix = self._string("store", t, "prefix", "") or ""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix.startswith("/"):
            self.problems.append(f"store.prefix: must not start with '/', got {prefix!r}")
        style = self._string("store", t, "addressing_style", "auto")
        if style not in ADDRESSING_STYLES:
            self.problems.append(f"store.addressing_style: must be one of {', '.join(ADDRESSING_STYLES)}, got {style!r}")
        checksum = self._string("store", t, "checksum", "crc32c")
        if checksum not in CHECKSUM_MODES:
            self.problems.append(f"store.checksum: must be one of {', '.join(CHECKSUM_MODES)}, got {checksum!r}")
        return StoreConfig(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=self._string("store", t, "endpoint_url", None) or None,
            region=self._string("store", t, "region", None) or None,
            addressing_style=style or "auto",
            storage_class=self._string("store", t, "storage_class", "STANDARD") or "STANDARD",
            hash_prefix=self._bool("store", t, "hash_prefix", False),
            connect_timeout_ms=self._at_least("store", t, "connect_timeout_ms", StoreConfig.connect_timeout_ms,
                                              100, parse_duration_ms),
            read_timeout_ms=self._at_least("store", t, "read_timeout_ms", StoreConfig.read_timeout_ms,
                                           100, parse_duration_ms),
            allow_whole_bucket=self._bool("store", t, "allow_whole_bucket", False),
            credentials_file=self._path(credentials) if credentials else None,
            checksum=checksum or "crc32c",
        )

    def _upload(self, t: Mapping[str, Any]) -> UploadConfig:
        self._unknown("upload", t, {"concurrency", "rate_limit_bytes_per_second", "part_size_bytes"})
        d = UploadConfig()
        part = self._number("upload", t, "part_size_bytes", d.part_size_bytes, parse_size)
        if not MIN_PART_SIZE <= part <= MAX_PART_SIZE:
            self.problems.append(f"upload.part_size_bytes: must be between 5MiB and 5GiB (S3's part limits), got {part}")
        return UploadConfig(
            concurrency=self._at_least("upload", t, "concurrency", d.concurrency, 1, int_only=True),
            rate_limit_bytes_per_second=self._at_least("upload", t, "rate_limit_bytes_per_second",
                                                       d.rate_limit_bytes_per_second, 0, parse_size),
            part_size_bytes=part,
        )

    def _retention(self, section: str, t: Mapping[str, Any], defaults: RetentionPolicy) -> RetentionPolicy:
        self._unknown(section, t, {"local_retention_ms", "local_retention_bytes", "retention_ms",
                                   "retention_bytes", "local_delete"})
        total_ms = self._number(section, t, "retention_ms", defaults.retention_ms, parse_duration_ms)
        total_bytes = self._number(section, t, "retention_bytes", defaults.retention_bytes, parse_size)
        local_ms = self._number(section, t, "local_retention_ms", defaults.local_retention_ms, parse_duration_ms)
        local_bytes = self._number(section, t, "local_retention_bytes", defaults.local_retention_bytes, parse_size)
        for key, value in (("retention_ms", total_ms), ("retention_bytes", total_bytes)):
            if value < -1:
                self.problems.append(f"{section}.{key}: must be -1 (unlimited) or >= 0, got {value}")
        for key, value, total in (("local_retention_ms", local_ms, total_ms),
                                  ("local_retention_bytes", local_bytes, total_bytes)):
            inherited = section != "retention" and key not in t and key.removeprefix("local_") not in t
            if inherited:
                continue  # a topic that sets neither key inherits a pair already checked once
            if value < -2:
                self.problems.append(f"{section}.{key}: must be -2 (same as total), -1 (unlimited) or >= 0, got {value}")
            elif value != -2 and total >= 0 and (value == -1 or value > total):
                total_key = key.removeprefix("local_")
                self.problems.append(f"{section}.{key}: must not exceed {total_key} ({total}), got {value}")
        mode = self._string(section, t, "local_delete", defaults.local_delete)
        if mode not in LOCAL_DELETE_MODES:
            self.problems.append(f"{section}.local_delete: must be one of {', '.join(LOCAL_DELETE_MODES)}, got {mode!r}")
        return RetentionPolicy(local_ms, local_bytes, total_ms, total_bytes, mode or defaults.local_delete)

    def _read(self, t: Mapping[str, Any]) -> ReadConfig:
        self._unknown("read", t, {"buffer_pool_bytes", "chunk_bytes", "prefetch_bytes", "rate_limit_bytes_per_second"})
        d = ReadConfig()
        chunk = self._at_least("read", t, "chunk_bytes", d.chunk_bytes, 4096, parse_size)
        if chunk % 4096:
            # Cold local chunks are read with O_DIRECT straight into the slabs, which needs
            # offsets and lengths in whole pages.
            self.problems.append(f"read.chunk_bytes: must be a multiple of 4096 (4KiB), got {chunk}")
        pool = self._at_least("read", t, "buffer_pool_bytes", d.buffer_pool_bytes, 0, parse_size)
        if chunk and pool and pool < 2 * chunk:
            self.problems.append(f"read.buffer_pool_bytes: must hold at least two chunks ({2 * chunk}), got {pool}")
        return ReadConfig(
            buffer_pool_bytes=pool,
            chunk_bytes=chunk,
            prefetch_bytes=self._at_least("read", t, "prefetch_bytes", d.prefetch_bytes, 0, parse_size),
            rate_limit_bytes_per_second=self._at_least("read", t, "rate_limit_bytes_per_second",
                                                       d.rate_limit_bytes_per_second, 0, parse_size),
        )

    def _state(self, t: Mapping[str, Any]) -> StateConfig:
        self._unknown("state", t, {"dir", "pin_dirs"})
        value = self._string("state", t, "dir", str(StateConfig().dir))
        pin_dirs = self._strings("state", t, "pin_dirs", []) or []
        return StateConfig(dir=self._path(value or str(StateConfig().dir)),
                           pin_dirs=tuple(self._path(p) for p in pin_dirs))

    def _metrics(self, t: Mapping[str, Any]) -> MetricsConfig:
        self._unknown("metrics", t, {"listen"})
        listen = self._string("metrics", t, "listen", MetricsConfig().listen) or ""
        if listen:
            host, _, port = listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                self.problems.append(f"metrics.listen: must be \"host:port\" or \"\" to disable, got {listen!r}")
        return MetricsConfig(listen=listen)

    def _daemon(self, t: Mapping[str, Any]) -> DaemonConfig:
        d = DaemonConfig()
        self._unknown("daemon", t, {"watch", "reconcile_interval_ms", "shutdown_grace_ms", "sweep_interval_ms",
                                    "stale_multipart_ms", "orphan_ms", "retention_interval_ms", "fatal_retry_ms"})
        grace = self._at_least("daemon", t, "shutdown_grace_ms", d.shutdown_grace_ms, 0, parse_duration_ms)
        if grace > 9_000:
            # systemd and operators expect an exit within 10 s of SIGTERM; cleanup needs the rest
            self.problems.append(f"daemon.shutdown_grace_ms: must be at most 9s, got {grace}")
        return DaemonConfig(
            watch=self._bool("daemon", t, "watch", d.watch),
            reconcile_interval_ms=self._at_least("daemon", t, "reconcile_interval_ms", d.reconcile_interval_ms,
                                                 100, parse_duration_ms),
            shutdown_grace_ms=grace,
            sweep_interval_ms=self._at_least("daemon", t, "sweep_interval_ms", d.sweep_interval_ms, 1000,
                                             parse_duration_ms),
            stale_multipart_ms=self._at_least("daemon", t, "stale_multipart_ms", d.stale_multipart_ms, 0,
                                              parse_duration_ms),
            orphan_ms=self._at_least("daemon", t, "orphan_ms", d.orphan_ms, 0, parse_duration_ms),
            retention_interval_ms=self._at_least("daemon", t, "retention_interval_ms", d.retention_interval_ms,
                                                 100, parse_duration_ms),
            fatal_retry_ms=self._at_least("daemon", t, "fatal_retry_ms", d.fatal_retry_ms, 1000, parse_duration_ms),
        )

    def _cluster(self, t: Mapping[str, Any]) -> ClusterConfig:
        d = ClusterConfig()
        self._unknown("cluster", t, {"metadata_refresh_s", "chain_refresh_s", "claim_timeout_s", "claims"})
        claims = self._string("cluster", t, "claims", d.claims)
        if claims not in CLAIM_MODES:
            self.problems.append(f"cluster.claims: must be one of {', '.join(CLAIM_MODES)}, got {claims!r}")
        return ClusterConfig(
            metadata_refresh_ms=self._seconds("cluster", t, "metadata_refresh_s", d.metadata_refresh_ms, 100),
            chain_refresh_ms=self._seconds("cluster", t, "chain_refresh_s", d.chain_refresh_ms, 100),
            claim_timeout_ms=self._seconds("cluster", t, "claim_timeout_s", d.claim_timeout_ms, 1000),
            claims=claims if claims in CLAIM_MODES else d.claims,
        )

    def _serve(self, t: Mapping[str, Any]) -> ServeConfig:
        d = ServeConfig()
        self._unknown("serve", t, {"listen", "advertised_host", "peers", "tls_cert_file", "tls_key_file",
                                   "tls_ca_file", "allow_plaintext", "topic_allowlist", "max_connections",
                                   "max_request_bytes", "max_inflight_bytes"})
        listen = self._string("serve", t, "listen", d.listen) or ""
        host = ""
        if listen:
            host, _, port = listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                self.problems.append(f"serve.listen: must be \"host:port\" (e.g. \"127.0.0.1:9093\") or \"\" "
                                     f"to disable, got {listen!r}")
                host = ""
        peers: dict[int, str] = {}
        raw_peers = t.get("peers", {})
        if not isinstance(raw_peers, Mapping):
            self.problems.append("serve.peers: must be a table of \"broker id\" = \"host:port\"")
            raw_peers = {}
        for broker, address in raw_peers.items():
            peer_host, _, peer_port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not str(broker).isdigit() or not peer_host or not peer_port.isdigit():
                self.problems.append(f"serve.peers.{broker}: must be \"broker id\" = \"host:port\", "
                                     f"got {broker!r} = {address!r}")
                continue
            peers[int(broker)] = address
        cert, key, ca = (self._string("serve", t, k, None) for k in ("tls_cert_file", "tls_key_file", "tls_ca_file"))
        if bool(cert) != bool(key):
            self.problems.append("serve.tls_cert_file, serve.tls_key_file: set both (TLS) or neither")
        if ca and not cert:
            self.problems.append("serve.tls_ca_file: client certificates need TLS: set serve.tls_cert_file "
                                 "and serve.tls_key_file too")
        allow_plaintext = self._bool("serve", t, "allow_plaintext", d.allow_plaintext)
        if host and not cert and not allow_plaintext and not _loopback(host):
            self.problems.append(f"serve.listen: {listen!r} is not a loopback address and no TLS is set: set "
                                 "serve.tls_cert_file and serve.tls_key_file, or serve.allow_plaintext = true")
        allowlist: dict[str, tuple[str, ...]] | None = None
        if "topic_allowlist" in t:
            raw = t["topic_allowlist"]
            allowlist = {}
            if not isinstance(raw, Mapping):
                self.problems.append("serve.topic_allowlist: must be a table of \"certificate subject\" = "
                                     "[topic patterns]")
                raw = {}
            elif not ca:
                self.problems.append("serve.topic_allowlist: needs client certificates: set serve.tls_ca_file")
            for subject, patterns in raw.items():
                if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
                    self.problems.append(f"serve.topic_allowlist.{subject!r}: must be a list of topic patterns, "
                                         f"got {patterns!r}")
                    continue
                allowlist[subject] = tuple(patterns)
        return ServeConfig(
            listen=listen if host else "",
            advertised_host=self._string("serve", t, "advertised_host", d.advertised_host) or "",
            peers=MappingProxyType(peers),
            tls_cert_file=self._path(cert) if cert else None,
            tls_key_file=self._path(key) if key else None,
            tls_ca_file=self._path(ca) if ca else None,
            allow_plaintext=allow_plaintext,
            topic_allowlist=MappingProxyType(allowlist) if allowlist is not None else None,
            max_connections=self._at_least("serve", t, "max_connections", d.max_connections, 1, int_only=True),
            max_request_bytes=self._at_least("serve", t, "max_request_bytes", d.max_request_bytes, 1024, parse_size),
            max_inflight_bytes=self._at_least("serve", t, "max_inflight_bytes", d.max_inflight_bytes, 1024,
                                              parse_size),
        )

    def _seconds(self, section: str, t: Mapping[str, Any], key: str, default_ms: int, minimum_ms: int) -> int:
        """A key in seconds (a number, e.g. 10 or 0.5, or a duration string like "10s"), in ms."""
        if key not in t:
            return default_ms
        value = t[key]
        try:
            if isinstance(value, bool):
                raise ValueError(f"expected seconds, got {value!r}")
            ms = round(value * 1000) if isinstance(value, (int, float)) else parse_duration_ms(value)
        except ValueError as exc:
            self.problems.append(f"{section}.{key}: {exc}")
            return default_ms
        if ms < minimum_ms:
            self.problems.append(f"{section}.{key}: must be >= {minimum_ms / 1000:g} s, got {value!r}")
            return default_ms
        return ms

    # -- typed getters ------------------------------------------------------------------

    def _table(self, name: str, required: bool = False) -> Mapping[str, Any]:
        value = self.document.get(name)
        if value is None:
            if required:
                self.problems.append(f"[{name}]: missing section")
            return {}
        if not isinstance(value, Mapping):
            self.problems.append(f"{name}: must be a table ([{name}])")
            return {}
        return value

    def _unknown(self, section: str, t: Mapping[str, Any], known: set[str]) -> None:
        for key in t:
            if key not in known:
                where = f"{section}.{key}" if section else key
                self.problems.append(f"{where}: unknown key (known: {', '.join(sorted(known))})")

    def _string(self, section: str, t: Mapping[str, Any], key: str, default: str | None) -> str | None:
        if key not in t:
            if default is None and key in ("bucket", "log_dirs"):
                self.problems.append(f"{section}.{key}: required")
            return default
        value = t[key]
        if not isinstance(value, str):
            self.problems.append(f"{section}.{key}: must be a string, got {value!r}")
            return default
        if key == "bucket" and not value:
            self.problems.append(f"{section}.{key}: must not be empty")
        return value

    def _strings(self, section: str, t: Mapping[str, Any], key: str, default: list[str] | None) -> list[str] | None:
        if key not in t:
            if default is None:
                self.problems.append(f"{section}.{key}: required")
            return default
        value = t[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{section}.{key}: must be a list of non-empty strings, got {value!r}")
            return default
        return value

    def _bool(self, section: str, t: Mapping[str, Any], key: str, default: bool) -> bool:
        value = t.get(key, default)
        if not isinstance(value, bool):
            self.problems.append(f"{section}.{key}: must be true or false, got {value!r}")
            return default
        return value

    def _number(self, section: str, t: Mapping[str, Any], key: str, default: int,
                parse: Callable[[object], int] | None = None) -> int:
        if key not in t:
            return default
        value = t[key]
        try:
            if parse is None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"expected an integer, got {value!r}")
                return value
            return parse(value)
        except ValueError as exc:
            self.problems.append(f"{section}.{key}: {exc}")
            return default

    def _at_least(self, section: str, t: Mapping[str, Any], key: str, default: int, minimum: int,
                  parse: Callable[[object], int] | None = None, int_only: bool = False) -> int:
        value = self._number(section, t, key, default, None if int_only else parse)
        if value < minimum:
            self.problems.append(f"{section}.{key}: must be >= {minimum}, got {value}")
            return default
        return value

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)
