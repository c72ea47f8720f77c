"""The rewind preview rides on a private SDK call: pinned to the SDK version it was verified on."""

from __future__ import annotations

import inspect

import pytest

from api.runtime import sdk_adapter
from api.runtime.sdk_adapter import AgentConnection, AgentFailure, AgentSpec


def test_the_installed_sdk_is_the_one_the_private_call_was_verified_on() -> None:
    # A new SDK version fails here first: re-verify the dry run (tests/graphql/test_sessions.py) and
    # add the version to PRIVATE_CONTROL_SDK_VERSIONS, or replace the call if the SDK grew a public one.
    assert sdk_adapter.claude_agent_sdk.__version__ in sdk_adapter.PRIVATE_CONTROL_SDK_VERSIONS
    from claude_agent_sdk._internal.query import Query

    parameters = inspect.signature(Query._send_control_request).parameters
    assert list(parameters) == ["self", "request", "timeout"]


async def test_another_sdk_version_refuses_the_preview_rather_than_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk_adapter.claude_agent_sdk, "__version__", "9.9.9")
    connection = AgentConnection(AgentSpec(session_id="s", cwd="/nonexistent", resume=True, env={}))
    with pytest.raises(AgentFailure, match=r"not verified on claude-agent-sdk 9\.9\.9"):
        await connection.preview_rewind("checkpoint")
