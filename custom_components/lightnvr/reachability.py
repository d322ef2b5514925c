"""Is a camera there at all? A TCP connect to its host and port, much cheaper than opening it.

Used while a camera is away (a reboot, a power cut) to notice the moment it answers again,
instead of waiting out a long back-off step; and by the go2rtc watchdog to tell a dead camera
from a dead go2rtc.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

# Ports cameras use when the URL names none.
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


def camera_address(url: str) -> tuple[str, int] | None:
    """Return the (host, port) a source URL connects to, None if it names no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or DEFAULT_PORTS.get(parts.scheme.lower(), 554)


def is_reachable(address: tuple[str, int], timeout: float) -> bool:
    """Return True if a TCP connection to `address` opens within `timeout`. Blocking."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False
