"""Processes on this host: whether a process id still exists."""

from __future__ import annotations

import os
import socket


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (another user's counts; a zombie, killed but
    not yet reaped, still exists: callers that care look at /proc)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def host_name() -> str:
    """This host's name, without ``-`` (a separator in the file names that carry it): run
    containers that share a volume have their own names, not their own pids (each is often 1)."""
    return socket.gethostname().replace("-", "_") or "host"
