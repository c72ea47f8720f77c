"""Sandbox processes that outlive their CLI, and their removal.

bubblewrap 0.8 has a race (containers/bubblewrap#633, open upstream): when the bwrap that the SDK started
is killed while it sets the sandbox up, its child, PID 1 of the sandbox's PID namespace, is still blocked
on the setup eventfd and has not yet asked for a parent-death signal. It waits there forever, reparented
to the host's init, holding its namespaces. Agent CLIs are killed that early whenever a CLI started ahead
of a run is not used (the run was refused) or a connect is cancelled: about 1 in 30 such kills here
(2026-11-28). Such a process is still a fork of bwrap that has not exec'd, so its command line is the
sandbox's, and with it the connection's gateway pass, which nothing else carries.
"""

from __future__ import annotations

import contextlib
import os
import signal

import structlog

from api.runtime import metrics

log = structlog.get_logger(__name__)


def kill_leftovers(marker: str) -> int:
    """SIGKILL every process of this user whose command line has `marker` as one of its arguments;
    how many were killed. Killing the sandbox's PID 1 ends everything else in its namespace."""
    killed = 0
    me = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if entry.stat().st_uid != me or not _carries(pid, marker):
                continue
            # Through a pidfd, checked again once open: the pid cannot be reused by another process
            # between the check and the signal.
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue  # gone meanwhile, or not ours to see
        try:
            if not _carries(pid, marker):
                continue
            # Reparented to the server (it is the container's init, run without one): reap it, or it
            # stays a zombie. Only a process inside a sandbox's PID namespace: a bwrap the SDK started
            # is the event loop's child to reap.
            reap = _parent(pid) == os.getpid() and _nested(pid)
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            killed += 1
            if reap:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        except OSError:
            continue
        finally:
            os.close(pidfd)
    if killed:
        metrics.SANDBOX_LEFTOVERS_KILLED.inc(killed)
        log.warning("sandbox.leftovers_killed", count=killed, cause="bubblewrap killed during its setup")
    return killed


def _carries(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            arguments = file.read().split(b"\0")
    except OSError:
        return False
    return marker.encode() in arguments


def _nested(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", "rb") as file:
            status = file.read()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith(b"NSpid:"):
            return len(line.split()) > 2
    return False


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces and parentheses itself: fields follow the last ')'.
    return int(stat[stat.rindex(b")") + 2 :].split()[1])
