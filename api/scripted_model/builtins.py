"""The built-in named scenarios (``[scenario:NAME]`` in a prompt); the list is in the package docstring."""

from __future__ import annotations

import posixpath

from api.scripted_model.scenario import (
    Scenario,
    ScenarioError,
    Step,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    error_step,
)

MAX_MANY_BLOCKS = 100_000
SLOW_WORDS = 50
SLOW_TOKENS_PER_SECOND = 20.0
BUILTIN_NAMES = "echo, recall, thinking, write-file, slow, many:N, error:STATUS"


def builtin_scenario(
    name: str, prompt_text: str, cwd: str | None, earlier_prompts: tuple[str, ...] = ()
) -> Scenario:
    """Build the named scenario for this prompt; unknown names raise :class:`ScenarioError`."""
    base, _, arg = name.partition(":")
    if base == "echo" and not arg:
        return Scenario(name, (Step(content=(TextBlock(f"You said: {prompt_text}"),)),))
    if base == "recall" and not arg:
        # The model is stateless: what it can recall is exactly the history the CLI resumed and sent.
        listed = " | ".join(earlier_prompts) if earlier_prompts else "(none)"
        text = f"Earlier prompts ({len(earlier_prompts)}): {listed}"
        return Scenario(name, (Step(content=(TextBlock(text),)),))
    if base == "thinking" and not arg:
        return Scenario(
            name,
            (
                Step(
                    content=(
                        ThinkingBlock(
                            f"The user wrote {len(prompt_text)} characters. A short answer will do."
                        ),
                        TextBlock("I thought about it. Here is my answer."),
                    )
                ),
            ),
        )
    if base == "write-file" and not arg:
        # An absolute path keeps the Write tool from depending on how the CLI resolves relative ones.
        path = posixpath.join(cwd, "hello.txt") if cwd else "hello.txt"
        return Scenario(
            name,
            (
                Step(content=(ToolUseBlock("Write", {"file_path": path, "content": "hello\n"}),)),
                Step(content=(TextBlock("Done."),)),
            ),
        )
    if base == "slow" and not arg:
        words = " ".join(f"word{i + 1}" for i in range(SLOW_WORDS))
        return Scenario(name, (Step(content=(TextBlock(words),), tokens_per_second=SLOW_TOKENS_PER_SECOND),))
    if base == "many":
        count = _int_arg(name, arg)
        if not 1 <= count <= MAX_MANY_BLOCKS:
            raise ScenarioError(f"scenario {name!r}: N must be between 1 and {MAX_MANY_BLOCKS}")
        return Scenario(name, (Step(content=tuple(TextBlock(f"block {i + 1}") for i in range(count))),))
    if base == "error":
        return Scenario(name, (error_step(_int_arg(name, arg)),))
    raise ScenarioError(f"unknown scenario {name!r}; built-in scenarios: {BUILTIN_NAMES}")


def _int_arg(name: str, arg: str) -> int:
    if not arg.isdigit():
        raise ScenarioError(f"scenario {name!r} needs an integer argument, e.g. {name.split(':')[0]}:10")
    return int(arg)
