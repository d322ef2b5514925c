"""Review timeline: `lightnvr/timeline` and `lightnvr/playback` over a month of one-minute files.

One LightNVR hub in Home Assistant with one camera (a real RTSP camera; recording off, so only
the synthetic files are indexed). Its day indexes are filled with 30 days × 1,440 one-minute
segments (an hour missing every day at a different time, so spans and gaps are many) and 300
event clips with snapshots (their thumbnails are signed in every answer). The files do not
exist: the commands answer from the in-memory indexes and never read them (a playback would
read its first file's boxes for the exact playlist start; without the file it uses the index's
start, so the playback row leaves out that one cached file read).

Measured per command, each asked `RUNS` times over one websocket connection:
- round trip: from sending the command until its answer is parsed (in-process client on the
  same event loop, so this is server time plus the websocket's own overhead);
- query: the executor part alone (index → spans, gaps, events → page), called directly.

Goal: the 30-day timeline answered in ≤ 200 ms.

Run: .venv/bin/python -m bench.timeline
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
import statistics
import time
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import CONF_MIN_FREE_GB, CONF_RETENTION_DAYS, DOMAIN
from custom_components.lightnvr.recorder.clips import EventClip
from custom_components.lightnvr.recorder.storage import Segment
from custom_components.lightnvr.review.timeline import build_timeline, find_playback, page
from custom_components.lightnvr.websocket_api import DEFAULT_LIMIT
from tests.conftest import camera_subentry, hub_entry_data
from tests.infra.rtsp import RtspServer

ENTITY_ID = "camera.bench"
DAYS = 30
CLIPS = 300
RUNS = 30
GOAL_MS = 200.0


@pytest.fixture
async def bench_entry(
    hass: HomeAssistant, bench_camera: RtspServer, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A loaded hub with one camera, recording off, retention and free-space floor off."""
    assert await async_setup_component(hass, "http", {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            # Nothing may delete the synthetic files from the index while measuring.
            CONF_RETENTION_DAYS: 0,
            CONF_MIN_FREE_GB: 0,
        },
        subentries_data=[camera_subentry("Bench", bench_camera.url("cam"), record=False)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


def _fill(
    entry: MockConfigEntry,
    now: float,
    *,
    camera_id: str | None = None,
    days: int = DAYS,
    clips: int = CLIPS,
) -> tuple[int, int]:
    """Index `days` × 1,440 one-minute files ending at `now` and `clips` clips for a camera.

    The camera is the hub's first unless named. Returns the hub's segment and clip counts.
    """
    camera_id = camera_id or next(iter(entry.subentries))
    runtime = entry.runtime_data
    root = runtime.recorder.layout.root / camera_id
    events = runtime.clips.layout.root / camera_id
    origin = now - days * 86400
    for minute in range(days * 1440):
        day, in_day = divmod(minute, 1440)
        if (day * 37) % 1380 <= in_day < (day * 37) % 1380 + 60:
            continue  # an hour missing every day
        start = origin + minute * 60 + 0.01
        name = datetime.fromtimestamp(start, UTC)
        path = root / f"{name:%Y-%m-%d}" / f"{name:%H-%M-%S}.mp4"
        runtime.recorder.index.add(Segment(camera_id, path, start, start + 59.995, 4_000_000))
    for number in range(clips):
        start = origin + number * (days * 86400 / clips) + 5
        name = datetime.fromtimestamp(start, UTC)
        path = events / f"{name:%Y-%m-%d}" / f"{name:%H-%M-%S}_person.mp4"
        runtime.clips.index.add(
            EventClip(
                camera_id,
                path,
                start,
                start + 20,
                ("person", "car"),
                1_000_000,
                confidence=0.9,
                box={"x": 0.1, "y": 0.1, "width": 0.2, "height": 0.3},
                snapshot=path.with_suffix(".jpg"),
                trigger=start + 5,
            )
        )
    return len(runtime.recorder.index), len(runtime.clips.index)


async def _time(ask: Callable[[], Awaitable[Any]], runs: int) -> tuple[list[float], Any]:
    times, answer = [], None
    for _ in range(runs):
        started = time.perf_counter()
        answer = await ask()
        times.append((time.perf_counter() - started) * 1000)
    return times, answer


def _stats(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


@pytest.mark.timeout(600)
async def bench_timeline(
    hass: HomeAssistant, bench_entry: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    """Print the table."""
    now = time.time()
    segments, clips = _fill(bench_entry, now)
    camera_id = next(iter(bench_entry.subentries))
    runtime = bench_entry.runtime_data
    ws = await hass_ws_client(hass)

    async def command(**message: Any) -> Any:
        await ws.send_json_auto_id(message)
        reply = await ws.receive_json()
        assert reply["success"], reply
        return reply["result"]

    rows: list[tuple[str, list[float], list[float], str]] = []
    for days in (1, 7, DAYS):
        start = now - days * 86400

        async def ask(start: float = start) -> Any:
            return await command(
                type="lightnvr/timeline", entity_id=ENTITY_ID, start=start, end=now
            )

        def query(start: float = start) -> Any:
            timeline = build_timeline(
                runtime.recorder.index, runtime.clips.index, camera_id, start, now, now=now
            )
            return page(timeline, DEFAULT_LIMIT)

        await ask()  # warm up
        trips, answer = await _time(ask, RUNS)
        queries = [
            (await _time(lambda query=query: hass.async_add_executor_job(query), 1))[0][0]
            for _ in range(RUNS)
        ]
        shown = f"{len(answer['spans'])} spans, {len(answer['gaps'])} gaps, "
        shown += f"{len(answer['events'])} events"
        rows.append((f"timeline {days} d", trips, queries, shown))

    moment = now - 12.5 * 86400 + 123.4

    async def play() -> Any:
        return await command(type="lightnvr/playback", entity_id=ENTITY_ID, time=moment)

    def find() -> Any:
        return find_playback(runtime.recorder.index, camera_id, moment, 3600, 2000)

    await play()
    trips, answer = await _time(play, RUNS)
    queries = [
        (await _time(lambda: hass.async_add_executor_job(find), 1))[0][0] for _ in range(RUNS)
    ]
    rows.append(("playback", trips, queries, f"offset {answer['offset']:.1f} s"))

    print()
    print(
        f"Review websocket API: {segments} one-minute files over {DAYS} days, {clips} clips, "
        f"{RUNS} runs each (ms)"
    )
    print("| command        | round trip median | p90    | query median | p90    | answer")
    print("|----------------|-------------------|--------|--------------|--------|--------")
    for name, trips, queries, shown in rows:
        trip_median, trip_p90 = _stats(trips)
        query_median, query_p90 = _stats(queries)
        print(
            f"| {name:<14} | {trip_median:>17.1f} | {trip_p90:>6.1f} | {query_median:>12.1f} "
            f"| {query_p90:>6.1f} | {shown}"
        )
    worst = _stats(rows[2][1])[1]
    verdict = "met" if worst <= GOAL_MS else "NOT met"
    print(f"Goal: {DAYS}-day timeline ≤ {GOAL_MS:g} ms (round trip p90): {verdict} ({worst:.1f})")
