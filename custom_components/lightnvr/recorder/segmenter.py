"""Segmenter: one camera's packets → crash-safe fragmented MP4 segments, by stream copy.

One thread per camera reads the camera's StreamHub (a thread subscriber: the recorder never
opens a connection of its own) and muxes the packets with PyAV, never decoding the video:

- **Fragmented MP4** (`empty_moov`, a `moof`+`mdat` per fragment): a fragment starts at every
  keyframe and lasts at most `fragment_seconds` (1.5 s), and every finished fragment is handed
  to the operating system within one batch interval (0.25 s), so a crash or a kill loses at
  most the fragment being built: less than 2 s.
- **Segments** of `segment_seconds`, cut on the first keyframe after that length, so every file
  starts with a keyframe and plays on its own. A new connection to the camera (a new
  `MediaPacket.generation`) starts a new segment: the gap stays visible between two files
  instead of being hidden inside one.
- **Camera timestamps are not trusted**: missing, repeated, backwards or jumping timestamps are
  repaired (and counted and logged) so that the file always has rising timestamps; recording
  never stops because of them.
- A file being written is named `….mp4.part` and renamed to `….mp4` when finished; a part left
  behind by a crash is made playable at the next start (`storage.recover_part`).
- **Audio**: AAC is copied; any other codec (G.711 above all) is transcoded to AAC in this
  thread (`audio.AacAudio`), because MP4 players play nothing else.

The output streams are described from the hub's `StreamInfo` (there is no input stream to
copy them from): each gets a *decoder* codec context carrying the codec, size and extradata.
PyAV opens that context when writing the header (cheap, one thread, nothing is ever decoded),
and the muxer copies its parameters into the file.

Nothing here touches the event loop. The callbacks (`on_segment`, `on_fragment`, `on_state`)
are called in the recorder thread and must be quick; the manager hops to the loop itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass
from fractions import Fraction
import logging
import os
from pathlib import Path
import threading
import time
from typing import Protocol

import av
import av.error

from ..h264 import parameter_sets_annexb
from ..hub import MediaPacket, StreamInfo, ThreadPacketQueue
from ..media.bmff import FragmentFollower, parse_moof
from ..media.fmp4 import Fmp4Writer
from .audio import AacAudio
from .storage import Segment, StorageLayout, recover_part

_LOGGER = logging.getLogger(__name__)

DEFAULT_SEGMENT_SECONDS = 60.0
# A fragment is cut at every keyframe and at the latest after this long, so that a crash loses at
# most this much plus one batch interval (< 2 s) even with cameras sending long GOPs.
DEFAULT_FRAGMENT_SECONDS = 1.5
# About 80 s of a 25 fps camera (28 s with AAC audio): room for a slow disk to catch up before
# packets are lost (and counted). Queued packets are shared with other consumers, not copied.
DEFAULT_QUEUE_PACKETS = 2048

PAUSE_STORAGE_FULL = "storage_full"
PAUSE_WRITE_ERROR = "write_error"
PAUSE_UNSUPPORTED = "unsupported_codec"

VIDEO_CODECS = frozenset({"h264", "hevc"})
# MP4 holds these by stream copy; other audio is transcoded to AAC first (`audio.AacAudio`).
AUDIO_CODECS = frozenset({"aac"})

_POLL_SECONDS = 0.5  # how often an idle thread looks at its control flags
# The thread wakes up this often and writes everything queued meanwhile, instead of waking up
# for every packet: on these machines a thread wake-up costs more CPU than muxing a packet.
# It adds at most this much to the time a finished fragment takes to reach the disk.
_BATCH_SECONDS = 0.25
_IDLE_FINISH_SECONDS = 8.0  # no packet for this long: the camera is gone, finish the file
_RESUBSCRIBE_SECONDS = 1.0
_WRITE_RETRY_SECONDS = 10.0
_LOG_INTERVAL_SECONDS = 60.0
# A timestamp step this much larger than the time between the packets' arrivals is a jump
# in the camera's clock, not real time passing.
_JUMP_TOLERANCE_SECONDS = 1.0
# Going back by up to this much is jitter (clamped); by more, the camera's clock was reset.
_BACKWARD_CLAMP_SECONDS = 1.0
# A segment start taken from the media clock may drift from the wall clock by this much before
# it is re-anchored on the packet's arrival time.
_MAX_START_DRIFT_SECONDS = 1.0


class PacketSource(Protocol):
    """What the segmenter needs from a StreamHub (tests feed it from a file the same way)."""

    @property
    def name(self) -> str:
        """Return a display name for logs (never the URL)."""

    @property
    def info(self) -> StreamInfo | None:
        """Describe the current connection's streams."""

    def subscribe_thread(
        self, maxlen: int = ..., *, from_keyframe: bool = ...
    ) -> ThreadPacketQueue:
        """Return a queue receiving every packet from now on."""

    def unsubscribe(self, queue: ThreadPacketQueue) -> None:
        """Stop delivering to `queue` and close it."""


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    """One fragment on disk, for a live HLS playlist (byte ranges of the part file).

    The part file is `init_length` bytes of init section (`ftyp`+`moov`, an HLS `EXT-X-MAP`)
    followed by fragments; this one is `length` bytes at `offset`, and is complete on disk
    when the callback runs.
    """

    camera_id: str
    path: Path  # the `.mp4.part` being written (renamed to `.mp4` when the segment ends)
    sequence: int  # 1, 2, … within the segment
    offset: int
    length: int
    init_length: int
    start: float  # epoch seconds of the fragment's first video frame
    duration: float  # seconds of video
    keyframe: bool  # starts with a keyframe: can be played without the fragment before it
    segment_start: float


