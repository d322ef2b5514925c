"""Is a camera there at all? A TCP connect to its host and port, much cheaper than opening it.

Used while a camera is away (a reboot, a power cut) to notice the moment it answers again,
instead of waiting out a long back-off step; and by the go2rtc watchdog to tell a dead camera
from a dead go2rtc.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

# While a camera is away, back-off waits this long or longer are spent probing its port every
# RECOVERY_PROBE_SECONDS: when it answers again the hub reconnects at once, so a camera is back
# seconds after its reboot however long it was away, without hammering it with opens meanwhile.
RECOVERY_PROBE_SECONDS = 2.0
RECOVERY_PROBE_TIMEOUT = 1.0
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


def wait_for_answer(stop: threading.Event, url: str, seconds: float) -> tuple[bool, bool]:
    """Wait up to `seconds` before the next open of `url`; return (stopping, answered). Blocking.

    A wait long enough is spent probing the camera's port: if the camera was unreachable and
    then answers, the wait ends early (`answered`). A camera that is reachable but fails to
    stream (wrong path, refused login) keeps its normal back-off.
    """
    address = camera_address(url)
    if seconds < RECOVERY_PROBE_SECONDS or address is None:
        return stop.wait(seconds), False
    deadline = time.monotonic() + seconds
    was_away = not is_reachable(address, RECOVERY_PROBE_TIMEOUT)
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(RECOVERY_PROBE_SECONDS, left)):
            return True, False
        reachable = is_reachable(address, RECOVERY_PROBE_TIMEOUT)
        if reachable and was_away:
            return False, True
        was_away = was_away or not reachable
    return False, False
