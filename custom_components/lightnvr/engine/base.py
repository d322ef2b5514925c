"""The interface every stream engine implements (embedded today, go2rtc next)."""

from __future__ import annotations

from typing import Protocol

from homeassistant.components.camera import WebRTCSendMessage
from webrtc_models import RTCIceCandidateInit

from ..hub import StreamHub
from ..models import CameraConfig

# How a camera's live view is made, cheapest first; "idle" while nobody watches.
LIVE_VIEW_PATHS = (
    "idle",
    "h264_passthrough",
    "h265_passthrough",
    "substream",
    "transcode",
    "go2rtc",
)


class StreamEngine(Protocol):
    """Moves video from cameras to viewers; one instance per hub entry."""

    name: str

    async def async_start(self) -> None:
        """Start the engine (processes, health checks)."""

    async def async_stop(self) -> None:
        """Stop everything the engine started: sessions, hubs, processes."""

    async def async_add_camera(self, camera: CameraConfig) -> StreamHub:
        """Start carrying a camera; return the hub its consumers subscribe to."""

    async def async_remove_camera(self, camera_id: str) -> None:
        """Stop carrying a camera: close its viewers and its hub."""

    def hub(self, camera_id: str) -> StreamHub:
        """Return the hub of a camera added before."""

    def substream_hub(self, camera_id: str) -> StreamHub | None:
        """Return the hub of the camera's sub-stream (its own connection), if it has one."""

    def live_view_path(self, camera_id: str) -> str:
        """Return how the camera's viewers are served now (one of `LIVE_VIEW_PATHS`)."""

    async def async_stream_source(self, camera_id: str) -> str | None:
        """Return a URL other programs (HA's stream component) may open, credentials included."""

    async def async_handle_offer(
        self,
        camera_id: str,
        session_id: str,
        offer_sdp: str,
        send_message: WebRTCSendMessage,
    ) -> None:
        """Answer a viewer's WebRTC offer through `send_message` (answer, candidates, errors)."""

    async def async_on_candidate(
        self, camera_id: str, session_id: str, candidate: RTCIceCandidateInit
    ) -> None:
        """Add a viewer's trickled ICE candidate to its session."""

    def close_session(self, session_id: str) -> None:
        """Close a viewer's session (it may already be gone)."""

    @property
    def viewer_count(self) -> int:
        """Return the number of open WebRTC sessions."""

    async def async_snapshot(
        self, camera_id: str, width: int | None, height: int | None
    ) -> bytes | None:
        """Return a JPEG of the camera's newest picture, or None when there is none."""
