"""Which broker this sidecar runs next to: `node.id` (KRaft) or `broker.id` from the log dirs'
`meta.properties`, which the broker writes when its storage is formatted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tiering.files import read_regular_text
from tiering.kafka.checkpoints import broker_id_from_meta, parse_properties


@dataclass(frozen=True)
class BrokerIdentity:
    broker_id: int | None
    problem: str | None = None      # why it is None (or ambiguous), for logs and status


def broker_identity(log_dirs: Iterable[Path]) -> BrokerIdentity:
    """The broker id all log dirs agree on. Log dirs that disagree name no broker (a
    misconfiguration: the sidecar would otherwise upload as one broker what another leads)."""
    found: dict[int, list[str]] = {}
    problems: list[str] = []
    for log_dir in log_dirs:
        path = Path(log_dir) / "meta.properties"
        try:
            broker_id = broker_id_from_meta(parse_properties(read_regular_text(path)))
        except FileNotFoundError:
            problems.append(f"{path}: missing (the broker has not formatted this log dir yet)")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: unreadable: {getattr(exc, 'strerror', None) or exc}")
            continue
        if broker_id is None:
            problems.append(f"{path}: holds neither node.id nor broker.id")
            continue
        found.setdefault(broker_id, []).append(str(log_dir))
    if len(found) > 1:
        listed = "; ".join(f"{b} in {', '.join(dirs)}" for b, dirs in sorted(found.items()))
        return BrokerIdentity(None, f"the log dirs name different brokers ({listed}): check kafka.log_dirs")
    if found:
        return BrokerIdentity(next(iter(found)))
    return BrokerIdentity(None, "; ".join(problems) or "no log dirs")
