"""Copying (fork) and removing (delete) a session folder an agent wrote, whatever it put there."""

from __future__ import annotations

import os
from pathlib import Path

from api.sandbox.layout import copy_tree, remove_tree


def test_a_copy_takes_files_and_links_as_links_and_skips_what_would_block(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "file.txt").write_text("content")
    (source / "link").symlink_to("/etc/hostname")
    os.mkfifo(source / "pipe")

    copy_tree(source, target)

    assert (target / "sub" / "file.txt").read_text() == "content"
    assert os.readlink(target / "link") == "/etc/hostname"
    assert not (target / "pipe").exists()


def test_removal_goes_through_folders_the_agent_locked(tmp_path: Path) -> None:
    root = tmp_path / "session"
    locked = root / "workspace" / "locked"
    locked.mkdir(parents=True)
    (locked / "inside.txt").write_text("x")
    os.mkfifo(root / "workspace" / "pipe")
    (root / "workspace" / "away").symlink_to(tmp_path)
    locked.chmod(0)
    (root / "workspace").chmod(0o500)

    assert remove_tree(root)
    assert not root.exists()
    assert tmp_path.exists()
    assert remove_tree(root)
