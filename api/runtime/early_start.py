"""A new session's CLI, started while startRun writes the session (docs/architecture.md, decision 14).

A cold start's CLI needs a few hundred milliseconds before it takes a prompt, and nothing it does in that
time depends on the session's rows: its id, tenant, folders and options are known once startRun has
validated the request. So startRun picks the session id, starts the CLI for it in its own sandbox, and
writes the session and its run (begun here, decision 13) while the CLI starts; after the commit the
session's actor holds the starting CLI as it would a pooled one (api/runtime/warm_pool.py) and sends the
prompt as soon as the CLI is connected. A startRun that fails stops the CLI and removes its folders.

The CLI is confined as any other: its own sandbox, folders and gateway pass, and the pass stays shut until
the run executes, so a CLI whose startRun is refused never reaches the model. Its callbacks reach the
session's actor only once the session exists (WarmBinding).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from api.runtime.policy import RunOptions
from api.runtime.warm_pool import WarmCli, new_session_cli
from api.sandbox.layout import SessionPaths, remove_tree

if TYPE_CHECKING:
    from api.runtime.run_manager import RunManager

log = structlog.get_logger(__name__)

# After a startRun with an early CLI failed (a budget or a rate limit refused it, say), that tenant's new
# sessions start their CLIs after the commit again for this long: a refused caller must not make the
# replica start a CLI per request.
REFUSED_BACKOFF_SECONDS = 10.0


class EarlyStarts:
    """The CLIs startRun starts for new sessions, counted against the replica's budget until their
    session's actor holds them (or they are stopped)."""

    def __init__(self, manager: RunManager) -> None:
        self.manager = manager
        self._preparing = 0
        self._clis: set[WarmCli] = set()
        self._refused_until: dict[str, float] = {}
        # Each tenant's hook events as last read (hook_events()).
        self._hook_events: dict[str, tuple[str, ...]] = {}

    def live(self) -> int:
        self._clis = {cli for cli in self._clis if cli.binding.actor is None and not cli.stopped}
        return self._preparing + len(self._clis)

    def allowed(self, tenant_id: str) -> bool:
        """Whether a new session of this tenant may start its CLI early: not with transcripts in the
        database (the CLI must mirror into the session's store, which does not exist before the session
        does: the warm pool's limit too), nor for a tenant whose last early start was refused."""
        if self.manager.settings.session_store == "database":
            return False
        until = self._refused_until.get(tenant_id)
        if until is None:
            return True
        if asyncio.get_running_loop().time() < until:
            return False
        del self._refused_until[tenant_id]
        return True

    def refused(self, tenant_id: str) -> None:
        self._refused_until[tenant_id] = asyncio.get_running_loop().time() + REFUSED_BACKOFF_SECONDS

    def hook_events(self, tenant_id: str) -> tuple[str, ...] | None:
        """The tenant's hook events as last read (None the first time: read them before the start). The
        CLI need not wait for a database read: the run begins with the events read in its transaction,
        and its actor starts a CLI anew when they differ from the ones this CLI was started with
        (SessionActor._take_warm), so a webhook added meanwhile costs one start its head start, never a
        hook. That read also renews this one (saw_hook_events), with no read of its own."""
        return self._hook_events.get(tenant_id)

    def saw_hook_events(self, tenant_id: str, events: tuple[str, ...]) -> None:
        """The tenant's hook events, as a run's transaction (startRun's, for a run begun here) just read
        them: what the tenant's next early start uses."""
        self._hook_events[tenant_id] = events

    async def start(self, tenant_id: str, session_id: str, options: RunOptions) -> WarmCli | None:
        """Start the CLI (connecting in the background: WarmCli.starting); None when it could not be
        prepared. Counted as live from the call on, before its first await."""
        self._preparing += 1
        try:
            launch, connection, binding = await new_session_cli(
                self.manager, tenant_id, session_id, options, "early", self.hook_events(tenant_id)
            )
        except BaseException as exc:
            # No session was made of its folders (new and empty): they go.
            paths = SessionPaths.of(self.manager.settings.data_dir, tenant_id, session_id)
            await asyncio.shield(asyncio.to_thread(remove_tree, paths.root))
            if not isinstance(exc, Exception):
                raise
            log.warning("agent.early_start_failed", session_id=session_id, exc_info=True)
            return None
        finally:
            self._preparing -= 1
        self._hook_events.setdefault(tenant_id, connection.spec.hook_events)
        cli = WarmCli(tenant_id, session_id, "", options.to_json(), launch, connection, binding, early=True)
        cli.starting = asyncio.create_task(connection.connect(), name=f"early-start-{session_id}")
        self._clis.add(cli)
        return cli
