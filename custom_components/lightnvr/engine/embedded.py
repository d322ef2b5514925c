"""The embedded engine: no external program; PyAV reads cameras, aiortc serves viewers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import logging
import time

from homeassistant.components.camera import (
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCError,
    WebRTCSendMessage,
)
from homeassistant.core import HomeAssistant
from webrtc_models import RTCIceCandidateInit

from ..const import SNAPSHOT_CACHE_SECONDS
from ..hub import MediaPacket, StreamHub
from ..models import CameraConfig
from .base import LIVE_VIEW_PATHS
from .snapshot import SnapshotError, keyframe_to_jpeg
from .transcode import DEFAULT_MAX_WIDTH, SharedTranscoders
from .webrtc import ViewerPlan, WebRTCViewer, offered_codecs, to_aiortc_ice_servers

_LOGGER = logging.getLogger(__name__)

# Codecs a browser decodes from our pass-through track.
WEBRTC_CODECS = frozenset({"h264"})
# How a viewer's video is made (diagnostics, the camera's live view sensor).
PATH_H264, PATH_H265, PATH_SUBSTREAM, PATH_TRANSCODE = LIVE_VIEW_PATHS[1:5]
# Camera audio a browser plays as it is, when its offer lists the codec (every browser does).
PASS_THROUGH_AUDIO = {"pcm_alaw": "pcma", "pcm_mulaw": "pcmu"}
# A snapshot asked for right after a (re)connect waits this long for the first keyframe.
KEYFRAME_WAIT_SECONDS = 3.0


@dataclass(slots=True)
class _Snapshot:
    keyframe: MediaPacket
    size: tuple[int | None, int | None]
    taken: float
    jpeg: bytes


class EmbeddedEngine:
    """Stream engine that needs nothing but the integration's own Python packages."""

    name = "embedded"

    def __init__(self, hass: HomeAssistant) -> None:
        """Create an engine with no cameras."""
        self._hass = hass
        self._cameras: dict[str, CameraConfig] = {}
        self._hubs: dict[str, StreamHub] = {}
        self._substreams: dict[str, StreamHub] = {}
        self._transcoders: dict[str, SharedTranscoders] = {}
        self._viewers: dict[str, WebRTCViewer] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._snapshots: dict[str, _Snapshot] = {}
        self._snapshot_locks: dict[str, asyncio.Lock] = {}

    async def async_start(self) -> None:
        """Nothing to start: hubs start with their cameras."""

    async def async_stop(self) -> None:
        """Close every viewer and stop every hub (threads joined off the event loop)."""
        viewers = list(self._viewers.values())
        self._viewers.clear()
        await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        transcoders = list(self._transcoders.values())
        self._transcoders.clear()
        await asyncio.gather(*(shared.async_stop() for shared in transcoders))
        hubs = [*self._hubs.values(), *self._substreams.values()]
        self._hubs.clear()
        self._substreams.clear()
        await asyncio.gather(*(hub.async_stop() for hub in hubs))

    async def async_add_camera(self, camera: CameraConfig) -> StreamHub:
        """Start reading a camera."""
        hub = StreamHub(camera.name, camera.source, self._hass.loop)
        self._cameras[camera.camera_id] = camera
        self._hubs[camera.camera_id] = hub
        self._snapshot_locks[camera.camera_id] = asyncio.Lock()
        # Threads start only when a viewer needs a transcode.
        self._transcoders[camera.camera_id] = SharedTranscoders(
            hub,
            self._hass.loop,
            max_width=None if camera.transcode_full_size else DEFAULT_MAX_WIDTH,
        )
        hub.start()
        if camera.substream is not None:
            substream = StreamHub(f"{camera.name} (substream)", camera.substream, self._hass.loop)
            self._substreams[camera.camera_id] = substream
            substream.start()
        return hub

    async def async_remove_camera(self, camera_id: str) -> None:
        """Close the camera's viewers and stop its hub."""
        hub = self._hubs.pop(camera_id, None)
        substream = self._substreams.pop(camera_id, None)
        transcoders = self._transcoders.pop(camera_id, None)
        self._cameras.pop(camera_id, None)
        self._snapshots.pop(camera_id, None)
        self._snapshot_locks.pop(camera_id, None)
        if hub is None:
            return
        for session_id, viewer in list(self._viewers.items()):
            if viewer.hub is hub:
                self.close_session(session_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if transcoders is not None:
            await transcoders.async_stop()
        await hub.async_stop()
        if substream is not None:
            await substream.async_stop()

    def hub(self, camera_id: str) -> StreamHub:
        """Return a camera's hub."""
        return self._hubs[camera_id]

    def live_view_path(self, camera_id: str) -> str:
        """Return the costliest way a viewer of this camera is served now, or "idle"."""
        hub = self._hubs.get(camera_id)
        paths = {v.plan.video_path for v in self._viewers.values() if v.hub is hub and not v.closed}
        return max(paths, key=LIVE_VIEW_PATHS.index, default="idle")

    def substream_hub(self, camera_id: str) -> StreamHub | None:
        """Return the hub reading the camera's sub-stream, if it has one."""
        return self._substreams.get(camera_id)

    async def async_stream_source(self, camera_id: str) -> str | None:
        """Return the camera's own URL: the embedded engine has no restream."""
        camera = self._cameras.get(camera_id)
        return camera.source.connect_url() if camera else None

    # ----- live view --------------------------------------------------------------------------

    async def async_handle_offer(
        self,
        camera_id: str,
        session_id: str,
        offer_sdp: str,
        send_message: WebRTCSendMessage,
    ) -> None:
        """Answer a viewer's offer; candidates follow the answer one by one (trickle ICE)."""
        hub = self._hubs[camera_id]
        try:
            plan = await self._plan(camera_id, offered_codecs(offer_sdp))
        except ValueError as err:
            send_message(WebRTCError("webrtc_offer_failed", f"Cannot answer the offer: {err}"))
            return
        ice_servers = to_aiortc_ice_servers(self._hass.config.webrtc.ice_servers)
        viewer = WebRTCViewer(session_id, hub, ice_servers)
        viewer.plan = plan
        self._viewers[session_id] = viewer

        @viewer.pc.on("connectionstatechange")
        def _on_state() -> None:
            state = viewer.pc.connectionState
            _LOGGER.debug("%s viewer %s: %s", hub.name, session_id, state)
            if state in ("failed", "closed"):
                self.close_session(session_id)

        try:
            answer, candidates = await viewer.answer(offer_sdp, plan)
        except Exception as err:  # noqa: BLE001 - aiortc raises many types; the viewer must hear
            _LOGGER.warning("Cannot answer WebRTC offer for %s: %s", hub.name, err)
            self.close_session(session_id)
            send_message(WebRTCError("webrtc_offer_failed", f"Cannot answer the offer: {err}"))
            return
        if viewer.closed:
            return  # the viewer left while we negotiated
        send_message(WebRTCAnswer(answer))
        for candidate in candidates:
            send_message(WebRTCCandidate(candidate))

    async def _plan(self, camera_id: str, offered: dict[str, set[str]]) -> ViewerPlan:
        """Choose what this viewer gets from what the camera sends and the viewer offers.

        Video: the camera's own stream when the viewer decodes its codec (H.264 always,
        H.265 when offered); else the camera's H.264 sub-stream; else the camera's one shared
        H.264 transcode. Audio: G.711 as it is when the viewer offers that variant, anything
        else as Opus from the camera's one shared audio transcode. Shared transcodes are held
        for the viewer (`plan.releases`) and linger a while after the last one leaves.
        """
        hub = self._hubs[camera_id]
        shared = self._transcoders[camera_id]
        info = hub.info
        plan = ViewerPlan(hub, video_path=PATH_H264)
        try:
            if info is not None and info.video_codec == "hevc":
                substream = self._substreams.get(camera_id)
                sub_info = substream.info if substream is not None else None
                if "h265" in offered["video"]:
                    plan.video_codec, plan.video_path = "hevc", PATH_H265
                elif substream is not None and sub_info and sub_info.video_codec == "h264":
                    plan.video, plan.video_path = substream, PATH_SUBSTREAM
                else:
                    plan.video = await shared.acquire_video()
                    plan.releases.append(shared.release_video)
                    plan.video_path = PATH_TRANSCODE
            elif info is not None and info.video_codec not in WEBRTC_CODECS:
                raise ValueError(f"{info.video_codec.upper()} cannot be played over WebRTC")
            audio_codec = info.audio_codec if info else None
            if audio_codec and PASS_THROUGH_AUDIO.get(audio_codec) in offered["audio"]:
                plan.audio, plan.audio_codec = hub, audio_codec
            elif audio_codec and "opus" in offered["audio"]:
                plan.audio, plan.audio_codec = await shared.acquire_audio(), "opus"
                plan.releases.append(shared.release_audio)
        except BaseException:
            plan.release()
            raise
        return plan

    async def async_on_candidate(
        self, camera_id: str, session_id: str, candidate: RTCIceCandidateInit
    ) -> None:
        """Add a viewer's candidate."""
        viewer = self._viewers.get(session_id)
        if viewer is None:
            _LOGGER.debug("Candidate for unknown WebRTC session %s ignored", session_id)
            return
        try:
            await viewer.add_candidate(candidate)
        except (ValueError, AssertionError) as err:
            _LOGGER.debug("Ignoring malformed ICE candidate %r: %s", candidate.candidate, err)

    def close_session(self, session_id: str) -> None:
        """Close a viewer (the close itself runs as a tracked task)."""
        viewer = self._viewers.pop(session_id, None)
        if viewer is None:
            return
        task = self._hass.async_create_task(viewer.close(), eager_start=True)
        if not task.done():
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @property
    def viewer_count(self) -> int:
        """Return the number of open WebRTC sessions."""
        return len(self._viewers)

    # ----- snapshots --------------------------------------------------------------------------

    async def async_snapshot(
        self, camera_id: str, width: int | None, height: int | None
    ) -> bytes | None:
        """Return the newest keyframe as JPEG, reusing a recent one for a short while."""
        hub = self._hubs[camera_id]
        async with self._snapshot_locks[camera_id]:
            keyframe = hub.latest_keyframe()
            if keyframe is None and camera_id not in self._snapshots:
                keyframe = await self._async_wait_keyframe(hub)
            info = hub.info
            cached = self._snapshots.get(camera_id)
            if cached is not None and cached.size == (width, height):
                fresh = time.monotonic() - cached.taken < SNAPSHOT_CACHE_SECONDS
                if keyframe is None or keyframe is cached.keyframe or fresh:
                    return cached.jpeg
            if keyframe is None or info is None:
                return None
            try:
                jpeg = await self._hass.async_add_executor_job(
                    keyframe_to_jpeg, info, keyframe, width, height
                )
            except SnapshotError as err:
                _LOGGER.warning("Snapshot of %s failed: %s", hub.name, err)
                return cached.jpeg if cached else None
            self._snapshots[camera_id] = _Snapshot(
                keyframe, (width, height), time.monotonic(), jpeg
            )
            return jpeg

    @staticmethod
    async def _async_wait_keyframe(hub: StreamHub) -> MediaPacket | None:
        """Wait briefly for a first keyframe of a camera that has just (re)connected."""
        deadline = time.monotonic() + KEYFRAME_WAIT_SECONDS
        while (keyframe := hub.latest_keyframe()) is None and time.monotonic() < deadline:
            if not hub.available:
                return None
            await asyncio.sleep(0.1)
        return keyframe
