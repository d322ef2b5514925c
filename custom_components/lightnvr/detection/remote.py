"""Remote object detection over the DeepStack / CodeProject.AI HTTP API.

`POST {url}/v1/vision/detection` with a multipart form: `image` (JPEG), `min_confidence` and,
when set, `api_key`. The answer::

    {"success": true, "predictions": [
        {"label": "person", "confidence": 0.91, "x_min": 10, "y_min": 20, "x_max": 90, "y_max": 200}
    ]}

DeepStack and CodeProject.AI give the box in pixels of the image sent; other compatible servers
give it normalised to 0..1. The whole answer is judged at once: when every coordinate lies within
0..1 it is taken as normalised (a pixel box inside the top-left pixel means nothing), otherwise as
pixels and divided by the size of the JPEG we sent. Everything leaves here as relative `Box`es.

Failures never raise out of `async_detect`: it answers None, and the client backs off
exponentially (nothing is sent until the back-off has passed, so a dead server costs nothing).
A server that keeps failing for `down_after` seconds raises the `detection_server_down` repair
issue (when given `hass`) and reports it through `on_status`; the first answer clears it.

The server is not trusted:
- its answer is read in chunks and dropped past `MAX_RESPONSE_BYTES` (a broken or hostile server
  must not pour gigabytes into Home Assistant's memory);
- redirects are not followed (aiohttp would follow them by default and send the request on to a
  host the user never configured); a 3xx answer is a failure that names no target;
- its text (reason phrase, error message, body) never reaches the repair issue, `last_error` or
  `on_status`: those carry our own words and the HTTP status only. A short, sanitised excerpt is
  logged at debug level, with the API key and URL credentials removed.
The API key is sent in the form only and never logged; URLs are logged without user info or
query values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
import hashlib
from http import HTTPStatus
import json
import logging
import re
import time
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from ..const import DOMAIN
from ..source import redact_url, redacted_repr
from . import Box

_LOGGER = logging.getLogger(__name__)

API_PATH = "/v1/vision/detection"
ISSUE_SERVER_DOWN = "detection_server_down"
# Coordinates up to this much outside 0..1 still count as normalised (rounding by servers).
_NORMALISED_SLACK = 0.01
# A detection answer is a few KB; thousands of boxes stay well below this. Anything larger is a
# broken or hostile server, and reading on would only cost memory.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 64 * 1024
# How much of an error body is read, and how much of server text is logged (debug only).
_ERROR_BODY_BYTES = 1024
_EXCERPT_CHARS = 120
_QUERY_VALUE_RE = re.compile(r"=[^&;]*")


class RemoteError(Exception):
    """The server answered, but not with detections (HTTP error, failure flag, bad JSON).

    The message is always our own text (shown in the repair issue); what the server said, if
    anything, is in `server_text` for a debug log only.
    """

    def __init__(self, message: str, server_text: str | None = None) -> None:
        """Keep our message apart from the server's untrusted text."""
        super().__init__(message)
        self.server_text = server_text


@dataclass(frozen=True, slots=True)
class ObjectDetection:
    """One object found in a frame."""

    label: str  # lower case, as the server names it ("person", "car", ...)
    confidence: float  # 0..1
    box: Box  # relative to the frame


@dataclass(frozen=True, slots=True)
class RemoteOptions:
    """Where and how to ask for objects."""

    url: str  # base URL (http://host:port) or the full detection endpoint
    api_key: str | None = field(default=None, repr=False)
    min_confidence: float = 0.6
    labels: tuple[str, ...] = ()  # wanted labels; empty means every label
    timeout: float = 10.0  # seconds per request
    backoff_initial: float = 2.0  # seconds before the first retry after a failure
    backoff_max: float = 60.0
    down_after: float = 60.0  # failing this long (and at least twice) raises the repair issue

    def __repr__(self) -> str:
        """Return the options without the key, the URL redacted."""
        return redacted_repr(self)


