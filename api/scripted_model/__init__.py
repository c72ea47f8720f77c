"""A scripted stand-in for the Anthropic Messages API, for tests, demos and benchmarks.

The real Claude Code CLI talks to it through ``ANTHROPIC_BASE_URL`` (see
:func:`api.scripted_model.server.scripted_model_cli_env`). It keeps no state between requests: every
answer is derived from the conversation the CLI sends.

Selecting a scenario
    The prompt is the last text block, other than the CLI's ``<system-reminder>`` blocks, of the latest
    user message that has one and carries no tool result (after a failed turn the CLI appends the next
    prompt to the failed one's message, so the last block is the newest prompt). The prompt selects:

    * ``[scenario]`` followed by a JSON object (to the end of the text): that script;
    * ``[scenario:NAME]``: a built-in scenario (an unknown name is an HTTP 400 invalid_request_error);
    * anything else: ``echo``.

    Step *i* answers the *i*-th model request of the turn: *i* is the number of assistant messages after
    that user message. Past the last step the answer is the text "(scenario finished)" and end_turn.

Script format
    ``{"steps": [Step, ...]}``; a Step is ``{"content": [Block, ...], "stop_reason": "end_turn" |
    "tool_use" | "max_tokens", "usage": {"input_tokens": int, "output_tokens": int}, "delay_ms": int,
    "tokens_per_second": float, "error": {"status": int, "type": str, "message": str},
    "stream_error_after_ms": int}``. All keys are optional but a step needs content or an error.
    ``stop_reason`` defaults to tool_use when a tool_use block is present, else end_turn.
    ``delay_ms`` delays the status line. ``tokens_per_second`` paces text and thinking deltas (one
    word per delta). ``error`` alone answers that HTTP error; with ``stream_error_after_ms`` the
    content streams and an SSE ``error`` event (default overloaded_error) ends it after that many ms
    (a non-streaming request gets the HTTP error). A Block is ``{"type": "text", "text": str}``,
    ``{"type": "thinking", "thinking": str, "signature"?: str}`` or ``{"type": "tool_use", "name": str,
    "input": {...}, "id"?: str}``; missing tool ids are ``toolu_scripted...``, stable for a retried
    request and distinct across turns.

Built-in scenarios
    ``echo``          one text block "You said: <prompt text>", streamed in a few deltas.
    ``recall``        one text block "Earlier prompts (N): <p1> | <p2> ..." listing the prompts of the
                      turns before this one that the request carries, oldest first ("(none)" if
                      none): proof that a resumed session's history reached the model.
    ``thinking``      a thinking block (with signature) then a text block.
    ``write-file``    step 0: Write ``hello.txt`` (absolute path under the CLI's cwd, read from the
                      request's environment section; relative if absent) with "hello\\n";
                      step 1: text "Done.".
    ``slow``          50 words paced at 20 tokens/s: about 2.5 s, for interrupt tests.
    ``many:N``        one step of N text blocks "block 1" .. "block N" (the CLI emits one
                      AssistantMessage per block); 1 <= N <= 100000.
    ``error:STATUS``  HTTP error STATUS (400, 401, 403, 404, 413, 429, 500 or 529) with the matching
                      Anthropic error type.

Side requests
    ``HEAD/GET /api/hello`` (connectivity probe) answers 200. Tool-less ``/v1/messages`` requests with a
    JSON-schema ``output_config.format`` (the session-title call) get a JSON value for that schema and
    never consume a step. ``/v1/messages/count_tokens`` and ``/v1/models`` answer plausibly; anything
    else is a 404 not_found_error, recorded with kind "unknown".

Test endpoints
    ``GET /_scripted/requests`` (the last 200 requests, most recent last: method, path, query, headers
    without secrets, kind, body, and for conversation requests prompt, scenario and step),
    ``DELETE /_scripted/requests``, ``GET /_scripted/health``.
"""
