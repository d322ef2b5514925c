"""Live HLS per camera: ~2 s fMP4 segments cut on keyframes, in a sliding window.

Where the segments come from (no second camera connection, no second remux of what is on disk)
-----------------------------------------------------------------------------------------------
- **Recording on**: the recorder already writes the camera as fragmented MP4 and reports every
  fragment the moment it is on disk (`RecorderManager.add_fragment_listener`). A live segment is
  then just a byte range of the file being written (one or more whole fragments, starting on a
  keyframe) and its init section is the first `init_length` bytes of that file. Nothing is
  muxed twice. The newest fragments are always remembered (a few seconds of `FragmentInfo`,
  no bytes), so the first viewer gets a playlist with segments at once.
- **Recording off** (or paused, or not started yet): an in-memory fMP4 muxer (`MemoryMuxer`,
  stream copy, one thread) subscribes to the camera's StreamHub, the same shared connection
  every consumer uses. It is started by the first live request and stopped once nobody asked
  for a playlist or segment for `LIVE_IDLE_TIMEOUT` seconds, so no disk is needed and an
  unwatched camera costs nothing. It starts from the hub's cached GOP, so its first segment is
  ready at the camera's next keyframe. Like the recorder, it transcodes audio other than AAC
  to AAC (`recorder.audio.AacAudio`).
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
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
import logging
from pathlib import Path
import threading
import time
from typing import TYPE_CHECKING, Any

import av
import av.error
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.event import async_call_later
from homeassistant.util import dt as dt_util

from ..hub import MediaPacket, StreamInfo, ThreadPacketQueue
from ..media.bmff import (
    iter_boxes,
    parse_moof,
    parse_tracks,
    retime_fragments,
    timeline_shifts,
    video_track,
)
from ..media.fmp4 import Fmp4Writer
from ..recorder.audio import AacAudio
from ..recorder.segmenter import (
    AUDIO_CODECS,
    VIDEO_CODECS,
    FragmentInfo,
    PacketSource,
    TimestampRepair,
    adts_header_length,
    adts_to_asc,
    video_extradata,
)
from ..recorder.storage import StorageLayout
from .playlist import TARGET_TOLERANCE, target_duration

if TYPE_CHECKING:
    from ..runtime import LightNvrRuntime

_LOGGER = logging.getLogger(__name__)

LIVE_TARGET_SECONDS = 2.0
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
_MUXER_QUEUE_PACKETS = 512
_MUXER_POLL_SECONDS = 0.5
_MUXER_JOIN_SECONDS = 10.0


class LiveSource(StrEnum):
    """Where a camera's live segments come from."""

    RECORDER = "recorder"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True, eq=False)
class LiveChunk:
    """One fMP4 fragment (`moof`+`mdat`) from either source, already complete."""

    source: LiveSource
    init_key: object  # the same object for every fragment under one init section
    zero: float  # epoch second of decode time 0 under that init section
    start: float  # epoch second of its first frame
    duration: float
    keyframe: bool
    data: bytes | None = None  # memory: the bytes, already on the shared timeline
    init_data: bytes | None = None  # memory: the init section
    path: Path | None = None  # recorder: the file being written
    offset: int = 0
    length: int = 0
    init_length: int = 0  # recorder: the init section is the file's first bytes

    @property
    def end(self) -> float:
        """Return the epoch second after its last frame."""
        return self.start + self.duration


@dataclass(slots=True, eq=False)
class LiveInit:
    """An init section (EXT-X-MAP) of the live playlist."""

    init_id: int
    key: object
    zero: float
    data: bytes | None = None
    path: Path | None = None  # recorder: read from this file (or its finished name)
    length: int = 0
    shifts: dict[int, int] = field(default_factory=dict)  # per track, to the shared timeline


@dataclass(slots=True, eq=False)
class LiveSegment:
    """A media segment of the live playlist."""

    sequence: int
    init: LiveInit
    start: float
    duration: float
    discontinuity: bool
    independent: bool
    data: bytes | None = None  # memory source; recorder source once read
    path: Path | None = None
    offset: int = 0
    length: int = 0


@dataclass(frozen=True, slots=True)
class LiveWindow:
    """What a live playlist lists."""

    segments: tuple[LiveSegment, ...]
    media_sequence: int
    discontinuity_sequence: int
    source: LiveSource | None
    target: int  # EXT-X-TARGETDURATION: never lowered while the camera runs


def chunk_from_fragment(info: FragmentInfo) -> LiveChunk:
    """Describe a recorder fragment as a live chunk."""
    return LiveChunk(
        source=LiveSource.RECORDER,
        init_key=info.path,
        zero=info.segment_start,
        start=info.start,
        duration=info.duration,
        keyframe=info.keyframe,
        path=info.path,
        offset=info.offset,
        length=info.length,
        init_length=info.init_length,
    )