@dataclass(frozen=True, slots=True)
class SegmenterState:
    """A snapshot of one camera's recorder, readable from any thread."""

    camera_id: str
    enabled: bool  # the user wants it to record (the switch)
    recording: bool  # a segment is being written right now
    paused: bool  # enabled, but held back (storage full, write error, unsupported codec)
    pause_reason: str | None
    current_path: Path | None  # the `.mp4.part` being written
    current_start: float | None  # epoch seconds
    last_segment_end: float | None  # epoch seconds of the end of the last finished segment
    segments_written: int
    timestamp_repairs: int
    dropped_packets: int  # lost between the hub and the recorder (queue full)
    bytes_written: int  # of the current segment
    last_error: str | None


# ----- timestamps -------------------------------------------------------------------------------


class TimestampRepair:
    """Turns one stream's camera timestamps into strictly rising ones, per connection.

    The output is the input plus an offset, which starts at 0: audio and video keep the
    common timeline the demuxer gave them (lip sync). The offset only changes when the
    camera's clock jumps (forwards further than the packets' arrival times show, or backwards
    by more than `_BACKWARD_CLAMP_SECONDS`): the stream then continues from the last good
    timestamp plus the real time that passed. Small steps back are clamped to one tick after
    the previous packet. A missing timestamp becomes the previous one plus one packet spacing.
    """

    def __init__(self, frame_seconds: float | None) -> None:
        """Create a repairer; `frame_seconds` is the expected packet spacing, if known."""
        self._frame_seconds = frame_seconds or 0.04
        self._time_base: Fraction | None = None
        self._seconds_per_tick = 0.0
        self._offset = 0
        self._last: int | None = None
        self._last_received = 0.0
        self._step = 1
        self._clean = False  # the previous packet needed no repair

    def fix(self, packet: MediaPacket) -> tuple[int, int, str | None]:
        """Return (dts, pts, repair) for `packet`; `repair` names what was fixed, if anything."""
        if packet.time_base != self._time_base:
            # Only at the start (a hub keeps one time base per connection and stream).
            self._time_base = packet.time_base
            self._seconds_per_tick = float(packet.time_base)
            self._step = max(1, round(self._frame_seconds / self._seconds_per_tick))
            self._offset = 0
            self._last = None
        repair: str | None = None
        raw = packet.dts if packet.dts is not None else packet.pts
        composition = 0
        if packet.dts is not None and packet.pts is not None:
            composition = packet.pts - packet.dts
            if composition < 0:
                composition = 0
                repair = "pts_before_dts"
        last = self._last
        if raw is None:
            out = 0 if last is None else last + self._step
            # The first packet of an RTSP connection has no timestamp (FFmpeg has no clock
            # reference yet): it is the connection's origin, not a camera fault.
            repair = None if last is None else "missing"
        elif last is None:
            out = raw + self._offset
        else:
            out = raw + self._offset
            delta = out - last
            arrival = packet.received - self._last_received
            if delta <= 0:
                if -delta * self._seconds_per_tick > _BACKWARD_CLAMP_SECONDS:
                    out = last + self._gap(arrival)
                    self._offset = out - raw
                    repair = "jump"
                else:
                    out = last + 1
                    repair = "non_monotonic"
            elif delta * self._seconds_per_tick > max(arrival, 0.0) + _JUMP_TOLERANCE_SECONDS:
                out = last + self._gap(arrival)
                self._offset = out - raw
                repair = "jump"
            elif self._clean and delta * self._seconds_per_tick < 1.0:
                self._step = delta  # learn the real spacing (for missing timestamps)
        self._clean = repair is None and raw is not None
        self._last = out
        self._last_received = packet.received
        return out, out + composition, repair

    def align(self, packet: MediaPacket, seconds: float) -> bool:
        """Before the first packet: map it to `seconds` if its own clock is far from that.

        Used to put audio on the video's timeline when the two clocks disagree by more than
        the jump tolerance (a source whose audio and video clocks start apart). Returns True
        if the offset was changed.
        """
        raw = packet.dts if packet.dts is not None else packet.pts
        if self._last is not None or raw is None:
            return False
        per_tick = float(packet.time_base)
        if abs(raw * per_tick - seconds) <= _JUMP_TOLERANCE_SECONDS:
            return False
        self._time_base = packet.time_base
        self._seconds_per_tick = per_tick
        self._step = max(1, round(self._frame_seconds / per_tick))
        self._offset = round(seconds / per_tick) - raw
        return True

    def _gap(self, arrival: float) -> int:
        """Return the ticks to advance after a jump: the real time that passed, or one frame."""
        return max(self._step, round(max(arrival, 0.0) / self._seconds_per_tick))

    @property
    def step(self) -> int:
        """Return the current packet spacing estimate in ticks."""
        return self._step

    @property
    def last_seconds(self) -> float | None:
        """Return the last output timestamp in seconds."""
        return None if self._last is None else self._last * self._seconds_per_tick

    @property
    def last_received(self) -> float:
        """Return when the last packet arrived (time.monotonic())."""
        return self._last_received


