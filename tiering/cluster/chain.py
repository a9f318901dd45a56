"""A partition's remote log as one chain, whoever uploaded it (pure: no I/O).

Every manifest of a partition (current topic id), from every broker, is a link. Links may
overlap (a new leader uploads its first segment whole although it starts below the chain's
end; two sidecars raced on a store without conditional writes) and may leave gaps (total
retention, a lost upload). The chain resolves each offset to exactly one link: where links
overlap, the copy uploaded under the higher leader epoch wins (Kafka's own rule: the newer
leader's log is the truth after truncation), a single-mode upload (no epoch) lowest; ties
go to the earlier upload, then the smaller uid, so every sidecar resolves alike.

Piece boundaries (a link's base offset, or its end offset + 1) are batch boundaries in every
replica's copy below the high watermark, because followers copy the leader's batches verbatim.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable


@dataclass(frozen=True)
class ChainLink:
    """One manifest in the store, whoever uploaded it."""

    base_offset: int
    end_offset: int             # inclusive, as SegmentManifest.end_offset
    leader_epoch: int | None    # the uploader's leader epoch (None: single-mode upload)
    broker_id: int | None
    uid: str
    manifest_key: str
    created_at_ms: int

    def __post_init__(self) -> None:
        if self.end_offset < self.base_offset:
            raise ValueError(f"link {self.manifest_key!r}: end offset {self.end_offset} below base offset "
                             f"{self.base_offset}")


@dataclass(frozen=True)
class ChainPiece:
    """The offsets [first, last] served from `link`."""

    link: ChainLink
    first: int
    last: int


def precedence(link: ChainLink) -> tuple:
    """Sort key: the link that serves an offset several links cover sorts first."""
    has_epoch = link.leader_epoch is not None
    return (not has_epoch, -(link.leader_epoch or 0), link.created_at_ms, link.uid, link.manifest_key)


@dataclass(frozen=True)
class Chain:
    links: tuple[ChainLink, ...] = field(default=())

    def __post_init__(self) -> None:
        # Held in offset order whatever the caller passed, so equal link sets are equal chains.
        ordered = tuple(sorted(self.links, key=lambda l: (l.base_offset, l.end_offset, precedence(l))))
        object.__setattr__(self, "links", ordered)

    @classmethod
    def of(cls, links: Iterable[ChainLink]) -> Chain:
        return cls(tuple(links))

    @property
    def start(self) -> int | None:
        """The first offset covered; None for an empty chain."""
        return self.links[0].base_offset if self.links else None

    @property
    def end(self) -> int | None:
        """The last offset covered; None for an empty chain."""
        return max(link.end_offset for link in self.links) if self.links else None

    @cached_property
    def pieces(self) -> tuple[ChainPiece, ...]:
        """Ordered, disjoint pieces; each covered offset in exactly one, from its winning link.

        A sweep over the links' boundaries with a heap of the links covering the current
        offset (best first): O(n log n), as a partition may hold tens of thousands of links.
        """
        boundaries = sorted({b for l in self.links for b in (l.base_offset, l.end_offset + 1)})
        pieces: list[ChainPiece] = []
        # (precedence, position, link): the position keeps the heap from comparing links.
        active: list[tuple[tuple, int, ChainLink]] = []
        pending = iter(enumerate(self.links))   # in base-offset order
        upcoming = next(pending, None)
        for first, following in zip(boundaries, boundaries[1:]):
            while upcoming is not None and upcoming[1].base_offset <= first:
                heapq.heappush(active, (precedence(upcoming[1]), *upcoming))
                upcoming = next(pending, None)
            while active and active[0][2].end_offset < first:
                heapq.heappop(active)       # ended before this interval: no longer covers
            if not active:
                continue                    # a gap
            winner, last = active[0][2], following - 1
            if pieces and pieces[-1].link == winner and pieces[-1].last + 1 == first:
                pieces[-1] = ChainPiece(winner, pieces[-1].first, last)
            else:
                pieces.append(ChainPiece(winner, first, last))
        return tuple(pieces)

    def gaps(self) -> tuple[tuple[int, int], ...]:
        """Inclusive ranges between start and end that no link covers."""
        found, covered_to = [], None
        for link in self.links:
            if covered_to is not None and link.base_offset > covered_to + 1:
                found.append((covered_to + 1, link.base_offset - 1))
            covered_to = link.end_offset if covered_to is None else max(covered_to, link.end_offset)
        return tuple(found)

    def overlaps(self) -> tuple[tuple[ChainLink, ChainLink], ...]:
        """Every pair of links sharing at least one offset, the lower base offset first."""
        found = []
        for i, link in enumerate(self.links):
            for later in self.links[i + 1:]:
                if later.base_offset > link.end_offset:
                    break                   # links are in base order: no later one overlaps
                found.append((link, later))
        return tuple(found)

    def covers(self, first: int, last: int) -> bool:
        """Whether every offset in [first, last] is in some link."""
        if last < first:
            raise ValueError(f"empty range [{first}, {last}]")
        for piece in self.pieces:
            if piece.last < first:
                continue
            if piece.first > first:
                return False                # first is in a gap (or before the start)
            if piece.last >= last:
                return True
            first = piece.last + 1
        return False

    def pieces_within(self, first: int, last: int) -> tuple[ChainPiece, ...]:
        """The pieces serving [first, last], clipped to it (gaps stay gaps)."""
        return tuple(ChainPiece(p.link, max(p.first, first), min(p.last, last))
                     for p in self.pieces if p.last >= first and p.first <= last)
