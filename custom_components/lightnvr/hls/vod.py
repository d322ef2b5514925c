"""Recorded HLS: the fragment index of finished segment files, and one shared media timeline.

Fragment index
    A finished recording is a fragmented MP4 (`ftyp`+`moov`, then `moof`+`mdat` pairs, one per
    keyframe interval). Its boxes are walked once (headers and `moof` bodies only, never the
    media) in the executor and cached by path, size and mtime, so a VOD playlist can list
    ~2 s byte ranges of each file instead of whole 60 s files.

One timeline for every file
    The recorder starts every file's decode time at 0 (each file plays on its own). Played back
    to back, timestamps would jump backwards at every file boundary, and FFmpeg-based players
    (mpv, VLC, Kodi, PyAV) drop the first GOP after each jump even with EXT-X-DISCONTINUITY.
    So when serving, the `tfdt` (base media decode time) of every fragment is shifted by the
    file's start in epoch seconds × the track's timescale: decode time becomes wall-clock time,
    continuous across files (and across the live and recorded playlists), with real gaps kept
    as gaps. Only those 8-byte fields are rewritten (the file on disk is never touched; nothing
    is remuxed), which works for any HTTP Range because the index knows where each field is.

Everything here is blocking file work or pure parsing: call it from the executor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import os
from pathlib import Path
import struct
import threading

from ..media.bmff import (
    TfdtField,
    TrackInfo,
    iter_file_boxes,
    parse_moof,
    parse_tracks,
    patch_tfdt,
    timeline_shifts,
    traf_fields,
    video_track,
)
from ..recorder.storage import Segment

# An index entry costs ~100 bytes per fragment: ~6 kB for a 60 s file.
DEFAULT_CACHE_FILES = 2048
# If a file's name-derived start and its mtime-derived start disagree by more than this, the
# mtime was changed by something else and the start from the index is used.
_MAX_START_DISAGREEMENT = 2.0


# ----- ISO BMFF boxes -------------------------------------------------------------------------


# ----- the fragment index of a file -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileFragment:
    """One `moof`+`mdat` pair of a recording."""

    offset: int
    length: int
    base: int  # video decode time of its first frame (track timescale, file-relative)
    duration: int  # video ticks
    keyframe: bool


@dataclass(frozen=True, slots=True)
class FileIndex:
    """What a VOD playlist and the file view need to know about one recording."""

    path: Path
    size: int
    mtime_ns: int
    init_length: int
    tracks: dict[int, TrackInfo]
    video_track_id: int
    timescale: int  # of the video track
    fragments: tuple[FileFragment, ...]
    tfdts: tuple[TfdtField, ...]  # every tfdt field, in file order

    @property
    def duration(self) -> float:
        """Return the seconds of video in the file."""
        if not self.fragments:
            return 0.0
        last = self.fragments[-1]
        return (last.base + last.duration) / self.timescale

    def zero(self, segment: Segment) -> float:
        """Return the epoch second of decode time 0 (the first frame) of this file.

        The end (the file's mtime, set to the exact end of its media) minus the media duration
        is exact even after a restart, when the start from the file name has whole seconds.
        """
        zero = segment.end - self.duration
        if segment.end <= segment.start or abs(zero - segment.start) > _MAX_START_DISAGREEMENT:
            return segment.start
        return zero

    def read_range(self, start: int, end: int, zero: float) -> bytes:
        """Return bytes [start, end) of the file with every tfdt on the shared timeline."""
        with self.path.open("rb") as file:
            file.seek(start)
            data = bytearray(file.read(end - start))
        shifts = timeline_shifts(self.tracks, zero)
        for tfdt in self.tfdts:
            if tfdt.position + tfdt.size > start and tfdt.position < start + len(data):
                patch_tfdt(data, start, tfdt, shifts)
        return bytes(data)


class NotFragmentedError(ValueError):
    """The file is not a fragmented MP4 with a video track."""


def index_file(path: Path) -> FileIndex:
    """Walk a recording's boxes (blocking; reads headers and `moof` bodies only)."""
    with path.open("rb") as file:
        stat = os.fstat(file.fileno())
        size = stat.st_size
        init_length = 0
        init = b""
        fragments: list[FileFragment] = []
        tfdts: list[TfdtField] = []
        tracks: dict[int, TrackInfo] = {}
        video: TrackInfo | None = None
        moof: tuple[int, int, bytes] | None = None
        for kind, offset, head, box_size in iter_file_boxes(file, size):
            if kind in (b"ftyp", b"moov") and not fragments:
                file.seek(offset)
                init += file.read(box_size)
                if kind == b"moov":
                    init_length = offset + box_size
                    tracks = parse_tracks(init)
                    video = video_track(tracks)
            elif kind == b"moof":
                file.seek(offset + head)
                moof = (offset, head, file.read(box_size - head))
            elif kind == b"mdat" and moof is not None and video is not None:
                moof_offset, moof_head, body = moof
                parsed = parse_moof(body, video.track_id)
                if parsed is not None:
                    base, duration, keyframe = parsed
                    fragments.append(
                        FileFragment(
                            moof_offset, offset + box_size - moof_offset, base, duration, keyframe
                        )
                    )
                    tfdts.extend(traf_fields(body, 0, len(body), moof_offset + moof_head))
                moof = None
    if video is None or not init_length:
        raise NotFragmentedError(path.name)
    return FileIndex(
        path=path,
        size=size,
        mtime_ns=stat.st_mtime_ns,
        init_length=init_length,
        tracks=tracks,
        video_track_id=video.track_id,
        timescale=video.timescale,
        fragments=tuple(fragments),
        tfdts=tuple(tfdts),
    )


class FragmentCache:
    """File indexes, computed once per file (thread-safe, least recently used evicted)."""

    def __init__(self, max_files: int = DEFAULT_CACHE_FILES) -> None:
        """Keep at most `max_files` indexes."""
        self._max = max_files
        self._lock = threading.Lock()
        self._items: OrderedDict[Path, FileIndex] = OrderedDict()

    def get(self, path: Path) -> FileIndex:
        """Return the index of `path` (blocking when not cached: run in the executor).

        A cached index is reused only while the file's size and mtime are unchanged.
        """
        stat = path.stat()
        with self._lock:
            cached = self._items.get(path)
            if (
                cached is not None
                and cached.size == stat.st_size
                and cached.mtime_ns == stat.st_mtime_ns
            ):
                self._items.move_to_end(path)
                return cached
        index = index_file(path)
        with self._lock:
            self._items[path] = index
            self._items.move_to_end(path)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return index

    def get_many(self, paths: Sequence[Path]) -> dict[Path, FileIndex]:
        """Return the indexes of the files that could be read (blocking)."""
        found: dict[Path, FileIndex] = {}
        for path in paths:
            try:
                found[path] = self.get(path)
            except (OSError, NotFragmentedError, struct.error):
                continue  # deleted by retention meanwhile, or not ours: left out
        return found

    def __len__(self) -> int:
        """Return the number of cached indexes."""
        with self._lock:
            return len(self._items)


# ----- VOD chunks -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VodChunk:
    """One VOD media segment: a byte range of a recording."""

    segment: Segment
    index: FileIndex
    offset: int
    length: int
    start: float  # epoch seconds
    duration: float
    independent: bool  # starts with a keyframe


def vod_chunks(
    segments: Sequence[Segment],
    indexes: Mapping[Path, FileIndex],
    start: float,
    end: float,
    target: float,
) -> list[VodChunk]:
    """Cut the recordings overlapping [start, end) into ~`target` s chunks on keyframes."""
    from .playlist import group_fragments  # noqa: PLC0415 - keep playlist.py import-light

    chunks: list[VodChunk] = []
    for segment in segments:
        index = indexes.get(segment.path)
        if index is None or not index.fragments:
            continue
        zero = index.zero(segment)
        scale = index.timescale
        fragments = index.fragments
        groups = group_fragments([(f.keyframe, f.duration / scale) for f in fragments], target)
        for group in groups:
            first = fragments[group[0]]
            last = fragments[group[-1]]
            chunk_start = zero + first.base / scale
            chunk_end = zero + (last.base + last.duration) / scale
            if chunk_end <= start or chunk_start >= end:
                continue
            chunks.append(
                VodChunk(
                    segment=segment,
                    index=index,
                    offset=first.offset,
                    length=last.offset + last.length - first.offset,
                    start=chunk_start,
                    duration=chunk_end - chunk_start,
                    independent=first.keyframe,
                )
            )
    return chunks
