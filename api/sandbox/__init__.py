"""Confinement of agent CLIs: where each session's files live, the bubblewrap sandbox, the model gateway."""
