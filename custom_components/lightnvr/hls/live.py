"""Live HLS per camera: ~2 s fMP4 segments cut on keyframes, in a sliding window.

Where the segments come from (no second camera connection, nothing muxed twice)
---------------------------------------------------------------------------------
The camera is muxed once (`media.fragments.CameraFragments`), for the recorder, event clips
and live HLS alike. The first live request attaches a `live_sink.LiveSink` to it: every
fragment, as it completes, is listed from memory (never read back from a recording file),
whether or not the camera records. The muxer keeps its newest fragments (a ring of a few
seconds), so when it already runs (recording, event-clip pre-roll) the first viewer gets a
playlist with segments at once; otherwise the first segment is ready at the camera's next
keyframe (the muxer starts from the hub's cached GOP). Live HLS lets go of the camera once
nobody asked for a playlist or segment for `LIVE_IDLE_TIMEOUT` seconds: an unwatched camera
that nothing else needs is not muxed at all. Recording going on or off changes nothing here;
a new camera connection changes the init section and is marked with EXT-X-DISCONTINUITY.

Every fragment is put on one wall-clock timeline (`bmff.retime_fragments`: decode time
= epoch seconds × timescale), the same one the recorded playlists use, so timestamps never go
backwards when the connection changes (FFmpeg-based players drop frames when they do).

Cutting: fragments (one GOP each, at most 2 s) are grouped into a segment that is listed as
soon as it holds `LIVE_TARGET_SECONDS`; the next segment starts at the next fragment, which
starts with a keyframe unless the camera's GOP is longer than 2 s (such segments are marked
dependent and the playlist then drops EXT-X-INDEPENDENT-SEGMENTS). The very first segment
after a (re)start is a single fragment, so a player can start one GOP sooner.

LL-HLS: every chunk is also listed as a part (EXT-X-PART) as soon as it is muxed, the
segment being filled included, and blocking playlist reloads wait for a given part
(`async_wait_until` + `reached`); see `live_views`. Parts are the muxer's fragments: it cuts
one at every keyframe and after `LIVE_PART_SECONDS`, so a segment is closed on the keyframe
part that follows it.

Threads: the muxer thread only hands finished fragments to the event loop
(`call_soon_threadsafe`); every window, init and timer is owned by the loop. Fragments
are moved onto the shared timeline when first served (`live_io`, in the executor).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from datetime import datetime
import logging
import time
from typing import TYPE_CHECKING

from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.helpers.event import async_call_later
from homeassistant.util import dt as dt_util

from ..media.fragments import DEFAULT_FRAGMENT_SECONDS, CameraFragments
from ..media.muxer import Fragment
from .live_sink import LiveSink
from .live_types import (
    LIVE_TARGET_SECONDS,
    LiveChunk,
    LiveInit,
    LivePartial,
    LiveSegment,
    LiveSource,
    LiveWindow,
    chunk_from_fragment,
)
from .playlist import TARGET_TOLERANCE, target_duration

if TYPE_CHECKING:
    from .live_hls import LiveHls

# What this module defines for its importers.
__all__ = [
    "LIVE_FIRST_SEGMENT_TIMEOUT",
    "LIVE_IDLE_TIMEOUT",
    "LIVE_KEPT_SEGMENTS",
    "LIVE_WINDOW_SEGMENTS",
    "LiveCamera",
]

_LOGGER = logging.getLogger(__name__)

LIVE_WINDOW_SEGMENTS = 6  # listed in the playlist (~12 s)
LIVE_KEPT_SEGMENTS = 4  # still served after leaving the playlist, for players that lag behind
LIVE_IDLE_TIMEOUT = 60.0  # seconds without a request before a camera's live HLS stops
LIVE_FIRST_SEGMENT_TIMEOUT = 10.0  # a first playlist request waits this long for a segment
# How much of the muxer's newest fragments a first viewer gets at once.
_SEED_SECONDS = 3 * LIVE_TARGET_SECONDS
# A fragment older than this (end to now) is not live any more: do not seed with it.
_FRESH_SECONDS = 3.0
# The muxer cuts a fragment (a part) at every keyframe and after this long, so that LL-HLS
# parts are shorter than a GOP; a segment of parts is still cut on keyframes only, unless the
# GOP is longer than `_SPLIT_MAX_SECONDS`.
LIVE_PART_SECONDS = DEFAULT_FRAGMENT_SECONDS
_SPLIT_MAX_SECONDS = 2 * LIVE_TARGET_SECONDS
_PART_EPSILON = 0.001
_OVERLAP_TOLERANCE = 0.1  # seconds a new muxer's first fragment may overlap the last segment


# ----- one camera's live window (event loop) ----------------------------------------------------


class LiveCamera:
    """The live playlist of one camera: its window, its sink and its idle timer."""

    def __init__(self, owner: LiveHls, camera_id: str) -> None:
        """Create an idle camera."""
        self._owner = owner
        self._hass = owner.hass
        self.camera_id = camera_id
        self.source: LiveSource | None = None  # None: nobody watches
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
        self._part_target = 0.0  # likewise EXT-X-PART-INF: the longest chunk listed so far
        self._discontinuity = False  # the next segment follows a break
        self._fast_start = False  # close the next segment after its first fragment
        self._last_end: float | None = None
        self._fragments: CameraFragments | None = None  # the camera's muxer, while watched
        self._sink: LiveSink | None = None
        self._last_fragment: Fragment | None = None
        self._last_request = dt_util.utcnow()
        self._cancel_idle: CALLBACK_TYPE | None = None
        self._waiters: list[asyncio.Future[None]] = []

    # ----- viewers --------------------------------------------------------------------------

    @callback
    def touch(self) -> None:
        """Note a request (keeps the live stream running)."""
        self._last_request = dt_util.utcnow()

    @callback
    def activate(self) -> None:
        """Start listing the camera's fragments (again, if the camera was set up anew)."""
        self.touch()
        if self.source is not None and self._fragments is self._owner.fragments(self.camera_id):
            return
        if self.source is not None:
            _LOGGER.debug("Live HLS of %s: the camera was set up again", self.camera_id)
            self._detach()
            self._close_pending()
        self._fast_start = True
        self._discontinuity = self._next_sequence > 0
        self._schedule_idle(LIVE_IDLE_TIMEOUT)
        self._attach()

    async def async_wait_segment(self, max_wait: float) -> bool:
        """Wait until the window holds a segment; False after `max_wait` seconds."""
        return await self.async_wait_until(lambda: bool(self._segments), max_wait)

    async def async_wait_until(self, ready: Callable[[], bool], max_wait: float) -> bool:
        """Wait until `ready()` (checked at every new chunk); False after `max_wait` s."""
        try:
            async with asyncio.timeout(max_wait):
                while not ready():
                    if self.source is None:
                        return False
                    future: asyncio.Future[None] = self._hass.loop.create_future()
                    self._waiters.append(future)
                    try:
                        await future
                    finally:
                        if future in self._waiters:
                            self._waiters.remove(future)
        except TimeoutError:
            return ready()
        return True

    @property
    def filling(self) -> int:
        """Return the media sequence number of the segment being filled."""
        return self._next_sequence

    def reached(self, msn: int, part: int | None) -> bool:
        """Return True once a blocking reload for `_HLS_msn`/`_HLS_part` can be answered.

        Without a part: once segment `msn` is complete. A part index past the last part of a
        complete segment means part 0 of the next one (RFC 8216bis 6.2.5.2).
        """
        if part is None:
            return msn < self._next_sequence
        if msn == self._next_sequence:
            return part < len(self._pending)
        if msn > self._next_sequence:
            return False
        segment = self.segment(msn)
        if segment is None or part < len(segment.parts):
            return True  # it left the window: nothing to wait for
        return self.reached(msn + 1, 0)

    def part(self, msn: int, index: int) -> tuple[LiveChunk, LiveInit] | None:
        """Return a part (a chunk of a listed segment, or of the one being filled)."""
        if msn == self._next_sequence:
            init = self._pending_init
            if index < len(self._pending) and init is not None:
                return self._pending[index], init
            return None
        segment = self.segment(msn)
        if segment is None or index >= len(segment.parts):
            return None
        return segment.parts[index], segment.init

    def window(self) -> LiveWindow:
        """Return what the playlist lists now."""
        shown = list(self._segments)[-LIVE_WINDOW_SEGMENTS:]
        flagged_shown = sum(1 for segment in shown if segment.discontinuity)
        last = self._segments[-1] if self._segments else None
        init = self._pending_init
        partial = LivePartial(
            sequence=self._next_sequence,
            parts=tuple(self._pending),
            init=init,
            discontinuity=self._discontinuity
            or (last is not None and init is not None and last.init is not init),
        )
        return LiveWindow(
            segments=tuple(shown),
            media_sequence=shown[0].sequence if shown else self._next_sequence,
            discontinuity_sequence=self._flagged - flagged_shown,
            source=self.source,
            target=self._target,
            partial=partial if self.source is not None else None,
            part_target=self._part_target,
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
        """Stop listing fragments and forget the window (sequence numbers go on)."""
        if self.source is not None:
            _LOGGER.debug("Live HLS of %s stopped", self.camera_id)
        self.source = None
        self._detach()
        if self._cancel_idle is not None:
            self._cancel_idle()
            self._cancel_idle = None
        self._segments.clear()
        self._pending = []
        self._pending_init = None
        self._inits.clear()
        self._last_end = None
        self._wake()

    # ----- the camera's fragments -------------------------------------------------------------

    def _attach(self) -> None:
        """Attach a sink to the camera's muxer; list its newest fragments if they are live."""
        fragments = self._owner.fragments(self.camera_id)
        if fragments is None:
            self.deactivate()  # the camera is gone
            return
        sink = LiveSink(self._hass.loop, self._on_fragment)
        self._fragments, self._sink = fragments, sink
        self.source = LiveSource.MUXER
        fragments.add_sink(sink)
        recent = fragments.recent(since=time.time() - _SEED_SECONDS)
        if recent and time.time() - (recent[-1].start + recent[-1].duration) < _FRESH_SECONDS:
            self._fast_start = False
            for fragment in recent:
                self._on_fragment(sink, fragment)
            self._close_pending()  # list the newest fragments now rather than at the next one
        _LOGGER.debug("Live HLS of %s started", self.camera_id)

    def _detach(self) -> None:
        fragments, sink = self._fragments, self._sink
        self._fragments = self._sink = None
        self._last_fragment = None
        if fragments is not None and sink is not None:
            sink.detached()
            fragments.remove_sink(sink)  # on the loop: never wait for the muxer here

    @callback
    def _on_fragment(self, sink: LiveSink, fragment: Fragment) -> None:
        """List a fragment of the camera's muxer (each once, in order)."""
        if sink is not self._sink:
            return
        last = self._last_fragment
        if last is not None and last.init is fragment.init and fragment.start <= last.start:
            return  # already listed: the seed from the ring and the sink overlap
        self._last_fragment = fragment
        self._add_chunk(chunk_from_fragment(fragment, LiveSource.MUXER))

    # ----- the window ---------------------------------------------------------------------------

    def _init_for(self, chunk: LiveChunk) -> LiveInit:
        init = self._inits.get(chunk.init_key)
        if init is None:
            init = LiveInit(
                init_id=self._next_init_id,
                key=chunk.init_key,
                zero=chunk.zero,
                data=chunk.init_data,
            )
            self._next_init_id += 1
            self._inits[chunk.init_key] = init
        return init

    def _add_chunk(self, chunk: LiveChunk) -> None:
        init = self._init_for(chunk)
        pending = self._pending
        # Chunks are sub-GOP parts: a segment can only end where a keyframe starts the next,
        # so it is closed when that keyframe's chunk comes.
        full = self._fast_start or _length(pending) >= LIVE_TARGET_SECONDS - TARGET_TOLERANCE
        if pending and (
            (chunk.keyframe and full)
            or init is not self._pending_init
            # A keyframe after the tail of a long GOP: let it start a segment of its own.
            or (chunk.keyframe and not pending[0].keyframe)
        ):
            self._close_pending()
        if not self._pending:
            if self._last_end is not None and chunk.start < self._last_end - _OVERLAP_TOLERANCE:
                return  # already listed (before the camera was set up again)
            last = self._segments[-1] if self._segments else None
            if not chunk.keyframe and (
                last is None or self._discontinuity or last.init is not init
            ):
                return  # a segment after a break must start with a keyframe
        self._pending.append(chunk)
        self._pending_init = init
        self._part_target = max(self._part_target, chunk.duration)
        length = _length(self._pending)
        # The muxers cut a part once it reaches LIVE_PART_SECONDS: a shorter one was cut by the
        # next keyframe, so the segment may end with it now rather than one part later.
        gop_end = chunk.duration < LIVE_PART_SECONDS - _PART_EPSILON
        if length >= _SPLIT_MAX_SECONDS:
            self._close_pending()  # a GOP this long is cut anyway (the segment is dependent)
        elif gop_end and (self._fast_start or length >= LIVE_TARGET_SECONDS - TARGET_TOLERANCE):
            self._close_pending()
        else:
            self._wake()  # a new part: blocking playlist reloads may be waiting for it

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
            parts=tuple(chunks),
        )
        if all(chunk.data is not None for chunk in chunks):
            segment.data = b"".join(chunk.data or b"" for chunk in chunks)
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


def _length(chunks: list[LiveChunk]) -> float:
    return sum(chunk.duration for chunk in chunks)
