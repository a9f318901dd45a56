"""`tiering status --config F [--json]`: local, remote and pending segments per partition."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from tiering.cli.main import add_config_argument
from tiering.cli.table import aligned
from tiering.cluster.chain import Chain
from tiering.cluster.identity import broker_identity
from tiering.cluster.leadership import (ClusterUnreachable, KafkaLeadership, LeadershipSource, LeadershipView,
                                        unknown_view)
from tiering.cluster.remote import chains_of_listing
from tiering.cluster.report import describe_cluster_row, partition_cluster_json
from tiering.config import Config, load_config
from tiering.errors import EXIT_FAILED, EXIT_OK
from tiering.journal import Journal
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.lock import probe_lock
from tiering.kafka.logdir import scan_log_dirs
from tiering.kafka.topicconfig import TopicConfigs, TopicConfigSource
from tiering.kafka.validbytes import valid_bytes
from tiering.retention.admin import KafkaConfigReader
from tiering.retention.configs import last_seen, read_configs
from tiering.retention.inputs import partition_views
from tiering.retention.plan import plan_retention
from tiering.rollback import confirm
from tiering.status import PartitionStatus, build_status
from tiering.store.errors import StoreError
from tiering.store.manifest import ManifestError, fetch_manifest
from tiering.store.owned import owned_objects
from tiering.units import format_bytes
from tiering.wiring import open_store


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("status", help="what is local, remote and pending, per partition")
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def _cluster_view(config: Config, topics: set[str],
                  source: LeadershipSource | None) -> tuple[LeadershipView, str | None]:
    """Leadership as the cluster says it now (status asks once; no tracker)."""
    identity = broker_identity(config.kafka.log_dirs)
    assert config.kafka.bootstrap_servers is not None
    source = source if source is not None else KafkaLeadership(config.kafka.bootstrap_servers)
    try:
        answer = source.describe(topics)
    except ClusterUnreachable as exc:
        return unknown_view(identity.broker_id), str(exc)
    finally:
        source.close()
    error = identity.problem if identity.broker_id is None else None
    return LeadershipView(identity.broker_id, answer, int(time.time() * 1000), True), error


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    document, rows, store_error = collect(config)
    if args.json:
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(rows, document)
    if store_error:
        print(f"tiering: remote columns unavailable: {store_error}", file=sys.stderr)
    return EXIT_FAILED if store_error else EXIT_OK


def collect(config: Config, leadership: LeadershipSource | None = None,
            config_source: TopicConfigSource | None = None) -> tuple[dict, list[PartitionStatus], str | None]:
    scan = scan_log_dirs(config.kafka.log_dirs)
    records, disabled, rollbacks = [], frozenset(), {}
    configs = TopicConfigs(bool(config.kafka.bootstrap_servers))
    if (config.state.dir / "journal.sqlite").exists():
        journal = Journal(config.state.dir)
        records = journal.all()
        disabled = frozenset(journal.disabled_topics())
        configs = last_seen(config, journal)
        rollbacks = confirm.load(journal.get_meta(confirm.JOURNAL_KEY))
        journal.close()
    now_ms = int(time.time() * 1000)
    configs = _read_configs(config, scan, records, configs, now_ms, config_source)
    locks = {state.path: probe_lock(state.path) for state in scan.log_dirs}
    plans = {}
    retention_configs = {}
    for view in partition_views(config, scan, records, disabled, valid_bytes, configs):
        if view.retention is not None:
            retention_configs[view.topic] = view.retention.to_json()
        plan = plan_retention(view.input, now_ms)
        if plan.local and view.local_delete == "unlink" and view.local is not None and locks[view.local.log_dir].held:
            plan = replace(plan, local=(), local_keep_from=None,
                           local_waiting=f"local_delete = unlink is refused while {locks[view.local.log_dir].detail}")
        plans[(view.topic, view.topic_id or "", view.partition)] = plan
    store = open_store(config)
    listing, store_error = None, None
    try:
        listing = list(owned_objects(store, config.store.layout))
    except StoreError as exc:
        store_error = str(exc)

    def end_offset_of(key: str) -> int | None:
        try:
            return fetch_manifest(store, key).end_offset
        except (StoreError, ManifestError):
            return None

    rows = build_status(scan, records, listing, TopicFilter(config.kafka.include, config.kafka.exclude, configs),
                        end_offset_of, plans, disabled, retention_configs)
    cluster: dict = {"mode": "single"}
    if config.cluster_mode:
        view, cluster_error = _cluster_view(config, {r.topic for r in rows}, leadership)
        chains = chains_of_listing(store, listing) if listing is not None else {}
        rows = [replace(r, cluster=partition_cluster_json(
                    view, r.topic, r.partition,
                    chains.get((r.topic, r.topic_id or "", r.partition), Chain.of([])) if listing is not None else None,
                    store_error))
                for r in rows]
        cluster = {"mode": "cluster", "broker_id": view.broker_id, "reachable": view.reachable,
                   "bootstrap_servers": config.kafka.bootstrap_servers, "error": cluster_error}
    store.close()
    document = {
        "partitions": [r.to_json() for r in rows],
        "log_dirs": [{"path": str(path), "broker_lock_held": lock.held, "broker_lock": lock.detail}
                     for path, lock in locks.items()],
        "anomalies": [{"path": a.path, "reason": a.reason} for a in scan.anomalies],
        "store": {"bucket": config.store.bucket, "prefix": config.store.prefix, "error": store_error},
        "topic_configs": {"from_kafka": configs.from_kafka, "read_at_ms": configs.read_at_ms, "error": configs.error},
        "cluster": cluster,
        # rollback --delete-remote: store copies waiting for the cluster to confirm (state
        # restored, waiting or undone, with the last check's words)
        "rollbacks": [{"partition": name, "topic": p.topic, "log_start": p.first_offset, "state": p.state,
                       "detail": p.detail, "requested_at_ms": p.requested_at_ms, "checked_at_ms": p.checked_at_ms}
                      for name, p in sorted(rollbacks.items())],
    }
    return document, rows, store_error


def _read_configs(config: Config, scan, records, previous: TopicConfigs, now_ms: int,
                  source: TopicConfigSource | None = None) -> TopicConfigs:
    """Kafka's topic configs now (bootstrap servers set), or the last ones the journal kept;
    status only reads, so nothing is written back."""
    if not config.kafka.bootstrap_servers:
        return TopicConfigs()
    source = source if source is not None else KafkaConfigReader(config.kafka.bootstrap_servers)
    try:
        return read_configs(config, source, {p.topic for p in scan.partitions} | {r.id.topic for r in records},
                            previous, now_ms, _Quiet())
    finally:
        source.close()


class _Quiet:
    """status says a failed read in its document, not as log events."""

    def warning(self, *args, **kwargs) -> None:
        pass

def print_table(rows: list[PartitionStatus], document: dict) -> None:
    cluster = document["cluster"]
    if cluster["mode"] == "single":
        print("Mode: single (no kafka.bootstrap_servers): this sidecar uploads every eligible segment it holds\n")
    else:
        reach = "reachable" if cluster["reachable"] else f"UNREACHABLE ({cluster['error']})"
        print(f"Mode: cluster, broker {cluster['broker_id']}, cluster {reach}: "
              "this sidecar uploads only the partitions its broker leads\n")
    header = ("PARTITION", "LOCAL", "LOCAL FROM", "REMOTE", "REMOTE OFFSETS", "PENDING", "TIERED", "LAST ERROR")
    table = [header]
    for r in rows:
        remote = "?" if r.remote_segments is None else f"{r.remote_segments} ({format_bytes(r.remote_bytes or 0)})"
        extent = "-" if r.remote_start_offset is None else f"{r.remote_start_offset}..{r.highest_remote_offset}"
        table.append((f"{r.topic}-{r.partition}", f"{r.local_segments} ({format_bytes(r.local_bytes)})",
                      "-" if r.local_start_offset is None else str(r.local_start_offset), remote, extent,
                      str(r.pending_segments), "yes" if r.tiering_enabled else "no", (r.last_error or "")[:100]))
    for line in aligned(table):
        print(line)
    if cluster["mode"] == "cluster":
        print("\nCluster (this broker's role; the chain of every broker's uploads):")
        for r in rows:
            if r.cluster is not None:
                print(describe_cluster_row(f"{r.topic}-{r.partition}", r.cluster))
    print("\nRetention (what the next pass does):")
    for r in rows:
        if r.retention is None:
            continue
        plan = r.retention
        steps = [f"delete {tier} {d.base_offset} ({d.reason}, {format_bytes(d.size)})"
                 for tier, deletions in (("remote", plan.remote), ("local", plan.local)) for d in deletions]
        waits = [f"{tier} kept: {why}" for tier, why in (("local", plan.local_waiting), ("remote", plan.remote_waiting))
                 if why]
        print(f"  {r.topic}-{r.partition}: {'; '.join(steps + waits) or 'nothing to do'}")
        if r.retention_config:
            limits = ", ".join(f"{key}={entry['value']} ({entry['source']})" for key, entry in r.retention_config.items())
            print(f"    limits: {limits}")
    if document["topic_configs"]["error"]:
        print(f"\nTopic configs not read from Kafka ({document['topic_configs']['error']}); the last ones seen apply")
    for entry in document["log_dirs"]:
        if entry["broker_lock_held"]:
            print(f"\n{entry['path']}: {entry['broker_lock']} (local_delete = unlink deletes nothing here)")
    reasons = [(f"{r.topic}-{r.partition}", s) for r in rows for s in r.not_tiered]
    if reasons:
        print("\nNot tiered:")
        for name, skipped in reasons:
            print(f"  {name} @{skipped.base_offset}: {skipped.reason}")
    if document["rollbacks"]:
        print("\nRollbacks whose store copies wait for the cluster (rollback --delete-remote):")
        for entry in document["rollbacks"]:
            loud = "UNDONE: " if entry["state"] == confirm.UNDONE else ""
            print(f"  {entry['partition']}: {loud}{entry['detail'] or 'not checked yet'} (restored log start "
                  f"{entry['log_start']})")
    if document["anomalies"]:
        print("\nSkipped in the log dirs:")
        for anomaly in document["anomalies"]:
            print(f"  {anomaly['path']}: {anomaly['reason']}")