def read_recording_range(path: Path, offset: int, length: int) -> bytes:
    """Read bytes of a recording being written, or of the file it was renamed to (blocking)."""
    for candidate in (path, StorageLayout.final_path(path)):
        try:
            with candidate.open("rb") as file:
                file.seek(offset)
                data = file.read(length)
        except FileNotFoundError:
            continue
        if len(data) == length:
            return data
    raise FileNotFoundError(path.name)


# ----- the in-memory muxer (recording off) -------------------------------------------------------


class _MemorySink:
    """The file object PyAV writes into: a growing buffer, cut into boxes by the muxer thread."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)


class _Container:
    """One in-memory fMP4 container: from one keyframe of one connection until it ends."""

    def __init__(
        self,
        info: StreamInfo,
        video_extra: bytes | None,
        audio_extra: bytes | None,
        *,
        zero: float,
        origin_seconds: float,
        fragment_seconds: float,
    ) -> None:
        self.key = object()
        self.zero = zero
        self.sink = _MemorySink()
        self.init: bytes | None = None
        self.shifts: dict[int, int] = {}
        self.video_track_id = 1
        self.video_scale = 1
        self._writer = Fmp4Writer(
            self.sink,
            info,
            video_extra,
            audio_extra,
            origin_seconds=origin_seconds,
            fragment_seconds=fragment_seconds,
        )
        self.audio = self._writer.audio  # None when the camera's audio is not muxed

    def write_video(self, data: bytes, dts: int, pts: int, keyframe: bool, duration: int) -> None:
        """Mux one video packet (relative to the container's first frame)."""
        self._writer.write_video(data, dts, pts, keyframe, duration)

    def write_audio(
        self, data: bytes, dts: int, pts: int, time_base: Fraction, duration: int
    ) -> None:
        """Mux one audio packet (connection timestamps; before the first frame: dropped)."""
        self._writer.write_audio(data, dts, pts, time_base, duration)

    def take_chunks(self) -> list[LiveChunk]:
        """Cut what the muxer wrote into the init section and complete fragments.

        Whatever is complete is taken out of the buffer; a box still being written (or a
        `moof` whose `mdat` has not come yet) stays for the next call.
        """
        buffer = self.sink.buffer
        chunks: list[LiveChunk] = []
        consumed = 0
        moof: tuple[int, int, int] | None = None  # (start, body start, end)
        for kind, start, body, end in iter_boxes(buffer):
            if kind == b"ftyp":
                continue  # part of the init section, taken with the moov
            if kind == b"moov":
                self.init = bytes(buffer[:end])
                tracks = parse_tracks(self.init)
                video = video_track(tracks)
                if video is not None:
                    self.video_track_id = video.track_id
                    self.video_scale = video.timescale
                self.shifts = timeline_shifts(tracks, self.zero)
                consumed = end
            elif kind == b"moof":
                moof = (start, body, end)
            elif kind == b"mdat" and moof is not None:
                moof_start, moof_body, moof_end = moof
                moof = None
                consumed = end
                parsed = parse_moof(bytes(buffer[moof_body:moof_end]), self.video_track_id)
                if parsed is None or self.init is None:
                    continue  # no video in it: nothing a viewer could start on
                base, duration, keyframe = parsed
                data = bytearray(buffer[moof_start:end])
                retime_fragments(data, self.shifts)
                chunks.append(
                    LiveChunk(
                        source=LiveSource.MEMORY,
                        init_key=self.key,
                        zero=self.zero,
                        start=self.zero + base / self.video_scale,
                        duration=duration / self.video_scale,
                        keyframe=keyframe,
                        data=bytes(data),
                        init_data=self.init,
                    )
                )
            elif moof is None:
                consumed = end  # anything else (the closing mfra): not for HLS
        del buffer[:consumed]
        return chunks

    def close(self) -> None:
        """Finish the container (its last fragment stays in the buffer for take_chunks)."""
        try:
            self._writer.close()
        except (av.error.FFmpegError, OSError, ValueError):
            _LOGGER.debug("Error closing a live muxer", exc_info=True)


class MemoryMuxer:
    """Muxes one camera's hub packets into in-memory fMP4 fragments (stream copy), in a thread.

    A muxer is started once and stopped once. `on_chunk` and `on_end` are called in its thread
    and must return at once.
    """

    def __init__(
        self,
        name: str,
        source: PacketSource,
        *,
        on_chunk: Callable[[LiveChunk], None],
        on_end: Callable[[], None],
        fragment_seconds: float = LIVE_TARGET_SECONDS,
    ) -> None:
        """Prepare a muxer; nothing runs before `start`."""
        self.name = name
        self._source = source
        self._on_chunk = on_chunk
        self._on_end = on_end
        self._fragment_seconds = fragment_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: ThreadPacketQueue | None = None
        self._queue_lock = threading.Lock()
        self._container: _Container | None = None
        self._generation: int | None = None
        self._video_clock = TimestampRepair(None)
        self._audio_clock = TimestampRepair(None)
        self._audio_extradata: bytes | None = None  # learnt from ADTS headers
        self._aac = AacAudio(name)
        self._need_keyframe = True
        self._origin = 0
        self._dropped = 0
        self.chunks = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"lightnvr-hls-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (does not wait; see `join`)."""
        self._stopping.set()
        with self._queue_lock:
            queue = self._queue
        if queue is not None:
            self._source.unsubscribe(queue)  # wakes a blocked get()

    def join(self, timeout: float = _MUXER_JOIN_SECONDS) -> None:
        """Wait for the thread to end. Blocking: run it in the executor."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                _LOGGER.warning("Live HLS muxer of %s did not stop in time", self.name)

    @property
    def alive(self) -> bool:
        """Return True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        queue = self._source.subscribe_thread(_MUXER_QUEUE_PACKETS, from_keyframe=True)
        with self._queue_lock:
            self._queue = queue
        if self._stopping.is_set():
            self._source.unsubscribe(queue)
        try:
            while not self._stopping.is_set():
                try:
                    packet = queue.get(timeout=_MUXER_POLL_SECONDS)
                except EOFError:
                    break
                if packet is None:
                    continue
                if queue.dropped != self._dropped:
                    # A lost packet breaks the references of the frames after it.
                    self._dropped = queue.dropped
                    self._need_keyframe = True
                self._handle(packet)
        except Exception:
            _LOGGER.exception("Live HLS muxer of %s failed", self.name)
        finally:
            self._close()
            self._source.unsubscribe(queue)
            try:
                self._on_end()
            except Exception:
                _LOGGER.exception("Error in the live HLS end callback")

    def _handle(self, packet: MediaPacket) -> None:
        if packet.generation != self._generation:
            self._new_generation(packet.generation)
        try:
            if packet.kind == "video":
                self._handle_video(packet)
            else:
                for audio in self._aac.convert(packet):  # other audio comes out as AAC
                    self._handle_audio(audio)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            # One bad packet must not end live view: start over at the next keyframe.
            _LOGGER.debug("Live HLS muxer of %s: %s; restarting", self.name, err)
            self._close()
            self._need_keyframe = True
            return
        self._deliver(self._container)

    def _new_generation(self, generation: int) -> None:
        self._close()
        self._generation = generation
        info = self._aac.reset(self._source.info, generation)
        fps = info.fps if info is not None and info.generation == generation else None
        self._video_clock = TimestampRepair(1 / fps if fps else None)
        rate = info.audio_sample_rate if info is not None else None
        self._audio_clock = TimestampRepair(1024 / rate if rate else None)
        self._audio_extradata = None
        self._need_keyframe = True

    def _handle_video(self, packet: MediaPacket) -> None:
        dts, pts, _ = self._video_clock.fix(packet)
        container = self._container
        if self._need_keyframe or container is None:
            if not packet.keyframe:
                return
            self._need_keyframe = False
            if container is None:
                container = self._open(packet, dts)
                if container is None:
                    self._need_keyframe = True
                    return
        container.write_video(
            packet.data,
            dts - self._origin,
            pts - self._origin,
            packet.keyframe,
            self._video_clock.step,
        )

    def _handle_audio(self, packet: MediaPacket) -> None:
        info = self._aac.stream_info(self._source.info)
        if info is None or info.audio_codec not in AUDIO_CODECS:
            return
        clock = self._audio_clock
        video_seconds = self._video_clock.last_seconds
        if video_seconds is not None:
            clock.align(packet, video_seconds + packet.received - self._video_clock.last_received)
        dts, pts, _ = clock.fix(packet)
        data = packet.data
        header = adts_header_length(data)
        if header:
            if self._audio_extradata is None:
                self._audio_extradata = adts_to_asc(data)
            data = data[header:]
        container = self._container
        if container is not None and container.audio is not None:
            container.write_audio(data, dts, pts, packet.time_base, clock.step)

    def _open(self, packet: MediaPacket, dts: int) -> _Container | None:
        info = self._aac.stream_info(self._source.info)
        if info is None or info.generation != packet.generation:
            return None
        if info.video_codec not in VIDEO_CODECS:
            return None
        audio = None
        if info.audio_codec in AUDIO_CODECS and info.audio_sample_rate:
            audio = info.audio_extradata or self._audio_extradata
        zero = time.time() - (time.monotonic() - packet.received)
        container = _Container(
            info,
            video_extradata(info, packet.data),
            audio,
            zero=zero,
            origin_seconds=float(dts * packet.time_base),
            fragment_seconds=self._fragment_seconds,
        )
        self._container = container
        self._origin = dts
        return container

    def _deliver(self, container: _Container | None) -> None:
        if container is None:
            return
        for chunk in container.take_chunks():
            self.chunks += 1
            try:
                self._on_chunk(chunk)
            except Exception:
                _LOGGER.exception("Error in the live HLS chunk callback")

    def _close(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        container.close()  # writes the last fragment
        self._deliver(container)


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
            muxer.stop()
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
