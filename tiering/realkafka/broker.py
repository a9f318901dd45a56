"""One real Apache Kafka broker (KRaft, combined broker + controller) on loopback.

`Broker(workdir, libs)` writes a server.properties and a log4j2 config into `workdir`, formats
the storage once (`kafka.tools.StorageTool format`) and runs `kafka.Kafka` as a child process.
Every wait is bounded; a broker that does not come up raises `BrokerError` with the last lines
of its own log. The log dir and the metadata log dir are separate, so the sidecar's log dir
holds only partitions (and the broker's checkpoints), as on a production broker with
`metadata.log.dir` set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# The broker's own minimum for log.segment.bytes (1 MiB since Kafka 4.0, KIP-1030); topics
# that want smaller segments set their own segment.bytes where the version allows it.
MIN_SEGMENT_BYTES = 1024 * 1024

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="kafka.server.KafkaConfig" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class BrokerError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    workdir: Path
    libs: Path
    log_dir: Path | None = None
    node_id: int = 1
    heap: str = "384m"
    extra_props: dict[str, str] = field(default_factory=dict)
    port: int = 0
    controller_port: int = 0
    # A member of a cluster shares the cluster id and the static quorum ("1@host:port,...");
    # alone, the node is its own single voter with a fresh cluster id.
    cluster_id: str | None = None
    quorum_voters: str | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(self.log_dir or self.workdir / "kafka-logs")
        self.metadata_dir = self.workdir / "kraft-metadata"
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        self.broker_log = self.workdir / "broker.log"
        self.props_path = self.workdir / "server.properties"
        self.log4j_path = self.workdir / "log4j2.xml"
        self._write_configs()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_configs(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "metadata.log.dir": str(self.metadata_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(MIN_SEGMENT_BYTES),
            "replica.high.watermark.checkpoint.interval.ms": "1000",
            "log.flush.offset.checkpoint.interval.ms": "1000",
            "log.flush.start.offset.checkpoint.interval.ms": "1000",
            "log.retention.check.interval.ms": "1000",
            "log.initial.task.delay.ms": "500",
            "file.delete.delay.ms": "1000",
            "log.cleaner.backoff.ms": "1000",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
        }
        props.update(self.extra_props)
        self.props_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j_path.write_text(_LOG4J2.format(log=self.broker_log))

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:CICompilerCount=2", "-Xshare:auto", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def format(self) -> None:
        """Format the storage (once: a formatted dir keeps its meta.properties)."""
        if (self.metadata_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id or _cluster_id()
        proc = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={self.props_path}"),
            capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BrokerError(f"kafka StorageTool format failed (exit {proc.returncode}):\n"
                              f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    def start(self, timeout: float = 90) -> None:
        self.launch()
        self.wait_started(timeout)

    def launch(self) -> None:
        """Format if needed and start the JVM, without waiting (a cluster's nodes start together:
        none of them serves before the quorum has a leader)."""
        self.format()
        with open(self.workdir / "broker.stdout", "ab") as out:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(self.props_path)),
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"the broker exited with {self.proc.returncode} while starting:\n{self.tail()}")
            if self._serving():
                return
            time.sleep(0.3)
        self.kill()
        raise BrokerError(f"the broker did not start within {timeout:.0f}s:\n{self.tail()}")

    def _serving(self) -> bool:
        # "Kafka Server started" / "[KafkaRaftServer nodeId=1] Kafka Server started"
        try:
            text = self.broker_log.read_text(errors="replace")
        except FileNotFoundError:
            return False
        marker = text.rfind("Kafka Server started")
        if marker < 0 or marker < self._log_mark:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    _log_mark: int = 0

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait for a clean shutdown; kill -9 after `timeout`. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        self._mark_log()
        return code

    def kill(self) -> None:
        """kill -9: no shutdown hook, no final checkpoint, as a crash or the OOM killer."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._mark_log()

    def _mark_log(self) -> None:
        # A restart waits for a new "started" line, not the previous run's.
        try:
            self._log_mark = self.broker_log.stat().st_size
        except FileNotFoundError:
            self._log_mark = 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            text = self.broker_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text

    def tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log, and of its stdout/stderr (where a JVM that could
        not start says why)."""
        out = self.workdir / "broker.stdout"
        stdout = out.read_text(errors="replace").splitlines()[-15:] if out.exists() else []
        return "\n".join(self.log_text().splitlines()[-lines:] + (["--- stdout/stderr ---", *stdout] if stdout else []))


def _cluster_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): 16 random bytes, URL-safe base64, no padding.
    import base64
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
