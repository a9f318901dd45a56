"""Fetch a pinned Apache Kafka release's jars from Maven Central into a cache outside the repo.

`python -m tiering.realkafka.fetch` (or scripts/fetch-kafka) puts the broker's jars, with a
log4j2 backend so the broker's own log is readable, in
`$XDG_CACHE_HOME/tiering/kafka-<version>/libs` (default `~/.cache/...`). Idempotent: a
`.complete` marker is written last, so an interrupted fetch is redone and a finished one is
not. `TIERING_KAFKA_VERSION` selects the version.

Maven does the resolving (a generated pom and `dependency:copy-dependencies`), rather than a
hand-written downloader: Kafka's broker pulls ~100 transitive jars whose versions only its
poms know.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# 4.1.1: the newest 4.x line with a patch release out for months (4.1.0 -> 4.1.1), on the
# Java 17 the machines have; 4.2+ lines were newer than the tooling verified here.
DEFAULT_VERSION = "4.1.1"
# The broker logs through SLF4J 1.7 (slf4j-api 1.7.36 in both 3.9.x and 4.x), bound here to
# log4j2 by log4j-slf4j-impl (the binding Kafka 4's own distribution ships).
LOG4J_VERSION = "2.24.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tiering.local</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


class FetchError(Exception):
    pass


def kafka_version() -> str:
    return os.environ.get("TIERING_KAFKA_VERSION") or DEFAULT_VERSION


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tiering"


def kafka_home(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or kafka_version()}"


def is_fetched(version: str | None = None) -> bool:
    return (kafka_home(version) / ".complete").exists()


def _artifacts(version: str) -> list[tuple[str, str, str]]:
    arts = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.kafka", "kafka-tools", version),
        ("org.apache.kafka", "kafka-storage", version),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    return arts


def _exclusions(version: str) -> str:
    # 3.9.x brings slf4j-reload4j/reload4j in some modules; a second SLF4J binding would win
    # at random, so they go.
    if int(version.split(".")[0]) >= 4:
        return ""
    return (
        "<exclusions><exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>"
        "</exclusion><exclusion><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId>"
        "</exclusion></exclusions>"
    )


def fetch(version: str | None = None, *, quiet: bool = False) -> Path:
    """Return the libs dir of `version`, fetching it first when not already complete."""
    version = version or kafka_version()
    home = kafka_home(version)
    libs = home / "libs"
    if (home / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("mvn not found: install Maven (apt-get install maven) to fetch Kafka")
    if shutil.which("java") is None:
        raise FetchError("java not found: install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
    home.mkdir(parents=True, exist_ok=True)
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version>{_exclusions(version) if g == 'org.apache.kafka' else ''}</dependency>"
        for g, a, v in _artifacts(version)
    )
    if not quiet:
        print(f"fetching Apache Kafka {version} jars with Maven into {libs} (first time only)",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=home) as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(_POM.format(deps=deps))
        staging = Path(work) / "libs"
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise FetchError(f"mvn could not fetch Apache Kafka {version} (exit {proc.returncode}):\n{tail}")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    (home / ".complete").write_text(version + "\n")
    return libs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    version = args[0] if args else None
    try:
        libs = fetch(version)
    except FetchError as e:
        print(f"tiering: {e}", file=sys.stderr)
        return 1
    print(libs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
