"""Camera sources: URL validation, credential injection, redaction and probing.

Credentials are stored apart from the URL (in the camera subentry) and are only put into the URL
at the moment a connection is opened, so that nothing we log or show ever carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import av
import av.error

_LOGGER = logging.getLogger(__name__)

SUPPORTED_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})

# Reasons shared by the config flow and the stream hub (they are also translation keys).
REASON_CANNOT_CONNECT = "cannot_connect"
REASON_INVALID_AUTH = "invalid_auth"
REASON_INVALID_URL = "invalid_url"
REASON_NO_VIDEO = "no_video"

_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")


class SourceError(Exception):
    """A source could not be used; `reason` is one of the REASON_* keys."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CameraSource:
    """Where a camera's video comes from. The URL itself never holds credentials."""

    url: str
    username: str | None = None
    password: str | None = None

    def connect_url(self) -> str:
        """Return the URL with credentials injected; use it only to open a connection."""
        if not self.username:
            return self.url
        parts = urlsplit(self.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        userinfo = quote(self.username, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))

    @property
    def redacted_url(self) -> str:
        """Return the URL safe for logs."""
        return redact_url(self.url)


def redact_url(text: str) -> str:
    """Replace any URL userinfo in `text` with `***`."""
    return _USERINFO_RE.sub(r"\g<scheme>***@", text)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Move credentials written into a URL out of it: (url, username, password)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    username, _, password = userinfo.partition(":")
    return (
        urlunsplit(parts._replace(netloc=host)),
        unquote(username) or None,
        unquote(password) or None,
    )


def normalized_url(url: str) -> str:
    """Return a comparable form of a source URL (for duplicate detection)."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


def validate_url(url: str) -> str:
    """Return the stripped URL or raise SourceError(invalid_url)."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        raise SourceError(REASON_INVALID_URL, "empty URL or URL with spaces")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as err:
        raise SourceError(REASON_INVALID_URL, str(err)) from err
    if parts.scheme.lower() not in SUPPORTED_SCHEMES:
        raise SourceError(REASON_INVALID_URL, f"unsupported scheme {parts.scheme!r}")
    if not parts.hostname:
        raise SourceError(REASON_INVALID_URL, "no host")
    if port == 0:
        raise SourceError(REASON_INVALID_URL, "port 0")
    return url


def open_options(url: str, io_timeout: float | None = None) -> dict[str, str]:
    """FFmpeg demuxer options for a source URL.

    RTSP goes over TCP (UDP loses packets on busy networks and does not cross NAT). Probing is cut
    down because cameras send SPS/PPS in-band or in the SDP; the default probe costs ~1 s per open.
    `io_timeout` (seconds) bounds every connect and read inside FFmpeg itself. Long-running
    readers use it instead of PyAV's `timeout=`, whose interrupt callback takes the GIL on every
    socket read: with many cameras in one process that costs several times the demuxing itself.
    """
    options = {"analyzeduration": "500000", "probesize": "500000", "fflags": "nobuffer"}
    micros = str(int(io_timeout * 1_000_000)) if io_timeout else None
    if url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
        options["rtsp_flags"] = "prefer_tcp"
        if micros:
            options["timeout"] = micros  # RTSP's socket I/O timeout (connect included)
    elif micros:
        options["rw_timeout"] = micros
    return options


def classify_error(err: BaseException) -> str:
    """Map an exception from opening or reading a source to a REASON_* key."""
    if isinstance(err, SourceError):
        return err.reason
    if isinstance(err, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return REASON_INVALID_AUTH
    return REASON_CANNOT_CONNECT


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a probe learned about a source's video."""

    codec: str
    width: int
    height: int
    fps: float | None


def probe_source(source: CameraSource, timeout: float) -> ProbeResult:
    """Open a source once and describe its video stream. Blocking: run it in an executor."""
    validate_url(source.url)
    url = source.connect_url()
    try:
        container = av.open(url, options=open_options(url), timeout=(timeout, min(timeout, 5.0)))
    except Exception as err:  # noqa: BLE001 - PyAV raises many error types; classify them all
        reason = classify_error(err)
        _LOGGER.debug(
            "Probe of %s failed (%s): %s",
            source.redacted_url,
            reason,
            redact_url(str(err)),
        )
        raise SourceError(reason, redact_url(str(err))) from None
    try:
        if not container.streams.video:
            raise SourceError(REASON_NO_VIDEO, "the source has no video stream")
        stream = container.streams.video[0]
        ctx: Any = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        return ProbeResult(
            codec=ctx.name,
            width=int(ctx.width or 0),
            height=int(ctx.height or 0),
            fps=float(rate) if rate else None,
        )
    finally:
        container.close()
