"""Event clips of every camera of one hub: pre-roll, triggers, index, retention, listeners.

`ClipManager` methods run in the event loop and never block it (file work runs in the cameras'
muxer threads or the executor; only `resolve` touches the disk and is meant for the executor, like
`RecorderManager.resolve`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
import contextlib
from datetime import date, timedelta, tzinfo
import logging
from pathlib import Path
import time
from typing import Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.util import dt as dt_util

from ...detection import Box
from ...media.consumer import PacketSource
from ...media.fragments import CameraFragments
from ..lifecycle import async_open_store
from ..storage import resolve_inside
from .handle import ClipHandle
from .recorder import DEFAULT_MAX_LENGTH, DEFAULT_POST_ROLL, DEFAULT_PRE_ROLL, ClipRecorder
from .store import (
    DEFAULT_CLIP_RETENTION_DAYS,
    ClipBusyError,
    ClipError,
    ClipIndex,
    ClipLayout,
    ClipRetentionPeer,
    EventClip,
    apply_clip_retention,
    recover_clip_part,
    scan_clips,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_CLIP_RETENTION_INTERVAL: Final = timedelta(hours=1)
# Clips on demand being made at once, per camera and in all: a loop of service calls gets a
# clear error instead of a writer each.
MAX_SAVES_PER_CAMERA: Final = 2
MAX_SAVES: Final = 8


class ClipManager:
    """Event clips of every camera of one hub: pre-roll, triggers, index, retention, listeners.

    Every method runs in the event loop; blocking work runs in the muxer threads or the executor.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        storage_root: Path,
        *,
        retention_days: float = DEFAULT_CLIP_RETENTION_DAYS,
        pre_roll: float = DEFAULT_PRE_ROLL,
        post_roll: float = DEFAULT_POST_ROLL,
        max_length: float = DEFAULT_MAX_LENGTH,
        buffer_seconds: float | None = None,
        retention_interval: timedelta = DEFAULT_CLIP_RETENTION_INTERVAL,
        tz: tzinfo | None = None,
    ) -> None:
        """Prepare the manager; nothing is touched on disk before `async_start`.

        Clips go to `storage_root`/events. `buffer_seconds` (default `pre_roll`) bounds the
        pre-roll of clips on demand: each camera's muxer keeps that much of its fragments in its
        ring (plus a GOP), shared with live HLS. `tz` defaults to Home Assistant's time zone.
        """
        self._hass = hass
        self.layout = ClipLayout(storage_root, tz or dt_util.get_default_time_zone())
        self.index = ClipIndex()
        self.retention_days = retention_days
        self.pre_roll = pre_roll
        self.post_roll = post_roll
        self.max_length = max_length
        self.buffer_seconds = buffer_seconds
        self._retention_interval = retention_interval
        self._recorders: dict[str, ClipRecorder] = {}
        self._started = False
        self._cancel_timer: CALLBACK_TYPE | None = None
        self._retention_lock = asyncio.Lock()
        self._listeners: list[Callable[[EventClip], None]] = []
        self._saving: dict[str, int] = {}
        self.retention_peer = ClipRetentionPeer(self.layout, self.index)

    # ----- lifecycle --------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Recover clips left by a crash, index the folder, start retention and the cameras."""
        self._cancel_timer = await async_open_store(
            self._hass,
            what="event clip(s)",
            load=self._load,
            opened=self._opened,
            retention=self.async_run_retention,
            interval=self._retention_interval,
        )
        for recorder in self._recorders.values():
            recorder.start()

    def _opened(self) -> None:
        self._started = True

    def _load(self) -> int:
        """Scan the events folder and recover leftover parts (blocking)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        found = scan_clips(self.layout)
        for clip in found.clips:
            self.index.add(clip)
        recovered = 0
        for camera_id, part in found.parts:
            saved = recover_clip_part(self.layout, camera_id, part)
            if saved is not None:
                self.index.add(saved)
                recovered += 1
        return recovered

    async def async_stop(self) -> None:
        """Finish every running clip and stop taking the cameras' fragments."""
        self._started = False
        if self._cancel_timer is not None:
            self._cancel_timer()
            self._cancel_timer = None
        recorders = list(self._recorders.values())
        self._recorders.clear()
        await asyncio.gather(
            *(self._hass.async_add_executor_job(recorder.stop) for recorder in recorders)
        )
        async with self._retention_lock:  # let a running retention pass end
            pass

    # ----- cameras ----------------------------------------------------------------------------

    async def async_add_camera(
        self, camera_id: str, source: CameraFragments | PacketSource
    ) -> None:
        """Make a camera's clips from its shared muxer (or, given a hub, a muxer of their own).

        Clips are its main stream copied, never transcoded.
        """
        if camera_id in self._recorders:
            await self.async_remove_camera(camera_id)
        recorder = ClipRecorder(
            camera_id,
            source,
            self.layout,
            self._hass.loop,
            pre_roll=self.pre_roll,
            post_roll=self.post_roll,
            max_length=self.max_length,
            buffer_seconds=self.buffer_seconds,
            on_finished=self._on_finished,
        )
        self._recorders[camera_id] = recorder
        if self._started:
            recorder.start()

    async def async_remove_camera(self, camera_id: str) -> None:
        """Stop making a camera's clips; its running clip is finished, its files stay."""
        recorder = self._recorders.pop(camera_id, None)
        if recorder is not None:
            await self._hass.async_add_executor_job(recorder.stop)

    @property
    def camera_ids(self) -> list[str]:
        """Return the cameras whose clips are made."""
        return list(self._recorders)

    def _recorder(self, camera_id: str) -> ClipRecorder:
        recorder = self._recorders.get(camera_id)
        if recorder is None:
            raise ClipError(f"no event clips for camera {camera_id}")
        return recorder

    # ----- clips ------------------------------------------------------------------------------

    @callback
    def async_trigger(
        self,
        camera_id: str,
        label: str,
        *,
        confidence: float | None = None,
        box: Box | Mapping[str, float] | Sequence[float] | None = None,
        snapshot: bytes | None = None,
    ) -> ClipHandle:
        """Start an event clip for `label` (with pre-roll), or extend the running one.

        Returns at once; `await handle.wait()` gives the finished clip. `snapshot` is JPEG
        bytes kept beside the clip (the first one given). Raises ClipError for an unknown camera.
        """
        return self._recorder(camera_id).trigger(
            label, confidence=confidence, box=box, snapshot=snapshot
        )

    @callback
    def async_release(self, camera_id: str, label: str) -> bool:
        """Tell that the detection of `label` ended; False if no running clip holds `label`.

        The clip ends `post_roll` seconds after the last of its labels is released.
        """
        recorder = self._recorders.get(camera_id)
        return recorder.release(label) if recorder is not None else False

    async def async_save_clip(
        self, camera_id: str, duration: float, pre_roll: float | None = None
    ) -> Path:
        """Save `duration` seconds of video, `pre_roll` (default: the manager's) before now.

        Waits until the clip is finished and returns its path. Raises ValueError for a bad
        duration/pre-roll and ClipError for an unknown camera or when no video came.
        """
        recorder = self._recorder(camera_id)
        if self._saving.get(camera_id, 0) >= MAX_SAVES_PER_CAMERA:
            raise ClipBusyError(
                f"{MAX_SAVES_PER_CAMERA} clips of this camera are being saved already"
            )
        if sum(self._saving.values()) >= MAX_SAVES:
            raise ClipBusyError(f"{MAX_SAVES} clips are being saved already")
        handle = recorder.save(duration, pre_roll)
        self._saving[camera_id] = self._saving.get(camera_id, 0) + 1
        try:
            clip = await handle.wait()
        finally:
            self._saving[camera_id] -= 1
        if clip is None:
            raise ClipError(f"no video from camera {camera_id} to save")
        return clip.path

    def active_clip(self, camera_id: str) -> ClipHandle | None:
        """Return the running event clip of a camera, if any."""
        recorder = self._recorders.get(camera_id)
        return recorder.active if recorder is not None else None

    def buffered_seconds(self, camera_id: str) -> float:
        """Return how much pre-roll a camera's ring holds right now."""
        recorder = self._recorders.get(camera_id)
        return recorder.buffered_seconds if recorder is not None else 0.0

    # ----- the index --------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        """Return the cameras that have clips (also removed ones, until retention ends them)."""
        return self.index.cameras()

    def days(self, camera_id: str) -> list[date]:
        """Return a camera's days with clips, oldest first."""
        return self.index.days(camera_id)

    def clips(self, camera_id: str, day: date | None = None) -> list[EventClip]:
        """Return a camera's clips (of one local day, or all), oldest first."""
        return self.index.clips(camera_id, day)

    def get(self, path: Path) -> EventClip | None:
        """Return the clip at `path` (as `resolve` returns it), if indexed."""
        return self.index.get(path)

    def relative(self, path: Path) -> str:
        """Return a clip's path relative to the storage root (`events/<camera>/<day>/…`)."""
        return self.layout.relative(path)

    def resolve(self, relative: str) -> Path:
        """Return the real path of a relative one; UnsafePathError outside the storage root.

        Blocking (it resolves symlinks on disk): call it in the executor.
        """
        return resolve_inside(self.layout.storage_root, relative)

    @callback
    def add_listener(self, listener: Callable[[EventClip], None]) -> CALLBACK_TYPE:
        """Call `listener(clip)` in the event loop for every finished clip; return a remover."""
        self._listeners.append(listener)

        def _remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return _remove

    def _on_finished(self, _handle: ClipHandle, clip: EventClip | None) -> None:
        """Index a finished clip and tell the loop (a muxer thread)."""
        if clip is None:
            return
        self.index.add(clip)
        with contextlib.suppress(RuntimeError):  # loop closed: HA is gone, nobody listens
            self._hass.loop.call_soon_threadsafe(self._async_clip_finished, clip)

    @callback
    def _async_clip_finished(self, clip: EventClip) -> None:
        for listener in list(self._listeners):
            try:
                listener(clip)
            except Exception:
                _LOGGER.exception("Error in a clip listener")

    # ----- retention --------------------------------------------------------------------------

    async def async_run_retention(self, now: float | None = None) -> list[EventClip]:
        """Delete clips older than `retention_days` (off the loop); return what was deleted.

        `now` (epoch seconds) defaults to the current time.
        """
        if self._retention_lock.locked():
            return []
        async with self._retention_lock:
            moment = time.time() if now is None else now
            deleted = await self._hass.async_add_executor_job(
                apply_clip_retention, self.layout, self.index, self.retention_days, moment
            )
        if deleted:
            _LOGGER.debug("Clip retention deleted %d clip(s)", len(deleted))
        return deleted
