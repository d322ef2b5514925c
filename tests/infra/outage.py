"""Camera outages: stop a real RTSP camera for a while, time how soon its hub streams again.

Shared by the recovery test and `bench/recovery.py`. Every outage gets its own camera (an RTSP
server process) and its own hub, and all outages run at once, so a 2 s, a 30 s and a 120 s
outage take 120 s in all. A camera "answers again" when its server listens again; the figure is
the time from then to the hub's first packet of the new connection, on the event loop's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from custom_components.lightnvr.hub import HubState, StreamHub
from custom_components.lightnvr.source import CameraSource

from .rtsp import RtspServer


async def _wait(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def _one_outage(clip: Path, away: float) -> float:
    loop = asyncio.get_running_loop()
    server = RtspServer({"cam": clip})
    await loop.run_in_executor(None, server.start)
    hub = StreamHub(f"outage-{away:g}", CameraSource(server.url("cam")), loop)
    hub.start()
    try:
        await _wait(lambda: hub.state is HubState.STREAMING, 30)
        await loop.run_in_executor(None, server.stop)
        await _wait(lambda: hub.state is HubState.RECONNECTING, 30)
        await asyncio.sleep(away)
        await loop.run_in_executor(None, server.start)
        back = loop.time()
        packets = hub.stats().packets
        await _wait(
            lambda: hub.state is HubState.STREAMING and hub.stats().packets > packets, away + 90
        )
        return loop.time() - back
    finally:
        await hub.async_stop()
        await loop.run_in_executor(None, server.stop)


async def measure_recoveries(clip: Path, outages: Sequence[float]) -> list[float]:
    """Return, per outage length (seconds away), the seconds until frames flow again."""
    return list(await asyncio.gather(*(_one_outage(clip, away) for away in outages)))
