"""Reading what a rollback plan needs: the partitions asked for, and their manifests in the
store (listed per partition and fetched in parallel; each one validated as untrusted input)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tiering.errors import UsageError
from tiering.kafka.logdir import LocalPartition, LogDirScan
from tiering.kafka.names import is_internal_topic
from tiering.rollback.plan import PartitionPlan, plan_partition
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import KeyLayout
from tiering.store.manifest import ManifestError, SegmentManifest, fetch_manifest
from tiering.store.owned import owned_objects
from tiering.store.protocol import ObjectStore

MANIFEST_FETCHERS = 16


@dataclass(frozen=True)
class Selection:
    topic: str | None          # None: every topic (--all)
    partition: int | None = None

    def describe(self) -> str:
        if self.topic is None:
            return "every topic"
        return f"topic {self.topic}" + (f" partition {self.partition}" if self.partition is not None else "")


def select_partitions(scan: LogDirScan, selection: Selection) -> list[LocalPartition]:
    """The partitions on this broker a rollback is about; UsageError when there are none."""
    if selection.topic is None:
        return [p for p in scan.partitions if not is_internal_topic(p.topic)]
    chosen = [p for p in scan.partitions if p.topic == selection.topic
              and (selection.partition is None or p.partition == selection.partition)]
    if not chosen:
        where = ", ".join(str(s.path) for s in scan.log_dirs) or "no readable log dir"
        known = sorted({p.partition for p in scan.partitions if p.topic == selection.topic})
        hint = (f"its partitions here are {', '.join(map(str, known))}" if known
                else "check the name with 'tiering status'")
        raise UsageError(f"{selection.describe()} is not in the log dirs ({where}); only partitions on this "
                         f"broker can be rolled back; {hint}")
    return chosen


def gather_plans(store: ObjectStore, scan: LogDirScan, partitions: list[LocalPartition], prefix: str,
                 hash_prefix: bool) -> list[PartitionPlan]:
    """One plan per partition, from one LIST of its keys and a GET of each manifest."""
    with ThreadPoolExecutor(MANIFEST_FETCHERS, thread_name_prefix="manifests") as pool:
        plans = []
        for local in partitions:
            state = scan.log_dir_state(local.log_dir)
            log_start = state.log_start_offsets.get(local.tp)
            if local.topic_id is None:
                plans.append(plan_partition(local, (), (), log_start))
                continue
            layout = KeyLayout(prefix, hash_prefix)
            root = layout.partition(local.topic, local.topic_id, local.partition).root
            keys = [info.key for parsed, info in owned_objects(store, layout, under=root)
                    if parsed.is_manifest and parsed.root == root]
            fetched = list(pool.map(lambda key: (key, _get(store, key)), keys))
            manifests: list[SegmentManifest] = []
            invalid: list[tuple[str, str]] = []
            for key, result in fetched:
                if result is None:
                    continue   # deleted since the listing (total retention): not there to restore
                if isinstance(result, ManifestError):
                    invalid.append((key, str(result)))
                else:
                    manifests.append(result)
            plans.append(plan_partition(local, manifests, invalid, log_start))
    return plans


def _get(store: ObjectStore, key: str) -> SegmentManifest | ManifestError | None:
    try:
        return fetch_manifest(store, key)
    except ManifestError as exc:
        return exc
    except StoreError as exc:
        if exc.error_class is ErrorClass.NOT_FOUND:
            return None
        raise
