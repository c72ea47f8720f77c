"""The only module that drives claude_agent_sdk: options in, plain event dicts out.

Everything else in the service speaks `AgentSpec` and `AgentOutput`, so an SDK upgrade touches this file
(and persistence/session_store.py, which implements the SDK's SessionStore protocol with its types).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import claude_agent_sdk
import structlog
from claude_agent_sdk import (
    AgentDefinition,
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    HookMatcher,
    PermissionResultAllow,
    PermissionResultDeny,
    PermissionUpdate,
    ProcessError,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolPermissionContext,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    project_key_for_directory,
)
from claude_agent_sdk.types import (
    CanUseToolShadowedWarning,
    PermissionRuleValue,
    RateLimitEvent,
    SessionKey,
    SessionStore,
    SessionStoreEntry,
    SystemPromptPreset,
)

from api.events.records import EventKind

log = structlog.get_logger(__name__)

# allowedTools is this API's pre-approval (StartRunInput says so): that they skip can_use_tool is intended.
warnings.filterwarnings("ignore", category=CanUseToolShadowedWarning)

# Lines of CLI stderr kept per connection: the SDK's own errors only say "check stderr".
STDERR_LINES = 200
# Big tool results (file reads, structured output) arrive as single JSON lines.
MAX_BUFFER_BYTES = 32 * 1024 * 1024
# A pooled CLI's warm-up (AgentConnection.warm_up) takes about as long as a first prompt's preparation.
WARM_UP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class AgentSpec:
    """What one CLI connection is started with. Two runs with equal specs can share a connection."""

    session_id: str
    cwd: str
    resume: bool
    env: dict[str, str]
    # A sandbox launcher, or None for the bundled CLI started directly (SANDBOX=off).
    cli_path: str | None = None
    model: str | None = None
    fallback_model: str | None = None
    system_prompt: str | None = None
    # Claude Code's own system prompt instead of system_prompt: {} or {"append": str}.
    system_prompt_preset: dict[str, Any] | None = None
    # The SDK's ThinkingConfig and EffortLevel.
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    # The operator's configs of the servers the run chose (McpServerConfig by name).
    mcp_servers: dict[str, dict[str, Any]] | None = None
    # The operator's choice (AGENT_SETTING_SOURCES); empty: no settings file configures the agent.
    setting_sources: tuple[str, ...] = ()
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    max_turns: int | None = None
    max_budget_usd: float | None = None
    output_schema: dict[str, Any] | None = None
    agents: dict[str, dict[str, Any]] | None = None
    # Hook events the server answers (the tenant's webhooks); a change needs a new CLI.
    hook_events: tuple[str, ...] = ()
    # A fork's first connection: resume this (parent's) transcript, copied into this session's agent
    # dir, into a new conversation with this session's id (--fork-session).
    fork_from: str | None = None
    # Load the conversation only up to this message uuid (--resume-session-at): a fork at a message, or
    # the conversation rewound to before a checkpoint.
    resume_at: str | None = None

    def connection_key(self) -> tuple[Any, ...]:
        """Options that need a new CLI process when they change (resume does not): (name, repr of the
        value) in the order of the names. Read from the fields as they are, without `dataclasses.asdict`'s
        deep copy (no field holds a dataclass, so the copies' reprs were the values' own); a follow-up's
        startRun asks for it before its prompt goes to the CLI, and the copy was most of its cost."""
        return tuple((name, repr(getattr(self, name))) for name in _KEYED_FIELDS)


# Where a connection starts (resume, fork_from, resume_at) matters only when it starts, a live one just
# goes on; env and cli_path come with each Launch.
_NOT_KEYED = frozenset({"resume", "env", "cli_path", "fork_from", "resume_at"})
_KEYED_FIELDS = tuple(sorted(f.name for f in dataclasses.fields(AgentSpec) if f.name not in _NOT_KEYED))


@dataclass(frozen=True)
class HookProvider:
    """Answers the CLI's hook events: `callback(event_name, input, tool_use_id)` returns the hook output."""

    events: tuple[str, ...]
    callback: Callable[[str, dict[str, Any], str | None], Awaitable[dict[str, Any]]]
    timeout_seconds: float


