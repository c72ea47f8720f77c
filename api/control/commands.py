"""Control actions as data: what crosses replicas to the one running a session (docs/architecture.md, 8).

Each command is written to the database first where it has state of its own (a permission decision, an
interrupt flag), then published on the control channel; the session actor that owns the session takes
it through one entry point (`SessionActor.handle`). A lost message only delays: the owner polls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Interrupt:
    """Stop the run now (its row carries interrupt_requested)."""

    session_id: str
    run_id: str


@dataclass(frozen=True)
class DecidePermission:
    """A permission request was decided (its row says how): answer the waiting tool call."""

    session_id: str
    request_id: str


@dataclass(frozen=True)
class SetModel:
    """Switch the live CLI's model; None means the default. Answers on `reply_to` whether the CLI took it."""

    session_id: str
    model: str | None
    # Empty from a replica of an earlier version, which waits for no answer (a rolling upgrade).
    reply_to: str = ""


@dataclass(frozen=True)
class SetPermissionMode:
    """Switch the live CLI's permission mode (the SDK's name: default, acceptEdits, plan…). Answers on
    `reply_to` whether the CLI took it."""

    session_id: str
    mode: str
    reply_to: str = ""


@dataclass(frozen=True)
class GetContextUsage:
    """Read the live CLI's context usage; the answer is published on `reply_to`."""

    session_id: str
    reply_to: str


@dataclass(frozen=True)
class RewindFiles:
    """Preview (dry_run) or restore the session's files as before a checkpoint's prompt; with
    `conversation`, the next turn also continues from before that prompt. Answers on `reply_to`."""

    session_id: str
    checkpoint_id: str
    dry_run: bool
    conversation: bool
    reply_to: str


@dataclass(frozen=True)
class CloseSession:
    """Stop the session's idle agent and give up its lease (before a delete); answers on `reply_to`."""

    session_id: str
    reply_to: str


Command = (
    Interrupt | DecidePermission | SetModel | SetPermissionMode | GetContextUsage | RewindFiles | CloseSession
)
# Commands that answer on their reply_to channel.
Request = SetModel | SetPermissionMode | GetContextUsage | RewindFiles | CloseSession

_TYPES: dict[str, type[Command]] = {
    "interrupt": Interrupt,
    "decide_permission": DecidePermission,
    "set_model": SetModel,
    "set_permission_mode": SetPermissionMode,
    "get_context_usage": GetContextUsage,
    "rewind_files": RewindFiles,
    "close_session": CloseSession,
}
_NAMES = {kind: name for name, kind in _TYPES.items()}

MESSAGE_TYPE = "command"


def message_of(command: Command) -> dict[str, Any]:
    """The control-channel message that carries `command` (decode reads it back)."""
    return {"type": MESSAGE_TYPE, "command": _NAMES[type(command)], "args": asdict(command)}


def decode(message: dict[str, Any]) -> Command | None:
    """The command of a control-channel message, or None if it is not one this version knows."""
    kind = _TYPES.get(str(message.get("command")))
    args = message.get("args")
    if kind is None or not isinstance(args, dict):
        return None
    try:
        return kind(**args)
    except TypeError:
        return None
