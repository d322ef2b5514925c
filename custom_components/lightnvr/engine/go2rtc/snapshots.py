"""Snapshots on the go2rtc engine: go2rtc's `/api/frame.jpeg`, else the hub's newest keyframe.

go2rtc already holds the camera's picture, so asking it costs LightNVR no decode. When go2rtc
has none (not running, or no picture yet) the hub's keyframe is decoded instead, the way the
built-in engine does it (`..snapshot`).
"""

from __future__ import annotations

import logging

from homeassistant.core import HomeAssistant

from ...hub import StreamHub
from ..snapshot import SnapshotError, keyframe_to_jpeg, target_size
from .client import Go2RtcApiError, Go2RtcClient

_LOGGER = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT = 8.0


async def async_snapshot(
    hass: HomeAssistant,
    client: Go2RtcClient | None,
    name: str,
    hub: StreamHub | None,
    *,
    width: int | None,
    height: int | None,
) -> bytes | None:
    """Return go2rtc's frame.jpeg of stream `name`, or decode the hub's newest keyframe."""
    info = hub.info if hub is not None else None
    if width or height:
        # go2rtc scales with ffmpeg, upscaling too: never ask for more than the camera has
        # (a huge size costs CPU and memory); the camera's size while it is not known.
        size = target_size((info.width, info.height), width, height) if info else None
        width, height = size if size is not None else (None, None)
    if client is not None:
        try:
            jpeg = await client.async_frame(name, width, height, SNAPSHOT_TIMEOUT)
        except Go2RtcApiError as err:
            _LOGGER.debug("go2rtc snapshot of %s failed: %s", name, err)
        else:
            if jpeg:
                return jpeg
    # frame.jpeg answers 200 with an empty body when go2rtc has no picture.
    keyframe = hub.latest_keyframe() if hub is not None else None
    if keyframe is None or info is None:
        return None
    try:
        return await hass.async_add_executor_job(keyframe_to_jpeg, info, keyframe, width, height)
    except SnapshotError as err:
        _LOGGER.debug("Snapshot of %s failed: %s", name, err)
        return None
