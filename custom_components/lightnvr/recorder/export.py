"""Exports: one MP4 file for a camera's time range, stream-copied from its recording files.

For handing footage to someone: one ordinary (not fragmented) MP4 with its index at the front,
which any player and any upload form takes. Packets are copied, never re-encoded, audio included.
The export starts on the keyframe at or before the asked start (a stream copy cannot start
between keyframes) and ends at the asked end. Where the camera was not recorded for longer than
`CUT_SECONDS` the export simply goes on with the next recording: that cut is listed in the
sidecar (`<name>.json`) with its place in the export and the wall-clock time it skipped.

Everything here blocks (file I/O, muxing): it runs in a worker thread, checking `should_stop`
between packets and reporting its progress (a fraction of the source bytes read). It writes
`<name>.mp4.part` and renames it when complete, so a half-written export is never listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
import json
from pathlib import Path
import queue
import threading
from typing import Any, Final

import av

from ..compat import add_stream_like
from .storage import Segment

# A pause in the recordings longer than this is a cut (the recording files of one camera are
# otherwise contiguous, a few milliseconds apart).
CUT_SECONDS: Final = 2.0
PART_SUFFIX: Final = ".part"
# How often the stop flag is looked at, in packets (about a second of 25 fps video and audio).
_STOP_CHECK_PACKETS: Final = 64
# The reader thread hands packets over in batches (one queue operation per batch, not per
# packet) and stays at most this many batches ahead: about ten seconds of media, a few MB.
_READ_BATCH: Final = 128
_READ_AHEAD_BATCHES: Final = 8


class ExportCancelledError(Exception):
    """The export was stopped before it was complete; nothing was left behind."""


class ExportError(Exception):
    """The export could not be written (no recording in the range, unreadable files)."""


@dataclass(frozen=True, slots=True)
class ExportCut:
    """Wall-clock time missing from the export: recordings resume at `at` seconds into it."""

    at: float
    wall_from: float
    wall_to: float


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    start: float  # wall-clock time of the export's first frame
    end: float  # wall-clock time of its end
    duration: float  # seconds of media
    size: int
    files: int  # recording files read
    cuts: tuple[ExportCut, ...] = ()
    # Why it ends before the asked end (the camera's stream format changed), if it does.
    stopped_early: str | None = None
    tracks: tuple[str, ...] = field(default=())


@dataclass(slots=True)
class _Output:
    """The export's container and the time bookkeeping of its streams."""

    container: Any
    video: Any
    audio: Any | None
    video_format: tuple[Any, ...]
    audio_format: tuple[Any, ...] | None
    last_dts: dict[int, float] = field(default_factory=dict)  # seconds, per track
    media_end: float = 0.0  # seconds: the end of the last video frame written


def _stream_format(stream: Any) -> tuple[Any, ...]:
    """Return what must match for packets of two files to go into one track."""
    ctx = stream.codec_context
    return (
        ctx.name,
        getattr(ctx, "width", None),
        getattr(ctx, "height", None),
        getattr(ctx, "sample_rate", None),
        bytes(ctx.extradata or b""),
    )


