"""What live HLS hands around: chunks from either source, init sections, segments, windows.

Shared by the in-memory muxer (`live_muxer`), which produces `LiveChunk`s, and the per-camera
window (`live`), which groups chunks into `LiveSegment`s under `LiveInit` sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..recorder.segment_writer import FragmentInfo
from ..recorder.storage import StorageLayout

LIVE_TARGET_SECONDS = 2.0


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
    parts: tuple[LiveChunk, ...] = ()  # its chunks: the LL-HLS parts (EXT-X-PART)


@dataclass(frozen=True, slots=True)
class LivePartial:
    """The segment being filled: its chunks are already listed as LL-HLS parts."""

    sequence: int  # the media sequence number it will have
    parts: tuple[LiveChunk, ...]
    init: LiveInit | None  # None while it has no part yet
    discontinuity: bool


@dataclass(frozen=True, slots=True)
class LiveWindow:
    """What a live playlist lists."""

    segments: tuple[LiveSegment, ...]
    media_sequence: int
    discontinuity_sequence: int
    source: LiveSource | None
    target: int  # EXT-X-TARGETDURATION: never lowered while the camera runs
    partial: LivePartial | None = None
    part_target: float = 0.0  # EXT-X-PART-INF: the longest part so far, never lowered


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
