"""Benchmarks run inside the test harness (a real HA core in-process): reuse the test fixtures."""

import asyncio

import pytest

from tests.conftest import auto_enable_custom_integrations, media_cache, webrtc_loopback  # noqa: F401 - pytest finds fixtures by name


@pytest.fixture(autouse=True)
async def production_event_loop() -> None:
    """Measure the event loop as Home Assistant runs it: without asyncio's debug mode.

    The test harness turns debug mode on; it then records a traceback for every task, future
    and callback, which costs more than much of what the benchmarks measure.
    """
    asyncio.get_running_loop().set_debug(False)
