"""SegmentWriter: one recording file being written, fragment by fragment, straight to disk.

The one fMP4 writer (`media.fmp4.Fmp4Writer`) muxes into `_FragmentSink`, an unbuffered file
that reports every complete `moof`+`mdat` as soon as it is on disk (for live HLS) and never
seeks, so what is on disk is final and a crash loses at most the fragment being built.
`FragmentInfo` describes such a fragment to live HLS (byte ranges of the file being written).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
import os
from pathlib import Path

from ..hub import StreamInfo
from ..media.bmff import FragmentFollower
from ..media.fmp4 import Fmp4Writer


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