def _open_output(part: Path, video: Any, audio: Any | None) -> _Output:
    container = av.open(str(part), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        out_video = add_stream_like(container, video)
        if video.codec_context.name == "hevc":
            out_video.codec_context.codec_tag = "hvc1"  # what Apple players require
        out_audio = add_stream_like(container, audio) if audio is not None else None
    except BaseException:
        container.close()
        raise
    return _Output(
        container,
        out_video,
        out_audio,
        _stream_format(video),
        _stream_format(audio) if audio is not None else None,
    )


def _write(  # noqa: PLR0917 - the packet, where it goes and its clock
    output: _Output,
    packet: Any,
    out_stream: Any,
    seconds: float,
    dts_seconds: float,
    clock: _Clock,
) -> None:
    """Write one packet at `seconds` (pts) / `dts_seconds` of the export's timeline.

    Times stay in the packet's own time base; the muxer rescales them to the track's.
    """
    time_base, tick = clock
    last = output.last_dts.get(out_stream.index)
    if last is not None and dts_seconds <= last:
        dts_seconds = last + tick  # a file's first packets may touch the previous file's last
    output.last_dts[out_stream.index] = dts_seconds
    dts = round(dts_seconds / tick)
    packet.stream = out_stream
    packet.time_base = time_base
    packet.dts = dts
    packet.pts = max(round(seconds / tick), dts)
    output.container.mux(packet)
    if out_stream is output.video:  # the export lasts as long as its picture
        duration = packet.duration * tick if packet.duration else 0.0
        output.media_end = max(output.media_end, seconds + duration)


# A stream's time base and its length in seconds: read once per file, because a packet's own
# `time_base` is a new Fraction at every access, and Fraction arithmetic per packet took a
# third of an export's time.
type _Clock = tuple[Fraction, float]


def _clocks(*streams: Any) -> dict[int, _Clock]:
    """Return the clock of each stream (by index) of a source file."""
    clocks: dict[int, _Clock] = {}
    for stream in streams:
        if stream is not None:
            time_base = Fraction(stream.time_base or Fraction(1, 90000))
            clocks[stream.index] = (time_base, float(time_base))
    return clocks


def _packet_seconds(packet: Any, tick: float) -> tuple[float, float] | None:
    """Return (pts, dts) of a packet in seconds of its file, or None if it has no time."""
    if packet.pts is None:
        return None
    pts: float = packet.pts * tick
    dts: float = packet.dts * tick if packet.dts is not None else pts
    return pts, dts


@dataclass(slots=True)
class _SourceFile:
    """A recording file as the reader thread opened it."""

    segment: Segment
    container: Any  # open until the writer is done with its packets
    video: Any | None
    audio: Any | None
    clocks: dict[int, _Clock]


@dataclass(frozen=True, slots=True)
class _ReadFailed:
    error: BaseException


_END_OF_FILE: Final = object()
_END_OF_FILES: Final = object()


class _ReadAhead:
    """Reads the next recording files in a thread of its own while the export is written.

    FFmpeg's reading and parsing of a file and its writing of the export each run without
    Python's lock (PyAV releases it around them), so on two cores they overlap: an export
    otherwise spends about half its time waiting for the next packet. Each file's container
    stays open until the writer has written its packets (packets and streams refer to it);
    the writer closes it. Containers that were never handed over are closed here.
    """

    def __init__(
        self, segments: Sequence[Segment], locate: Callable[[Segment], Path | None]
    ) -> None:
        self._segments = segments
        self._locate = locate
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_READ_AHEAD_BATCHES)
        self._stop = threading.Event()
        self._current: _SourceFile | None = None  # the file being written
        self._thread = threading.Thread(
            target=self._read, name="lightnvr-export-reader", daemon=True
        )
        self._thread.start()

    def files(self) -> Iterator[tuple[_SourceFile, Iterator[Any]]]:
        """Yield each file with an iterator over its packets, oldest first.

        What the caller leaves of a file's packets is skipped before the next file, and the
        file's container is then closed. A file that could not be opened raises here.
        """
        while (item := self._queue.get()) is not _END_OF_FILES:
            if isinstance(item, _ReadFailed):
                raise item.error
            self._current = item
            packets = self._packets()
            yield item, packets
            for _ in packets:  # what the caller did not want of this file
                pass
            self._close_current()

    def _packets(self) -> Iterator[Any]:
        while (batch := self._queue.get()) is not _END_OF_FILE:
            if isinstance(batch, _ReadFailed):
                raise batch.error
            yield from batch

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.container.close()
            self._current = None

    def close(self) -> None:
        """Stop reading, wait for the thread, then close every container it opened.

        Nothing is closed before the thread has ended: it may still be reading the file being
        written, or one it queued.
        """
        self._stop.set()
        opened = [self._current] if self._current is not None else []
        self._current = None
        while self._thread.is_alive() or not self._queue.empty():
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, _SourceFile):
                opened.append(item)
        self._thread.join()
        for source in opened:
            source.container.close()

    def _put(self, item: Any) -> bool:
        """Hand `item` over; False if the export stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _read(self) -> None:
        try:
            for segment in self._segments:
                if not self._read_file(segment):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the writer, raised there
            self._put(_ReadFailed(err))
            return
        self._put(_END_OF_FILES)

    def _read_file(self, segment: Segment) -> bool:
        """Open one file and queue it, then its packets; False if the export stopped."""
        path = segment.path if segment.path.exists() else (self._locate(segment) or segment.path)
        container = av.open(str(path))
        try:
            video = next((s for s in container.streams if s.type == "video"), None)
            audio = next((s for s in container.streams if s.type == "audio"), None)
            source = _SourceFile(segment, container, video, audio, _clocks(video, audio))
        except BaseException:
            container.close()
            raise
        if not self._put(source):
            container.close()
            return False
        if video is not None:
            batch: list[Any] = []
            for packet in container.demux(video, *([audio] if audio is not None else [])):
                batch.append(packet)
                if len(batch) >= _READ_BATCH:
                    if not self._put(batch):
                        return False
                    batch = []
            if batch and not self._put(batch):
                return False
        return self._put(_END_OF_FILE)


def write_export(
    segments: Sequence[Segment],
    start: float,
    end: float,
    target: Path,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[float], None] = lambda fraction: None,
    locate: Callable[[Segment], Path | None] = lambda segment: None,
) -> ExportResult:
    """Write the recordings between `start` and `end` (epoch seconds) into `target` (blocking).

    `segments` are the camera's recording files overlapping the range, oldest first. A file
    no longer where it was listed (moved to the archive meanwhile) is asked of `locate`.
    Raises ExportCancelledError when `should_stop` turns true, ExportError when there is
    nothing to export; `target` is then not created.
    """
    chosen = [s for s in segments if s.end > start and s.start < end]
    if not chosen:
        raise ExportError("nothing is recorded in this range")
    total_bytes = sum(max(1, s.size) for s in chosen) or 1
    part = target.with_name(target.name + PART_SUFFIX)
    output: _Output | None = None
    cuts: list[ExportCut] = []
    first_wall: float | None = None  # wall-clock time of the export's time 0
    skipped = 0.0  # wall-clock seconds cut out so far
    previous_end: float | None = None
    done_bytes = 0
    files = 0
    stopped_early: str | None = None
    counter = 0
    reader = _ReadAhead(chosen, locate)
    try:
        for source, packets in reader.files():
            segment, video, audio = source.segment, source.video, source.audio
            clocks = source.clocks
            if video is None:
                continue
            if output is None:
                output = _open_output(part, video, audio)
            elif _stream_format(video) != output.video_format or (
                (_stream_format(audio) if audio is not None else None) != output.audio_format
            ):
                stopped_early = (
                    f"the camera's stream format changed at {segment.start:.0f}: "
                    "export the rest separately"
                )
                break
            if previous_end is not None and segment.start - previous_end > CUT_SECONDS:
                assert first_wall is not None
                at = previous_end - first_wall - skipped
                cuts.append(ExportCut(round(at, 3), previous_end, segment.start))
                skipped += segment.start - previous_end
            # Seconds into this file where the range starts and ends.
            begin_at = max(0.0, start - segment.start)
            stop_at = end - segment.start
            pending: list[Any] = []  # the GOP holding the start, until it is reached
            started = first_wall is not None
            for packet in packets:
                counter += 1
                if counter % _STOP_CHECK_PACKETS == 0 and should_stop():
                    raise ExportCancelledError
                clock = clocks[packet.stream.index]
                times = _packet_seconds(packet, clock[1])
                if times is None or packet.size == 0:
                    continue
                pts, dts = times
                if pts >= stop_at:
                    continue
                if not started:
                    if packet.stream is video and packet.is_keyframe and pts <= begin_at:
                        pending = [packet]
                    elif pending:
                        pending.append(packet)
                    if pts < begin_at or not pending:
                        continue
                    started = True
                    gop_start = pending[0].pts * clocks[pending[0].stream.index][1]
                    first_wall = segment.start + gop_start
                    for held in pending:
                        held_clock = clocks[held.stream.index]
                        held_times = _packet_seconds(held, held_clock[1])
                        assert held_times is not None
                        _write_at(
                            output, held, video, segment, held_times, first_wall, skipped,
                            held_clock,
                        )  # fmt: skip
                    pending = []
                    continue
                assert first_wall is not None
                _write_at(output, packet, video, segment, (pts, dts), first_wall, skipped, clock)
            files += 1
            previous_end = segment.end
            done_bytes += max(1, segment.size)
            on_progress(min(1.0, done_bytes / total_bytes))
        if output is None or first_wall is None:
            raise ExportError("the recordings in this range could not be read")
        tracks = tuple(
            stream.codec_context.name for stream in (output.video, output.audio) if stream
        )
        duration = output.media_end
        output.container.close()
        output = None
        path = _finish(part, target)
        return ExportResult(
            path=path,
            start=first_wall,
            end=min(end, first_wall + duration + skipped),
            duration=round(duration, 3),
            size=path.stat().st_size,
            files=files,
            cuts=tuple(cuts),
            stopped_early=stopped_early,
            tracks=tracks,
        )
    except BaseException:
        if output is not None:
            with contextlib.suppress(Exception):
                output.container.close()
        part.unlink(missing_ok=True)
        raise
    finally:
        reader.close()


def _write_at(  # noqa: PLR0917 - the packet and where it goes
    output: _Output | None,
    packet: Any,
    video: Any,
    segment: Segment,
    times: tuple[float, float],
    first_wall: float,
    skipped: float,
    clock: _Clock,
) -> None:
    """Write a packet of `segment` at its place on the export's timeline (gaps cut out)."""
    assert output is not None
    base = segment.start - first_wall - skipped
    out_stream = output.video if packet.stream is video else output.audio
    if out_stream is None:
        return
    pts, dts = times
    _write(output, packet, out_stream, max(0.0, base + pts), base + dts, clock)


def _finish(part: Path, target: Path) -> Path:
    """Move the finished part file to `target`, or next to it if that name is taken."""
    path = target
    number = 2
    while path.exists():
        path = target.with_name(f"{target.stem}-{number}{target.suffix}")
        number += 1
    part.rename(path)
    return path


def write_sidecar(result: ExportResult, camera: str, asked: tuple[float, float]) -> Path:
    """Write `<export>.json`: camera, asked and exported range, cuts, tracks (blocking)."""
    sidecar = result.path.with_suffix(".json")
    data = {
        "camera": camera,
        "asked": {"start": asked[0], "end": asked[1]},
        "start": result.start,
        "end": result.end,
        "duration": result.duration,
        "files": result.files,
        "tracks": list(result.tracks),
        "cuts": [asdict(cut) for cut in result.cuts],
        "stopped_early": result.stopped_early,
    }
    sidecar.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return sidecar
