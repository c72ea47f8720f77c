"""Database reads of live subscriptions ride out an outage instead of ending the subscription.

A subscription lives for hours; a database restart lasts seconds. Ending every subscription with an
error for it (as happened: "Unexpected error." and complete) means every watcher misses what follows,
the run's FAILED included. So a subscription's reads wait for the database with capped exponential
backoff and full jitter, and the subscription resumes from its cursor once the database answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from api.events import metrics
from persistence.database import is_unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 2.0


async def until_database_answers(read: Callable[[], Awaitable[T]], *, what: str, **fields: object) -> T:
    """``await read()``, retried while the database is unreachable; any other error propagates.

    One warning when an outage begins and one info line when it ends, not one per attempt.
    """
    loop = asyncio.get_running_loop()
    attempts = 0
    began = 0.0
    ceiling = FIRST_DELAY
    while True:
        try:
            result = await read()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if attempts == 0:
                began = loop.time()
                log.warning("subscription.database_unavailable", what=what, error=repr(exc)[:300], **fields)
            attempts += 1
            metrics.SUBSCRIPTION_DATABASE_RETRIES.inc()
            # Full jitter: after a restart, thousands of subscriptions must not reconnect in one burst.
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
            ceiling = min(ceiling * 2, MAX_DELAY)
            continue
        if attempts:
            log.info(
                "subscription.database_back",
                what=what,
                attempts=attempts,
                waited_seconds=round(loop.time() - began, 2),
                **fields,
            )
        return result
