"""Viewers go2rtc serves: each offer forwarded over go2rtc's WebSocket API, trickle ICE relayed.

One WebSocket per viewer (from the client's own connection pool, never the health checks'),
open for the whole live view: go2rtc ends its peer when the socket closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import logging

from go2rtc_client.exceptions import Go2RtcClientError
from go2rtc_client.ws import (
    ReceiveMessages,
    WebRTCAnswer as WsAnswer,
    WebRTCCandidate as WsCandidate,
    WebRTCOffer as WsOffer,
    WsError,
)
from go2rtc_client.ws.client import Go2RtcWsClient
from homeassistant.components.camera import (
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCError,
    WebRTCSendMessage,
)
from homeassistant.core import HomeAssistant, callback
from webrtc_models import RTCIceCandidateInit, RTCIceServer

from ...source import Redactor
from .client import Go2RtcClient

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class _Session:
    """One viewer's signalling channel to go2rtc."""

    camera_id: str
    ws: Go2RtcWsClient
    mid: str | None = None
    closed: bool = False
    unsubscribe: Callable[[], None] | None = None


class ForwardedViewers:
    """The WebRTC sessions go2rtc answers, by session id."""

    def __init__(self, hass: HomeAssistant, redact: Redactor) -> None:
        """Forward nothing yet."""
        self._hass = hass
        self._redact = redact
        self._sessions: dict[str, _Session] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        """Return the number of open sessions."""
        return len(self._sessions)

    def count_for(self, camera_id: str) -> int:
        """Return the number of open sessions of a camera."""
        return sum(1 for s in self._sessions.values() if s.camera_id == camera_id)

    async def async_forward_offer(
        self,
        client: Go2RtcClient,
        stream: str,
        offer_sdp: str,
        send_message: WebRTCSendMessage,
        *,
        camera_id: str,
        session_id: str,
        ice_servers: list[RTCIceServer],
    ) -> None:
        """Send the offer to go2rtc; relay its answer, candidates and errors to the viewer."""
        session = _Session(camera_id, client.ws_client(stream))
        self._sessions[session_id] = session

        @callback
        def _on_message(message: ReceiveMessages) -> None:
            if session.closed:
                return
            match message:
                case WsAnswer():
                    session.mid = _first_mid(message.sdp)
                    send_message(WebRTCAnswer(message.sdp))
                case WsCandidate():
                    send_message(
                        WebRTCCandidate(
                            RTCIceCandidateInit(
                                message.candidate, sdp_mid=session.mid, sdp_m_line_index=0
                            )
                        )
                    )
                case WsError():
                    send_message(WebRTCError("webrtc_offer_failed", self._redact(message.error)))
                    self.close_session(session_id)

        session.unsubscribe = session.ws.subscribe(_on_message)
        try:
            await session.ws.send(WsOffer(offer_sdp, ice_servers))
        except Go2RtcClientError as err:
            cause = self._redact(str(err.__cause__ or err))
            _LOGGER.warning("Cannot forward a WebRTC offer to go2rtc: %s", cause)
            self.close_session(session_id)
            send_message(WebRTCError("webrtc_offer_failed", f"go2rtc did not answer: {cause}"))

    def serves(self, session_id: str) -> bool:
        """Return True if the session is forwarded to go2rtc."""
        return session_id in self._sessions

    async def async_on_candidate(self, session_id: str, candidate: RTCIceCandidateInit) -> None:
        """Trickle a viewer's candidate to go2rtc."""
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            _LOGGER.debug("Candidate for unknown WebRTC session %s ignored", session_id)
            return
        try:
            await session.ws.send(WsCandidate(candidate.candidate))
        except Go2RtcClientError as err:
            _LOGGER.debug("Cannot forward a candidate to go2rtc: %s", self._redact(str(err)))

    def close_session(self, session_id: str) -> None:
        """Close a viewer's signalling channel (go2rtc ends the peer with it)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        session.closed = True
        if session.unsubscribe is not None:
            with contextlib.suppress(ValueError):
                session.unsubscribe()
        task = self._hass.async_create_task(_close_ws(session.ws), eager_start=True)
        if not task.done():
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def close_camera(self, camera_id: str) -> None:
        """Close every session of a camera."""
        for session_id, session in list(self._sessions.items()):
            if session.camera_id == camera_id:
                self.close_session(session_id)

    async def async_stop(self) -> None:
        """Close every session and wait for the sockets to close."""
        for session_id in list(self._sessions):
            self.close_session(session_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _first_mid(sdp: str) -> str | None:
    for line in sdp.splitlines():
        if line.startswith("a=mid:"):
            return line[len("a=mid:") :].strip()
    return None


async def _close_ws(ws: Go2RtcWsClient) -> None:
    """Close a go2rtc WebSocket; go2rtc-client's close re-raises its reader's cancellation."""
    try:
        await ws.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Go2RtcClientError as err:
        _LOGGER.debug("Closing a go2rtc WebSocket failed: %s", err)
