"""Live HLS of every camera of one hub entry: owns the `LiveCamera`s.

See `live` for where the segments come from and how they are cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeassistant.core import HomeAssistant

from ..media.fragments import CameraFragments
from .live import LIVE_FIRST_SEGMENT_TIMEOUT, LiveCamera
from .live_types import LiveSource, LiveWindow

if TYPE_CHECKING:
    from ..runtime import LightNvrRuntime


class LiveHls:
    """Live HLS of the cameras of one hub entry."""

    def __init__(self, hass: HomeAssistant, runtime: LightNvrRuntime) -> None:
        """Create the service (nothing runs before a camera is asked for)."""
        self.hass = hass
        self.runtime = runtime
        self._cameras: dict[str, LiveCamera] = {}

    async def async_stop(self) -> None:
        """Stop every camera's live stream (its sink lets go of the camera's muxer)."""
        for camera in self._cameras.values():
            camera.deactivate()
        self._cameras.clear()

    def known(self, camera_id: str) -> bool:
        """Return True for a camera of this hub."""
        return camera_id in self.runtime.cameras

    def fragments(self, camera_id: str) -> CameraFragments | None:
        """Return a camera's muxer (None when the camera is gone)."""
        return self.runtime.fragments.get(camera_id)

    def camera(self, camera_id: str) -> LiveCamera:
        """Return a camera's live state (created on first use)."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            camera = self._cameras[camera_id] = LiveCamera(self, camera_id)
        return camera

    async def async_window(self, camera_id: str, max_wait: float | None = None) -> LiveWindow:
        """Start the camera's live stream if needed and return its window.

        The first request waits (up to `max_wait` s) for the first segment, so that a player's
        very first playlist already plays.
        """
        camera = self.camera(camera_id)
        camera.activate()
        await camera.async_wait_segment(
            LIVE_FIRST_SEGMENT_TIMEOUT if max_wait is None else max_wait
        )
        return camera.window()

    def source(self, camera_id: str) -> LiveSource | None:
        """Return where a camera's live segments come from now (None: not running)."""
        camera = self._cameras.get(camera_id)
        return camera.source if camera is not None else None