# ----- fragment tracking -----------------------------------------------------------------------


class _FragmentSink:
    """The file object PyAV writes the MP4 into.

    It writes straight to an unbuffered file (every fragment reaches the OS as soon as the
    muxer flushes it) and follows the top-level boxes going by, to report each complete
    `moof`+`mdat` pair. It has no `seek`, so FFmpeg treats it as a stream and never goes back
    to rewrite anything: what is on disk is final.
    """

    def __init__(self, path: Path) -> None:
        # "x": never overwrite a file, whatever the name.
        self._file = open(path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
        self._follower = FragmentFollower()

    @property
    def position(self) -> int:
        """Return the bytes written."""
        return self._follower.position

    @property
    def init_length(self) -> int:
        """Return the bytes of the init section, 0 until it is written."""
        return self._follower.init_length

    @property
    def fragments(self) -> list[tuple[int, int, bytes]]:
        """Return the complete fragments not taken yet: (offset, length, moof body)."""
        return self._follower.fragments

    @fragments.setter
    def fragments(self, value: list[tuple[int, int, bytes]]) -> None:
        self._follower.fragments = value

    def write(self, data: bytes) -> int:
        """Write everything (called by PyAV from the muxer)."""
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError("short write")
            view = view[written:]
        self._follower.feed(data)
        return len(data)

    def sync_and_close(self) -> None:
        """Flush to the disk itself (the segment is final) and close."""
        if self._file.closed:
            return
        try:
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def close(self) -> None:
        """Close without syncing (after an error)."""
        self._file.close()


# ----- one segment being written ----------------------------------------------------------------


class SegmentWriter:
    """One open `.mp4.part`: the camera's packets muxed into it by the one fMP4 writer."""

    def __init__(
        self,
        path: Path,
        info: StreamInfo,
        video_extradata: bytes | None,
        audio_extradata: bytes | None,
        *,
        start_wall: float,
        origin_seconds: float,
        fragment_seconds: float,
    ) -> None:
        self.path = path
        self.generation = info.generation
        self.start_wall = start_wall
        self.origin_seconds = origin_seconds  # repaired connection time of the first frame
        self.video_time_base = info.time_base
        self.fragments = 0
        self._sink = _FragmentSink(path)
        try:
            self._writer = Fmp4Writer(
                self._sink,
                info,
                video_extradata,
                audio_extradata,
                origin_seconds=origin_seconds,
                fragment_seconds=fragment_seconds,
            )
        except BaseException:
            with contextlib.suppress(OSError):
                self._sink.close()
            path.unlink(missing_ok=True)  # nothing of it is playable
            raise
        self.video = self._writer.video
        self.audio = self._writer.audio

    @property
    def init_length(self) -> int:
        """Return the bytes of the init section (ftyp + moov)."""
        return self._sink.init_length

    @property
    def size(self) -> int:
        """Return the bytes written so far."""
        return self._sink.position

    @property
    def video_end(self) -> int:
        """Return the end of the last video frame, in the video time base (from 0)."""
        return self._writer.video_end

    @property
    def duration(self) -> float:
        """Return the seconds of video written."""
        return self._writer.duration

    def write_video(self, data: bytes, dts: int, pts: int, keyframe: bool, duration: int) -> None:
        """Mux one video packet; `dts`/`pts` are relative to the segment's first frame."""
        self._writer.write_video(data, dts, pts, keyframe, duration)

    def write_audio(
        self, data: bytes, dts: int, pts: int, time_base: Fraction, duration: int
    ) -> bool:
        """Mux one audio packet (connection timestamps); False if it precedes the segment."""
        return self._writer.write_audio(data, dts, pts, time_base, duration)

    def take_fragments(self) -> list[tuple[int, int, bytes]]:
        """Return the fragments completed since the last call."""
        fragments, self._sink.fragments = self._sink.fragments, []
        return fragments

    @property
    def video_time_scale(self) -> Fraction:
        """Return the video track's time base in the file."""
        return self._writer.video_time_scale

    def close(self) -> None:
        """Write the last fragment, sync the file to disk and close it."""
        self._writer.close()
        self._sink.sync_and_close()

    def abort(self) -> None:
        """Close after a failure, ignoring further errors (the part is recovered later)."""
        self._writer.abort()
        with contextlib.suppress(OSError):
            self._sink.close()


# ----- parameter sets ---------------------------------------------------------------------------


def _nal_units(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units of an Annex B buffer (without start codes)."""
    starts: list[tuple[int, int]] = []
    index = data.find(b"\x00\x00\x01")
    while index != -1:
        begin = index + 3
        starts.append((index - 1 if index > 0 and data[index - 1] == 0 else index, begin))
        index = data.find(b"\x00\x00\x01", begin)
    for number, (_, begin) in enumerate(starts):
        end = starts[number + 1][0] if number + 1 < len(starts) else len(data)
        yield data[begin:end]


def parameter_sets_from_keyframe(codec: str, data: bytes) -> bytes:
    """Return the parameter sets found in an Annex B keyframe, as Annex B extradata."""
    wanted = {7, 8} if codec == "h264" else {32, 33, 34}  # SPS/PPS; VPS/SPS/PPS for HEVC
    out = bytearray()
    for unit in _nal_units(data):
        if not unit:
            continue
        kind = unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F
        if kind in wanted:
            out += b"\x00\x00\x00\x01" + unit
    return bytes(out)


def video_extradata(info: StreamInfo, keyframe: bytes) -> bytes | None:
    """Return the extradata the MP4 muxer needs for this connection's video.

    The hub hands out H.264 as Annex B even when the source's extradata is an `avcC` record,
    so that record is unpacked to Annex B too (the muxer then converts packets and extradata
    consistently). Cameras that send parameter sets only in-band get them from the keyframe.
    """
    extradata = info.extradata
    if info.video_codec == "h264":
        extradata = parameter_sets_annexb(extradata) or None
    if not extradata and keyframe.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        extradata = parameter_sets_from_keyframe(info.video_codec, keyframe) or None
    return extradata


def adts_header_length(data: bytes) -> int:
    """Return the length of an ADTS header at the start of `data`, 0 if there is none."""
    if len(data) < 7 or data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        return 0
    return 7 if data[1] & 0x01 else 9


def adts_to_asc(data: bytes) -> bytes:
    """Return the AudioSpecificConfig described by an ADTS header."""
    object_type = (data[2] >> 6) + 1
    rate_index = (data[2] >> 2) & 0x0F
    channels = ((data[2] & 0x01) << 2) | (data[3] >> 6)
    return ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")


# ----- the segmenter ----------------------------------------------------------------------------


type SegmentCallback = Callable[[Segment], None]
type FragmentCallback = Callable[[FragmentInfo], None]
type StateCallback = Callable[[], None]


class Segmenter:
    """Records one camera from its hub into segments, in its own thread."""

    def __init__(
        self,
        camera_id: str,
        source: PacketSource,
        layout: StorageLayout,
        *,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
        queue_packets: int = DEFAULT_QUEUE_PACKETS,
        enabled: bool = True,
        on_segment: SegmentCallback | None = None,
        on_fragment: FragmentCallback | None = None,
        on_state: StateCallback | None = None,
    ) -> None:
        """Prepare a recorder; nothing runs before `start`."""
        self.camera_id = camera_id
        self._source = source
        self._layout = layout
        self._segment_seconds = segment_seconds
        self._fragment_seconds = fragment_seconds
        self._queue_packets = queue_packets
        self._on_segment = on_segment
        self._on_fragment = on_fragment
        self._on_state = on_state

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._queue_lock = threading.Lock()
        self._queue: ThreadPacketQueue | None = None
        self._queue_dropped = 0

        self._enabled = enabled
        self._pauses: set[str] = set()
        self._retry_at = 0.0
        self._resubscribe_at = 0.0

        self._writer: SegmentWriter | None = None
        self._generation: int | None = None
        self._video_clock = TimestampRepair(None)
        self._audio_clock = TimestampRepair(None)
        self._audio_codec: str | None = None
        self._audio_extradata: bytes | None = None  # learnt from ADTS headers
        self._aac = AacAudio(source.name)
        self._need_keyframe = True
        self._segment_origin = 0  # repaired dts of the current segment's first frame
        self._seconds_per_tick = 0.0
        self._unsupported: str | None = None
        self._last_packet_at = 0.0
        self._last_received = 0.0  # arrival stamp of the newest packet handled
        self._last_packet: MediaPacket | None = None
        self._unsupported_logged: set[str] = set()

        self._segments_written = 0
        self._repairs = 0
        self._repair_kinds: dict[str, int] = {}
        self._dropped = 0
        self._last_segment_end: float | None = None
        self._last_error: str | None = None
        self._log_at = 0.0
        self._logged_repairs = 0
        self._logged_drops = 0

    # ----- control (any thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start the recorder thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"lightnvr-rec-{self.camera_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current segment and stop the thread. Blocking: run it in an executor.

        Packets already queued are still written: closing the subscription lets the thread
        drain the queue and then end.
        """
        self._stopping.set()
        self._wake.set()
        self._close_queue()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                _LOGGER.warning("Recorder of %s did not stop in time", self._source.name)

    def set_enabled(self, enabled: bool) -> None:
        """Turn recording on or off (the switch); off finishes the current segment."""
        if enabled != self._enabled:
            self._enabled = enabled
            self._wake.set()
            if not enabled:
                self._close_queue()
            self._notify()

    def pause(self, reason: str) -> None:
        """Hold recording back for `reason` (e.g. storage full) until `resume(reason)`."""
        if reason not in self._pauses:
            self._pauses.add(reason)
            self._wake.set()
            self._close_queue()
            self._notify()

    def resume(self, reason: str) -> None:
        """Lift a pause."""
        if reason in self._pauses:
            self._pauses.discard(reason)
            self._wake.set()
            self._notify()

    @property
    def enabled(self) -> bool:
        """Return True while the user wants this camera recorded."""
        return self._enabled

    @property
    def active_path(self) -> Path | None:
        """Return the part file being written, if any."""
        writer = self._writer
        return writer.path if writer is not None else None

    @property
    def alive(self) -> bool:
        """Return True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> SegmenterState:
        """Return a snapshot of the recorder's state."""
        writer = self._writer
        reason = self._pause_reason()
        return SegmenterState(
            camera_id=self.camera_id,
            enabled=self._enabled,
            recording=writer is not None,
            paused=self._enabled and reason is not None,
            pause_reason=reason if self._enabled else None,
            current_path=writer.path if writer is not None else None,
            current_start=writer.start_wall if writer is not None else None,
            last_segment_end=self._last_segment_end,
            segments_written=self._segments_written,
            timestamp_repairs=self._repairs,
            dropped_packets=self._dropped + self._pending_drops(),
            bytes_written=writer.size if writer is not None else 0,
            last_error=self._last_error,
        )

    def repair_counts(self) -> dict[str, int]:
        """Return the timestamp repairs by kind (missing, non_monotonic, jump, pts_before_dts)."""
        return dict(self._repair_kinds)

    def _blocked(self) -> bool:
        """Return True when the thread must not record (off, paused, waiting to retry)."""
        return not self._enabled or bool(self._pauses) or self._retry_at > time.monotonic()

    def _pause_reason(self) -> str | None:
        pauses = set(self._pauses)
        if self._retry_at > time.monotonic():
            pauses.add(PAUSE_WRITE_ERROR)
        if self._unsupported is not None:
            pauses.add(PAUSE_UNSUPPORTED)
        for reason in (PAUSE_STORAGE_FULL, PAUSE_WRITE_ERROR, PAUSE_UNSUPPORTED):
            if reason in pauses:
                return reason
        return min(pauses) if pauses else None

    def _pending_drops(self) -> int:
        queue = self._queue
        return queue.dropped - self._queue_dropped if queue is not None else 0

    def _close_queue(self) -> None:
        with self._queue_lock:
            queue = self._queue
        if queue is not None:
            # Closing wakes a blocked get(); the thread drains what is queued, then sees EOF.
            self._source.unsubscribe(queue)

    def _notify(self) -> None:
        if self._on_state is not None:
            try:
                self._on_state()
            except Exception:
                _LOGGER.exception("Error in the recorder state callback")

    # ----- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set() or self._queue is not None:
                # Once stopping, the closed queue is drained (EOF then ends the loop).
                if self._blocked() and not self._stopping.is_set():
                    self._finish()
                    self._drop_queue()
                    self._wake.wait(_POLL_SECONDS)
                    self._wake.clear()
                    continue
                queue = self._ensure_queue()
                if queue is None:
                    continue
                try:
                    packet = queue.get(timeout=0)
                except EOFError:
                    self._on_queue_closed()
                    continue
                self._count_drops(queue)
                if packet is None:
                    if self._stopping.is_set():
                        self._on_queue_closed()  # drained: the end
                        continue
                    self._on_idle()
                    self._wake.wait(_BATCH_SECONDS)
                    self._wake.clear()
                    continue
                self._last_packet_at = time.monotonic()
                self._handle(packet)
        finally:
            self._finish()
            self._drop_queue()
            self._log_counters(force=True)

    def _ensure_queue(self) -> ThreadPacketQueue | None:
        with self._queue_lock:
            if self._queue is not None:
                return self._queue
        wait = self._resubscribe_at - time.monotonic()
        if wait > 0:
            self._wake.wait(min(wait, _POLL_SECONDS))
            self._wake.clear()
            return None
        queue = self._source.subscribe_thread(self._queue_packets, from_keyframe=True)
        with self._queue_lock:
            self._queue = queue
            self._queue_dropped = 0
        if self._stopping.is_set() or not self._enabled or self._pauses:
            self._source.unsubscribe(queue)  # stop() ran while subscribing: drain and end
        self._need_keyframe = True
        self._last_packet_at = time.monotonic()
        return queue

    def _drop_queue(self) -> None:
        with self._queue_lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            self._source.unsubscribe(queue)
            self._dropped += queue.dropped - self._queue_dropped
            self._queue_dropped = 0

    def _on_queue_closed(self) -> None:
        """Handle the end of the subscription: we closed it (stop, off, pause) or the hub did."""
        self._finish()
        self._drop_queue()
        if not self._stopping.is_set():
            # A hub that is stopped and started again takes new subscribers.
            self._resubscribe_at = time.monotonic() + _RESUBSCRIBE_SECONDS

    def _count_drops(self, queue: ThreadPacketQueue) -> None:
        dropped = queue.dropped
        if dropped != self._queue_dropped:
            self._dropped += dropped - self._queue_dropped
            self._queue_dropped = dropped
            # A lost packet breaks the references of the frames after it: wait for a keyframe.
            self._need_keyframe = True
            self._log_counters()

    def _on_idle(self) -> None:
        if self._writer is not None and (
            time.monotonic() - self._last_packet_at > _IDLE_FINISH_SECONDS
        ):
            _LOGGER.debug("%s: no packets; finishing the segment", self._source.name)
            self._finish()
            self._need_keyframe = True

    def _handle(self, packet: MediaPacket) -> None:
        if packet.generation != self._generation:
            self._new_generation(packet.generation)
        elif packet.received < self._last_received or packet is self._last_packet:
            # Seen already: a new subscription (after off/on or a pause) starts with the hub's
            # cached group of pictures, which may overlap what was written before.
            return
        self._last_received = packet.received
        self._last_packet = packet
        try:
            if packet.kind == "video":
                self._handle_video(packet)
            else:
                for audio in self._aac.convert(packet):
                    self._handle_audio(audio)
        except (OSError, av.error.FFmpegError) as err:
            self._write_failed(err)
        except Exception as err:
            _LOGGER.exception("Recorder of %s failed", self._source.name)
            self._write_failed(err)

    def _new_generation(self, generation: int) -> None:
        """Start over on a new connection: the file ends here, the clocks restart."""
        if self._writer is not None:
            _LOGGER.debug("%s: new connection; finishing the segment", self._source.name)
        self._finish()
        self._generation = generation
        info = self._aac.reset(self._source.info, generation)
        fps = info.fps if info is not None and info.generation == generation else None
        self._video_clock = TimestampRepair(1 / fps if fps else None)
        rate = info.audio_sample_rate if info is not None else None
        self._audio_clock = TimestampRepair(1024 / rate if rate else None)
        self._audio_codec = info.audio_codec if info is not None else None
        self._audio_extradata = None
        self._need_keyframe = True

    def _handle_video(self, packet: MediaPacket) -> None:
        dts, pts, repair = self._video_clock.fix(packet)
        if repair is not None:
            self._count_repair(repair)
        writer = self._writer
        if self._need_keyframe or writer is None:
            if not packet.keyframe:
                return
            self._need_keyframe = False
            if writer is not None:
                # Resynchronised after lost packets: the file goes on at this keyframe.
                self._write_video(writer, packet, dts, pts)
                return
            writer = self._open(packet, dts)
            if writer is None:
                return
        elif packet.keyframe and (
            (dts - self._segment_origin) * self._seconds_per_tick >= self._segment_seconds
        ):
            previous = writer
            self._finish()
            writer = self._open(packet, dts, previous=previous)
            if writer is None:
                return
        self._write_video(writer, packet, dts, pts)

    def _write_video(self, writer: SegmentWriter, packet: MediaPacket, dts: int, pts: int) -> None:
        origin = self._segment_origin
        writer.write_video(
            packet.data, dts - origin, pts - origin, packet.keyframe, self._video_clock.step
        )
        self._deliver_fragments(writer)

    def _handle_audio(self, packet: MediaPacket) -> None:
        if self._audio_codec not in AUDIO_CODECS:
            return
        clock = self._audio_clock
        video_seconds = self._video_clock.last_seconds
        if video_seconds is not None:
            # Lip sync: audio stays on the demuxer's common timeline unless its clock is far off.
            clock.align(packet, video_seconds + packet.received - self._video_clock.last_received)
        dts, pts, repair = clock.fix(packet)
        if repair is not None:
            self._count_repair(repair)
        data = packet.data
        header = adts_header_length(data)
        if header:
            # AAC from MPEG-TS style sources comes with ADTS headers, which MP4 does not hold;
            # their config is learnt for the next segment when the source gave none.
            if self._audio_extradata is None:
                self._audio_extradata = adts_to_asc(data)
            data = data[header:]
        writer = self._writer
        if writer is None or writer.audio is None:
            return
        writer.write_audio(data, dts, pts, packet.time_base, clock.step)
        self._deliver_fragments(writer)

    def _audio_config(self, info: StreamInfo) -> bytes | None:
        codec = info.audio_codec
        if codec is None or not info.audio_sample_rate:
            return None
        if codec not in AUDIO_CODECS:
            if codec not in self._unsupported_logged:
                self._unsupported_logged.add(codec)
                _LOGGER.info(
                    "%s: %s audio is not recorded (it cannot be converted to AAC)",
                    self._source.name,
                    codec,
                )
            return None
        return info.audio_extradata or self._audio_extradata

    def _open(
        self, packet: MediaPacket, dts: int, previous: SegmentWriter | None = None
    ) -> SegmentWriter | None:
        info = self._aac.stream_info(self._source.info)
        if info is None or info.generation != packet.generation:
            self._need_keyframe = True  # this connection's details are gone: wait for the next
            return None
        if info.video_codec not in VIDEO_CODECS:
            if self._unsupported != info.video_codec:
                _LOGGER.warning(
                    "%s: %s video cannot be recorded without transcoding",
                    self._source.name,
                    info.video_codec,
                )
                self._unsupported = info.video_codec
                self._notify()
            return None
        if self._unsupported is not None:
            self._unsupported = None
            self._notify()
        arrived = time.time() - (time.monotonic() - packet.received)
        start = arrived
        seconds_per_tick = float(packet.time_base)
        if previous is not None:
            # Cut inside one connection: continue the previous file's timeline exactly, unless
            # the camera's clock has drifted away from the wall clock.
            continued = previous.start_wall + (dts - self._segment_origin) * seconds_per_tick
            if abs(continued - arrived) <= _MAX_START_DRIFT_SECONDS:
                start = continued
        part = self._layout.new_part_path(self.camera_id, start)
        writer = SegmentWriter(
            part,
            info,
            video_extradata(info, packet.data),
            self._audio_config(info),
            start_wall=start,
            origin_seconds=dts * seconds_per_tick,
            fragment_seconds=self._fragment_seconds,
        )
        self._writer = writer
        self._segment_origin = dts
        self._seconds_per_tick = seconds_per_tick
        _LOGGER.debug("%s: recording %s", self._source.name, self._layout.relative(part))
        self._notify()
        return writer

    def _deliver_fragments(self, writer: SegmentWriter) -> None:
        fragments = writer.take_fragments()
        if not fragments or self._on_fragment is None:
            writer.fragments += len(fragments)
            return
        scale = writer.video_time_scale
        for offset, length, moof in fragments:
            writer.fragments += 1
            parsed = parse_moof(moof, 1)  # the video is the first track
            base, duration, keyframe = parsed if parsed is not None else (0, 0, False)
            info = FragmentInfo(
                camera_id=self.camera_id,
                path=writer.path,
                sequence=writer.fragments,
                offset=offset,
                length=length,
                init_length=writer.init_length,
                start=writer.start_wall + float(base * scale),
                duration=float(duration * scale),
                keyframe=keyframe,
                segment_start=writer.start_wall,
            )
            try:
                self._on_fragment(info)
            except Exception:
                _LOGGER.exception("Error in the recorder fragment callback")

    def _finish(self) -> None:
        """Close the current segment, make it final and report it."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
            self._deliver_fragments(writer)
            end = writer.start_wall + writer.duration
            final = self._layout.final_path(writer.path)
            if final.exists():  # never overwrite a recording, whatever happened meanwhile
                final = self._layout.new_part_path(self.camera_id, writer.start_wall)
                final = self._layout.final_path(final)
            os.utime(writer.path, (end, end))  # the index reads the end back from the mtime
            os.rename(writer.path, final)
            size = final.stat().st_size
        except (OSError, av.error.FFmpegError) as err:
            self._last_error = str(err)
            _LOGGER.warning("%s: could not finish a segment: %s", self._source.name, err)
            self._salvage(writer)
            return
        segment = Segment(self.camera_id, final, writer.start_wall, end, size)
        self._segments_written += 1
        self._last_segment_end = end
        self._notify_segment(segment)
        self._notify()

    def _notify_segment(self, segment: Segment) -> None:
        if self._on_segment is not None:
            try:
                self._on_segment(segment)
            except Exception:
                _LOGGER.exception("Error in the recorder segment callback")

    def _write_failed(self, err: BaseException) -> None:
        """Handle a failed write (disk full, I/O error): keep what is on disk, retry later."""
        self._last_error = str(err) or type(err).__name__
        _LOGGER.warning(
            "%s: recording failed (%s); retrying in %.0f s",
            self._source.name,
            self._last_error,
            _WRITE_RETRY_SECONDS,
        )
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
            self._salvage(writer)
        self._retry_at = time.monotonic() + _WRITE_RETRY_SECONDS
        self._need_keyframe = True
        self._notify()

    def _salvage(self, writer: SegmentWriter) -> None:
        """Keep the complete fragments of a file that could not be finished normally."""
        if not writer.path.exists():
            return
        segment = recover_part(self._layout, self.camera_id, writer.path)
        if segment is not None:
            self._segments_written += 1
            self._last_segment_end = segment.end
            self._notify_segment(segment)

    # ----- counters -----------------------------------------------------------------------------

    def _count_repair(self, kind: str) -> None:
        self._repairs += 1
        self._repair_kinds[kind] = self._repair_kinds.get(kind, 0) + 1
        self._log_counters()

    def _log_counters(self, force: bool = False) -> None:
        """Log new repairs and drops, at most once a minute per camera."""
        now = time.monotonic()
        if not force and now < self._log_at:
            return
        repairs = self._repairs - self._logged_repairs
        drops = self._dropped - self._logged_drops
        if not repairs and not drops:
            return
        self._log_at = now + _LOG_INTERVAL_SECONDS
        self._logged_repairs = self._repairs
        self._logged_drops = self._dropped
        if repairs:
            _LOGGER.warning(
                "%s sends broken timestamps: repaired %d (%s); recording goes on",
                self._source.name,
                repairs,
                ", ".join(f"{kind}: {count}" for kind, count in sorted(self._repair_kinds.items())),
            )
        if drops:
            _LOGGER.warning(
                "Recorder of %s could not keep up and lost %d packet(s) (%d in total)",
                self._source.name,
                drops,
                self._dropped,
            )
