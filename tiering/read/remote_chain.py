"""A partition's chain as the readers of the store see it: its links with their manifests.

Every reader of the store (the tiered reader and `cat`, retention, verify, rollback) works on
the chain of a partition's manifests from every broker (tiering.cluster.chain), never on
"what this broker uploaded". A link needs its end offset, which only the manifest holds, so
the manifests are fetched (and kept: they are immutable) for the links a caller needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from tiering.cluster.chain import Chain, ChainLink, ChainPiece
from tiering.cluster.remote import link_of
from tiering.store.keys import KeyLayout, ParsedKey
from tiering.store.manifest import SegmentManifest
from tiering.store.owned import owned_objects
from tiering.store.protocol import ObjectInfo, ObjectStore


@dataclass(frozen=True)
class RemoteChain:
    """One partition's chain and the manifests of its links (by manifest key)."""

    chain: Chain
    manifests: Mapping[str, SegmentManifest]

    @classmethod
    def of(cls, manifests: Iterable[tuple[str, SegmentManifest]]) -> RemoteChain:
        by_key = dict(manifests)
        return cls(Chain.of(link_of(m, k) for k, m in by_key.items()), by_key)

    @property
    def pieces(self) -> tuple[ChainPiece, ...]:
        return self.chain.pieces

    def manifest(self, piece: ChainPiece) -> SegmentManifest:
        return self.manifests[piece.link.manifest_key]

    def links_serving(self, first: int, last: int) -> tuple[ChainLink, ...]:
        """The links whose copies serve some offset of [first, last], once each, in order."""
        found: dict[str, ChainLink] = {}
        for piece in self.chain.pieces_within(first, last):
            found.setdefault(piece.link.manifest_key, piece.link)
        return tuple(found.values())

    def shadowed(self) -> tuple[ChainLink, ...]:
        """Links that serve no offset at all (every offset of theirs is served by a link that
        wins over them): a duplicate upload, a lost race, an old leader's overlapped tail."""
        serving = {p.link.manifest_key for p in self.chain.pieces}
        return tuple(link for link in self.chain.links if link.manifest_key not in serving)


def partition_manifest_keys(store: ObjectStore, layout: KeyLayout, root: str,
                            below: int | None = None) -> list[tuple[ParsedKey, ObjectInfo]]:
    """The manifests listed under one partition's root (this deployment's keys only), those
    with a base offset below `below` when given (a link starting there serves nothing below)."""
    return [(parsed, info) for parsed, info in owned_objects(store, layout, under=root)
            if parsed.is_manifest and parsed.root == root and (below is None or parsed.base_offset < below)]
