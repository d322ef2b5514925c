"""Segmenter: one camera's fragments → crash-safe fragmented MP4 segments, by stream copy.

The recorder is a sink of the camera's one muxer (`media.fragments.CameraFragments`, shared
with event clips and live HLS; the recorder never opens a connection of its own and never
muxes a packet itself) and writes in the muxer's thread, never decoding the video:

- **Fragmented MP4** (`empty_moov`, a `moof`+`mdat` per fragment): a fragment starts at every
  keyframe and lasts at most `fragment_seconds` (0.5 s), and every finished fragment is written
  to its file within one batch interval (0.25 s), so a crash or a kill loses at most the
  fragment being built: less than 1 s. The same fragments go to live HLS, in memory.
- **Segments** of `segment_seconds`, cut on the first keyframe fragment after that length, so
  every file starts with a keyframe and plays on its own (`segment_writer`: the muxer's init
  section, then its fragments moved to start at 0). A new connection to the camera (a new
  container of the muxer) starts a new segment: the gap stays visible between two files
  instead of being hidden inside one.
- **Camera timestamps are not trusted**: the muxer repairs (and counts and logs) missing,
  repeated, backwards or jumping timestamps, so the file always has rising timestamps;
  recording never stops because of them.
- A file being written is named `….mp4.part` and renamed to `….mp4` when finished; a part left
  behind by a crash is made playable at the next start (`storage.recover_part`).
- **Audio**: AAC is copied; any other codec (G.711 above all) is transcoded to AAC by the
  muxer (`media.aac.AacAudio`), because MP4 players play nothing else.

Nothing here touches the event loop. The callbacks (`on_segment`, `on_fragment`, `on_state`)
are called in the muxer thread and must be quick; the manager hops to the loop itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import logging
import os
from pathlib import Path
import time

from ..media.consumer import PacketSource
from ..media.fragments import (
    DEFAULT_FRAGMENT_SECONDS,
    DEFAULT_QUEUE_PACKETS,
    CameraFragments,
    shared_or_own,
)
from ..media.muxer import Fragment
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

PAUSE_STORAGE_FULL = "storage_full"
PAUSE_WRITE_ERROR = "write_error"
PAUSE_UNSUPPORTED = "unsupported_codec"

_IDLE_FINISH_SECONDS = 8.0  # no packet for this long: the camera is gone, finish the file
_WRITE_RETRY_SECONDS = 10.0
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


class Segmenter:
    """Records one camera's fragments into segments (a `FragmentSink`, see the module doc).

    `source` is the camera's shared muxer, or a bare packet source (tests, benchmarks): the
    recorder then runs a muxer of its own. `stop` (blocking: run it in an executor) finishes
    the current segment; with a muxer of its own, packets already queued are still written.
    """

    def __init__(
        self,
        camera_id: str,
        source: CameraFragments | PacketSource,
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
        self._fragments, self._owns_muxer = shared_or_own(
            source,
            camera_id,
            thread_name=f"lightnvr-rec-{camera_id}",
            fragment_seconds=fragment_seconds,
            queue_packets=queue_packets,
        )
        self._name = self._fragments.source_name
        self.camera_id = camera_id
        self._layout = layout
        self._segment_seconds = segment_seconds
        self._on_segment = on_segment
        self._on_fragment = on_fragment
        self._on_state = on_state

        self._enabled = enabled
        self._stopped = False
        self._pauses: set[str] = set()
        self._retry_at = 0.0
        self._remove_listener: Callable[[], None] | None = None

        self._writer: SegmentWriter | None = None
        self._segments_written = 0
        self._last_segment_end: float | None = None
        self._last_error: str | None = None

    # ----- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start taking the camera's fragments."""
        self._stopped = False
        if self._remove_listener is None:
            self._remove_listener = self._fragments.add_listener(self._notify)
        self._fragments.add_sink(self)
        if self._owns_muxer:
            self._fragments.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop recording and finish the current segment. Blocking: run it in an executor."""
        if self._owns_muxer:
            self._fragments.stop(timeout)  # drains what is queued: its fragments are written
        self._stopped = True
        self._fragments.detach(self)
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    @property
    def alive(self) -> bool:
        """Return True while the recorder takes fragments (its own muxer's thread runs)."""
        if self._owns_muxer:
            return self._fragments.alive
        return not self._stopped

    # ----- control (any thread) ---------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> None:
        """Turn recording on or off (the switch); off finishes the current segment."""
        if enabled != self._enabled:
            self._enabled = enabled
            self._fragments.wake()
            self._notify()

    def pause(self, reason: str) -> None:
        """Hold recording back for `reason` (e.g. storage full) until `resume(reason)`."""
        if reason not in self._pauses:
            self._pauses.add(reason)
            self._fragments.wake()
            self._notify()

    def resume(self, reason: str) -> None:
        """Lift a pause."""
        if reason in self._pauses:
            self._pauses.discard(reason)
            self._fragments.wake()
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
            recording=writer is not None or (self._fragments.muxing and self.wants_fragments()),
            paused=self._enabled and reason is not None,
            pause_reason=reason if self._enabled else None,
            current_path=writer.path if writer is not None else None,
            current_start=writer.start_wall if writer is not None else None,
            last_segment_end=self._last_segment_end,
            segments_written=self._segments_written,
            timestamp_repairs=self._fragments.timestamp_repairs,
            dropped_packets=self._fragments.dropped_packets,
            bytes_written=writer.size if writer is not None else 0,
            last_error=self._last_error,
        )

    def repair_counts(self) -> dict[str, int]:
        """Return the timestamp repairs by kind (missing, non_monotonic, jump, pts_before_dts)."""
        return self._fragments.repair_counts()

    def _pause_reason(self) -> str | None:
        pauses = set(self._pauses)
        if self._retry_at > time.monotonic():
            pauses.add(PAUSE_WRITE_ERROR)
        if self._fragments.unsupported is not None:
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

    # ----- the sink (the muxer's thread) --------------------------------------------------------

    def wants_fragments(self) -> bool:
        """Return True while recording may go on (on, not paused, not waiting to retry)."""
        return (
            self._enabled
            and not self._stopped
            and not self._pauses
            and self._retry_at <= time.monotonic()
        )

    def handle_fragment(self, fragment: Fragment) -> None:
        """Write a fragment; a file being written when recording stopped is finished."""
        try:
            if self.wants_fragments():
                self._on_muxed(fragment)
            elif self._writer is not None:
                if self._writer.init is fragment.init:
                    self._writer.append(fragment)  # muxed before it stopped: the last one
                    self._deliver_fragment(fragment)
                self._finish()
        except OSError as err:
            self._write_failed(err)
        except Exception as err:
            _LOGGER.exception("Recorder of %s failed", self._name)
            self._write_failed(err)

    def end_of_container(self) -> None:
        """Finish the file: its container ended (a new connection, or nobody muxing)."""
        if self._writer is not None:
            _LOGGER.debug("%s: end of the stream; finishing the segment", self._name)
        self._finish()

    def idle(self, seconds: float) -> None:
        """Finish the file when the camera has been silent for a while: it is gone."""
        if self._writer is not None and seconds > _IDLE_FINISH_SECONDS:
            _LOGGER.debug("%s: no packets; finishing the segment", self._name)
            self._finish()

    def detached(self) -> None:
        """Finish the file (the recorder stops)."""
        self._finish()

    def _on_muxed(self, fragment: Fragment) -> None:
        """Write a fragment of the camera muxer: the file goes on, or a new one starts."""
        writer = self._writer
        if writer is not None and writer.init is not fragment.init:
            self._finish()  # another container (not expected: its end finished the file)
            writer = None
        if writer is None:
            if not fragment.keyframe:
                return  # files start with a keyframe
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
        _LOGGER.debug("%s: recording %s", self._name, self._layout.relative(part))
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
            _LOGGER.warning("%s: could not finish a segment: %s", self._name, err)
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
            self._name,
            self._last_error,
            _WRITE_RETRY_SECONDS,
        )
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
            self._salvage(writer)
        self._retry_at = time.monotonic() + _WRITE_RETRY_SECONDS
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
