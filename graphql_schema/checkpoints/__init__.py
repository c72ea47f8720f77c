"""Checkpoints: rewinding a session's files (and conversation), and forking a session."""
