"""Sender identity: the names senders claim rows under, and whether a sender still lives."""

from __future__ import annotations

import os
import secrets
import socket


def worker_name(tag: str | None = None) -> str:
    """This sender's name in claims and leases: ``host:pid:tag``."""
    host = socket.gethostname().replace(":", "_")[:100]
    tag = (tag or secrets.token_hex(3)).replace(":", "_")[:60]
    return f"{host}:{os.getpid()}:{tag}"


def owner_pid(owner: str | None) -> tuple[str, int] | None:
    """(host, pid) from a sender name, or None if it is not one of ours."""
    parts = (owner or "").split(":")
    if len(parts) >= 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


def owner_is_dead(owner: str | None) -> bool:
    """True when owner ran on this host and its process no longer exists.

    A sender on another host can only be presumed dead once its lease runs out.
    """
    parsed = owner_pid(owner)
    if parsed is None or parsed[0] != socket.gethostname().replace(":", "_")[:100]:
        return False
    if parsed[1] == os.getpid():
        return False
    try:
        os.kill(parsed[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def describe_owner(owner: str | None) -> str:
    parsed = owner_pid(owner)
    if parsed is None:
        return owner or "unknown"
    host, pid = parsed
    return f"pid {pid}" if host == socket.gethostname().replace(":", "_")[:100] else (
        f"pid {pid} on {host}"
    )
