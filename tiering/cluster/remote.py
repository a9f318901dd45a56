"""A partition's chain as the store holds it: every broker's manifests of the partition
(current topic id), listed through `tiering.store.owned` and read once each (a manifest never
changes), cached per partition and listed again after `cluster.chain_refresh_s` or when asked
(a leader change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tiering.cluster.chain import Chain, ChainLink
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import KeyLayout
from tiering.store.manifest import ManifestError, SegmentManifest, fetch_manifest
from tiering.store.owned import owned_objects
from tiering.store.protocol import ObjectStore

PartitionId = tuple[str, str, int]    # topic, topic id, partition


def link_of(manifest: SegmentManifest, manifest_key: str) -> ChainLink:
    return ChainLink(manifest.base_offset, manifest.end_offset, manifest.leader_epoch, manifest.broker_id,
                     manifest.uid, manifest_key, manifest.created_at_ms)


@dataclass(frozen=True)
class ListedChain:
    chain: Chain
    listed_at_ms: int
    unreadable: tuple[tuple[str, str], ...] = ()    # (manifest key, why) left out of the chain


def list_chain(store: ObjectStore, layout: KeyLayout, partition: PartitionId, now_ms: int,
               known: dict[str, ChainLink | None] | None = None) -> ListedChain:
    """The partition's chain now. `known` caches links by manifest key (None: not a valid
    manifest) and is updated. Raises StoreError when the store cannot list."""
    topic, topic_id, number = partition
    root = layout.partition(topic, topic_id, number).root
    cache = known if known is not None else {}
    keys = [info.key for parsed, info in owned_objects(store, layout, under=root)
            if parsed.is_manifest and parsed.root == root]
    links, unreadable = [], []
    for key in keys:
        if key not in cache:
            try:
                cache[key] = link_of(fetch_manifest(store, key), key)
            except ManifestError as exc:
                cache[key] = None
                unreadable.append((key, str(exc)))
            except StoreError as exc:
                if exc.error_class is not ErrorClass.NOT_FOUND:
                    raise
                continue          # deleted since the listing (total retention)
        if cache[key] is not None:
            links.append(cache[key])
    for key in set(cache) - set(keys):
        del cache[key]            # gone from the store
    return ListedChain(Chain.of(links), now_ms, tuple(unreadable))


class RemoteChains:
    """Cached chains per partition; owned by one thread."""

    def __init__(self, store: ObjectStore, layout: KeyLayout, refresh_ms: int, now_ms: Callable[[], int]):
        self.store = store
        self.layout = layout
        self.refresh_ms = refresh_ms
        self.now_ms = now_ms
        self._chains: dict[PartitionId, ListedChain] = {}
        self._links: dict[PartitionId, dict[str, ChainLink | None]] = {}

    def get(self, partition: PartitionId, force: bool = False) -> ListedChain:
        """The cached chain, listed again when due or forced. Raises StoreError."""
        now = self.now_ms()
        cached = self._chains.get(partition)
        if force or cached is None or now - cached.listed_at_ms >= self.refresh_ms:
            cached = list_chain(self.store, self.layout, partition, now, self._links.setdefault(partition, {}))
            self._chains[partition] = cached
        return cached

    def cached(self, partition: PartitionId) -> ListedChain | None:
        return self._chains.get(partition)

    def extend(self, partition: PartitionId, link: ChainLink) -> None:
        """Our own upload joins the cached chain at once (no listing needed to see it)."""
        cached = self._chains.get(partition)
        if cached is not None:
            self._chains[partition] = ListedChain(Chain.of((*cached.chain.links, link)), cached.listed_at_ms,
                                                  cached.unreadable)
            self._links.setdefault(partition, {})[link.manifest_key] = link

    def forget(self, partition: PartitionId) -> None:
        self._chains.pop(partition, None)
        self._links.pop(partition, None)


def chains_of_listing(store: ObjectStore, listing: list, threads: int = 8) -> dict[PartitionId, Chain]:
    """Every partition's chain from one listing of our keys (`status`): each manifest read
    once, several at a time. A manifest that cannot be read or is not valid is left out."""
    from concurrent.futures import ThreadPoolExecutor

    keys = [(parsed, info.key) for parsed, info in listing if parsed.is_manifest]

    def read(key: str) -> ChainLink | None:
        try:
            return link_of(fetch_manifest(store, key), key)
        except (ManifestError, StoreError):
            return None

    with ThreadPoolExecutor(max(1, min(threads, len(keys)))) as pool:
        links = list(pool.map(read, [key for _, key in keys]))
    grouped: dict[PartitionId, list[ChainLink]] = {}
    for (parsed, _), link in zip(keys, links):
        if link is not None:
            grouped.setdefault((parsed.topic, parsed.topic_id, parsed.partition), []).append(link)
    return {partition: Chain.of(found) for partition, found in grouped.items()}