@dataclass(frozen=True)
class AgentOutput:
    """One SDK message as an event: kind + JSON payload, and the result facts the run manager needs."""

    kind: EventKind
    payload: dict[str, Any]
    ephemeral: bool = False
    is_result: bool = False
    result_uuids: tuple[str, ...] = ()
    total_cost_usd: float | None = None


def bundled_cli_path() -> Path:
    """The CLI binary shipped inside the SDK package: what every agent runs, sandboxed or not."""
    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


def transcript_path(config_dir: str, cwd: str, session_id: str) -> Path:
    """Where the CLI keeps a session's transcript: under the project key of its cwd."""
    return Path(config_dir) / "projects" / project_key_for_directory(cwd) / f"{session_id}.jsonl"


def transcript_exists(config_dir: str, cwd: str, session_id: str) -> bool:
    """Whether the CLI has a transcript for this session, so the next connection must resume it.

    The file is the truth, not a flag of ours: a CLI killed before it flushed has nothing to resume,
    and every replica sees the same file through the shared DATA_DIR.
    """
    try:
        return transcript_path(config_dir, cwd, session_id).stat().st_size > 0
    except FileNotFoundError:
        return False


def remove_transcript(config_dir: str, cwd: str, session_id: str) -> None:
    """Remove a transcript and its subagents' folder (a fork's copy of its parent's, once used)."""
    path = transcript_path(config_dir, cwd, session_id)
    path.unlink(missing_ok=True)
    shutil.rmtree(path.with_suffix(""), ignore_errors=True)


def _transcript_entries(path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return entries
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            # A line cut short by a killed CLI: the rest of the file is still good.
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def restored_cost_usd(path: Path) -> float:
    """The running cost a CLI resuming this transcript starts from.

    Measured on CLI 2.1.331: the CLI writes a `cost-state` entry (totalCostUSD) when its process ends
    and a resumed process continues from it, also with --resume-session-at and --fork-session. A
    process that was killed wrote none, and its successor continues from the entry before.
    """
    total = 0.0
    for entry in _transcript_entries(path):
        if entry.get("type") == "cost-state" and isinstance(entry.get("totalCostUSD"), int | float):
            total = float(entry["totalCostUSD"])
    return total


@dataclass(frozen=True)
class TranscriptMessage:
    uuid: str
    type: str
    # The message before it in the conversation; None for the first prompt.
    parent_uuid: str | None


def transcript_message(path: Path, message_uuid: str) -> TranscriptMessage | None:
    """A user or assistant message of the transcript, by uuid (a prompt's uuid is its checkpoint id)."""
    for entry in _transcript_entries(path):
        if entry.get("uuid") == message_uuid and entry.get("type") in ("user", "assistant"):
            parent = entry.get("parentUuid")
            return TranscriptMessage(
                message_uuid, str(entry["type"]), parent if isinstance(parent, str) else None
            )
    return None


# The CLI's dry run of rewind_files is reached through the SDK's private control channel
# (ClaudeSDKClient._query._send_control_request), verified on this SDK version only.
PRIVATE_CONTROL_SDK_VERSIONS = ("0.2.188",)


@dataclass(frozen=True)
class RewindPreview:
    """What rewinding to a checkpoint changes (or why it cannot), as the CLI answers a dry run."""

    can_rewind: bool
    files_changed: tuple[str, ...] = ()
    insertions: int = 0
    deletions: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ToolPermissionAsk:
    """The CLI asks whether a tool call may run (the SDK's can_use_tool), in the service's terms."""

    tool_name: str
    input: dict[str, Any]
    tool_use_id: str | None
    # title, display_name, description, blocked_path, decision_reason, agent_id: whatever the CLI sent.
    context: dict[str, Any]


@dataclass(frozen=True)
class ToolPermissionAnswer:
    """Allow (with the input to run, None = the original) or deny (the message reaches the model)."""

    allow: bool
    updated_input: dict[str, Any] | None = None
    message: str = ""
    allow_for_session: bool = False


PermissionAsker = Callable[[ToolPermissionAsk], Awaitable[ToolPermissionAnswer]]


class AgentFailure(Exception):
    """The CLI could not start or died; `reason` carries what its stderr said."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Stderr:
    """The CLI's stderr: logged line by line, and the last lines kept for failure reasons."""

    session_id: str
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES))

    def __call__(self, line: str) -> None:
        line = line.rstrip()
        self.lines.append(line)
        if line:
            log.info("agent.stderr", session_id=self.session_id, line=line[:2000])

    def tail(self, count: int = 20) -> str:
        return "\n".join(list(self.lines)[-count:])


