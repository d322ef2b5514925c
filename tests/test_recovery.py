"""A camera that comes back after a reboot streams again within seconds, however long it was away.

Without the reachability probe, the hub's back-off (1, 2, 4 … 60 s) decides: a camera away for
two minutes waits up to a minute more. With it, the hub notices the camera's port answering.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .infra.outage import measure_recoveries

# The goal is 5 s from the camera answering to frames; the margin absorbs a loaded CI machine
# (the RTSP server's own pipeline start is part of the figure). bench/recovery.py prints them.
GOAL_SECONDS = 5.0
MARGIN_SECONDS = 3.0


@pytest.mark.timeout(400)
@pytest.mark.usefixtures("socket_enabled")
async def test_camera_back_within_seconds_after_2_30_and_120_s_away(camera_clip: Path) -> None:
    """Three cameras away for 2, 30 and 120 s (at once): each streams again within seconds."""
    outages = (2.0, 30.0, 120.0)
    recoveries = await measure_recoveries(camera_clip, outages)
    for away, seconds in zip(outages, recoveries, strict=True):
        assert seconds <= GOAL_SECONDS + MARGIN_SECONDS, (away, seconds)
