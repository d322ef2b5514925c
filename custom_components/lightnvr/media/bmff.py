"""ISO BMFF (MP4) boxes: the integration's one box walker, and tfdt patching.

Everything that reads MP4 structure goes through here: the camera muxer cutting its in-memory
output into fragments (`iter_boxes`, `parse_moof`), crash recovery and the VOD index walking
files on disk (`iter_file_boxes`), and whatever moves fragments onto another timeline
(`retime_fragments`, `patch_tfdt`: a recording file starting at 0, live HLS on the wall
clock). Only what FFmpeg's fragmented-MP4 muxer writes is understood; anything cut short ends
a walk instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
import struct
from typing import BinaryIO

_NON_SYNC_SAMPLE = 0x00010000  # ISO BMFF sample flag: sample_is_non_sync_sample


# ----- walking boxes ----------------------------------------------------------------------------


def iter_boxes(
    data: bytes | bytearray, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield (type, box start, body start, box end) of the ISO BMFF boxes in data[start:end].

    Stops at the first box that is cut short (a fragment still being written).
    """
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield bytes(kind), pos, pos + header, pos + size
        pos += size


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, body start, box end) of the ISO BMFF boxes in data[start:end]."""
    for kind, _, body, box_end in iter_boxes(data, start, end):
        yield kind, body, box_end


def parse_moof(body: bytes, track_id: int) -> tuple[int, int, bool] | None:
    """Return (base decode time, duration, starts with a sync sample) of a track in a `moof`.

    Times are in the track's timescale. Only the fields the muxer writes are read (tfhd
    defaults, tfdt, trun per-sample durations and flags).
    """
    for kind, start, end in _children(body, 0, len(body)):
        if kind != b"traf":
            continue
        found: int | None = None
        default_duration = 0
        default_flags: int | None = None
        base = 0
        duration = 0
        first_flags: int | None = None
        for box, bstart, bend in _children(body, start, end):
            if bend - bstart < 8:
                continue
            flags = int.from_bytes(body[bstart + 1 : bstart + 4], "big")
            if box == b"tfhd":
                found = struct.unpack_from(">I", body, bstart + 4)[0]
                pos = bstart + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
                if flags & 0x8:
                    default_duration = struct.unpack_from(">I", body, pos)[0]
                    pos += 4
                pos += 4 if flags & 0x10 else 0
                if flags & 0x20:
                    default_flags = struct.unpack_from(">I", body, pos)[0]
            elif box == b"tfdt":
                if body[bstart] == 1:
                    base = struct.unpack_from(">Q", body, bstart + 4)[0]
                else:
                    base = struct.unpack_from(">I", body, bstart + 4)[0]
            elif box == b"trun":
                count = struct.unpack_from(">I", body, bstart + 4)[0]
                pos = bstart + 8 + (4 if flags & 0x1 else 0)
                if flags & 0x4:
                    if first_flags is None:
                        first_flags = struct.unpack_from(">I", body, pos)[0]
                    pos += 4
                fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
                if 0x100 not in fields:
                    duration += default_duration * count
                for index in range(count):
                    entry = pos + index * 4 * len(fields)
                    for number, bit in enumerate(fields):
                        value = struct.unpack_from(">I", body, entry + 4 * number)[0]
                        if bit == 0x100:
                            duration += value
                        elif bit == 0x400 and index == 0 and first_flags is None:
                            first_flags = value
        if found == track_id:
            if first_flags is None:
                first_flags = default_flags if default_flags is not None else 0
            return base, duration, not first_flags & _NON_SYNC_SAMPLE
    return None


def iter_file_boxes(file: BinaryIO, size: int) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield (type, box start, header length, box size) of the top-level boxes of a file.

    Reads headers only (seeking from box to box). Stops at the first box that does not fit in
    `size` bytes: the tail of a file cut short by a crash, or still being written.
    """
    offset = 0
    while offset + 8 <= size:
        file.seek(offset)
        header = file.read(16)
        if len(header) < 8:
            return
        box_size, kind = struct.unpack(">I4s", header[:8])
        head = 8
        if box_size == 1:
            if len(header) < 16:
                return
            box_size = struct.unpack(">Q", header[8:16])[0]
            head = 16
        elif box_size == 0:
            box_size = size - offset  # "to the end of the file"
        if box_size < head or offset + box_size > size:
            return
        yield bytes(kind), offset, head, box_size
        offset += box_size


# ----- tracks and timing ------------------------------------------------------------------------


