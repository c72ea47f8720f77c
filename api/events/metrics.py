"""Prometheus metrics for the event bus (default registry, so /metrics exposes them without wiring)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

MESSAGES_PUBLISHED: Final = Counter(
    "agent_bus_messages_published",
    "Messages the event bus handed to its transport (Redis or in-process).",
)
PUBLISH_FAILURES: Final = Counter(
    "agent_bus_publish_failures",
    "Publishes that failed because of a transport fault (the database log still has the event).",
)
MESSAGES_DELIVERED: Final = Counter(
    "agent_bus_messages_delivered",
    "Messages queued for a watcher (one per message per watcher).",
)
WATCHER_OVERFLOWS: Final = Counter(
    "agent_bus_watcher_overflows",
    "Times a watcher's bounded queue was full: its queue was dropped and it was told to resync.",
)
LEGACY_CONTROL_MESSAGES: Final = Counter(
    "agent_control_legacy_messages",
    "Unmarked messages heard on the fixed control channel `control:runs`: sent by replicas of a release "
    "before the deployment-named channel (CONTROL_LEGACY_CHANNEL).",
)
RESYNCS: Final = Counter(
    "agent_bus_resyncs",
    "RESYNC markers handed to watchers, by reason.",
    ["reason"],
)
RECONNECTS: Final = Counter(
    "agent_bus_reconnects",
    "Times the Redis listener connection was re-established after being lost.",
)
LIVE_WATCHERS: Final = Gauge(
    "agent_bus_live_watchers",
    "Watchers currently registered with an event bus in this process.",
)
REDIS_LISTENER_UP: Final = Gauge(
    "agent_bus_redis_listener_up",
    "1 while the Redis pub/sub listener connection is established and subscribed, else 0.",
)

EVENTS_APPENDED: Final = Counter("agent_events_appended", "Durable events this replica wrote to the log.")
SUBSCRIPTION_DATABASE_RETRIES: Final = Counter(
    "agent_subscription_database_retries",
    "Database reads of live subscriptions retried because the database was unreachable.",
)
OUTBOX_DROPPED: Final = Counter(
    "agent_bus_outbox_dropped",
    "Wake-ups dropped because the bus could not keep up (subscribers catch up from the log).",
)
EPHEMERAL_SKIPPED: Final = Counter(
    "agent_bus_ephemeral_skipped",
    "Token deltas not published because no subscriber of their session asked for them.",
)
