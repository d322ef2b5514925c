"""A real WebRTC viewer for tests and benchmarks: aiortc talking through HA's websocket API.

It behaves like the HA frontend: sends an offer without candidates, then trickles its own
candidates with `camera/webrtc/candidate`, and applies the answer and the camera's trickled
candidates as they arrive. Every received picture is decoded and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import contextlib
from dataclasses import dataclass, field
import time
from typing import Any

from aiortc import RTCConfiguration, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from custom_components.lightnvr.compat import PeerConnection


class WsRouter:
    """Reads one HA websocket connection and routes messages by their id."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._queues: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._next_id = 1000  # our own ids: the router must be the only sender on `client`
        self._task = asyncio.create_task(self._read())

    def queue(self, msg_id: int) -> asyncio.Queue[dict[str, Any]]:
        return self._queues.setdefault(msg_id, asyncio.Queue())

    async def send(self, payload: dict[str, Any]) -> int:
        self._next_id += 1
        msg_id = self._next_id
        self.queue(msg_id)
        await self.client.send_json({**payload, "id": msg_id})
        return msg_id

    async def call(self, payload: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        msg_id = await self.send(payload)
        async with asyncio.timeout(timeout):
            return await self.queue(msg_id).get()

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = await self.client.receive_json()
                self.queue(message["id"]).put_nowait(message)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def split_sdp_candidates(sdp: str) -> tuple[str, list[tuple[str, int]]]:
    """Return the SDP without candidates and the candidates with their m-line index."""
    kept: list[str] = []
    candidates: list[tuple[str, int]] = []
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        if line.startswith("a=candidate:"):
            candidates.append((line[2:], index))
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


@dataclass
class Viewer:
    """One viewer's results."""

    frames: int = 0
    audio_frames: int = 0
    audio_sample_rate: int | None = None
    width: int | None = None
    height: int | None = None
    first_frame_at: float | None = None
    offer_sent_at: float | None = None
    session_id: str | None = None
    remote_candidates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    frame_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def time_to_first_frame(self) -> float | None:
        if self.first_frame_at is None or self.offer_sent_at is None:
            return None
        return self.first_frame_at - self.offer_sent_at


class WebRTCTestClient:
    """Watch a HA camera entity over WebRTC."""

    def __init__(
        self,
        router: WsRouter,
        entity_id: str,
        *,
        codecs: tuple[str, ...] = (),
        audio: bool = True,
    ) -> None:
        """Offer like HA's frontend: audio, then video, both receive-only.

        `codecs`: video mime types in offer order; by default VP8 first, as browsers offer.
        `audio=False` offers video only.
        """
        self.codec_order = codecs or ("video/vp8", "video/h264", "video/rtx")
        self.offer_audio = audio
        self.answer_sdp: str | None = None
        self.router = router
        self.entity_id = entity_id
        # The integration's peer connection class: a client closed while connecting must not
        # leave aiortc's failed connecting task in Home Assistant's loop either.
        self.pc = PeerConnection(RTCConfiguration(iceServers=[]))
        self.viewer = Viewer()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub_id: int | None = None
        self._target_frames = 0
        self._on_frame: Callable[[Any], Awaitable[None] | None] | None = None

    async def start(self) -> None:
        """Send the offer and start negotiating in the background."""
        if self.offer_audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        available = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            [c for mime in self.codec_order for c in available if c.mimeType.lower() == mime]
        )

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer, candidates = split_sdp_candidates(self.pc.localDescription.sdp)
        self.viewer.offer_sent_at = time.monotonic()
        self._sub_id = await self.router.send(
            {"type": "camera/webrtc/offer", "entity_id": self.entity_id, "offer": offer}
        )
        self._tasks.append(asyncio.create_task(self._signal(candidates)))

    async def _signal(self, candidates: list[tuple[str, int]]) -> None:
        assert self._sub_id is not None
        queue = self.router.queue(self._sub_id)
        while True:
            message = await queue.get()
            if message["type"] == "result":
                if not message["success"]:
                    self.viewer.errors.append(message)
                continue
            event = message["event"]
            if event["type"] == "session":
                self.viewer.session_id = event["session_id"]
                for text, index in candidates:  # trickle ours now that the session exists
                    await self.router.send(
                        {
                            "type": "camera/webrtc/candidate",
                            "entity_id": self.entity_id,
                            "session_id": event["session_id"],
                            "candidate": {"candidate": text, "sdpMLineIndex": index},
                        }
                    )
            elif event["type"] == "answer":
                self.answer_sdp = event["answer"]
                await self.pc.setRemoteDescription(RTCSessionDescription(event["answer"], "answer"))
            elif event["type"] == "candidate":
                init = event["candidate"]
                candidate = candidate_from_sdp(init["candidate"].removeprefix("candidate:"))
                candidate.sdpMid = init.get("sdpMid")
                candidate.sdpMLineIndex = init.get("sdpMLineIndex")
                await self.pc.addIceCandidate(candidate)
                self.viewer.remote_candidates += 1
            elif event["type"] == "error":
                self.viewer.errors.append(event)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    self.viewer.audio_frames += 1
                    self.viewer.audio_sample_rate = frame.sample_rate
                    continue
                if self.viewer.first_frame_at is None:
                    self.viewer.first_frame_at = time.monotonic()
                self.viewer.frames += 1
                self.viewer.width, self.viewer.height = frame.width, frame.height
                self.viewer.frame_event.set()

    async def wait_frames(self, count: int, timeout: float = 20.0) -> Viewer:
        """Wait until `count` pictures were decoded in total."""
        async with asyncio.timeout(timeout):
            while self.viewer.frames < count:
                if self.viewer.errors:
                    raise AssertionError(f"WebRTC error: {self.viewer.errors}")
                self.viewer.frame_event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self.viewer.frame_event.wait()
        return self.viewer

    async def close(self, *, unsubscribe: bool = True) -> None:
        """Leave: unsubscribe (HA then closes the session) and close our peer."""
        if unsubscribe and self._sub_id is not None:
            with contextlib.suppress(Exception):
                await self.router.call({"type": "unsubscribe_events", "subscription": self._sub_id})
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pc.close()


def negotiated_video_codec(answer_sdp: str) -> str:
    """Return the codec name of the first payload type of the answer's video section."""
    lines = answer_sdp.splitlines()
    media = next(line for line in lines if line.startswith("m=video"))
    payload_type = media.split()[3]
    rtpmap = next(line for line in lines if line.startswith(f"a=rtpmap:{payload_type} "))
    return rtpmap.split()[1].split("/")[0]
