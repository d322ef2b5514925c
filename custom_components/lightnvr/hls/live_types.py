"""What live HLS hands around: chunks of the camera muxer, init sections, segments, windows.

The per-camera window (`live`) makes a `LiveChunk` of every fragment and groups them into
`LiveSegment`s under `LiveInit` sections; the views serve them (`live_io`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..media.muxer import Fragment

LIVE_TARGET_SECONDS = 2.0


class LiveSource(StrEnum):
    """Where a camera's live segments come from."""

    MUXER = "muxer"  # the camera's one muxer (shared with the recorder and clips)


@dataclass(frozen=True, slots=True, eq=False)
class LiveChunk:
    """One fMP4 fragment (`moof`+`mdat`) of the camera's muxer, already complete."""

    source: LiveSource
    init_key: object  # the same object for every fragment under one init section
    zero: float  # epoch second of decode time 0 under that init section
    start: float  # epoch second of its first frame
    duration: float
    keyframe: bool
    init_data: bytes  # the init section
    data: bytes | None = None  # bytes already on the shared timeline, if given
    fragment: Fragment | None = None  # else: moved onto the shared timeline when served

    def wall_clock_bytes(self) -> bytes:
        """Return the chunk's bytes on the shared timeline."""
        if self.data is not None:
            return self.data
        assert self.fragment is not None
        return self.fragment.on_wall_clock()

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
    data: bytes


@dataclass(slots=True, eq=False)
class LiveSegment:
    """A media segment of the live playlist."""

    sequence: int
    init: LiveInit
    start: float
    duration: float
    discontinuity: bool
    independent: bool
    data: bytes | None = None  # on the shared timeline (recorder chunks: once served)
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


def chunk_from_fragment(
    fragment: Fragment, source: LiveSource, *, on_wall_clock: bool = False
) -> LiveChunk:
    """Describe a camera muxer's fragment as a live chunk.

    Its bytes are moved onto the wall clock now (`on_wall_clock`, in the producer's thread) or
    when first served.
    """
    return LiveChunk(
        source=source,
        init_key=fragment.init,
        zero=fragment.init.zero,
        start=fragment.start,
        duration=fragment.duration,
        keyframe=fragment.keyframe,
        init_data=fragment.init.data,
        data=fragment.on_wall_clock() if on_wall_clock else None,
        fragment=fragment,
    )
