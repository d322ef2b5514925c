"""Live HLS bytes: init sections, segments and parts, from memory or the recording being written.

The in-memory muxer's chunks are already on the shared wall-clock timeline; the recorder's are
read from its file (in the executor) and retimed with the shifts of their init section.
"""

from __future__ import annotations

from pathlib import Path

from homeassistant.core import HomeAssistant

from ..media.bmff import parse_tracks, retime_fragments, timeline_shifts
from .live_types import LiveChunk, LiveInit, LiveSegment, read_recording_range


async def async_init_bytes(hass: HomeAssistant, init: LiveInit) -> bytes | None:
    """Return an init section (reading it from the recording the first time)."""
    if init.data is not None:
        return init.data
    if init.path is None:
        return None
    try:
        data = await hass.async_add_executor_job(read_recording_range, init.path, 0, init.length)
    except OSError:
        return None
    init.shifts = timeline_shifts(parse_tracks(data), init.zero)
    init.data = data
    return data


async def async_segment_bytes(hass: HomeAssistant, segment: LiveSegment) -> bytes | None:
    """Return a segment's bytes on the shared timeline (read from disk the first time)."""
    if segment.data is None and segment.path is not None:
        segment.data = await _async_read(
            hass, segment.init, segment.path, segment.offset, segment.length
        )
    return segment.data


async def async_part_bytes(hass: HomeAssistant, chunk: LiveChunk, init: LiveInit) -> bytes | None:
    """Return a part's bytes on the shared timeline.

    A recorder part is read again for every request: parts are small (one fragment) and only
    the few newest are asked for, so they are not worth keeping next to their segment's bytes.
    """
    if chunk.data is not None or chunk.path is None:
        return chunk.data
    return await _async_read(hass, init, chunk.path, chunk.offset, chunk.length)


async def _async_read(
    hass: HomeAssistant, init: LiveInit, path: Path, offset: int, length: int
) -> bytes | None:
    """Read fragments of a recording and put them on the shared timeline (executor)."""
    if await async_init_bytes(hass, init) is None:
        return None
    shifts = init.shifts

    def read() -> bytes:
        data = bytearray(read_recording_range(path, offset, length))
        retime_fragments(data, shifts)
        return bytes(data)

    try:
        return await hass.async_add_executor_job(read)
    except OSError:
        return None
