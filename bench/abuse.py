"""Offer storm: Home Assistant's responsiveness while 200 WebRTC offers hang without candidates.

One real RTSP camera behind the embedded engine, in Home Assistant. One websocket connection
sends 200 `camera/webrtc/offer`s shaped like the frontend's (no candidates in the SDP) and
never sends a candidate after them, so every answered viewer stays pending until its connect
timeout (production: 30 s) closes it.
Meanwhile, on Home Assistant's event loop:

- lag: a task sleeps 10 ms again and again and records how late it wakes up;
- ping: a second websocket connection sends `{"type": "ping"}` every 100 ms (the next one right
  after the pong when a round trip takes longer) and records the round trip;
- fds: the process's open file descriptors (psutil), the most seen in each phase.

Phases: before (idle, 5 s); during (from the first offer until all 200 replies arrived, plus
5 s); pending (until the connect timeout has closed every viewer); after (idle again, 5 s).

Two scenarios, each with a fresh entry: the default viewer limits (10 per camera, 50 in all),
and the limits raised to 200 so that every offer is answered: what the cap saves.
The event loop runs without asyncio's debug mode (which the test harness turns on and which
production does not have) while measuring. Goal: lag p99 < 50 ms during the capped storm.

Run: .venv/bin/python -m bench.abuse
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
import time
from typing import Any

from aiortc import RTCPeerConnection
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import psutil
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import (
    CONF_MAX_VIEWERS,
    CONF_MAX_VIEWERS_PER_CAMERA,
    DEFAULT_MAX_VIEWERS,
    DEFAULT_MAX_VIEWERS_PER_CAMERA,
    DOMAIN,
    VIEWER_CONNECT_TIMEOUT,
)
from tests.conftest import camera_subentry, hub_entry_data
from tests.infra.media import make_default_clip
from tests.infra.rtsp import RtspServer
from tests.webrtc_client import WsRouter, split_sdp_candidates

from ._harness import CACHE

OFFERS = 200
IDLE_SECONDS = 5.0
AFTER_STORM_SECONDS = 5.0
LAG_SLEEP = 0.010
PING_EVERY = 0.100
GOAL_LAG_P99_MS = 50.0
PHASES = ("before", "during", "pending", "after")


@pytest.fixture
def camera(socket_enabled: None) -> Iterator[RtspServer]:
    clip = make_default_clip(CACHE)
    server = RtspServer({"cam": clip})
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def _camera_entry(
    hass: HomeAssistant, url: str, storage: Path, *, name: str, per_camera: int, total: int
) -> AsyncIterator[tuple[MockConfigEntry, str]]:
    """A loaded hub with one camera (as `setup_camera`, without auth) and these limits."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="LightNVR",
        data={
            **hub_entry_data(storage),
            CONF_MAX_VIEWERS_PER_CAMERA: per_camera,
            CONF_MAX_VIEWERS: total,
        },
        subentries_data=[camera_subentry(name, url)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    try:
        hub = entry.runtime_data.engine.hub(next(iter(entry.subentries)))
        async with asyncio.timeout(30):
            while hub.latest_keyframe() is None:
                await asyncio.sleep(0.1)
        (entity_id,) = (
            e.entity_id
            for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
            if e.domain == "camera"
        )
        yield entry, entity_id
    finally:
        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


async def _browser_offer() -> str:
    """An offer shaped like HA's frontend's (audio, then video, both receive-only).

    Without candidates, as a browser sends it: its candidates would follow one by one
    (`camera/webrtc/candidate`), which the storm never sends.
    """
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp, _candidates = split_sdp_candidates(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def _offer_storm(
    router: WsRouter, entity_id: str, offer: str, count: int
) -> list[dict[str, Any]]:
    """Send `count` offers, never a candidate; return each one's answer or error event."""
    ids = [
        await router.send({"type": "camera/webrtc/offer", "entity_id": entity_id, "offer": offer})
        for _ in range(count)
    ]
    replies = []
    for msg_id in ids:
        queue = router.queue(msg_id)
        async with asyncio.timeout(120):
            while True:
                message = await queue.get()
                if message["type"] == "result":
                    assert message["success"], message
                    continue
                event = message["event"]
                if event["type"] in ("answer", "error"):
                    replies.append(event)
                    break
    return replies


@dataclass
class Monitor:
    """Event loop lag, websocket ping round trips and open fds, sorted into phases."""

    ping_router: WsRouter
    phase: str | None = None
    lag: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ping: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    fds: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _process: psutil.Process = field(default_factory=psutil.Process)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lag()), asyncio.create_task(self._ping())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _count_fds(self) -> None:
        if self.phase is not None:
            self.fds[self.phase] = max(self.fds.get(self.phase, 0), self._process.num_fds())

    async def _lag(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_SLEEP)
            overshoot = time.monotonic() - started - LAG_SLEEP
            if self.phase is not None:
                self.lag[self.phase].append(overshoot)

    async def _ping(self) -> None:
        while True:
            phase = self.phase
            started = time.monotonic()
            reply = await self.ping_router.call({"type": "ping"}, timeout=120)
            rtt = time.monotonic() - started
            assert reply["type"] == "pong", reply
            if phase is not None:
                self.ping[phase].append(rtt)
            self._count_fds()
            await asyncio.sleep(max(0.0, PING_EVERY - rtt))

    async def measure(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self._count_fds()
        await asyncio.sleep(seconds)
        self._count_fds()


@dataclass
class Result:
    name: str
    answered: int
    refused: int
    storm_seconds: float
    pending_seconds: float
    lag: dict[str, list[float]]
    ping: dict[str, list[float]]
    fds: dict[str, int]


async def _scenario(
    hass: HomeAssistant,
    routers: tuple[WsRouter, WsRouter],
    camera: RtspServer,
    storage: Path,
    *,
    name: str,
    per_camera: int,
    total: int,
) -> Result:
    storm_router, ping_router = routers
    entered = _camera_entry(
        hass, camera.url("cam"), storage, name=name, per_camera=per_camera, total=total
    )
    async with entered as (entry, entity_id):
        engine = entry.runtime_data.engine
        offer = await _browser_offer()
        monitor = Monitor(ping_router)
        monitor.start()
        try:
            await asyncio.sleep(1.0)  # settle: the camera's first seconds, the monitor's start
            await monitor.measure("before", IDLE_SECONDS)
            monitor.phase = "during"
            first_offer = time.monotonic()
            replies = await _offer_storm(storm_router, entity_id, offer, OFFERS)
            storm_seconds = time.monotonic() - first_offer
            await monitor.measure("during", AFTER_STORM_SECONDS)
            monitor.phase = "pending"
            pending_started = time.monotonic()
            async with asyncio.timeout(VIEWER_CONNECT_TIMEOUT + 60):
                while engine.viewer_count:
                    await asyncio.sleep(0.1)
            pending_seconds = time.monotonic() - pending_started
            await monitor.measure("after", IDLE_SECONDS)
        finally:
            monitor.phase = None
            await monitor.stop()
    types = [r["type"] for r in replies]
    return Result(
        name,
        types.count("answer"),
        types.count("error"),
        storm_seconds,
        pending_seconds,
        monitor.lag,
        monitor.ping,
        monitor.fds,
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def _rows(result: Result) -> list[str]:
    rows = []
    for phase in PHASES:
        lag, ping = result.lag[phase], result.ping[phase]
        during = phase == "during"
        answered = str(result.answered) if during else "-"
        refused = str(result.refused) if during else "-"
        lag_cell = f"{_pct(lag, 0.5):.1f} / {_pct(lag, 0.99):.1f}" if lag else "n/a"
        lag_max = f"{max(lag) * 1000:.0f}" if lag else "n/a"
        ping_cell = f"{_pct(ping, 0.5):.1f} / {_pct(ping, 0.99):.1f}" if ping else "n/a"
        rows.append(
            f"| {result.name:<17} | {phase:<7} | {answered:>8} | {refused:>7} | {lag_cell:>15} "
            f"| {lag_max:>12} | {ping_cell:>16} | {result.fds.get(phase, 0):>5} |"
        )
    return rows


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("webrtc_loopback")
async def bench_offer_storm(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, camera: RtspServer, tmp_path: Path
) -> None:
    """Print the table."""
    # Views are registered before the websocket clients start HA's HTTP server (and freeze it).
    for component in (DOMAIN, "camera"):
        assert await async_setup_component(hass, component, {})
    routers = (WsRouter(await hass_ws_client(hass)), WsRouter(await hass_ws_client(hass)))
    debug = hass.loop.get_debug()
    hass.loop.set_debug(False)  # production runs without asyncio's debug mode
    try:
        capped = await _scenario(
            hass,
            routers,
            camera,
            tmp_path / "capped",
            name="Capped",
            per_camera=DEFAULT_MAX_VIEWERS_PER_CAMERA,
            total=DEFAULT_MAX_VIEWERS,
        )
        raised = await _scenario(
            hass,
            routers,
            camera,
            tmp_path / "raised",
            name="Raised",
            per_camera=OFFERS,
            total=OFFERS,
        )
    finally:
        hass.loop.set_debug(debug)
        for router in routers:
            await router.close()
    capped.name = f"capped {DEFAULT_MAX_VIEWERS_PER_CAMERA}/cam"
    raised.name = f"raised {OFFERS}/cam"

    print()
    print(
        f"{OFFERS} WebRTC offers that never send a candidate, one camera (embedded engine); "
        f"lag = 10 ms sleep overshoot on HA's loop, ping = websocket round trip every 100 ms"
    )
    print(
        "| scenario          | phase   | answered | refused | lag p50/p99 ms  | lag max (ms) "
        "| ping p50/p99 ms  |   fds |"
    )
    print(
        "|-------------------|---------|----------|---------|-----------------|--------------"
        "|------------------|-------|"
    )
    for result in (capped, raised):
        for row in _rows(result):
            print(row)
    print(
        "\nPhases: before = idle 5 s; during = first offer → all replies + 5 s; pending = until "
        f"the connect timeout ({VIEWER_CONNECT_TIMEOUT:g} s) closed every answered viewer; "
        "after = idle 5 s. fds = most open file descriptors of the process seen in the phase."
    )
    for result in (capped, raised):
        print(
            f"{result.name}: all {OFFERS} replies in {result.storm_seconds:.2f} s; "
            f"pending viewers all closed {result.pending_seconds:.1f} s after the during phase"
        )
    saved = raised.fds["during"] - capped.fds["during"]
    print(f"The cap saves {saved} open file descriptors at the storm's peak.")
    p99 = _pct(capped.lag["during"], 0.99)
    verdict = "met" if p99 < GOAL_LAG_P99_MS else "NOT met"
    print(
        f"Goal: lag p99 during the capped storm < {GOAL_LAG_P99_MS:g} ms: {verdict} ({p99:.1f} ms)"
    )
