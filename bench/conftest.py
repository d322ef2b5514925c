"""Benchmarks run inside the test harness (a real HA core in-process): reuse the test fixtures."""

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import auto_enable_custom_integrations, media_cache, webrtc_loopback  # noqa: F401 - pytest finds fixtures by name
from tests.infra.media import make_default_clip
from tests.infra.rtsp import RtspServer

from ._harness import CACHE


@pytest.fixture(autouse=True)
async def production_event_loop() -> None:
    """Measure the event loop as Home Assistant runs it: without asyncio's debug mode.

    The test harness turns debug mode on; it then records a traceback for every task, future
    and callback, which costs more than much of what the benchmarks measure.
    """
    asyncio.get_running_loop().set_debug(False)


@pytest.fixture
def bench_camera(socket_enabled: None) -> Iterator[RtspServer]:
    """A real RTSP camera (640×360 H.264, keyframe every second) for benchmarks that need one."""
    with RtspServer({"cam": make_default_clip(CACHE)}) as server:
        yield server
