"""System tools some tests need (chromium, node, npm): skipped with the reason on a developer's machine,
a failure in CI (`CI` set), where `scripts/bootstrap` installs them and a silent skip would hide a gap."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_tool(*names: str, why: str) -> str:
    """The path of the first of `names` on PATH; otherwise skip (or fail in CI) saying `why`."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = f"{' or '.join(names)} is not installed: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI must run these tests)", pytrace=False)
    pytest.skip(message)
