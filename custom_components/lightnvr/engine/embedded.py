"""The embedded engine: no external program; PyAV reads cameras, aiortc serves viewers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import logging
import time

from homeassistant.components.camera import WebRTCError, WebRTCSendMessage
from homeassistant.core import HomeAssistant
from webrtc_models import RTCIceCandidateInit

from ..const import SNAPSHOT_CACHE_SECONDS
from ..hub import MediaPacket, StreamHub
from ..models import CameraConfig, ViewerLimits
from .snapshot import SnapshotError, keyframe_to_jpeg
from .viewers import LocalViewers
from .webrtc import offered_codecs

_LOGGER = logging.getLogger(__name__)

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

    def __init__(self, hass: HomeAssistant, limits: ViewerLimits | None = None) -> None:
        """Create an engine with no cameras."""
        self._hass = hass
        self._limits = limits or ViewerLimits()
        self._cameras: dict[str, CameraConfig] = {}
        self._hubs: dict[str, StreamHub] = {}
        self._substreams: dict[str, StreamHub] = {}
        self._viewers = LocalViewers(hass)
        self._snapshots: dict[str, _Snapshot] = {}
        self._snapshot_locks: dict[str, asyncio.Lock] = {}

    async def async_start(self) -> None:
        """Nothing to start: hubs start with their cameras."""

    async def async_stop(self) -> None:
        """Close every viewer and stop every hub (threads joined off the event loop)."""
        await self._viewers.async_stop()
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
        hub.start()
        substream = None
        if camera.substream is not None:
            substream = StreamHub(f"{camera.name} (substream)", camera.substream, self._hass.loop)
            self._substreams[camera.camera_id] = substream
            substream.start()
        self._viewers.add_camera(
            camera.camera_id,
            hub,
            substream,
            transcode_full_size=camera.transcode_full_size,
        )
        return hub

    async def async_remove_camera(self, camera_id: str) -> None:
        """Close the camera's viewers and stop its hub."""
        await self._viewers.async_remove_camera(camera_id)
        hub = self._hubs.pop(camera_id, None)
        substream = self._substreams.pop(camera_id, None)
        self._cameras.pop(camera_id, None)
        self._snapshots.pop(camera_id, None)
        self._snapshot_locks.pop(camera_id, None)
        if hub is not None:
            await hub.async_stop()
        if substream is not None:
            await substream.async_stop()

    def hub(self, camera_id: str) -> StreamHub:
        """Return a camera's hub."""
        return self._hubs[camera_id]

    def live_view_path(self, camera_id: str) -> str:
        """Return the costliest way a viewer of this camera is served now, or "idle"."""
        return self._viewers.path(camera_id) or "idle"

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
        refusal = self._limits.refusal(self._viewers.count_for(camera_id), self._viewers.count)
        if refusal is not None:
            send_message(WebRTCError("webrtc_offer_failed", refusal))
            return
        await self._viewers.async_handle_offer(
            camera_id, session_id, offer_sdp, offered_codecs(offer_sdp), send_message
        )

    async def async_on_candidate(
        self, camera_id: str, session_id: str, candidate: RTCIceCandidateInit
    ) -> None:
        """Add a viewer's candidate."""
        await self._viewers.async_on_candidate(session_id, candidate)

    def close_session(self, session_id: str) -> None:
        """Close a viewer (the close itself runs as a tracked task)."""
        self._viewers.close_session(session_id)

    @property
    def viewer_count(self) -> int:
        """Return the number of open WebRTC sessions."""
        return self._viewers.count

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
