"""SegmentWriter: one recording file being written from the camera muxer's fragments.

The camera's packets are muxed once (`media.muxer.CameraMuxer`); a recording file is its init
section followed by its fragments from one keyframe fragment on, written straight to an
unbuffered `.mp4.part` as each fragment completes. Every file's decode times start at 0 (each
fragment's `tfdt` is moved back by the file's start as it is written), so a file plays on its
own exactly as if it had been muxed alone. Nothing is ever rewritten: what is on disk is final,
and a crash loses at most the fragment being built.

`FragmentInfo` hands a fragment that was just written to live HLS, which serves it from memory:
live view never reads back what the recorder wrote.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
from typing import BinaryIO

from ..media.bmff import retime_fragments
from ..media.muxer import Fragment


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    """One fragment a camera's recorder just wrote, for live HLS (kept in memory, not re-read)."""

    camera_id: str
    fragment: Fragment

    @property
    def start(self) -> float:
        """Return the epoch second of the fragment's first video frame."""
        return self.fragment.start

    @property
    def duration(self) -> float:
        """Return the seconds of video."""
        return self.fragment.duration

    @property
    def keyframe(self) -> bool:
        """Return True when it starts with a keyframe (plays without what came before)."""
        return self.fragment.keyframe


def open_new_file(path: Path) -> BinaryIO:
    """Create `path` for writing, unbuffered; never over an existing file, whatever the name."""
    return open(path, "xb", buffering=0)


def write_all(file: BinaryIO, data: bytes | bytearray) -> None:
    """Write every byte (an unbuffered file may take fewer at a time)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError("short write")
        view = view[written:]


def sync_and_close(file: BinaryIO) -> None:
    """Flush a finished file to the disk itself and close it."""
    if file.closed:
        return
    try:
        os.fsync(file.fileno())
    finally:
        file.close()


def _file_shifts(first: Fragment) -> dict[int, int]:
    """Return, per track, the ticks that move `first` (a file's first fragment) to time 0.

    The video starts at exactly 0. Other tracks move by the same time, rounded to their own
    scale, but never below 0 (an audio sample that starts a hair before the picture).
    """
    init = first.init
    seconds = first.video_base / init.video_scale
    shifts: dict[int, int] = {}
    for track_id, track in init.tracks.items():
        if track_id == init.video_track_id:
            shifts[track_id] = -first.video_base
        else:
            shift = round(seconds * track.timescale)
            shifts[track_id] = -min(shift, first.bases.get(track_id, shift))
    return shifts


class SegmentWriter:
    """One open `.mp4.part`: a keyframe fragment of the camera muxer and those after it."""

    def __init__(self, path: Path, first: Fragment, *, start_wall: float) -> None:
        """Create the file (never over an existing one) and write the init section."""
        self.path = path
        self.init = first.init
        self.start_wall = start_wall
        self.video_base = first.video_base  # in the container's video time scale
        self.fragments = 0
        self.size = 0
        self.video_end = 0.0  # seconds of video written
        self._shifts = _file_shifts(first)
        self._file = open_new_file(path)
        try:
            self._write(first.init.data)
        except BaseException:
            self.abort()
            path.unlink(missing_ok=True)  # nothing of it is playable
            raise

    @property
    def generation(self) -> int:
        """Return the camera connection the file belongs to."""
        return self.init.generation

    @property
    def duration(self) -> float:
        """Return the seconds of video written."""
        return self.video_end

    def elapsed(self, fragment: Fragment) -> float:
        """Return the seconds from the file's first frame to `fragment`'s."""
        return (fragment.video_base - self.video_base) / self.init.video_scale

    def append(self, fragment: Fragment) -> None:
        """Write one fragment of the same container, moved onto the file's timeline."""
        data = bytearray(fragment.data)
        retime_fragments(data, self._shifts)
        self._write(data)
        self.fragments += 1
        self.video_end = max(self.video_end, self.elapsed(fragment) + fragment.duration)

    def _write(self, data: bytes | bytearray) -> None:
        write_all(self._file, data)
        self.size += len(data)

    def close(self) -> None:
        """Sync the file to the disk itself (the segment is final) and close it."""
        sync_and_close(self._file)

    def abort(self) -> None:
        """Close after a failure, ignoring further errors (the part is recovered later)."""
        with contextlib.suppress(OSError):
            self._file.close()
