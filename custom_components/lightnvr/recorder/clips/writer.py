"""ClipWriter: one clip file being written from the pre-roll buffer and the live packets.

A clip starts at a keyframe of the camera's recent past, which no running muxer has a
fragment boundary for, so it muxes its packets itself with the one fMP4 writer
(`media.fmp4.Fmp4Writer`) into an unbuffered `.mp4.part` (no seeking: what is on disk is
final, and a crash loses at most the fragment being built).
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

from ...hub import StreamInfo
from ...media.fmp4 import Fmp4Writer
from ..segment_writer import open_new_file, sync_and_close, write_all


class _FileSink:
    """The file object PyAV writes the MP4 into: every byte straight to the file."""

    def __init__(self, path: Path) -> None:
        self.file = open_new_file(path)

    def write(self, data: bytes) -> int:
        write_all(self.file, data)
        return len(data)


class ClipWriter:
    """One open clip `.mp4.part`, muxed packet by packet."""

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
        """Create the file and write the init section; on failure nothing is left."""
        self.path = path
        self.start_wall = start_wall
        self._sink = _FileSink(path)
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
                self._sink.file.close()
            path.unlink(missing_ok=True)  # nothing of it is playable
            raise
        self.audio = self._writer.audio

    @property
    def duration(self) -> float:
        """Return the seconds of video written."""
        return self._writer.duration

    def write_video(self, data: bytes, dts: int, pts: int, keyframe: bool, duration: int) -> None:
        """Mux one video packet; `dts`/`pts` are relative to the clip's first frame."""
        self._writer.write_video(data, dts, pts, keyframe, duration)

    def write_audio(
        self, data: bytes, dts: int, pts: int, time_base: Fraction, duration: int
    ) -> bool:
        """Mux one audio packet (connection timestamps); False if it precedes the clip."""
        return self._writer.write_audio(data, dts, pts, time_base, duration)

    def close(self) -> None:
        """Write the last fragment, sync the file to disk and close it."""
        self._writer.close()
        sync_and_close(self._sink.file)

    def abort(self) -> None:
        """Close after a failure, ignoring further errors (the part is recovered later)."""
        self._writer.abort()
        with contextlib.suppress(OSError):
            self._sink.file.close()
