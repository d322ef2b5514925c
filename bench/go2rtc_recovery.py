"""go2rtc crash recovery: kill -9 the managed go2rtc, time until everything works again.

Three cameras (real RTSP server) behind the go2rtc engine in managed mode; the "go2rtc binary"
is the protocol double from tests/go2rtc_double (a real subprocess; its start-up costs what a
Python process costs, a real go2rtc starts faster). Each run, after a stable period:

    SIGKILL → every stream registered again (GET /api/streams of the new process)
            → a WebRTC offer answered (aiortc viewer, signalling through the engine)
            → the viewer's first decoded picture; all hubs reading the restream again

The watchdog uses its production back-off (first restart after 1 s); only its check interval
(1 s), its stable period (3 s, after which the back-off starts over) and its rate limit are
changed so that runs can follow each other. Goal: median kill → offer answered ≤ 5 s.

Run: .venv/bin/python -m bench.go2rtc_recovery
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
from collections.abc import Iterator
import os
import signal
import statistics
import time
from typing import Any

from homeassistant.core import HomeAssistant
import pytest

from custom_components.lightnvr.engine.go2rtc import HealthTimings, stream_name
from custom_components.lightnvr.hub import HubState
from tests.go2rtc_double.fixtures import *  # noqa: F403 - fixtures (engines, double, sockets)
from tests.go2rtc_double.fixtures import EngineFactory, EngineViewer, camera_config
from tests.infra.media import make_default_clip
from tests.infra.rtsp import RtspServer

from ._harness import CACHE

RUNS = 7
CAMERAS = ("cam1", "cam2", "cam3")
# Longer than the watchdog's stable period and the hubs' (10 s): every kill meets back-offs
# that have started over, like a crash after a quiet while.
STABLE_WAIT = 11.0
# Production timings except the check interval, the stable period and the rate limit (which
# would, rightly, stop restarting after 5 kills in 10 minutes).
TIMINGS = HealthTimings(interval=1.0, stable_after=3.0, restart_limit=RUNS + 1)


@pytest.fixture
def three_cameras(socket_enabled: None) -> Iterator[RtspServer]:
    clip = make_default_clip(CACHE)
    server = RtspServer(dict.fromkeys(CAMERAS, clip))
    server.start()
    yield server
    server.stop()


async def _until(predicate: Any, timeout: float = 60.0) -> float:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)
    return time.monotonic()


async def _one_run(engine: Any, ids: list[str], run: int) -> dict[str, float]:
    names = {stream_name(c) for c in ids}
    generations = {c: engine.hub(c).info.generation for c in ids}
    old_pid = engine.process_pid
    killed = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)

    async def _registered() -> bool:
        if engine.process_pid in (None, old_pid):
            return False
        try:
            return names <= set(await engine.async_check_api(1.0))
        except Exception:
            return False

    registered = await _until(_registered)
    viewer = EngineViewer(engine, ids[run % len(ids)], session_id=f"bench-{run}")
    try:
        await viewer.start()
        await asyncio.wait_for(viewer.answered.wait(), 30)
        answered = time.monotonic()
        assert not viewer.errors, viewer.errors
        await viewer.wait_frames(1, timeout=30)
        first_frame = time.monotonic()
    finally:
        await viewer.close()

    async def _hubs_back() -> bool:
        return all(
            engine.hub(c).state is HubState.STREAMING
            and engine.hub(c).info.generation > generations[c]
            for c in ids
        )

    hubs = await _until(_hubs_back)
    return {
        "registered": registered - killed,
        "answered": answered - killed,
        "first_frame": first_frame - killed,
        "hubs": hubs - killed,
    }


def _row(name: str, values: list[float]) -> str:
    return (
        f"| {name:<44} | {len(values):>4} | {statistics.median(values):>7.2f} | "
        f"{min(values):>7.2f} | {max(values):>7.2f} |"
    )


@pytest.mark.usefixtures("webrtc_loopback", "allow_unix_sockets")
async def bench_go2rtc_recovery(
    hass: HomeAssistant, engines: EngineFactory, three_cameras: RtspServer
) -> None:
    """Print the table."""
    engine = await engines.managed(timings=TIMINGS)
    ids = []
    for mount in CAMERAS:
        ids.append(f"bench_{mount}")
        await engine.async_add_camera(camera_config(ids[-1], three_cameras.url(mount)))
    results: list[dict[str, float]] = []
    for run in range(RUNS):

        async def _ready() -> bool:
            return engine.health.healthy and all(
                engine.hub(c).state is HubState.STREAMING for c in ids
            )

        await _until(_ready)
        await asyncio.sleep(STABLE_WAIT)
        results.append(await _one_run(engine, ids, run))
    assert engine.health.restart_count == RUNS

    print()
    print(f"go2rtc (protocol double) kill -9 → recovery, {len(CAMERAS)} cameras, seconds")
    print("| from kill -9 until                           | runs |  median |     min |     max |")
    print("|----------------------------------------------|------|---------|---------|---------|")
    print(_row("every stream registered again", [r["registered"] for r in results]))
    print(_row("a WebRTC offer answered", [r["answered"] for r in results]))
    print(_row("the viewer's first decoded picture", [r["first_frame"] for r in results]))
    print(_row("every hub reading the restream again", [r["hubs"] for r in results]))
    answered = statistics.median(r["answered"] for r in results)
    verdict = "met" if answered <= 5.0 else "NOT met"
    print(f"\nGoal: median kill → offer answered <= 5 s: {verdict} ({answered:.2f} s)")