def _child(data: bytes | bytearray, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for box, _, body, box_end in iter_boxes(data, start, end):
        if box == kind:
            return body, box_end
    return None


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One track of an init section."""

    track_id: int
    timescale: int
    handler: str  # "vide", "soun", …


def parse_tracks(init: bytes | bytearray) -> dict[int, TrackInfo]:
    """Return the tracks described by an init section (`ftyp`+`moov`), by track id."""
    tracks: dict[int, TrackInfo] = {}
    moov = next(((body, end) for kind, _, body, end in iter_boxes(init) if kind == b"moov"), None)
    if moov is None:
        return tracks
    for kind, _, body, end in iter_boxes(init, *moov):
        if kind != b"trak":
            continue
        tkhd = _child(init, body, end, b"tkhd")
        mdia = _child(init, body, end, b"mdia")
        if tkhd is None or mdia is None:
            continue
        version = init[tkhd[0]]
        track_id = struct.unpack_from(">I", init, tkhd[0] + (20 if version == 1 else 12))[0]
        mdhd = _child(init, mdia[0], mdia[1], b"mdhd")
        hdlr = _child(init, mdia[0], mdia[1], b"hdlr")
        if mdhd is None:
            continue
        mversion = init[mdhd[0]]
        timescale = struct.unpack_from(">I", init, mdhd[0] + (20 if mversion == 1 else 12))[0]
        handler = bytes(init[hdlr[0] + 8 : hdlr[0] + 12]) if hdlr is not None else b""
        tracks[track_id] = TrackInfo(track_id, timescale, handler.decode("latin-1"))
    return tracks


def video_track(tracks: Mapping[int, TrackInfo]) -> TrackInfo | None:
    """Return the (first) video track."""
    return next(
        (t for t in sorted(tracks.values(), key=lambda t: t.track_id) if t.handler == "vide"),
        None,
    )


def timeline_shifts(tracks: Mapping[int, TrackInfo], zero: float) -> dict[int, int]:
    """Return, per track, the ticks that put decode time 0 at epoch second `zero`."""
    return {tid: round(zero * track.timescale) for tid, track in tracks.items()}


@dataclass(frozen=True, slots=True)
class TfdtField:
    """Where one `tfdt` value sits in a file, and what it says."""

    position: int  # absolute file offset of the value
    size: int  # 8 (version 1) or 4 (version 0)
    track_id: int
    value: int


def traf_fields(
    data: bytes | bytearray, moof_body: int, moof_end: int, base: int
) -> Iterator[TfdtField]:
    """Yield the tfdt fields of a moof's trafs; `base` maps buffer offsets to file offsets."""
    for kind, _, body, end in iter_boxes(data, moof_body, moof_end):
        if kind != b"traf":
            continue
        track_id: int | None = None
        field: tuple[int, int, int] | None = None
        for box, _, bbody, bend in iter_boxes(data, body, end):
            if box == b"tfhd" and bend - bbody >= 8:
                track_id = struct.unpack_from(">I", data, bbody + 4)[0]
            elif box == b"tfdt" and bend - bbody >= 8:
                if data[bbody] == 1 and bend - bbody >= 12:
                    field = (bbody + 4, 8, struct.unpack_from(">Q", data, bbody + 4)[0])
                else:
                    field = (bbody + 4, 4, struct.unpack_from(">I", data, bbody + 4)[0])
        if track_id is not None and field is not None:
            yield TfdtField(base + field[0], field[1], track_id, field[2])


def retime_fragments(data: bytearray, shifts: Mapping[int, int]) -> None:
    """Shift the tfdt of every fragment in `data` (whole moof+mdat pairs) in place."""
    for kind, _, body, end in iter_boxes(data):
        if kind == b"moof":
            for tfdt in traf_fields(data, body, end, 0):
                patch_tfdt(data, 0, tfdt, shifts)


def patch_tfdt(
    data: bytearray, data_offset: int, tfdt: TfdtField, shifts: Mapping[int, int]
) -> None:
    """Write the shifted value of `tfdt` into `data`, which holds the file from `data_offset`."""
    shift = shifts.get(tfdt.track_id)
    if not shift:
        return
    value = tfdt.value + shift
    if tfdt.size == 4:
        if value >= 1 << 32:
            return  # cannot hold it; FFmpeg's muxer always writes version 1 anyway
        raw = value.to_bytes(4, "big")
    else:
        raw = value.to_bytes(8, "big")
    start = tfdt.position - data_offset
    lo = max(0, -start)
    hi = min(len(raw), len(data) - start)
    if lo < hi:
        data[start + lo : start + hi] = raw[lo:hi]
