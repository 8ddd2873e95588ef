"""Processes a test starts: each in a process group of its own, ended with the whole group.

A test that fails half-way must leave nothing running, including whatever its
processes started (the demo's daemons, `ip netns exec` wrappers), so every fixture
starts processes with `spawn` and ends them with `kill_group` in its `finally`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen` in a new session, so its process group id is its pid."""
    return subprocess.Popen(args, start_new_session=True, **kwargs)


def kill_group(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGKILL every process of `process`'s group (it may have exited and left children), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group is gone already
        pass
    process.wait(timeout=timeout)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a parent that never reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped (ESRCH: while being read)
        return True
