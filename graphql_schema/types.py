"""Sessions, runs, checkpoints and the audit trail, with their Relay connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar, cast

import strawberry
from strawberry.scalars import JSON

from graphql_schema import cursors
from graphql_schema.context import Info
from graphql_schema.dataloaders import RunsPage
from graphql_schema.event_types import ResultMessage, RunStatus
from persistence.models import AgentSession
from persistence.models import AuditEntry as AuditEntryModel
from persistence.models import Run as RunModel
from persistence.repositories.runs import ListedRun
from persistence.repositories.sessions import ListedSession

NodeT = TypeVar("NodeT")

MAX_PAGE = 100
FIRST = f"How many items, from 1 to {MAX_PAGE}."
AFTER = "An endCursor from a previous page: continue after it."


@strawberry.type(description="Where a page of a connection stands.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="True when another page follows this one.")
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` to get the next page; null when the page is empty."
    )
    has_previous_page: bool = strawberry.field(
        default=False,
        description="True when items come before this page: it was asked for with `after`, and (for "
        "sessions, checked) an item matching the filter is at that cursor or before it. False for a "
        "first page.",
    )
    start_cursor: str | None = strawberry.field(
        default=None, description="The cursor of the page's first item; null when the page is empty."
    )


@strawberry.type(description="A node with the cursor to continue after it.")
class Edge(Generic[NodeT]):
    cursor: str = strawberry.field(description="Opaque; pass as `after` to continue after this node.")
    node: NodeT = strawberry.field(description="The item.")


RowT = TypeVar("RowT")


def page_of(
    rows: Sequence[RowT],
    limit: int,
    cursor: Callable[[RowT], str],
    node: Callable[[RowT], NodeT],
    *,
    has_previous_page: bool = False,
) -> tuple[list[Edge[NodeT]], PageInfo]:
    """Edges and PageInfo from `limit + 1` fetched rows (the extra one only says a next page exists)."""
    edges: list[Edge[NodeT]] = [_RowEdge(row, cursor, node(row)) for row in rows[:limit]]
    return edges, _EdgesPageInfo(edges, has_next_page=len(rows) > limit, has_previous_page=has_previous_page)


class _RowEdge(Edge[NodeT]):
    """An Edge whose cursor is encoded from its row when something reads it: a listing's nested pages
    (each session's runs) seldom ask for their edges' cursors, and encoding them all was a few per cent
    of the listing's CPU. The same Strawberry type as Edge (it inherits its definition)."""

    def __init__(self, row: Any, cursor_of: Callable[[Any], str], node: NodeT) -> None:
        self.node = node
        self._row = row
        self._cursor_of = cursor_of
        self._cursor: str | None = None

    @property
    def cursor(self) -> str:  # type: ignore[override]
        if self._cursor is None:
            self._cursor = self._cursor_of(self._row)
        return self._cursor


class _EdgesPageInfo(PageInfo):
    """A PageInfo whose start and end cursors are their edges' cursors, encoded when something reads them:
    a listing's nested pages (each session's runs) seldom ask for them, and encoding two per page was a
    few per cent of the listing's CPU. The same Strawberry type as PageInfo (it inherits its definition)."""

    def __init__(self, edges: Sequence[Edge[Any]], *, has_next_page: bool, has_previous_page: bool) -> None:
        self.has_next_page = has_next_page
        self.has_previous_page = has_previous_page
        self._edges = edges

    @property
    def end_cursor(self) -> str | None:  # type: ignore[override]
        return self._edges[-1].cursor if self._edges else None

    @property
    def start_cursor(self) -> str | None:  # type: ignore[override]
        return self._edges[0].cursor if self._edges else None


def time_id_cursor(row: AgentSession | RunModel | ListedSession | ListedRun) -> str:
    return cursors.encode(row.created_at.isoformat(), row.id)


@strawberry.type(
    description="The point a session's files can be rewound to: the state before a run's prompt."
)
class Checkpoint:
    id: strawberry.ID = strawberry.field(description="The prompt's uuid, the agent's file checkpoint id.")
    run_id: strawberry.ID = strawberry.field(description="The run whose prompt starts here.")
    prompt: str = strawberry.field(description="That run's prompt.")
    created_at: datetime = strawberry.field(description="When that run was created.")


def _run_result(root: Run) -> ResultMessage | None:
    return ResultMessage.from_payload(root.result_payload) if root.result_payload else None


@strawberry.type(description="One prompt sent to a session and what became of it.")
class Run:
    id: strawberry.ID = strawberry.field(description="The run's id.")
    session_id: strawberry.ID = strawberry.field(description="The session it belongs to.")
    status: RunStatus = strawberry.field(description="Where the run is in its life.")
    prompt: str = strawberry.field(description="The prompt, as sent.")
    checkpoint_id: strawberry.ID | None = strawberry.field(
        description="Rewind to here to undo this run's edits."
    )
    created_at: datetime = strawberry.field(description="When startRun queued it.")
    started_at: datetime | None = strawberry.field(description="When it began executing; null while QUEUED.")
    finished_at: datetime | None = strawberry.field(description="When it ended; null until then.")
    result: ResultMessage | None = strawberry.field(
        resolver=_run_result, description="The turn's result, once it has ended."
    )
    error: str | None = strawberry.field(description="Why the run failed or was stopped, when it was.")
    cost_usd: float | None = strawberry.field(
        description="What this run alone cost in US dollars, as the agent reports (its share of the agent's "
        "running total); null until it ended, or when the agent reported no cost."
    )
    usage: JSON | None = strawberry.field(
        description="This run's token usage as the agent reports it (input_tokens, output_tokens, cache "
        "reads and writes…); null until it ended."
    )
    # The result as stored, made a ResultMessage only when a query asks for it: building one for every run
    # of a page (a listing's runs rarely ask) was a few per cent of the listing's CPU.
    result_payload: strawberry.Private[dict[str, Any] | None] = None

    @classmethod
    def from_model(cls, run: RunModel | ListedRun) -> Run:
        return cls(
            id=strawberry.ID(run.id),
            session_id=strawberry.ID(run.session_id),
            status=RunStatus(run.status),
            prompt=run.prompt,
            checkpoint_id=strawberry.ID(run.prompt_uuid),
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
            cost_usd=run.cost_usd,
            usage=cast(JSON, run.usage),
            result_payload=run.result,
        )

    @strawberry.field(
        description="While QUEUED, where the run stands in the deployment's queue: 1 is next, counting "
        "every tenant's queued runs created before it (an estimate: a run also waits for its session's "
        "earlier runs, and for a free agent within the replicas' memory budget). Null once it started."
    )
    async def queue_position(self, info: Info) -> int | None:
        if self.status != RunStatus.QUEUED:
            return None
        return await info.context.loaders.queue_position.load((self.created_at, str(self.id)))

    @strawberry.field(description="The session this run belongs to.")
    async def session(self, info: Info) -> Session:
        row = await info.context.loaders.session.load(str(self.session_id))
        assert row is not None
        return Session.from_model(row)


@strawberry.type(description="A page of runs, oldest first.")
class RunConnection:
    edges: list[Edge[Run]] = strawberry.field(description="The runs of this page, each with its cursor.")
    page_info: PageInfo = strawberry.field(description="Whether more runs follow, and where to continue.")


@strawberry.type(description="A conversation with an agent: its runs, its event log and its workspace.")
class Session:
    id: strawberry.ID = strawberry.field(description="The session's id, also the agent CLI's session id.")
    title: str | None = strawberry.field(
        description="startRun's title, or the first line of the first prompt."
    )
    status: str = strawberry.field(description="IDLE, QUEUED or RUNNING.")
    created_at: datetime = strawberry.field(description="When the session was created.")
    updated_at: datetime = strawberry.field(description="When its status last changed.")
    last_seq: int = strawberry.field(description="The seq of the newest durable event.")
    total_cost_usd: float = strawberry.field(
        description="What the session's runs cost together: the sum of their costUsd."
    )
    tags: list[str] = strawberry.field(description="The caller's labels (setSessionTags), in order.")
    archived: bool = strawberry.field(description="True once archiveSession was called (until unarchived).")
    archived_at: datetime | None = strawberry.field(description="When it was archived; null if it is not.")
    forked_from_id: strawberry.Private[str | None]

    @classmethod
    def from_model(cls, row: AgentSession | ListedSession) -> Session:
        return cls(
            id=strawberry.ID(row.id),
            title=row.title,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_seq=row.last_seq,
            total_cost_usd=row.total_cost_usd,
            tags=list(row.tags or []),
            archived=row.archived_at is not None,
            archived_at=row.archived_at,
            forked_from_id=row.forked_from_id,
        )

    @strawberry.field(description="The session's runs, oldest first.")
    async def runs(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> RunConnection:
        limit = cursors.page_size(first, default=20, maximum=MAX_PAGE)
        position = cursors.decode_time_id(after) if after else None
        rows = await info.context.loaders.runs_page.load(RunsPage(str(self.id), position, limit + 1))
        edges, page_info = page_of(
            rows, limit, time_id_cursor, Run.from_model, has_previous_page=position is not None
        )
        return RunConnection(edges=edges, page_info=page_info)

    @strawberry.field(description="Every point the session's files can be rewound to, oldest first.")
    async def checkpoints(self, info: Info) -> list[Checkpoint]:
        rows = await info.context.loaders.started_runs.load(str(self.id))
        return [
            Checkpoint(
                id=strawberry.ID(r.prompt_uuid),
                run_id=strawberry.ID(r.id),
                prompt=r.prompt,
                created_at=r.created_at,
            )
            for r in rows
        ]

    @strawberry.field(description="The session this one was forked from, if it was.")
    async def forked_from(self, info: Info) -> Session | None:
        if self.forked_from_id is None:
            return None
        row = await info.context.loaders.session.load(self.forked_from_id)
        return Session.from_model(row) if row else None


@strawberry.type(description="A page of sessions, newest first.")
class SessionConnection:
    edges: list[Edge[Session]] = strawberry.field(
        description="The sessions of this page, each with its cursor."
    )
    page_info: PageInfo = strawberry.field(description="Whether more sessions follow, and where to continue.")


@strawberry.input(description="Narrows the sessions listed.")
class SessionFilter:
    status: str | None = strawberry.field(default=None, description="IDLE, QUEUED or RUNNING.")
    title_contains: str | None = strawberry.field(
        default=None,
        description="Only sessions whose title contains this text, ignoring case (ASCII letters on the "
        "embedded SQLite database).",
    )
    archived: bool | None = strawberry.field(
        default=None, description="true: only archived sessions; false: only the others; absent: both."
    )
    tag: str | None = strawberry.field(default=None, description="Only sessions carrying this tag.")
    created_after: datetime | None = strawberry.field(
        default=None, description="Only sessions created after this time."
    )
    created_before: datetime | None = strawberry.field(
        default=None, description="Only sessions created before this time."
    )


@strawberry.type(description="Something that happened to a session, for dashboards.")
class SessionChange:
    kind: str = strawberry.field(description="CREATED, STATUS_CHANGED, UPDATED or DELETED.")
    session: Session = strawberry.field(description="The session as it is now.")


@strawberry.type(name="AuditEntry", description="One control action: who did what to what, and when.")
class AuditEntryType:
    id: strawberry.ID = strawberry.field(description="The entry's id; later entries have larger ids.")
    at: datetime = strawberry.field(description="When it happened.")
    action: str = strawberry.field(description="e.g. session.create, run.start, run.interrupt, key.create.")
    actor: str = strawberry.field(description="The API key that acted, as key:<id>, or system.")
    target_type: str = strawberry.field(description="What kind of thing was acted on: Session, Run, ApiKey.")
    target_id: strawberry.ID = strawberry.field(description="The id of what was acted on.")
    details: JSON | None = strawberry.field(description="What else is worth knowing, per action.")

    @classmethod
    def from_model(cls, entry: AuditEntryModel) -> AuditEntryType:
        return cls(
            id=strawberry.ID(str(entry.id)),
            at=entry.at,
            action=entry.action,
            actor=entry.actor,
            target_type=entry.target_type,
            target_id=strawberry.ID(entry.target_id),
            details=cast(JSON, entry.details),
        )


@strawberry.type(description="A page of audit entries, newest first.")
class AuditEntryConnection:
    edges: list[Edge[AuditEntryType]] = strawberry.field(
        description="The entries of this page, each with its cursor."
    )
    page_info: PageInfo = strawberry.field(description="Whether more entries follow, and where to continue.")


@strawberry.input(description="Narrows the audit entries listed.")
class AuditFilter:
    action: str | None = strawberry.field(default=None, description="Only this action, e.g. run.start.")
    target_type: str | None = strawberry.field(
        default=None, description="Only actions on this kind of thing."
    )
    target_id: strawberry.ID | None = strawberry.field(default=None, description="Only actions on this id.")
    actor: str | None = strawberry.field(default=None, description="Only this actor, e.g. key:<id>.")
    since: datetime | None = strawberry.field(default=None, description="Only entries at or after this time.")
    until: datetime | None = strawberry.field(default=None, description="Only entries before this time.")
