"""Segmenter: one camera's packets → crash-safe fragmented MP4 segments, by stream copy.

One thread per camera (the shared `media.consumer` skeleton) reads the camera's StreamHub (a
thread subscriber: the recorder never opens a connection of its own) and muxes the packets
once with the camera muxer (`media.muxer.CameraMuxer`), never decoding the video:

- **Fragmented MP4** (`empty_moov`, a `moof`+`mdat` per fragment): a fragment starts at every
  keyframe and lasts at most `fragment_seconds` (0.5 s), and every finished fragment is written
  to its file within one batch interval (0.25 s), so a crash or a kill loses at most the
  fragment being built: less than 1 s. The same fragments go to live HLS, in memory.
- **Segments** of `segment_seconds`, cut on the first keyframe fragment after that length, so
  every file starts with a keyframe and plays on its own (`segment_writer`: the muxer's init
  section, then its fragments moved to start at 0). A new connection to the camera (a new
  `MediaPacket.generation`) starts a new segment: the gap stays visible between two files
  instead of being hidden inside one.
- **Camera timestamps are not trusted**: missing, repeated, backwards or jumping timestamps are
  repaired (and counted and logged) so that the file always has rising timestamps; recording
  never stops because of them.
- A file being written is named `….mp4.part` and renamed to `….mp4` when finished; a part left
  behind by a crash is made playable at the next start (`storage.recover_part`).
- **Audio**: AAC is copied; any other codec (G.711 above all) is transcoded to AAC in this
  thread (`audio.AacAudio`), because MP4 players play nothing else.

Nothing here touches the event loop. The callbacks (`on_segment`, `on_fragment`, `on_state`)
are called in the recorder thread and must be quick; the manager hops to the loop itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import logging
import os
from pathlib import Path
import time

from ..hub import MediaPacket
from ..media.consumer import PacketConsumer, PacketSource
from ..media.muxer import CameraMuxer, Fragment
from .segment_writer import FragmentInfo, SegmentWriter
from .storage import Segment, StorageLayout, recover_part

# What this module defines for its importers.
__all__ = [
    "DEFAULT_FRAGMENT_SECONDS",
    "DEFAULT_QUEUE_PACKETS",
    "DEFAULT_SEGMENT_SECONDS",
    "PAUSE_STORAGE_FULL",
    "PAUSE_UNSUPPORTED",
    "PAUSE_WRITE_ERROR",
    "FragmentCallback",
    "SegmentCallback",
    "Segmenter",
    "SegmenterState",
    "StateCallback",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_SEGMENT_SECONDS = 60.0
# A fragment is cut at every keyframe and at the latest after this long: live HLS lists every
# fragment as an LL-HLS part (shorter than a GOP), and a crash loses at most this much plus one
# batch interval (< 1 s) even with cameras sending long GOPs.
DEFAULT_FRAGMENT_SECONDS = 0.5
# About 80 s of a 25 fps camera (28 s with AAC audio): room for a slow disk to catch up before
# packets are lost (and counted). Queued packets are shared with other consumers, not copied.
DEFAULT_QUEUE_PACKETS = 2048

PAUSE_STORAGE_FULL = "storage_full"
PAUSE_WRITE_ERROR = "write_error"
PAUSE_UNSUPPORTED = "unsupported_codec"

# The thread wakes up this often and writes everything queued meanwhile, instead of waking up
# for every packet: on these machines a thread wake-up costs more CPU than muxing a packet.
# It adds at most this much to the time a finished fragment takes to reach the disk.
_BATCH_SECONDS = 0.25
_IDLE_FINISH_SECONDS = 8.0  # no packet for this long: the camera is gone, finish the file
_WRITE_RETRY_SECONDS = 10.0
_LOG_INTERVAL_SECONDS = 60.0
_STOP_SECONDS = 30.0
# A segment start taken from the media clock may drift from the wall clock by this much before
# it is re-anchored on the packet's arrival time.
_MAX_START_DRIFT_SECONDS = 1.0


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


# ----- the segmenter ----------------------------------------------------------------------------


type SegmentCallback = Callable[[Segment], None]
type FragmentCallback = Callable[[FragmentInfo], None]
type StateCallback = Callable[[], None]


class Segmenter(PacketConsumer):
    """Records one camera from its hub into segments, in its own thread.

    The thread is the shared consumer skeleton (`media.consumer`): batches every
    `_BATCH_SECONDS`, resubscribes after the hub restarts, and is unsubscribed while recording
    is off or paused. `stop` (blocking: run it in an executor) finishes the current segment;
    packets already queued are still written (the thread drains the closed queue, then ends).
    """

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
        super().__init__(
            source,
            label=f"Recorder of {source.name}",
            thread_name=f"lightnvr-rec-{camera_id}",
            queue_packets=queue_packets,
            batch_seconds=_BATCH_SECONDS,
            drain_on_stop=True,
            join_seconds=_STOP_SECONDS,
        )
        self.camera_id = camera_id
        self._layout = layout
        self._segment_seconds = segment_seconds
        self._on_segment = on_segment
        self._on_fragment = on_fragment
        self._on_state = on_state

        self._enabled = enabled
        self._pauses: set[str] = set()
        self._retry_at = 0.0

        self._writer: SegmentWriter | None = None
        self._muxer = CameraMuxer(
            source.name,
            lambda: source.info,
            fragment_seconds=fragment_seconds,
            on_fragment=self._on_muxed,
            on_close=self._finish,
            on_repair=self._count_repair,
            on_unsupported=self._on_unsupported,
        )
        self._generation: int | None = None
        self._unsupported: str | None = None
        self._last_received = 0.0  # arrival stamp of the newest packet handled
        self._last_packet: MediaPacket | None = None

        self._segments_written = 0
        self._repairs = 0
        self._repair_kinds: dict[str, int] = {}
        self._last_segment_end: float | None = None
        self._last_error: str | None = None
        self._log_at = 0.0
        self._logged_repairs = 0
        self._logged_drops = 0

    # ----- control (any thread) ---------------------------------------------------------------

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

    def state(self) -> SegmenterState:
        """Return a snapshot of the recorder's state."""
        writer = self._writer
        reason = self._pause_reason()
        return SegmenterState(
            camera_id=self.camera_id,
            enabled=self._enabled,
            # From the first keyframe muxed: its file opens when that fragment is complete.
            recording=writer is not None or (self._muxer.is_open and not self._blocked()),
            paused=self._enabled and reason is not None,
            pause_reason=reason if self._enabled else None,
            current_path=writer.path if writer is not None else None,
            current_start=writer.start_wall if writer is not None else None,
            last_segment_end=self._last_segment_end,
            segments_written=self._segments_written,
            timestamp_repairs=self._repairs,
            dropped_packets=self.dropped_packets,
            bytes_written=writer.size if writer is not None else 0,
            last_error=self._last_error,
        )

    def repair_counts(self) -> dict[str, int]:
        """Return the timestamp repairs by kind (missing, non_monotonic, jump, pts_before_dts)."""
        return dict(self._repair_kinds)

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

    def _notify(self) -> None:
        if self._on_state is not None:
            try:
                self._on_state()
            except Exception:
                _LOGGER.exception("Error in the recorder state callback")

    # ----- consumer hooks (the thread) -----------------------------------------------------------

    def _blocked(self) -> bool:
        """Return True when the thread must not record (off, paused, waiting to retry)."""
        return not self._enabled or bool(self._pauses) or self._retry_at > time.monotonic()

    def _on_blocked(self) -> None:
        self._end()

    def _on_subscribed(self) -> None:
        self._muxer.resync()

    def _on_queue_closed(self) -> None:
        """Finish the file: we ended the subscription (stop, off, pause) or the hub did."""
        self._end()

    def _on_drops(self, count: int) -> None:
        # A lost packet breaks the references of the frames after it: wait for a keyframe.
        self._muxer.resync()
        self._log_counters()

    def _on_exit(self) -> None:
        self._end()
        self._log_counters(force=True)

    def _on_idle(self) -> None:
        if self._muxer.is_open and time.monotonic() - self._last_packet_at > _IDLE_FINISH_SECONDS:
            _LOGGER.debug("%s: no packets; finishing the segment", self._source.name)
            self._end()

    def _handle_packet(self, packet: MediaPacket) -> None:
        if packet.generation == self._generation and (
            packet.received < self._last_received or packet is self._last_packet
        ):
            # Seen already: a new subscription (after off/on or a pause) starts with the hub's
            # cached group of pictures, which may overlap what was written before.
            return
        if packet.generation != self._generation and self._writer is not None:
            _LOGGER.debug("%s: new connection; finishing the segment", self._source.name)
        self._generation = packet.generation
        self._last_received = packet.received
        self._last_packet = packet
        try:
            self._muxer.handle(packet)
        except OSError as err:
            self._write_failed(err)
        except Exception as err:
            _LOGGER.exception("Recorder of %s failed", self._source.name)
            self._write_failed(err)

    def _end(self) -> None:
        """End the muxer's container: its last fragment is written, the file finished."""
        try:
            self._muxer.close()
        except OSError as err:
            self._write_failed(err)

    def _on_unsupported(self, codec: str | None) -> None:
        self._unsupported = codec
        self._notify()

    def _on_muxed(self, fragment: Fragment) -> None:
        """Write a fragment of the camera muxer: the file goes on, or a new one starts."""
        writer = self._writer
        if writer is not None and writer.init is not fragment.init:
            self._finish()  # another container (not expected: its end finished the file)
            writer = None
        if writer is None:
            if not fragment.keyframe or self._blocked():
                return  # files start with a keyframe, and only while recording may go on
            writer = self._open(fragment)
        elif fragment.keyframe and writer.elapsed(fragment) >= self._segment_seconds:
            previous = writer
            self._finish()
            writer = self._open(fragment, previous)
        writer.append(fragment)
        self._deliver_fragment(fragment)

    def _open(self, fragment: Fragment, previous: SegmentWriter | None = None) -> SegmentWriter:
        start = fragment.arrived if fragment.arrived is not None else fragment.start
        if previous is not None:
            # Cut inside one connection: continue the previous file's timeline exactly, unless
            # the camera's clock has drifted away from the wall clock.
            continued = previous.start_wall + previous.elapsed(fragment)
            if abs(continued - start) <= _MAX_START_DRIFT_SECONDS:
                start = continued
        part = self._layout.new_part_path(self.camera_id, start)
        writer = SegmentWriter(part, fragment, start_wall=start)
        self._writer = writer
        _LOGGER.debug("%s: recording %s", self._source.name, self._layout.relative(part))
        self._notify()
        return writer

    def _deliver_fragment(self, fragment: Fragment) -> None:
        if self._on_fragment is None:
            return
        info = FragmentInfo(self.camera_id, fragment)
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
            end = writer.start_wall + writer.duration
            final = self._layout.final_path(writer.path)
            if final.exists():  # never overwrite a recording, whatever happened meanwhile
                final = self._layout.new_part_path(self.camera_id, writer.start_wall)
                final = self._layout.final_path(final)
            os.utime(writer.path, (end, end))  # the index reads the end back from the mtime
            os.rename(writer.path, final)
            size = final.stat().st_size
        except OSError as err:
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
        self._muxer.resync()
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
