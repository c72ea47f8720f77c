"""The event record: what the log stores, what the bus carries, what subscriptions deliver."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from persistence.models import Event


class EventKind(StrEnum):
    ASSISTANT = "assistant"
    USER = "user"
    SYSTEM = "system"
    RESULT = "result"
    PARTIAL = "partial"
    RUN_STATUS = "run_status"
    PERMISSION_REQUESTED = "permission_requested"
    PERMISSION_DECIDED = "permission_decided"
    FILES_REWOUND = "files_rewound"
    HOOK_FIRED = "hook_fired"


@dataclass(frozen=True)
class NewEvent:
    run_id: str | None
    kind: EventKind
    payload: dict[str, Any]


@dataclass(frozen=True)
class EventRecord:
    """One event of a session. Ephemeral records (token deltas) carry the last durable seq."""

    session_id: str
    seq: int
    run_id: str | None
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    ephemeral: bool = False

    @classmethod
    def from_model(cls, event: Event) -> EventRecord:
        return cls(
            session_id=event.session_id,
            seq=event.seq,
            run_id=event.run_id,
            kind=event.kind,
            payload=event.payload,
            created_at=event.created_at,
        )

    def to_wire(self) -> str:
        return orjson.dumps(
            {
                "s": self.session_id,
                "q": self.seq,
                "r": self.run_id,
                "k": self.kind,
                "p": self.payload,
                "t": self.created_at.isoformat(),
                "e": self.ephemeral,
            }
        ).decode()

    @classmethod
    def from_wire(cls, data: str) -> EventRecord:
        """Decode a bus message. Every watcher of a session on a replica gets the same message, so
        decoding is shared: one parse per message per replica, not one per watcher. Records (and their
        payloads) are treated as immutable everywhere."""
        return _decode_wire(data)

    @classmethod
    def _decode(cls, data: str) -> EventRecord:
        raw = orjson.loads(data)
        return cls(
            session_id=raw["s"],
            seq=raw["q"],
            run_id=raw["r"],
            kind=raw["k"],
            payload=raw["p"],
            created_at=datetime.fromisoformat(raw["t"]),
            ephemeral=raw["e"],
        )


@functools.lru_cache(maxsize=4096)
def _decode_wire(data: str) -> EventRecord:
    return EventRecord._decode(data)


def session_channel(session_id: str) -> str:
    return f"session:{session_id}"


def tenant_channel(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"
