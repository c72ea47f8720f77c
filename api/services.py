"""The resources of one running server, built and torn down by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from api.auth import Authenticator
from api.control.checkpoints import CheckpointControl
from api.control.live import LiveControl
from api.control.permissions import PermissionControl
from api.control.runs import RunControl
from api.control.sessions import SessionControl
from api.events.bus import EventBus
from api.events.log import EventLog
from api.key_watch import KeyWatch
from api.limits import Limits
from api.runtime.run_manager import RunManager
from api.settings import Settings
from api.webhooks.registry import WebhookRegistry
from persistence.database import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: EventBus
    event_log: EventLog
    run_manager: RunManager
    run_control: RunControl
    webhooks: WebhookRegistry
    permission_control: PermissionControl
    live_control: LiveControl
    session_control: SessionControl
    checkpoint_control: CheckpointControl
    key_watch: KeyWatch
    limits: Limits
    authenticator: Authenticator
