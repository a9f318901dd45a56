"""What `status` says of a partition in cluster mode (pure): this broker's role, the chain's
extent and who uploaded it, its overlaps and gaps, and why a follower is not uploading."""

from __future__ import annotations

from tiering.cluster.chain import Chain, ChainLink
from tiering.cluster.leadership import LEADER, LeadershipView


def _link(link: ChainLink) -> dict:
    return {"base_offset": link.base_offset, "end_offset": link.end_offset, "broker_id": link.broker_id,
            "leader_epoch": link.leader_epoch, "manifest_key": link.manifest_key}


def chain_json(chain: Chain | None) -> dict | None:
    if chain is None:
        return None
    return {
        "start": chain.start, "end": chain.end, "segments": len(chain.links),
        # who uploaded the offsets served (a copy fully hidden by a newer epoch's is not counted)
        "uploaders": sorted({p.link.broker_id for p in chain.pieces if p.link.broker_id is not None}),
        "gaps": [list(g) for g in chain.gaps()],
        "overlaps": [{"offsets": [max(a.base_offset, b.base_offset), min(a.end_offset, b.end_offset)],
                      "links": [_link(a), _link(b)]} for a, b in chain.overlaps()],
    }


def partition_cluster_json(view: LeadershipView, topic: str, partition: int, chain: Chain | None,
                           chain_error: str | None = None) -> dict:
    known = view.partitions.get((topic, partition))
    role = view.role(topic, partition)
    return {
        "role": role,
        "leader": known.leader if known is not None else None,
        "leader_epoch": known.leader_epoch if known is not None and known.leader_epoch >= 0 else None,
        "replicas": list(known.replicas) if known is not None else None,
        "not_uploading": None if role == LEADER else view.why_not_leader(topic, partition),
        "chain": chain_json(chain),
        "chain_error": chain_error,
    }


def describe_cluster_row(name: str, cluster: dict) -> str:
    """One line of the text table's cluster section."""
    role = cluster["role"]
    head = f"{role} (leader epoch {cluster['leader_epoch']})" if role == LEADER else role
    if cluster.get("not_uploading"):
        head += f", not uploading: {cluster['not_uploading']}"
    chain = cluster.get("chain")
    if chain is None:
        tail = f"chain unknown ({cluster['chain_error']})" if cluster.get("chain_error") else "chain unknown"
    elif chain["start"] is None:
        tail = "chain empty"
    else:
        by = ", ".join(str(b) for b in chain["uploaders"]) or "-"
        tail = f"chain {chain['start']}..{chain['end']} uploaded by broker(s) {by}"
        if chain["overlaps"]:
            tail += f"; {len(chain['overlaps'])} overlap(s): " + "; ".join(
                f"{o['offsets'][0]}..{o['offsets'][1]} (broker {o['links'][0]['broker_id']} epoch "
                f"{o['links'][0]['leader_epoch']} / broker {o['links'][1]['broker_id']} epoch "
                f"{o['links'][1]['leader_epoch']})" for o in chain["overlaps"][:3])
        if chain["gaps"]:
            tail += f"; gaps: {', '.join(f'{a}..{b}' for a, b in chain['gaps'][:5])}"
    return f"  {name}: {head}; {tail}"
