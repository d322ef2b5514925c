"""Live HLS bytes: init sections, segments and parts, all from memory.

Chunks are the camera muxer's fragments (the same ones the recorder writes), moved onto
the shared wall-clock timeline when first served, in the executor (a whole segment's bytes
are then kept).
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant

from .live_types import LiveChunk, LiveInit, LiveSegment


async def async_init_bytes(hass: HomeAssistant, init: LiveInit) -> bytes | None:
    """Return an init section."""
    return init.data


async def async_segment_bytes(hass: HomeAssistant, segment: LiveSegment) -> bytes | None:
    """Return a segment's bytes on the shared timeline (retimed the first time)."""
    if segment.data is None:
        chunks = segment.parts

        def join() -> bytes:
            return b"".join(chunk.wall_clock_bytes() for chunk in chunks)

        segment.data = await hass.async_add_executor_job(join)
    return segment.data


async def async_part_bytes(hass: HomeAssistant, chunk: LiveChunk, init: LiveInit) -> bytes | None:
    """Return a part's bytes on the shared timeline (retimed in the executor).

    A part is retimed again for every request: parts are small (one fragment) and only the
    few newest are asked for, so they are not worth keeping next to their segment.
    """
    if chunk.data is not None:
        return chunk.data
    return await hass.async_add_executor_job(chunk.wall_clock_bytes)