def endpoint_url(url: str) -> str:
    """Return the detection endpoint for a base URL (a full endpoint is kept as is)."""
    url = url.strip()
    if url.rstrip("/").endswith(API_PATH):
        return url.rstrip("/")
    return url.rstrip("/") + API_PATH


def display_url(url: str) -> str:
    """Return `url` fit for logs and the repair issue: no user info, no query values, no fragment.

    Stricter than `source.redact_url` (which hides secret-looking parameters only): a detection
    server's query holds nothing a user needs to see in a repair issue.
    """
    url = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 literal; the request fails later with a clear error
        return _QUERY_VALUE_RE.sub("=***", url.partition("#")[0])
    query = _QUERY_VALUE_RE.sub("=***", parts.query)
    return urlunsplit(parts._replace(query=query, fragment=""))


def issue_id_for(url: str) -> str:
    """Return the repair issue id for a server: one issue per server, whichever camera asks."""
    digest = hashlib.sha256(redact_url(endpoint_url(url)).encode()).hexdigest()[:12]
    return f"{ISSUE_SERVER_DOWN}_{digest}"


def parse_predictions(
    payload: Any, width: int, height: int, min_confidence: float, labels: tuple[str, ...]
) -> list[ObjectDetection]:
    """Turn an API answer into relative detections, best first; raise RemoteError if invalid."""
    if not isinstance(payload, Mapping):
        raise RemoteError("the answer is not a JSON object")
    if payload.get("success") is False:
        message = payload.get("error") or payload.get("message")
        raise RemoteError(
            "the server reported failure", str(message) if message is not None else None
        )
    predictions = payload.get("predictions") or []
    if not isinstance(predictions, list):
        raise RemoteError("'predictions' is not a list")
    raw: list[tuple[str, float, tuple[float, float, float, float]]] = []
    malformed = 0
    for item in predictions:
        try:
            label = str(item["label"]).strip().lower()
            confidence = float(item.get("confidence", 0.0))
            coords = (
                float(item["x_min"]),
                float(item["y_min"]),
                float(item["x_max"]),
                float(item["y_max"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            malformed += 1  # counted, not logged: the entry is server text of any size
            continue
        if confidence > 1.0:  # a few servers answer in percent
            confidence /= 100.0
        raw.append((label, confidence, coords))
    if malformed:
        _LOGGER.debug("Ignoring %d malformed prediction(s) of %d", malformed, len(predictions))
    normalised = all(
        -_NORMALISED_SLACK <= value <= 1.0 + _NORMALISED_SLACK
        for _, _, coords in raw
        for value in coords
    )
    scale_x = 1.0 if normalised else float(max(width, 1))
    scale_y = 1.0 if normalised else float(max(height, 1))
    wanted = {label.strip().lower() for label in labels if label.strip()}
    found = [
        ObjectDetection(
            label,
            confidence,
            Box.clamped(x0 / scale_x, y0 / scale_y, x1 / scale_x, y1 / scale_y),
        )
        for label, confidence, (x0, y0, x1, y1) in raw
        if confidence >= min_confidence and (not wanted or label in wanted)
    ]
    found.sort(key=lambda detection: detection.confidence, reverse=True)
    return found


class RemoteDetector:
    """Client for one detection server, with back-off and the server-down repair issue.

    Use it from the event loop only (the issue registry and the state are not thread-safe).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: RemoteOptions,
        *,
        hass: HomeAssistant | None = None,
        on_status: Callable[[bool, str | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a client; `on_status(down, detail)` is called when "down" changes."""
        self._session = session
        self.options = options
        self._hass = hass
        self._on_status = on_status
        self._clock = clock
        self.endpoint = endpoint_url(options.url)
        self.redacted_url = display_url(self.endpoint)
        self.issue_id = issue_id_for(options.url)
        self._secrets = _secrets(options.api_key, self.endpoint)

        self._failing_since: float | None = None
        self._streak = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._down = False
        self.last_error: str | None = None
        self.requests = 0
        self.failures = 0
        self.skipped = 0

    # ----- state --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Return True when a request may be sent now (not backing off)."""
        return self._clock() >= self._retry_at

    @property
    def retry_in(self) -> float:
        """Return the seconds left before the next request may be sent."""
        return max(0.0, self._retry_at - self._clock())

    @property
    def available(self) -> bool:
        """Return True unless the last request failed."""
        return self._streak == 0

    @property
    def down(self) -> bool:
        """Return True while the server counts as down (repair issue raised)."""
        return self._down

    # ----- requests -----------------------------------------------------------------------------

    async def async_detect(
        self, jpeg: bytes, width: int, height: int
    ) -> list[ObjectDetection] | None:
        """Ask for objects in a JPEG of `width`x`height`; None when backing off or failed."""
        if not self.ready:
            self.skipped += 1
            return None
        self.requests += 1
        try:
            payload = await self._post(jpeg)
            detections = parse_predictions(
                payload, width, height, self.options.min_confidence, self.options.labels
            )
        except TimeoutError:
            self._failed(f"no answer within {self.options.timeout:g} s")
            return None
        except aiohttp.ClientError as err:
            self._failed(_describe(err))
            return None
        except RemoteError as err:
            if err.server_text:
                _LOGGER.debug(
                    "Object detection server %s said: %s",
                    self.redacted_url,
                    _excerpt(err.server_text, self._secrets),
                )
            self._failed(str(err))
            return None
        except Exception as err:  # a bad server must never break detection
            _LOGGER.debug("Unexpected error from %s", self.redacted_url, exc_info=True)
            self._failed(f"unexpected error: {type(err).__name__}")
            return None
        self._succeeded()
        return detections

    async def _post(self, jpeg: bytes) -> Any:
        form = aiohttp.FormData()
        form.add_field("image", jpeg, filename="image.jpg", content_type="image/jpeg")
        form.add_field("min_confidence", f"{self.options.min_confidence:g}")
        if self.options.api_key:
            form.add_field("api_key", self.options.api_key)
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        # No redirects: aiohttp would follow them and send the request (and, for 307/308, the
        # form with the API key) to wherever the server points.
        async with self._session.post(
            self.endpoint, data=form, timeout=timeout, allow_redirects=False
        ) as response:
            status = response.status
            if 300 <= status < 400:
                # The Location is not shown: it is server text and may carry secrets.
                raise RemoteError(
                    f"the server redirected (HTTP {status}); redirects are not followed, "
                    "enter the server's final URL"
                )
            if status >= 400:
                # The reason phrase and body are server text: a debug excerpt only.
                server_text = await _read_error_body(response)
                if status in (401, 403):
                    raise RemoteError(
                        f"access denied (HTTP {status}); check the API key", server_text
                    )
                raise RemoteError(_status_text(status), server_text)
            body = await _read_capped(response, MAX_RESPONSE_BYTES)
            try:
                return _decode_json(body, response.charset)
            except ValueError as err:
                raise RemoteError("the answer is not JSON") from err

    def _failed(self, detail: str) -> None:
        now = self._clock()
        self.failures += 1
        self._streak += 1
        self.last_error = detail
        opts = self.options
        if self._failing_since is None:
            self._failing_since = now
            self._backoff = opts.backoff_initial
            _LOGGER.warning(
                "Object detection server %s failed (%s); retrying with back-off",
                self.redacted_url,
                detail,
            )
        else:
            self._backoff = min(max(self._backoff * 2, opts.backoff_initial), opts.backoff_max)
            _LOGGER.debug("Object detection server %s failed again: %s", self.redacted_url, detail)
        self._retry_at = now + self._backoff
        if self._streak >= 2 and now - self._failing_since >= opts.down_after:
            # Re-created on every failure while down so the detail stays current.
            self._raise_issue(detail)
            if not self._down:
                self._down = True
                _LOGGER.warning(
                    "Object detection server %s is down (%s); motion detection continues",
                    self.redacted_url,
                    detail,
                )
                self._notify(True, detail)

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            _LOGGER.info("Object detection server %s answers again", self.redacted_url)
        self._failing_since = None
        self._streak = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self.last_error = None
        if self._down:
            self._down = False
            self._delete_issue()
            self._notify(False, None)

    def _notify(self, down: bool, detail: str | None) -> None:
        if self._on_status is None:
            return
        try:
            self._on_status(down, detail)
        except Exception:
            _LOGGER.exception("Error in the detection server status listener")

    # ----- repair issue -------------------------------------------------------------------------

    def _raise_issue(self, detail: str) -> None:
        if self._hass is None:
            return
        ir.async_create_issue(
            self._hass,
            DOMAIN,
            self.issue_id,
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_SERVER_DOWN,
            translation_placeholders={"url": self.redacted_url, "detail": detail},
        )

    def _delete_issue(self) -> None:
        if self._hass is not None:
            ir.async_delete_issue(self._hass, DOMAIN, self.issue_id)

    def async_shutdown(self) -> None:
        """Forget the down state and remove the repair issue (detection stopped or reconfigured).

        A server that is still down raises it again after `down_after` once detection runs again.
        """
        if self._down:
            self._down = False
            self._delete_issue()


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Return the body, or raise RemoteError as soon as it proves larger than `limit` bytes.

    Counted after decompression, so a small compressed body cannot expand past the limit either.
    """
    try:
        declared = response.content_length
    except ValueError:  # aiohttp's parser rejects these, but a bad header is no reason to crash
        declared = None
    if declared is not None and declared > limit:
        response.close()  # drop the connection: nothing of the body is read
        raise RemoteError(_too_large(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            response.close()  # the rest is never read
            raise RemoteError(_too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_error_body(response: aiohttp.ClientResponse) -> str | None:
    """Return the start of an error answer (reason phrase and body) for a debug excerpt."""
    try:
        head = await response.content.read(_ERROR_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        head = b""
    text = " ".join(
        part for part in (response.reason or "", head.decode("utf-8", "replace")) if part
    )
    return text or None


def _decode_json(body: bytes, charset: str | None) -> Any:
    """Decode a JSON answer like `ClientResponse.json` did: an empty answer is None."""
    body = body.strip()
    if not body:
        return None
    if charset:
        try:
            return json.loads(body.decode(charset))
        except LookupError:  # an unknown charset: let json detect UTF-8/16/32
            pass
    return json.loads(body)


def _status_text(status: int) -> str:
    """Return "HTTP 500 Internal Server Error", the phrase from our table, never the server's."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _too_large(limit: int) -> str:
    return f"the answer is larger than {limit / (1024 * 1024):g} MB; is this a detection server?"


def _secrets(api_key: str | None, url: str) -> tuple[str, ...]:
    """Return what must never appear in a log: the API key and the URL's password."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    found = {value for value in (api_key, password, password and unquote(password)) if value}
    # A server may echo them back URL-encoded.
    found |= {quote(value, safe="") for value in list(found)}
    found |= {quote_plus(value, safe="") for value in list(found)}
    return tuple(sorted(found, key=len, reverse=True))


def _excerpt(text: str, secrets: tuple[str, ...]) -> str:
    """Return a short, single-line excerpt of server text without our secrets."""
    for secret in secrets:
        text = text.replace(secret, "***")
    cut = len(text) > _EXCERPT_CHARS
    text = text[:_EXCERPT_CHARS]
    # Our cut, or the end of what was read, may fall inside a secret that the replacement above
    # could not match whole: drop a trailing start of one (three characters tell nothing).
    for secret in secrets:
        for size in range(min(len(secret) - 1, len(text)), 3, -1):
            if text.endswith(secret[:size]):
                text = text[:-size]
                break
    # No control characters: nothing the server sends may forge log lines.
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return redact_url(" ".join(text.split())) + ("…" if cut else "")


def _describe(err: aiohttp.ClientError) -> str:
    """Return a short reason without URLs (they could carry user info)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect ({err.os_error.strerror or type(err.os_error).__name__})"
    if isinstance(err, aiohttp.ClientResponseError):
        return f"HTTP {err.status}"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return type(err).__name__
