"""Talking to go2rtc: REST calls and WebSocket signalling.

The WebSocket side (WebRTC offer/answer and trickled candidates) uses go2rtc-client 0.1.2's
`Go2RtcWsClient` and message models. The REST calls are plain aiohttp because go2rtc-client's
REST client does not fit a supervisor: it logs every request URL at debug level (a PUT carries
the camera's credentials in `src`), its `streams.list()` drops `bytes_recv` (which the watchdog
needs) and fails on producers without a `url`, and its fixed 10 s timeout is too long to tell a
hung go2rtc quickly. Every message we log or raise goes through a Redactor first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from go2rtc_client.ws import Go2RtcWsClient

from ...source import Redactor, redact_url, url_secrets

_LOGGER = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
# go2rtc waits for a keyframe and has no server-side timeout of its own.
FRAME_TIMEOUT = 10.0


class Go2RtcApiError(Exception):
    """A go2rtc API call failed (the message is already redacted)."""


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """What /api/streams says about one stream."""

    producers: int  # sources configured
    connected: int  # producers with a live connection
    bytes_recv: int  # total over connected producers
    consumers: int

    @property
    def receiving(self) -> bool:
        """Return True when at least one source is connected."""
        return self.connected > 0


def parse_streams(data: Any) -> dict[str, StreamStatus]:
    """Parse a GET /api/streams body (tolerates null lists and missing fields)."""
    if not isinstance(data, Mapping):
        raise Go2RtcApiError("unexpected /api/streams answer")
    result: dict[str, StreamStatus] = {}
    for name, value in data.items():
        stream: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
        producers = [p for p in (stream.get("producers") or []) if isinstance(p, Mapping)]
        # A producer that is not connected is just {"url": …}; a connection has an id and
        # counters (the url may even be missing, e.g. for ffmpeg reading a file).
        connected = [p for p in producers if "id" in p or "bytes_recv" in p]
        result[str(name)] = StreamStatus(
            producers=len(producers),
            connected=len(connected),
            bytes_recv=sum(int(p.get("bytes_recv") or 0) for p in connected),
            consumers=len(stream.get("consumers") or []),
        )
    return result


class Go2RtcClient:
    """One go2rtc API endpoint (TCP URL or unix socket).

    Two HTTP sessions: one for the REST calls (health checks, stream registration, snapshots)
    and one for viewers' WebSockets, each held open for a whole live view. However many viewers
    there are, they can never take the connections the health checks need; a starved health
    check would make the watchdog restart go2rtc and drop every viewer and recording.
    """

    def __init__(
        self,
        base_url: str,
        *,
        unix_socket: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        redact: Redactor | None = None,
    ) -> None:
        """Create the session (call from the event loop); close it with `async_close`."""
        self.base_url = base_url.rstrip("/")
        self.redact = redact or Redactor()
        self.redact.add(password)
        auth = aiohttp.BasicAuth(username, password or "") if username else None

        def connector(limit: int) -> aiohttp.BaseConnector:
            if unix_socket is not None:
                return aiohttp.UnixConnector(path=str(unix_socket), limit=limit)
            return aiohttp.TCPConnector(limit=limit)

        self._session = aiohttp.ClientSession(connector=connector(20), auth=auth)
        # The engine caps the number of viewers: no second limit here (0 = none).
        self._ws_session = aiohttp.ClientSession(connector=connector(0), auth=auth)

    @property
    def display_url(self) -> str:
        """Return the API URL safe to show (no credentials)."""
        return redact_url(self.base_url)

    async def async_close(self) -> None:
        """Close both HTTP sessions."""
        await self._session.close()
        await self._ws_session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        time_limit: float = REQUEST_TIMEOUT,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, bytes]:
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                timeout=aiohttp.ClientTimeout(total=time_limit),
            ) as response:
                body = await response.read()
                if response.status not in ok:
                    text = body.decode(errors="replace").strip()[:300]
                    raise Go2RtcApiError(
                        self.redact(f"{method} {path}: HTTP {response.status} {text}".strip())
                    )
                return response.status, body
        except TimeoutError as err:
            raise Go2RtcApiError(f"{method} {path}: no answer within {time_limit:.0f} s") from err
        except aiohttp.ClientError as err:
            # aiohttp's messages can hold the full request URL, query included.
            raise Go2RtcApiError(self.redact(f"{method} {path}: {err}")) from None

    async def async_info(self, time_limit: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """GET /api: version, RTSP listener, config path."""
        _, body = await self._request("GET", "/api", time_limit=time_limit)
        info = self._json(body, "/api")
        if not isinstance(info, dict):
            raise Go2RtcApiError("GET /api: not a JSON object")
        return info

    async def async_streams(self, time_limit: float = REQUEST_TIMEOUT) -> dict[str, StreamStatus]:
        """GET /api/streams, parsed."""
        _, body = await self._request("GET", "/api/streams", time_limit=time_limit)
        return parse_streams(self._json(body, "/api/streams"))

    async def async_add_stream(self, name: str, source: str) -> None:
        """PUT /api/streams: create or replace a stream (go2rtc also saves it in its config)."""
        self.redact.add(*url_secrets(source))
        try:
            await self._request("PUT", "/api/streams", params={"name": name, "src": source})
        except Go2RtcApiError as err:
            # A 400 after a failed config write still leaves the stream in memory (contract §3).
            if "config file" not in str(err) or name not in await self.async_streams():
                raise
            _LOGGER.debug("go2rtc kept stream %s but could not save its config: %s", name, err)

    async def async_remove_stream(self, name: str, time_limit: float = REQUEST_TIMEOUT) -> None:
        """DELETE /api/streams?src=name."""
        await self._request("DELETE", "/api/streams", params={"src": name}, time_limit=time_limit)

    async def async_frame(
        self, name: str, width: int | None, height: int | None, time_limit: float = FRAME_TIMEOUT
    ) -> bytes | None:
        """GET /api/frame.jpeg; None when go2rtc has no picture (it answers 200, empty body)."""
        params = {"src": name}
        if width:
            params["width"] = str(width)
        if height:
            params["height"] = str(height)
        _, body = await self._request(
            "GET", "/api/frame.jpeg", params=params, time_limit=time_limit
        )
        return body or None

    def ws_client(self, name: str) -> Go2RtcWsClient:
        """Return a WebSocket client for consuming stream `name` (connects on first send)."""
        return Go2RtcWsClient(self._ws_session, self.base_url, source=name)

    @staticmethod
    def _json(body: bytes, path: str) -> Any:
        try:
            return json.loads(body)
        except ValueError as err:
            raise Go2RtcApiError(f"GET {path}: not JSON") from err
