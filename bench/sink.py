"""Postfix's smtp-sink on a loopback port, for benchmarks (never the postfix daemon)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Where Debian's postfix package puts the binary; PATH is searched first.
SINK_PATHS = ("smtp-sink", "/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink")


def sink_binary() -> str | None:
    """The smtp-sink executable, or None if postfix is not installed."""
    for candidate in SINK_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_sink(backlog: int = 1000) -> Iterator[int]:
    """Run smtp-sink on 127.0.0.1 and yield its port. It advertises PIPELINING and discards mail.

    ``-u nobody`` because smtp-sink refuses to run as root without a user to drop to.
    """
    binary = sink_binary()
    if binary is None:
        raise RuntimeError("smtp-sink not found: install Debian's postfix package "
                           "(only the smtp-sink binary is used)")
    port = free_port()
    command = [binary, f"127.0.0.1:{port}", str(backlog)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.02)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