class MirrorOnly:
    """A session store as the SDK is handed it: every transcript line the CLI writes goes to `store`,
    and `load` finds nothing.

    Given a store that loads, the SDK resumes by writing the transcript to a temporary CLAUDE_CONFIG_DIR
    of the server's and pointing the CLI there, a folder the sandbox does not show the agent. The
    session actor writes it into the session's own agent dir instead (api/runtime/transcript_store.py),
    and the CLI resumes from that file as it does without a store.
    """

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        await self._store.append(key, entries)

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        return None


class AgentConnection:
    """One live CLI process for one session, owned by one task (the session actor)."""

    def __init__(
        self,
        spec: AgentSpec,
        hooks: HookProvider | None = None,
        *,
        ask_permission: PermissionAsker | None = None,
        session_store: SessionStore | None = None,
    ) -> None:
        self.spec = spec
        self._hooks = hooks
        self._stderr = _Stderr(spec.session_id)
        self._ask_permission = ask_permission
        self._session_store = session_store
        self._client = ClaudeSDKClient(self._options(spec))
        self._connected = False

    def _options(self, spec: AgentSpec) -> ClaudeAgentOptions:
        options = ClaudeAgentOptions(
            cwd=spec.cwd,
            cli_path=spec.cli_path,
            env=spec.env,
            model=spec.model,
            fallback_model=spec.fallback_model,
            system_prompt=_system_prompt(spec),
            thinking=spec.thinking,  # type: ignore[arg-type]
            effort=spec.effort,  # type: ignore[arg-type]
            mcp_servers=dict(spec.mcp_servers or {}),  # type: ignore[arg-type]
            permission_mode=spec.permission_mode,  # type: ignore[arg-type]
            allowed_tools=list(spec.allowed_tools),
            disallowed_tools=list(spec.disallowed_tools),
            max_turns=spec.max_turns,
            max_budget_usd=spec.max_budget_usd,
            # Remote prompts are data: no @file expansion, no slash commands (docs/architecture.md, facts).
            verbatim_prompts=True,
            # Only what the operator chose may configure the agent (none by default); no .mcp.json.
            setting_sources=list(spec.setting_sources),  # type: ignore[arg-type]
            strict_mcp_config=True,
            include_partial_messages=True,
            # The SDK refuses a session store with file checkpointing (checkpoints stay on local disk
            # and would diverge from the mirrored transcript): that mode has no rewindFiles.
            enable_file_checkpointing=self._session_store is None,
            # Duck-typed as the SDK allows: the optional methods it probes for are absent on purpose.
            session_store=(
                cast(SessionStore, MirrorOnly(self._session_store))
                if self._session_store is not None
                else None
            ),
            stderr=self._stderr,
            max_buffer_size=MAX_BUFFER_BYTES,
            client_app="claude-agent-graphql-api",
        )
        if self._ask_permission is not None:
            # Tools in allowed_tools never reach it (SDK >= 0.2.111): they are pre-approved.
            options.can_use_tool = self._can_use_tool
        if spec.fork_from is not None:
            # A new conversation with this session's id, from the parent's transcript copied here.
            options.resume = spec.fork_from
            options.fork_session = True
            options.session_id = spec.session_id
        elif spec.resume:
            options.resume = spec.session_id
        else:
            options.session_id = spec.session_id
        if spec.resume_at is not None and (spec.resume or spec.fork_from is not None):
            options.resume_session_at = spec.resume_at
        if spec.output_schema is not None:
            options.output_format = {"type": "json_schema", "schema": spec.output_schema}
        if spec.agents:
            options.agents = {
                name: _subagent(definition, spec.disallowed_tools) for name, definition in spec.agents.items()
            }
        if self._hooks is not None and self._hooks.events:
            options.hooks = _hook_matchers(self._hooks)  # type: ignore[assignment]
        return options

    async def _can_use_tool(
        self, tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        assert self._ask_permission is not None
        ask = ToolPermissionAsk(
            tool_name=tool_name,
            input=dict(tool_input),
            tool_use_id=context.tool_use_id,
            context={
                key: value
                for key, value in {
                    "title": context.title,
                    "display_name": context.display_name,
                    "description": context.description,
                    "blocked_path": context.blocked_path,
                    "decision_reason": context.decision_reason,
                    "agent_id": context.agent_id,
                }.items()
                if value is not None
            },
        )
        try:
            answer = await self._ask_permission(ask)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Fail closed: a request that cannot be recorded or awaited is a denial, never a pass.
            log.exception("agent.permission_failed", tool_name=tool_name)
            return PermissionResultDeny(message="the permission request could not be processed")
        if not answer.allow:
            return PermissionResultDeny(message=answer.message)
        updates = None
        if answer.allow_for_session:
            # Only ever the session: other destinations write settings files on the server.
            updates = [
                PermissionUpdate(
                    type="addRules",
                    rules=[PermissionRuleValue(tool_name=tool_name)],
                    behavior="allow",
                    destination="session",
                )
            ]
        # The original input when none was given: the SDK would send it anyway; this says so.
        updated = answer.updated_input if answer.updated_input is not None else dict(tool_input)
        return PermissionResultAllow(updated_input=updated, updated_permissions=updates)

    async def set_model(self, model: str | None) -> None:
        await asyncio.wait_for(self._client.set_model(model), timeout=30)

    async def context_usage(self) -> dict[str, Any]:
        return dict(await asyncio.wait_for(self._client.get_context_usage(), timeout=30))

    async def set_permission_mode(self, mode: str) -> None:
        await asyncio.wait_for(self._client.set_permission_mode(mode), timeout=30)  # type: ignore[arg-type]

    async def preview_rewind(self, checkpoint_id: str) -> RewindPreview:
        """The CLI's dry run of rewind_files: which files would change, and whether it can."""
        answer = await self._private_control(
            {"subtype": "rewind_files", "user_message_id": checkpoint_id, "dry_run": True}
        )
        files = answer.get("filesChanged") or []
        return RewindPreview(
            can_rewind=bool(answer.get("canRewind")),
            files_changed=tuple(str(path) for path in files),
            insertions=int(answer.get("insertions") or 0),
            deletions=int(answer.get("deletions") or 0),
            error=str(answer["error"]) if answer.get("error") else None,
        )

    async def rewind(self, checkpoint_id: str) -> None:
        """Restore the files to their state before that prompt (the public SDK call)."""
        try:
            await asyncio.wait_for(self._client.rewind_files(checkpoint_id), timeout=60)
        except (ClaudeSDKError, OSError) as exc:
            raise AgentFailure(self._describe(exc)) from exc
        except Exception as exc:
            # The SDK raises bare Exceptions for control errors ("No file checkpoint found…").
            raise AgentFailure(str(exc) or type(exc).__name__) from exc

    async def _private_control(self, request: dict[str, Any]) -> dict[str, Any]:
        if claude_agent_sdk.__version__ not in PRIVATE_CONTROL_SDK_VERSIONS:
            raise AgentFailure(
                f"the rewind preview is not verified on claude-agent-sdk {claude_agent_sdk.__version__}"
            )
        query = getattr(self._client, "_query", None)
        send = getattr(query, "_send_control_request", None)
        if send is None:
            raise AgentFailure("the agent connection has no control channel")
        try:
            answer = await send(request, timeout=60.0)
        except (ClaudeSDKError, OSError) as exc:
            raise AgentFailure(self._describe(exc)) from exc
        except Exception as exc:
            raise AgentFailure(str(exc) or type(exc).__name__) from exc
        return dict(answer or {})

    @property
    def alive(self) -> bool:
        """Whether the CLI process still runs (a pooled CLI may have died while it waited)."""
        transport = getattr(self._client, "_transport", None)
        process = getattr(transport, "_process", None)
        return self._connected and process is not None and process.returncode is None

    @property
    def stderr_tail(self) -> str:
        return self._stderr.tail()

    async def connect(self) -> None:
        try:
            await self._client.connect()
        except (ClaudeSDKError, OSError, ValueError) as exc:
            raise AgentFailure(self._describe(exc)) from exc
        self._connected = True

    async def warm_up(self) -> None:
        """Have a CLI that has not had a prompt yet do the work it otherwise does on its first one.

        Measured on CLI 2.1.331: a connected CLI spends 100-300 ms of its first prompt before it even
        asks the model (loading what a query needs, assembling its system prompt and tools), and a
        follow-up prompt on the same CLI none of that. Asking it for its context usage does the same
        work without a prompt: nothing goes to the transcript, and a model that refuses its token counts
        (a pooled CLI's model pass is shut) only makes the answer an estimate. Best effort."""
        try:
            await asyncio.wait_for(self._client.get_context_usage(), timeout=WARM_UP_TIMEOUT_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("agent.warm_up_failed", error=str(exc)[:500])

    async def send(self, prompt: str, prompt_uuid: str) -> None:
        message = {
            "type": "user",
            "message": {"role": "user", "content": prompt},
            "parent_tool_use_id": None,
            # The prompt's uuid is the file checkpoint id for a later rewind.
            "uuid": prompt_uuid,
        }

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield message

        try:
            await self._client.query(one())
        except (ClaudeSDKError, OSError) as exc:
            raise AgentFailure(self._describe(exc)) from exc

    async def outputs(self) -> AsyncIterator[AgentOutput]:
        """Every message of the connection, converted, until the CLI exits."""
        try:
            async for message in self._client.receive_messages():
                output = convert(message)
                if output is not None:
                    yield output
        except (ClaudeSDKError, OSError) as exc:
            raise AgentFailure(self._describe(exc)) from exc
        raise AgentFailure(self._describe(None))

    async def interrupt(self) -> None:
        try:
            await asyncio.wait_for(self._client.interrupt(), timeout=10)
        except Exception as exc:
            # Best effort: a dead or stuck CLI is dealt with by closing it.
            log.warning("agent.interrupt_failed", error=str(exc))

    def terminate(self) -> None:
        """SIGTERM the CLI process now (its sandbox dies with it), without the SDK's 5 s grace after
        stdin closes: for a session whose lease moved on, where nothing the CLI still says may be
        written. close() then reaps it. Best effort: the SDK's process handle is private."""
        transport = getattr(self._client, "_transport", None)
        process = getattr(transport, "_process", None)
        if process is not None and getattr(process, "returncode", 0) is None:
            with contextlib.suppress(ProcessLookupError, OSError):
                process.terminate()

    async def close(self, *, interrupt_first: bool = True) -> None:
        """Stop the CLI. `interrupt_first=False` for a CLI that already ignored an interrupt."""
        if not self._connected:
            return
        self._connected = False
        if interrupt_first:
            # Interrupt first: disconnect mid-turn otherwise waits 5 s for the CLI (docs/architecture.md).
            await self.interrupt()
        try:
            await asyncio.wait_for(self._client.disconnect(), timeout=20)
        except Exception as exc:
            # The process is going away either way.
            log.warning("agent.disconnect_failed", error=str(exc))

    def _describe(self, exc: BaseException | None) -> str:
        parts = []
        if isinstance(exc, ProcessError):
            # The SDK's own text ("Command failed with exit code 137 … Check stderr output for details")
            # names neither the agent nor the signal.
            parts.append(_exit_text(exc.exit_code))
        elif exc is not None:
            parts.append(str(exc) or type(exc).__name__)
        else:
            parts.append("the agent CLI exited")
        tail = self._stderr.tail(10)
        if tail:
            parts.append(f"stderr: {tail}")
        return "; ".join(parts)


def _exit_text(code: int | None) -> str:
    """How the CLI process ended: its exit code, and the signal for a code the shell makes of one."""
    if code is None:
        return "the agent CLI exited"
    number = -code if code < 0 else code - 128 if code > 128 else None
    if number is not None:
        try:
            return f"the agent CLI was killed by {signal.Signals(number).name} (exit code {code})"
        except ValueError:
            pass
    return f"the agent CLI exited with code {code}"


def _system_prompt(spec: AgentSpec) -> str | SystemPromptPreset | None:
    if spec.system_prompt_preset is None:
        return spec.system_prompt
    preset = SystemPromptPreset(type="preset", preset="claude_code")
    if spec.system_prompt_preset.get("append"):
        preset["append"] = spec.system_prompt_preset["append"]
    return preset


def _subagent(definition: dict[str, Any], disallowed: tuple[str, ...]) -> AgentDefinition:
    """A subagent denied what its parent is denied, in its own definition too: the caller's
    disallowedTools and the operator's denied tools hold inside it whatever tools it lists."""
    agent = AgentDefinition(**definition)
    if disallowed:
        agent.disallowedTools = [*(agent.disallowedTools or []), *disallowed]
    return agent


def _hook_matchers(provider: HookProvider) -> dict[str, list[HookMatcher]]:
    """One matcher per event, for every tool: sessions without webhooks get no hooks at all."""

    def for_event(event: str) -> HookMatcher:
        async def call(input_data: Any, tool_use_id: str | None, context: Any) -> Any:
            return await provider.callback(event, dict(input_data), tool_use_id)

        return HookMatcher(matcher=None, hooks=[call], timeout=provider.timeout_seconds)

    return {event: [for_event(event)] for event in provider.events}


def _block(block: Any) -> dict[str, Any] | None:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if isinstance(block, ToolResultBlock):
        return {
            "type": "tool_result",
            "tool_use_id": block.tool_use_id,
            "content": block.content,
            "is_error": block.is_error,
        }
    # Server tool blocks and future kinds: keep them readable rather than drop them.
    if dataclasses.is_dataclass(block) and not isinstance(block, type):
        return {"type": "other", "data": dataclasses.asdict(block)}
    return None


def _blocks(blocks: list[Any]) -> list[dict[str, Any]]:
    return [converted for converted in map(_block, blocks) if converted is not None]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def convert(message: Any) -> AgentOutput | None:
    """An SDK message as an event, or None for messages the service does not keep."""
    if isinstance(message, AssistantMessage):
        return AgentOutput(
            EventKind.ASSISTANT,
            {
                "uuid": message.uuid,
                "model": message.model,
                "content": _blocks(message.content),
                "parent_tool_use_id": message.parent_tool_use_id,
                "stop_reason": message.stop_reason,
                "usage": message.usage,
                "error": message.error,
                "message_id": message.message_id,
            },
        )
    if isinstance(message, UserMessage):
        text: str | None
        if isinstance(message.content, str):
            text, content = message.content, [{"type": "text", "text": message.content}]
        else:
            content = _blocks(message.content)
            texts = [block["text"] for block in content if block["type"] == "text"]
            text = "\n".join(texts) if texts else None
        return AgentOutput(
            EventKind.USER,
            {
                "uuid": message.uuid,
                "text": text,
                "content": content,
                "parent_tool_use_id": message.parent_tool_use_id,
                "tool_use_result": message.tool_use_result,
            },
        )
    if isinstance(message, ResultMessage):
        uuids = tuple(
            message.user_message_uuids or ([message.user_message_uuid] if message.user_message_uuid else [])
        )
        return AgentOutput(
            EventKind.RESULT,
            {
                "subtype": message.subtype,
                "is_error": message.is_error,
                "duration_ms": message.duration_ms,
                "duration_api_ms": message.duration_api_ms,
                "num_turns": message.num_turns,
                "total_cost_usd": message.total_cost_usd,
                "usage": message.usage,
                "result": message.result,
                "structured_output": message.structured_output,
                "stop_reason": message.stop_reason,
                "terminal_reason": message.terminal_reason,
                "permission_denials": message.permission_denials,
                "errors": message.errors,
                "api_error_status": message.api_error_status,
                "user_message_uuids": list(uuids),
            },
            is_result=True,
            result_uuids=uuids,
            total_cost_usd=message.total_cost_usd,
        )
    if isinstance(message, StreamEvent):
        return AgentOutput(EventKind.PARTIAL, {"event": message.event}, ephemeral=True)
    if isinstance(message, SystemMessage):
        return AgentOutput(EventKind.SYSTEM, {"subtype": message.subtype, "data": message.data})
    if isinstance(message, RateLimitEvent):
        return AgentOutput(
            EventKind.SYSTEM, {"subtype": "rate_limit", "data": _jsonable(message.rate_limit_info) or {}}
        )
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        # ConversationResetMessage and kinds newer than this adapter: recorded, never lost.
        return AgentOutput(
            EventKind.SYSTEM, {"subtype": type(message).__name__, "data": dataclasses.asdict(message)}
        )
    return None
