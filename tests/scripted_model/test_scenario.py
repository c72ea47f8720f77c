"""Scenario parsing and selection, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from api.scripted_model.builtins import builtin_scenario
from api.scripted_model.conversation import select_scenario, turn_position
from api.scripted_model.scenario import (
    FINISHED_STEP,
    ScenarioError,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    parse_scenario,
)

REMINDER = {"type": "text", "text": "<system-reminder>\nAttribution for git commits\n</system-reminder>"}


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [REMINDER, *({"type": "text", "text": t} for t in texts)]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def tool_result(extra_text: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]
    if extra_text:
        content.append({"type": "text", "text": extra_text})
    return {"role": "user", "content": content}


ENVIRONMENT = {
    "role": "system",
    "content": "# Environment\n - Primary working directory: /work/ws\n - Shell: bash",
}


class TestParse:
    def test_full_step(self) -> None:
        scenario = parse_scenario(
            {
                "steps": [
                    {
                        "content": [
                            {"type": "thinking", "thinking": "hmm"},
                            {"type": "text", "text": "hi"},
                            {"type": "tool_use", "name": "Bash", "input": {"command": "ls"}},
                        ],
                        "usage": {"input_tokens": 5, "output_tokens": 7},
                        "delay_ms": 10,
                        "tokens_per_second": 50,
                    }
                ]
            }
        )
        step = scenario.step(0)
        assert step.content == (
            ThinkingBlock("hmm"),
            TextBlock("hi"),
            ToolUseBlock("Bash", {"command": "ls"}),
        )
        assert step.effective_stop_reason == "tool_use"
        assert (step.usage.input_tokens, step.usage.output_tokens, step.delay_ms) == (5, 7, 10)
        assert step.tokens_per_second == 50.0

    def test_past_the_last_step_finishes(self) -> None:
        scenario = parse_scenario({"steps": [{"content": [{"type": "text", "text": "x"}]}]})
        assert scenario.step(0).effective_stop_reason == "end_turn"
        assert scenario.step(1) is FINISHED_STEP

    def test_error_type_defaults_from_status(self) -> None:
        step = parse_scenario({"steps": [{"error": {"status": 429}}]}).step(0)
        assert step.error is not None
        assert (step.error.status, step.error.type) == (429, "rate_limit_error")

    @pytest.mark.parametrize(
        "script",
        [
            {},
            {"steps": []},
            {"steps": [{}]},
            {"steps": [{"content": [{"type": "image"}]}]},
            {"steps": [{"content": [{"type": "text", "txt": "typo"}]}]},
            {"steps": [{"content": [{"type": "text", "text": "x"}], "stop_reason": "done"}]},
            {"steps": [{"content": [{"type": "text", "text": "x"}], "tokens_per_second": 0}]},
            {"steps": [{"error": {"status": 418}}]},
            {"steps": [{"content": [{"type": "text", "text": "x"}], "delay": 5}]},
        ],
    )
    def test_rejects_bad_scripts(self, script: dict[str, Any]) -> None:
        with pytest.raises(ScenarioError):
            parse_scenario(script)


class TestSelection:
    def test_inline_json_runs_to_the_end(self) -> None:
        selector = select_scenario('do this\n[scenario] {"steps": [{"content": []}]}')
        assert selector.inline == {"steps": [{"content": []}]}

    def test_named(self) -> None:
        assert select_scenario("please [scenario:many:3] now").name == "many:3"

    def test_default_is_echo(self) -> None:
        assert select_scenario("hello").name is None

    def test_invalid_json(self) -> None:
        with pytest.raises(ScenarioError, match="not valid JSON"):
            select_scenario("[scenario]{nope")

    def test_unknown_builtin(self) -> None:
        with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
            builtin_scenario("nope", "", None)

    def test_write_file_uses_cwd(self) -> None:
        with_cwd = builtin_scenario("write-file", "", "/work/ws").step(0).content[0]
        without = builtin_scenario("write-file", "", None).step(0).content[0]
        assert isinstance(with_cwd, ToolUseBlock)
        assert isinstance(without, ToolUseBlock)
        assert with_cwd.input["file_path"] == "/work/ws/hello.txt"
        assert without.input["file_path"] == "hello.txt"


class TestTurnPosition:
    def test_first_request(self) -> None:
        position = turn_position({"messages": [user("hi"), ENVIRONMENT]})
        assert (position.prompt_text, position.step_index, position.cwd) == ("hi", 0, "/work/ws")

    def test_tool_loop_counts_assistant_messages(self) -> None:
        body = {
            "messages": [
                user("go"),
                ENVIRONMENT,
                assistant("a"),
                tool_result(),
                assistant("b"),
                tool_result(),
            ]
        }
        assert turn_position(body).step_index == 2

    def test_tool_result_with_text_does_not_start_a_turn(self) -> None:
        body = {"messages": [user("go"), assistant("a"), tool_result("<system-reminder>x</system-reminder>")]}
        position = turn_position(body)
        assert (position.prompt_text, position.step_index) == ("go", 1)

    def test_new_user_text_resets_the_step(self) -> None:
        body = {"messages": [user("one"), assistant("a"), tool_result(), assistant("b"), user("two")]}
        position = turn_position(body)
        assert (position.prompt_text, position.step_index) == ("two", 0)

    def test_earlier_prompts_are_the_previous_turns_prompts(self) -> None:
        body = {
            "messages": [
                user("one"),
                assistant("a"),
                tool_result(),
                assistant("b"),
                user("two"),
                assistant("c"),
                user("[scenario:recall]"),
            ]
        }
        position = turn_position(body)
        assert position.earlier_prompts == ("one", "two")
        text = (
            builtin_scenario("recall", position.prompt_text, None, position.earlier_prompts)
            .step(0)
            .content[0]
        )
        assert isinstance(text, TextBlock)
        assert text.text == "Earlier prompts (2): one | two"
        first = builtin_scenario("recall", "x", None).step(0).content[0]
        assert isinstance(first, TextBlock)
        assert first.text == "Earlier prompts (0): (none)"

    def test_prompts_merged_after_a_failed_turn_use_the_last(self) -> None:
        # Measured with CLI 2.1.331: a failed turn's prompt stays in the next user message.
        body = {"messages": [user("[scenario:error:529]\n", "[scenario:thinking]")]}
        assert turn_position(body).prompt_text == "[scenario:thinking]"

    def test_consecutive_assistant_messages_are_one_step(self) -> None:
        body = {"messages": [user("go"), assistant("a"), assistant("b"), tool_result()]}
        assert turn_position(body).step_index == 1

    def test_reminder_only_user_message_continues_the_turn(self) -> None:
        # The CLI's max_tokens recovery sends a user message that is only a <system-reminder>.
        body = {
            "messages": [user("go"), assistant("cut"), {"role": "user", "content": "<system-reminder>go on"}]
        }
        position = turn_position(body)
        assert (position.prompt_text, position.step_index) == ("go", 1)

    def test_tool_ids_differ_across_turns(self) -> None:
        first = turn_position({"messages": [user("[scenario:write-file]")]})
        second = turn_position(
            {"messages": [user("[scenario:write-file]"), assistant("Done."), user("[scenario:write-file]")]}
        )
        assert first.turn_key != second.turn_key
