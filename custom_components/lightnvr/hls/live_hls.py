"""Live HLS of every camera of one hub entry: follows the recorder, owns the `LiveCamera`s.

See `live` for where the segments come from and how they are cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from typing import TYPE_CHECKING

from homeassistant.core import HomeAssistant, callback

from ..media.consumer import PacketSource
from ..recorder.segment_writer import FragmentInfo
from .live import LIVE_FIRST_SEGMENT_TIMEOUT, LiveCamera
from .live_muxer import MemoryMuxer
from .live_types import LiveSource, LiveWindow

if TYPE_CHECKING:
    from ..runtime import LightNvrRuntime


class LiveHls:
    """Live HLS of the cameras of one hub entry."""

    def __init__(self, hass: HomeAssistant, runtime: LightNvrRuntime) -> None:
        """Create the service; `async_start` hooks it to the recorder."""
        self.hass = hass
        self.runtime = runtime
        self.recorder = runtime.recorder
        self._cameras: dict[str, LiveCamera] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._stopping: set[MemoryMuxer] = set()
        self._reapers: set[asyncio.Task[None]] = set()
        self._stopped = False

    @callback
    def async_start(self) -> None:
        """Follow the recorder's fragments and state."""
        loop = self.hass.loop

        def on_fragment(info: FragmentInfo) -> None:  # recorder thread: hand over at once
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._on_fragment, info)

        self._unsubscribe = [
            self.recorder.add_fragment_listener(on_fragment),
            self.recorder.add_listener(self._on_recorder_state),
        ]

    async def async_stop(self) -> None:
        """Stop every camera's live stream and join the muxer threads."""
        self._stopped = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for camera in self._cameras.values():
            camera.deactivate()
        self._cameras.clear()
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)
        stopping = list(self._stopping)
        self._stopping.clear()
        for muxer in stopping:
            await self.hass.async_add_executor_job(muxer.join)

    def known(self, camera_id: str) -> bool:
        """Return True for a camera of this hub."""
        return camera_id in self.runtime.cameras

    def hub(self, camera_id: str) -> PacketSource:
        """Return a camera's hub (KeyError when it is gone)."""
        return self.runtime.engine.hub(camera_id)

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

    @callback
    def reap(self, muxer: MemoryMuxer) -> None:
        """Join a stopping muxer's thread in the background (and again at `async_stop`)."""
        self._stopping.add(muxer)
        if self._stopped:
            return

        async def _join() -> None:
            await self.hass.async_add_executor_job(muxer.join)
            self._stopping.discard(muxer)

        task = self.hass.async_create_background_task(
            _join(), f"lightnvr live HLS join {muxer.name}"
        )
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    @callback
    def _on_fragment(self, info: FragmentInfo) -> None:
        if self._stopped:
            return
        self.camera(info.camera_id).on_recorder_fragment(info)

    @callback
    def _on_recorder_state(self) -> None:
        for camera in self._cameras.values():
            camera.on_recorder_state()
