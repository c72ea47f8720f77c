"""Permission requests: the agent asks before a tool runs, a person (or a script) decides."""
