"""Prometheus metrics, on an explicit registry (tests and benchmarks use a fresh one).

Names follow design.md: `tiering_` prefix, the unit in the name. Labels are from small fixed
vocabularies (result, error class, reason), never keys, paths or anything from the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Roll-to-remote latency buckets: sub-second at idle up to hours for a deep backlog.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 14400, float("inf"))


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    uploaded_segments: Counter
    uploaded_bytes: Counter
    backlog_segments: Gauge
    backlog_bytes: Gauge
    oldest_pending_age: Gauge
    rate_limit_wait: Counter
    retries: Counter
    roll_to_remote: Histogram
    in_flight: Gauge
    muted_partitions: Gauge
    reconciles: Counter
    reconcile_duration: Gauge
    partitions: Gauge
    anomalies: Gauge
    config_reloads: Counter
    swept: Counter
    ready: Gauge
    rescued: Counter
    pinned_segments: Gauge
    retention_deleted_segments: Counter
    retention_deleted_bytes: Counter
    retention_blocked_log_dirs: Gauge
    retention_failures: Counter
    retention_passes: Counter
    disabled_topics: Gauge
    cluster_reachable: Gauge
    cluster_partitions: Gauge
    rollback_pending: Gauge
    rollback_undone: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            uploaded_segments=Counter("tiering_upload_segments", "Segment upload attempts that ended, by result "
                                      "(uploaded, retried, failed, bad_segment)", ["result"], registry=r),
            uploaded_bytes=Counter("tiering_upload_bytes", "Bytes of segments (all their objects) whose upload "
                                   "ended, by result", ["result"], registry=r),
            backlog_segments=Gauge("tiering_upload_backlog_segments", "Eligible segments waiting to be "
                                   "uploaded (not counting those in flight)", registry=r),
            backlog_bytes=Gauge("tiering_upload_backlog_bytes", "Bytes of the segments waiting to be uploaded",
                                registry=r),
            oldest_pending_age=Gauge("tiering_upload_oldest_pending_age_seconds", "Age since its roll of the "
                                     "oldest segment waiting or in flight (0 when none)", registry=r),
            rate_limit_wait=Counter("tiering_upload_rate_limit_wait_seconds", "Time upload senders spent "
                                    "waiting on the rate limit (summed over threads)", registry=r),
            retries=Counter("tiering_upload_retries", "Segment uploads retried, by error class",
                            ["error_class"], registry=r),
            roll_to_remote=Histogram("tiering_roll_to_remote_seconds", "From a segment's roll (its last "
                                     "change on disk) to its manifest being visible in the store",
                                     buckets=LATENCY_BUCKETS, registry=r),
            in_flight=Gauge("tiering_upload_in_flight_segments", "Segments being uploaded now", registry=r),
            muted_partitions=Gauge("tiering_upload_muted_partitions", "Partitions muted by the circuit breaker "
                                   "after repeated failures", registry=r),
            reconciles=Counter("tiering_reconcile_scans", "Full reconcile scans of the log dirs", registry=r),
            reconcile_duration=Gauge("tiering_reconcile_last_duration_seconds", "Duration of the last full "
                                     "reconcile scan", registry=r),
            partitions=Gauge("tiering_partitions", "Partitions found in the log dirs", registry=r),
            anomalies=Gauge("tiering_log_dir_anomalies", "Log-dir entries skipped at the last scan "
                            "(see the log events)", registry=r),
            config_reloads=Counter("tiering_config_reloads", "SIGHUP reloads, by result (applied, rejected)",
                                   ["result"], registry=r),
            swept=Counter("tiering_sweep_removed", "Stale multipart uploads aborted and orphaned objects "
                          "deleted by the periodic sweep", ["kind"], registry=r),
            ready=Gauge("tiering_ready", "1 after the first complete reconcile scan", registry=r),
            rescued=Counter("tiering_upload_rescued_segments", "Segments the broker deleted before they were "
                            "uploaded, offloaded from their pin", registry=r),
            pinned_segments=Gauge("tiering_pinned_segments", "Segments held by a hard link until uploaded",
                                  registry=r),
            retention_deleted_segments=Counter("tiering_retention_deleted_segments", "Segments deleted by "
                                               "retention, by tier (local, remote) and reason (local-time, "
                                               "local-size, total-time, total-size)", ["tier", "reason"], registry=r),
            retention_deleted_bytes=Counter("tiering_retention_deleted_bytes", "Bytes of .log deleted by "
                                            "retention, by tier and reason", ["tier", "reason"], registry=r),
            retention_blocked_log_dirs=Gauge("tiering_retention_blocked_log_dirs", "Log dirs where local "
                                             "deletion is refused because a broker holds the lock "
                                             "(local_delete = unlink)", registry=r),
            retention_failures=Counter("tiering_retention_failures", "Retention deletions that failed or were "
                                       "refused (verification, store, admin errors)", registry=r),
            retention_passes=Counter("tiering_retention_passes", "Retention passes finished", registry=r),
            disabled_topics=Gauge("tiering_disabled_topics", "Topics tiering is turned off for "
                                  "(tiering rollback; tiering resume turns it back on)", registry=r),
            cluster_reachable=Gauge("tiering_cluster_reachable", "Cluster mode: 1 while the last Metadata "
                                    "refresh answered, 0 while the cluster is unreachable (nothing new is "
                                    "uploaded for partitions not known to be led); 1 in single mode",
                                    registry=r),
            cluster_partitions=Gauge("tiering_cluster_partitions", "Cluster mode: local partitions by this "
                                     "broker's role (leader, follower, unknown) at the last look",
                                     ["role"], registry=r),
            rollback_pending=Gauge("tiering_rollback_pending_partitions", "Rolled-back partitions whose store "
                                   "copies wait for the cluster to confirm the restored log start "
                                   "(rollback --delete-remote)", registry=r),
            rollback_undone=Gauge("tiering_rollback_undone_partitions", "Rolled-back partitions whose rollback "
                                  "Kafka undid (log start moved up again); their store copies are kept",
                                  registry=r),
        )
