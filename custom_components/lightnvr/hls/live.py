"""Live HLS per camera: ~2 s fMP4 segments cut on keyframes, in a sliding window.

Where the segments come from (no second camera connection, no second remux of what is on disk)
-----------------------------------------------------------------------------------------------
- **Recording on**: the recorder already writes the camera as fragmented MP4 and reports every
  fragment the moment it is on disk (`RecorderManager.add_fragment_listener`). A live segment is
  then just a byte range of the file being written (one or more whole fragments, starting on a
  keyframe) and its init section is the first `init_length` bytes of that file. Nothing is
  muxed twice. The newest fragments are always remembered (a few seconds of `FragmentInfo`,
  no bytes), so the first viewer gets a playlist with segments at once.
- **Recording off** (or paused, or not started yet): an in-memory fMP4 muxer
  (`live_muxer.MemoryMuxer`, stream copy, one thread) subscribes to the camera's StreamHub, the
  same shared connection every consumer uses. It is started by the first live request and
  stopped once nobody asked for a playlist or segment for `LIVE_IDLE_TIMEOUT` seconds, so no
  disk is needed and an unwatched camera costs nothing. It starts from the hub's cached GOP, so
  its first segment is ready at the camera's next keyframe. Like the recorder, it transcodes
  audio other than AAC to AAC (`recorder.audio.AacAudio`).
- The two switch over by themselves: when the recorder starts writing while the muxer runs,
  its first keyframe fragment takes over and the muxer stops; when the recorder stops (switch
  off, storage full), the muxer starts. A switch, a new recording file or a new camera
  connection changes the init section and is marked with EXT-X-DISCONTINUITY.

Both sources put every fragment on one wall-clock timeline (`vod.retime_fragments`: decode time
= epoch seconds × timescale), the same one the recorded playlists use, so timestamps never go
backwards when the source or the file changes (FFmpeg-based players drop frames when they do).

Cutting: fragments (one GOP each, at most 2 s) are grouped into a segment that is listed as
soon as it holds `LIVE_TARGET_SECONDS`; the next segment starts at the next fragment, which
starts with a keyframe unless the camera's GOP is longer than 2 s (such segments are marked
dependent and the playlist then drops EXT-X-INDEPENDENT-SEGMENTS). The very first segment
after a (re)start is a single fragment, so a player can start one GOP sooner.

Not implemented: LL-HLS partial segments (EXT-X-PART, blocking playlist reload). A segment is
listed ~2 s after its first frame arrived (HA's default LL-HLS: 6 s segments, 1 s parts), see
bench/hls.py. The recorder's one-GOP fragments are already byte ranges, so parts could be
added on top of this window later.

Threads: the muxer thread and the recorder thread only hand finished chunks to the event loop
(`call_soon_threadsafe`); every window, init and timer is owned by the loop. File reads run in
the executor.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
import contextlib
from datetime import datetime
import logging
import time
from typing import TYPE_CHECKING, Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.event import async_call_later
from homeassistant.util import dt as dt_util

from ..media.bmff import parse_tracks, retime_fragments, timeline_shifts
from ..recorder.segmenter import FragmentInfo, PacketSource
from .live_muxer import MemoryMuxer
from .live_types import (
    LIVE_TARGET_SECONDS,
    LiveChunk,
    LiveInit,
    LiveSegment,
    LiveSource,
    LiveWindow,
    chunk_from_fragment,
    read_recording_range,
)
from .playlist import TARGET_TOLERANCE, target_duration

if TYPE_CHECKING:
    from ..runtime import LightNvrRuntime

# Names importers take from here (the muxer and the shared types have modules of their own).
__all__ = [
    "LIVE_FIRST_SEGMENT_TIMEOUT",
    "LIVE_IDLE_TIMEOUT",
    "LIVE_KEPT_SEGMENTS",
    "LIVE_TARGET_SECONDS",
    "LIVE_WINDOW_SEGMENTS",
    "LiveCamera",
    "LiveChunk",
    "LiveHls",
    "LiveInit",
    "LiveSegment",
    "LiveSource",
    "LiveWindow",
    "MemoryMuxer",
    "chunk_from_fragment",
    "read_recording_range",
]

_LOGGER = logging.getLogger(__name__)

LIVE_WINDOW_SEGMENTS = 6  # listed in the playlist (~12 s)
LIVE_KEPT_SEGMENTS = 4  # still served after leaving the playlist, for players that lag behind
LIVE_IDLE_TIMEOUT = 60.0  # seconds without a request before a camera's live HLS stops
LIVE_FIRST_SEGMENT_TIMEOUT = 10.0  # a first playlist request waits this long for a segment
# How much of the recorder's newest fragments is remembered for an instant start.
RECENT_FRAGMENT_SECONDS = 3 * LIVE_TARGET_SECONDS + 2.0
# A recorder fragment older than this (end to now) means the recorder is not writing live.
_RECORDER_FRESH_SECONDS = 3.0
# The recorder finishes a file and opens the next one at once: look again after this long
# before deciding that it stopped.
_RECORDER_SETTLE_SECONDS = 1.0
_MUXER_RESTART_SECONDS = 1.0
_OVERLAP_TOLERANCE = 0.1  # seconds a new source's first fragment may overlap the last segment


# ----- one camera's live window (event loop) ----------------------------------------------------


class LiveCamera:
    """The live playlist of one camera: its window, its source and its idle timer."""

    def __init__(self, owner: LiveHls, camera_id: str) -> None:
        """Create an idle camera."""
        self._owner = owner
        self._hass = owner.hass
        self.camera_id = camera_id
        self.source: LiveSource | None = None  # None: nobody watches
        self.recent: deque[FragmentInfo] = deque()
        self._segments: deque[LiveSegment] = deque()
        self._pending: list[LiveChunk] = []
        self._pending_init: LiveInit | None = None
        self._inits: dict[object, LiveInit] = {}
        self._next_sequence = 0
        self._next_init_id = 0
        self._flagged = 0  # segments ever created with EXT-X-DISCONTINUITY
        # A live playlist's target duration must not change; only a camera whose GOP is
        # longer than the target makes it grow (segments are cut on keyframes only).
        self._target = target_duration([], LIVE_TARGET_SECONDS)
        self._discontinuity = False  # the next segment follows a break
        self._fast_start = False  # close the next segment after its first fragment
        self._last_end: float | None = None
        self._muxer: MemoryMuxer | None = None
        self._last_request = dt_util.utcnow()
        self._cancel_idle: CALLBACK_TYPE | None = None
        self._cancel_settle: CALLBACK_TYPE | None = None
        self._cancel_restart: CALLBACK_TYPE | None = None
        self._waiters: list[asyncio.Future[None]] = []

    # ----- viewers --------------------------------------------------------------------------

    @callback
    def touch(self) -> None:
        """Note a request (keeps the live stream running)."""
        self._last_request = dt_util.utcnow()

    @callback
    def activate(self) -> None:
        """Start producing segments, from the recorder if it writes, else from memory."""
        self.touch()
        if self.source is not None:
            return
        self._fast_start = True
        self._discontinuity = self._next_sequence > 0
        self._schedule_idle(LIVE_IDLE_TIMEOUT)
        if self._recorder_writing():
            # Its fragments are on disk anyway: list the newest at once, or wait for the next.
            self.source = LiveSource.RECORDER
            if self._recorder_fresh():
                self._seed_from_recent()
        else:
            self._start_memory()
        _LOGGER.debug("Live HLS of %s started from %s", self.camera_id, self.source)

    async def async_wait_segment(self, max_wait: float) -> bool:
        """Wait until the window holds a segment; False after `max_wait` seconds."""
        while not self._segments:
            if self.source is None:
                return False
            future: asyncio.Future[None] = self._hass.loop.create_future()
            self._waiters.append(future)
            try:
                async with asyncio.timeout(max_wait):
                    await future
            except TimeoutError:
                return bool(self._segments)
            finally:
                if future in self._waiters:
                    self._waiters.remove(future)
        return True

    def window(self) -> LiveWindow:
        """Return what the playlist lists now."""
        shown = list(self._segments)[-LIVE_WINDOW_SEGMENTS:]
        flagged_shown = sum(1 for segment in shown if segment.discontinuity)
        return LiveWindow(
            segments=tuple(shown),
            media_sequence=shown[0].sequence if shown else self._next_sequence,
            discontinuity_sequence=self._flagged - flagged_shown,
            source=self.source,
            target=self._target,
        )

    def segment(self, sequence: int) -> LiveSegment | None:
        """Return a segment still served (listed or recently listed)."""
        for segment in self._segments:
            if segment.sequence == sequence:
                return segment
        return None

    def init(self, init_id: int) -> LiveInit | None:
        """Return an init section still in use."""
        for init in self._inits.values():
            if init.init_id == init_id:
                return init
        return None

    @callback
    def deactivate(self) -> None:
        """Stop producing segments and forget the window (sequence numbers go on)."""
        if self.source is not None:
            _LOGGER.debug("Live HLS of %s stopped", self.camera_id)
        self.source = None
        self._stop_memory()
        for cancel in (self._cancel_idle, self._cancel_settle, self._cancel_restart):
            if cancel is not None:
                cancel()
        self._cancel_idle = self._cancel_settle = self._cancel_restart = None
        self._segments.clear()
        self._pending = []
        self._pending_init = None
        self._inits.clear()
        self._last_end = None
        self._wake()

    # ----- sources ----------------------------------------------------------------------------

    @callback
    def on_recorder_fragment(self, info: FragmentInfo) -> None:
        """Remember a recorder fragment; use it if the recorder is the live source."""
        self.recent.append(info)
        newest = info.start + info.duration
        while self.recent and newest - self.recent[0].start > RECENT_FRAGMENT_SECONDS:
            self.recent.popleft()
        if self.source is LiveSource.RECORDER:
            self._add_chunk(chunk_from_fragment(info))
        elif self.source is LiveSource.MEMORY and info.keyframe:
            # The recorder writes (again): its fragments are already on disk, use them.
            _LOGGER.debug("Live HLS of %s: the recorder takes over", self.camera_id)
            self._stop_memory()
            self._close_pending()
            self.source = LiveSource.RECORDER
            self._discontinuity = True
            self._add_chunk(chunk_from_fragment(info))

    @callback
    def on_recorder_state(self) -> None:
        """Look again at the recorder after it changed (switch, pause, file finished)."""
        if self.source is not LiveSource.RECORDER or self._cancel_settle is not None:
            return
        if not self._recorder_writing():
            self._cancel_settle = async_call_later(
                self._hass, _RECORDER_SETTLE_SECONDS, self._settle
            )

    @callback
    def _settle(self, _now: Any) -> None:
        self._cancel_settle = None
        if self.source is LiveSource.RECORDER and not self._recorder_writing():
            _LOGGER.debug("Live HLS of %s: the recorder stopped; muxing in memory", self.camera_id)
            self._close_pending()
            self._start_memory()

    def _recorder_writing(self) -> bool:
        state = self._owner.recorder.camera_state(self.camera_id)
        return state is not None and state.recording

    def _recorder_fresh(self) -> bool:
        """Return True when the remembered recorder fragments reach up to now."""
        if not self.recent:
            return False
        newest = self.recent[-1]
        return time.time() - (newest.start + newest.duration) < _RECORDER_FRESH_SECONDS

    def _seed_from_recent(self) -> None:
        """Fill the window with the recorder's newest fragments (already on disk)."""
        recent = list(self.recent)
        first = len(recent) - 1
        seconds = 0.0
        while first > 0 and seconds < 3 * LIVE_TARGET_SECONDS:
            seconds += recent[first].duration
            first -= 1
        while first < len(recent) and not recent[first].keyframe:
            first += 1
        self._fast_start = False
        for info in recent[first:]:
            self._add_chunk(chunk_from_fragment(info))
        self._close_pending()  # list the newest fragments now rather than at the next one

    def _start_memory(self) -> None:
        self._stop_memory()
        self.source = LiveSource.MEMORY
        self._discontinuity = self._discontinuity or bool(self._segments)
        self._fast_start = True
        try:
            hub = self._owner.hub(self.camera_id)
        except KeyError:
            self.deactivate()  # the camera is gone
            return
        loop = self._hass.loop
        muxer: MemoryMuxer

        def on_chunk(chunk: LiveChunk) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._on_memory_chunk, muxer, chunk)

        def on_end() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_memory_end, muxer)

        muxer = MemoryMuxer(self.camera_id, hub, on_chunk=on_chunk, on_end=on_end)
        self._muxer = muxer
        muxer.start()

    def _stop_memory(self) -> None:
        muxer, self._muxer = self._muxer, None
        if muxer is not None:
            muxer.request_stop()  # on the loop: never wait for the thread here
            self._owner.reap(muxer)

    @callback
    def _on_memory_chunk(self, muxer: MemoryMuxer, chunk: LiveChunk) -> None:
        if muxer is self._muxer and self.source is LiveSource.MEMORY:
            self._add_chunk(chunk)

    @callback
    def _on_memory_end(self, muxer: MemoryMuxer) -> None:
        """Start a new muxer after one ended by itself (its hub stopped or was replaced)."""
        if muxer is not self._muxer:
            return
        self._muxer = None
        self._owner.reap(muxer)
        if self.source is LiveSource.MEMORY and self._cancel_restart is None:
            self._cancel_restart = async_call_later(
                self._hass, _MUXER_RESTART_SECONDS, self._restart_memory
            )

    @callback
    def _restart_memory(self, _now: Any) -> None:
        self._cancel_restart = None
        if self.source is LiveSource.MEMORY and self._muxer is None:
            self._close_pending()
            self._start_memory()

    # ----- the window ---------------------------------------------------------------------------

    def _init_for(self, chunk: LiveChunk) -> LiveInit:
        init = self._inits.get(chunk.init_key)
        if init is None:
            init = LiveInit(
                init_id=self._next_init_id,
                key=chunk.init_key,
                zero=chunk.zero,
                data=chunk.init_data,
                path=chunk.path,
                length=len(chunk.init_data) if chunk.init_data else chunk.init_length,
            )
            self._next_init_id += 1
            self._inits[chunk.init_key] = init
        return init

    def _add_chunk(self, chunk: LiveChunk) -> None:
        init = self._init_for(chunk)
        pending = self._pending
        if pending and (
            init is not self._pending_init
            or (chunk.path is not None and pending[-1].offset + pending[-1].length != chunk.offset)
            # A keyframe after the tail of a long GOP: let it start a segment of its own.
            or (chunk.keyframe and not pending[0].keyframe)
        ):
            self._close_pending()
        if not self._pending:
            if self._last_end is not None and chunk.start < self._last_end - _OVERLAP_TOLERANCE:
                return  # already listed from the other source
            last = self._segments[-1] if self._segments else None
            if not chunk.keyframe and (
                last is None or self._discontinuity or last.init is not init
            ):
                return  # a segment after a break must start with a keyframe
        self._pending.append(chunk)
        self._pending_init = init
        length = sum(item.duration for item in self._pending)
        if self._fast_start or length >= LIVE_TARGET_SECONDS - TARGET_TOLERANCE:
            self._close_pending()

    def _close_pending(self) -> None:
        chunks, self._pending = self._pending, []
        init, self._pending_init = self._pending_init, None
        if not chunks or init is None:
            return
        last = self._segments[-1] if self._segments else None
        discontinuity = self._discontinuity or (last is not None and last.init is not init)
        first = chunks[0]
        segment = LiveSegment(
            sequence=self._next_sequence,
            init=init,
            start=first.start,
            duration=chunks[-1].end - first.start,
            discontinuity=discontinuity,
            independent=first.keyframe,
        )
        if first.data is not None:
            segment.data = b"".join(chunk.data or b"" for chunk in chunks)
        else:
            segment.path = first.path
            segment.offset = first.offset
            segment.length = chunks[-1].offset + chunks[-1].length - first.offset
        self._next_sequence += 1
        self._flagged += discontinuity
        self._discontinuity = False
        self._fast_start = False
        self._last_end = chunks[-1].end
        self._target = max(self._target, int(segment.duration + 0.5))
        self._segments.append(segment)
        while len(self._segments) > LIVE_WINDOW_SEGMENTS + LIVE_KEPT_SEGMENTS:
            self._segments.popleft()
        used = {segment.init.key for segment in self._segments}
        for key in [key for key in self._inits if key not in used and key is not init.key]:
            del self._inits[key]
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    # ----- idle -----------------------------------------------------------------------------

    def _schedule_idle(self, delay: float) -> None:
        if self._cancel_idle is not None:
            self._cancel_idle()
        self._cancel_idle = async_call_later(self._hass, delay, self._check_idle)

    @callback
    def _check_idle(self, now: datetime) -> None:
        self._cancel_idle = None
        if self.source is None:
            return
        idle = (now - self._last_request).total_seconds()
        if idle >= LIVE_IDLE_TIMEOUT - 0.01:
            self.deactivate()
        else:
            self._schedule_idle(LIVE_IDLE_TIMEOUT - idle)


# ----- every camera -------------------------------------------------------------------------


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

    async def async_init_bytes(self, init: LiveInit) -> bytes | None:
        """Return an init section (reading it from the recording the first time)."""
        if init.data is not None:
            return init.data
        if init.path is None:
            return None
        try:
            data = await self.hass.async_add_executor_job(
                read_recording_range, init.path, 0, init.length
            )
        except OSError:
            return None
        init.shifts = timeline_shifts(parse_tracks(data), init.zero)
        init.data = data
        return data

    async def async_segment_bytes(self, segment: LiveSegment) -> bytes | None:
        """Return a segment's bytes on the shared timeline (read from disk the first time)."""
        if segment.data is not None:
            return segment.data
        if segment.path is None or await self.async_init_bytes(segment.init) is None:
            return None
        shifts = segment.init.shifts

        def read() -> bytes:
            assert segment.path is not None
            data = bytearray(read_recording_range(segment.path, segment.offset, segment.length))
            retime_fragments(data, shifts)
            return bytes(data)

        try:
            segment.data = await self.hass.async_add_executor_job(read)
        except OSError:
            return None
        return segment.data
