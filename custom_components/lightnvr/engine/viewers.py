"""Viewers this process serves itself: one aiortc peer per viewer, fed from the camera's hubs.

The embedded engine serves every viewer this way. The go2rtc engine forwards viewers to go2rtc
and keeps this for the ones go2rtc cannot serve (an H.265 camera and a viewer without H.265, or
camera audio no browser decodes), fed from go2rtc's restream of the camera, so both engines
follow the same rules for what each viewer gets (see `LocalViewers.plan`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import logging

from homeassistant.components.camera import (
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCError,
    WebRTCSendMessage,
)
from homeassistant.core import HomeAssistant
from webrtc_models import RTCIceCandidateInit

from ..const import VIEWER_CONNECT_TIMEOUT
from ..hub import StreamHub, StreamInfo
from .base import LIVE_VIEW_PATHS
from .transcode import DEFAULT_MAX_WIDTH, SharedTranscoders
from .webrtc import ViewerPlan, WebRTCViewer, to_aiortc_ice_servers

_LOGGER = logging.getLogger(__name__)

# Video codecs a browser decodes from a pass-through track without being asked.
WEBRTC_VIDEO_CODECS = frozenset({"h264"})
# How a viewer's video is made (diagnostics, the camera's live view sensor).
PATH_H264, PATH_H265, PATH_SUBSTREAM, PATH_TRANSCODE = LIVE_VIEW_PATHS[1:5]
# Camera audio a browser plays as it is, when its offer lists the codec (every browser does).
PASS_THROUGH_AUDIO = {"pcm_alaw": "pcma", "pcm_mulaw": "pcmu"}


def plays_as_is(info: StreamInfo | None, offered: dict[str, set[str]]) -> bool:
    """Return True if a viewer can take the camera's own stream as it is.

    That is: it offers the camera's codecs and nothing needs converting. Unknown info (camera
    not connected yet) counts as yes: there is nothing to decide on.
    """
    if info is None:
        return True
    video_ok = info.video_codec in WEBRTC_VIDEO_CODECS or (
        info.video_codec == "hevc" and "h265" in offered["video"]
    )
    audio = info.audio_codec
    audio_ok = not audio or PASS_THROUGH_AUDIO.get(audio) in offered["audio"]
    return video_ok and audio_ok


@dataclass(slots=True)
class _Camera:
    hub: StreamHub
    substream: StreamHub | None
    transcoders: SharedTranscoders


class LocalViewers:
    """WebRTC sessions answered by aiortc in this process, and each camera's shared transcodes."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Serve no camera yet."""
        self._hass = hass
        self._cameras: dict[str, _Camera] = {}
        self._viewers: dict[str, WebRTCViewer] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._connect_timers: dict[str, asyncio.TimerHandle] = {}

    def add_camera(
        self,
        camera_id: str,
        hub: StreamHub,
        substream: StreamHub | None,
        *,
        transcode_full_size: bool,
    ) -> None:
        """Serve viewers of a camera from `hub` (and its H.264 `substream`, if any)."""
        # Transcoder threads start only when a viewer needs one.
        transcoders = SharedTranscoders(
            hub, self._hass.loop, max_width=None if transcode_full_size else DEFAULT_MAX_WIDTH
        )
        self._cameras[camera_id] = _Camera(hub, substream, transcoders)

    async def async_remove_camera(self, camera_id: str) -> None:
        """Close the camera's viewers and stop its transcoders."""
        camera = self._cameras.pop(camera_id, None)
        if camera is None:
            return
        for session_id, viewer in list(self._viewers.items()):
            if viewer.hub is camera.hub:
                self.close_session(session_id)
        await self.async_wait_closed()
        await camera.transcoders.async_stop()

    async def async_stop(self) -> None:
        """Close every viewer and stop every transcoder."""
        viewers = list(self._viewers.values())
        self._viewers.clear()
        for timer in self._connect_timers.values():
            timer.cancel()
        self._connect_timers.clear()
        await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)
        await self.async_wait_closed()
        cameras = list(self._cameras.values())
        self._cameras.clear()
        await asyncio.gather(*(camera.transcoders.async_stop() for camera in cameras))

    async def async_wait_closed(self) -> None:
        """Wait for viewers being closed."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def transcoders(self, camera_id: str) -> SharedTranscoders:
        """Return the camera's shared transcoders."""
        return self._cameras[camera_id].transcoders

    def serves(self, session_id: str) -> bool:
        """Return True if the session is one of ours."""
        return session_id in self._viewers

    @property
    def count(self) -> int:
        """Return the number of open sessions."""
        return len(self._viewers)

    def count_for(self, camera_id: str) -> int:
        """Return the number of open sessions of a camera."""
        camera = self._cameras.get(camera_id)
        return sum(1 for v in self._viewers.values() if camera and v.hub is camera.hub)

    def path(self, camera_id: str) -> str | None:
        """Return the costliest way a viewer of this camera is served now, None if unwatched."""
        camera = self._cameras.get(camera_id)
        hub = camera.hub if camera is not None else None
        paths = {v.plan.video_path for v in self._viewers.values() if v.hub is hub and not v.closed}
        return max(paths, key=LIVE_VIEW_PATHS.index, default=None)

    async def async_handle_offer(
        self,
        camera_id: str,
        session_id: str,
        offer_sdp: str,
        offered: dict[str, set[str]],
        send_message: WebRTCSendMessage,
    ) -> None:
        """Answer a viewer's offer; candidates follow the answer one by one (trickle ICE)."""
        hub = self._cameras[camera_id].hub
        try:
            plan = await self.plan(camera_id, offered)
        except ValueError as err:
            send_message(WebRTCError("webrtc_offer_failed", f"Cannot answer the offer: {err}"))
            return
        ice_servers = to_aiortc_ice_servers(self._hass.config.webrtc.ice_servers)
        viewer = WebRTCViewer(session_id, hub, ice_servers)
        viewer.plan = plan
        self._viewers[session_id] = viewer
        self._connect_timers[session_id] = self._hass.loop.call_later(
            VIEWER_CONNECT_TIMEOUT, self._connect_timed_out, session_id
        )

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

    async def plan(self, camera_id: str, offered: dict[str, set[str]]) -> ViewerPlan:
        """Choose what this viewer gets from what the camera sends and the viewer offers.

        Video: the camera's own stream when the viewer decodes its codec (H.264 always,
        H.265 when offered); else the camera's H.264 sub-stream; else the camera's one shared
        H.264 transcode. Audio: G.711 as it is when the viewer offers that variant, anything
        else as Opus from the camera's one shared audio transcode. Shared transcodes are held
        for the viewer (`plan.releases`) and linger a while after the last one leaves.
        """
        camera = self._cameras[camera_id]
        hub, shared = camera.hub, camera.transcoders
        info = hub.info
        plan = ViewerPlan(hub, video_path=PATH_H264)
        try:
            if info is not None and info.video_codec == "hevc":
                substream = camera.substream
                sub_info = substream.info if substream is not None else None
                if "h265" in offered["video"]:
                    plan.video_codec, plan.video_path = "hevc", PATH_H265
                elif substream is not None and sub_info and sub_info.video_codec == "h264":
                    plan.video, plan.video_path = substream, PATH_SUBSTREAM
                else:
                    plan.video = await shared.acquire_video()
                    plan.releases.append(shared.release_video)
                    plan.video_path = PATH_TRANSCODE
            elif info is not None and info.video_codec not in WEBRTC_VIDEO_CODECS:
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

    async def async_on_candidate(self, session_id: str, candidate: RTCIceCandidateInit) -> None:
        """Add a viewer's candidate."""
        viewer = self._viewers.get(session_id)
        if viewer is None:
            _LOGGER.debug("Candidate for unknown WebRTC session %s ignored", session_id)
            return
        try:
            await viewer.add_candidate(candidate)
        except (ValueError, AssertionError) as err:
            _LOGGER.debug("Ignoring malformed ICE candidate %r: %s", candidate.candidate, err)

    def _connect_timed_out(self, session_id: str) -> None:
        self._connect_timers.pop(session_id, None)
        viewer = self._viewers.get(session_id)
        if viewer is not None and viewer.pc.connectionState != "connected":
            _LOGGER.debug("Viewer %s did not connect in time: closed", session_id)
            self.close_session(session_id)

    def close_session(self, session_id: str) -> None:
        """Close a viewer (the close itself runs as a tracked task)."""
        if (timer := self._connect_timers.pop(session_id, None)) is not None:
            timer.cancel()
        viewer = self._viewers.pop(session_id, None)
        if viewer is None:
            return
        task = self._hass.async_create_task(viewer.close(), eager_start=True)
        if not task.done():
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
