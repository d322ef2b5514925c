"""Live HLS: LightNVR's playlists vs Home Assistant's own stream component, same camera, same run.

Latency — when a frame arrived from the camera vs when the segment (or LL-HLS part, ours and
HA's) that starts with it is first listed in the playlist. The arrival time is measured once for
both: a subscriber on LightNVR's hub records the wall time of every video packet, keyed by the
bytes of its slice. The first frame of each listed segment is then looked up by its bytes, so
neither side's own EXT-X-PROGRAM-DATE-TIME is trusted (HA's starts when its worker starts,
not when the frame arrived). Both read the same GStreamer mount, which sends every client the
same packets at the same time. Playlists are polled every 50 ms.

Time to first playable segment — from the first request until a player has the init section
and a media segment: LightNVR `live.m3u8` → init → newest segment, started cold (recording
on: the camera's muxer already runs for the recorder; recording off: it may have to start);
HA `camera/stream` → master playlist → playlist → init → first segment (what the frontend does).

Our parts: one per fragment of the camera's one muxer (shared with the recorder), cut at every
keyframe and after `live.LIVE_PART_SECONDS` (0.5 s). Parts are timed by polling like HA's (not
by blocking reloads), so both sides are measured the same way.

HA's stream component runs with its default settings (LL-HLS: 6 s segments, 1 s parts) and,
in a second run, with `ll_hls: false` (2 s segments).

Run: .venv/bin/python -m bench.hls   (1080p25 H.264, keyframe every second, ~4 Mbit/s)
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
from collections.abc import AsyncIterator, Iterator
import contextlib
from dataclasses import dataclass, field
import random
import re
import statistics
import struct
import time
from typing import Any

from homeassistant.components.camera import DATA_COMPONENT as CAMERA_COMPONENT
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.hls import HlsRegistry, async_register_hls_views
from custom_components.lightnvr.hls.live_types import LiveSource
from custom_components.lightnvr.hub import StreamHub
from tests.conftest import camera_subentry, hub_entry_data
from tests.infra.media import make_h264
from tests.infra.rtsp import RtspServer
from tests.webrtc_client import WsRouter

from ._harness import CACHE

ENTITY_ID = "camera.bench"
POLL_SECONDS = 0.05
LATENCY_SECONDS = 40.0
TTFP_RUNS = 8
HA_TTFP_RUNS = 3


@pytest.fixture
def camera_1080p(socket_enabled: None) -> Iterator[RtspServer]:
    clip = make_h264(CACHE / "bench_1080p25.mp4", width=1920, height=1080, fps=25, seconds=20)
    server = RtspServer({"cam": clip})
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def bench_entry(
    hass: HomeAssistant, camera_1080p: RtspServer, tmp_path: Any
) -> AsyncIterator[tuple[MockConfigEntry, HlsRegistry]]:
    assert await async_setup_component(hass, "http", {})
    # As the integration's async_setup will: views first, the HLS service starts with the entry.
    registry = async_register_hls_views(hass)
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path),
        subentries_data=[camera_subentry("Bench", camera_1080p.url("cam"))],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    yield entry, registry
    await hass.config_entries.async_unload(entry.entry_id)


# ----- frames by their bytes --------------------------------------------------------------------


def _last_nal_annexb(data: bytes) -> bytes:
    index = data.rfind(b"\x00\x00\x01")
    return data[index + 3 :] if index >= 0 else data


def _last_nal_avcc(sample: bytes) -> bytes:
    pos = 0
    last = b""
    while pos + 4 <= len(sample):
        size = struct.unpack_from(">I", sample, pos)[0]
        last = sample[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return last


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size < 8 or pos + size > end:
            return
        yield kind, pos + 8, pos + size
        pos += size


def first_sample(fragment: bytes) -> bytes | None:
    """Return the first video sample of a `moof`+`mdat` (default-base-is-moof offsets)."""
    for kind, body, end in _boxes(fragment, 0, len(fragment)):
        if kind != b"moof":
            continue
        moof_start = body - 8
        for traf_kind, tbody, tend in _boxes(fragment, body, end):
            if traf_kind != b"traf":
                continue
            default_size = 0
            for box, bbody, _ in _boxes(fragment, tbody, tend):
                flags = int.from_bytes(fragment[bbody + 1 : bbody + 4], "big")
                if box == b"tfhd":
                    pos = bbody + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
                    pos += 4 if flags & 0x8 else 0
                    if flags & 0x10:
                        default_size = struct.unpack_from(">I", fragment, pos)[0]
                elif box == b"trun":
                    pos = bbody + 8
                    offset = 0
                    if flags & 0x1:
                        offset = struct.unpack_from(">i", fragment, pos)[0]
                        pos += 4
                    pos += 4 if flags & 0x4 else 0
                    pos += 4 if flags & 0x100 else 0
                    size = struct.unpack_from(">I", fragment, pos)[0] if flags & 0x200 else 0
                    size = size or default_size
                    start = moof_start + offset
                    return fragment[start : start + size]
            return None
    return None


@dataclass
class ArrivalClock:
    """Wall time at which each video frame arrived at LightNVR's hub, by its slice bytes."""

    seen: dict[int, list[float]] = field(default_factory=dict)

    def add(self, data: bytes, wall: float) -> None:
        self.seen.setdefault(hash(_last_nal_annexb(data)), []).append(wall)

    def arrival(self, sample: bytes, listed: float) -> float | None:
        """Return the newest arrival of this frame before `listed` (the clip loops)."""
        times = self.seen.get(hash(_last_nal_avcc(sample)), [])
        before = [t for t in times if t <= listed]
        return before[-1] if before else None


async def _follow_hub(hub: StreamHub, clock: ArrivalClock) -> None:
    queue = hub.subscribe(maxlen=4096, from_keyframe=False)
    try:
        while True:
            packet = await queue.get()
            if packet.kind == "video":
                clock.add(packet.data, time.time() - (time.monotonic() - packet.received))
    except EOFError:
        return
    finally:
        hub.unsubscribe(queue)


# ----- polling playlists --------------------------------------------------------------------


@dataclass
class Listing:
    """Latencies of one playlist's segments (and parts), first frame arrival → first listed."""

    name: str
    latencies: list[float] = field(default_factory=list)
    missed: int = 0


_PART_RE = re.compile(r'#EXT-X-PART:.*URI="([^"]+)"')


async def _measure(
    http: Any,
    *,
    clock: ArrivalClock,
    listing: Listing,
    url: str,
    listed: float,
) -> None:
    body = await (await http.get(url)).read()
    sample = first_sample(body)
    arrived = clock.arrival(sample, listed) if sample else None
    if arrived is None:
        listing.missed += 1
        return
    listing.latencies.append(listed - arrived)


async def _poll(
    http: Any,
    *,
    clock: ArrivalClock,
    playlist_url: str,
    base: str,
    segments: Listing,
    parts: Listing | None,
    seconds: float,
) -> None:
    """Poll a playlist; time every segment (and part) that appears after the first poll."""
    known: set[str] = set()
    first = True
    tasks: set[asyncio.Task[None]] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await http.get(playlist_url)
        listed = time.time()
        text = await response.text()
        found: list[tuple[str, Listing]] = [
            (line, segments) for line in text.splitlines() if line and not line.startswith("#")
        ]
        if parts is not None:
            found += [(match, parts) for match in _PART_RE.findall(text)]
        for uri, target in found:
            key = uri.split("?", 1)[0]  # our URIs are signed afresh on every playlist request
            if key in known:
                continue
            known.add(key)
            if first:
                continue  # listed before we looked: its listing time is unknown
            url = uri if uri.startswith("/") else f"{base}/{uri.removeprefix('./')}"
            task = asyncio.create_task(
                _measure(http, clock=clock, listing=target, url=url, listed=listed)
            )
            tasks.add(task)
        first = False
        await asyncio.sleep(POLL_SECONDS)
    if tasks:
        await asyncio.gather(*tasks)


# ----- time to first playable segment -------------------------------------------------------


async def _ours_first_playable(http: Any, registry: HlsRegistry, camera_id: str) -> float:
    service = registry.service()
    assert service is not None
    service.live.camera(camera_id).deactivate()  # cold: nobody watched
    started = time.monotonic()
    text = await (await http.get(f"/api/lightnvr/hls/{camera_id}/live.m3u8")).text()
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    maps = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    init, segment = await asyncio.gather(http.get(maps[-1]), http.get(uris[-1]))
    init_body, segment_body = await asyncio.gather(init.read(), segment.read())
    elapsed = time.monotonic() - started
    assert init_body[4:8] == b"ftyp"
    assert first_sample(segment_body)
    return elapsed


async def _ha_first_playable(hass: HomeAssistant, router: WsRouter, http: Any) -> float:
    started = time.monotonic()
    reply = await router.call({"type": "camera/stream", "entity_id": ENTITY_ID}, timeout=30)
    assert reply["success"], reply
    master_url = reply["result"]["url"]
    base = master_url.rsplit("/", 1)[0]
    async with asyncio.timeout(60):
        while (await http.get(master_url)).status != 200:
            await asyncio.sleep(POLL_SECONDS)
        playlist = await (await http.get(f"{base}/playlist.m3u8")).text()
        segment = next(line for line in playlist.splitlines() if line and line[0] != "#")
        init, media = await asyncio.gather(
            http.get(f"{base}/init.mp4"), http.get(f"{base}/{segment.removeprefix('./')}")
        )
        await asyncio.gather(init.read(), media.read())
    elapsed = time.monotonic() - started
    await _stop_ha_stream(hass)
    return elapsed


async def _stop_ha_stream(hass: HomeAssistant) -> None:
    camera = hass.data[CAMERA_COMPONENT].get_entity(ENTITY_ID)
    assert camera is not None
    if camera.stream is not None:  # a fresh stream for every run, as a new viewer would get
        await camera.stream.stop()
        camera.stream = None


async def _ha_stream_urls(router: WsRouter, http: Any) -> tuple[str, str]:
    reply = await router.call({"type": "camera/stream", "entity_id": ENTITY_ID}, timeout=30)
    assert reply["success"], reply
    master_url = reply["result"]["url"]
    async with asyncio.timeout(60):
        while (await http.get(master_url)).status != 200:
            await asyncio.sleep(POLL_SECONDS)
    base = master_url.rsplit("/", 1)[0]
    return f"{base}/playlist.m3u8", base


# ----- the table --------------------------------------------------------------------------------


def _row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name:<52} |    0 |        - |        - |        - |        - |"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"| {name:<52} | {len(values):>4} | {statistics.median(values):>8.3f} | "
        f"{p90:>8.3f} | {min(values):>8.3f} | {max(values):>8.3f} |"
    )


async def _wait_source(registry: HlsRegistry, camera_id: str, source: LiveSource) -> None:
    service = registry.service()
    assert service is not None
    async with asyncio.timeout(30):
        while service.live.source(camera_id) is not source:
            await asyncio.sleep(0.1)


@pytest.mark.usefixtures("socket_enabled")
# HA's stream component leaves its idle timer behind after stream.stop(); not ours to cancel.
@pytest.mark.parametrize("expected_lingering_timers", [True])
@pytest.mark.parametrize("ll_hls", [True, False], ids=["ha-ll-hls", "ha-no-ll-hls"])
async def bench_hls(  # noqa: PLR0917 - pytest passes fixtures by name
    hass: HomeAssistant,
    bench_entry: tuple[MockConfigEntry, HlsRegistry],
    hass_ws_client: Any,
    hass_client: Any,
    hass_client_no_auth: Any,
    ll_hls: bool,
) -> None:
    """Print the table."""
    entry, registry = bench_entry
    assert await async_setup_component(hass, "stream", {"stream": {"ll_hls": ll_hls}})
    camera_id = next(iter(entry.subentries))
    hub = entry.runtime_data.engine.hub(camera_id)
    recorder = entry.runtime_data.recorder
    async with asyncio.timeout(30):
        while hub.latest_keyframe() is None or recorder.camera_state(camera_id) is None:
            await asyncio.sleep(0.1)
    router = WsRouter(await hass_ws_client(hass))
    ours = await hass_client()  # bearer auth for our views
    anonymous = await hass_client_no_auth()  # HA's /api/hls/<token>/ URLs need none
    clock = ArrivalClock()
    follower = asyncio.create_task(_follow_hub(hub, clock))
    rng = random.Random(7)
    our_live = f"/api/lightnvr/hls/{camera_id}/live.m3u8"
    results: dict[str, Listing] = {}
    first_playable: dict[str, list[float]] = {}
    try:
        await asyncio.sleep(5)  # recorder fragments flowing, hub warm
        # -- time to first playable segment, each path started cold --------------------------
        for name, recording in (("rec_on", True), ("rec_off", False)):
            recorder.set_recording(camera_id, recording)
            await asyncio.sleep(3)
            runs = first_playable.setdefault(name, [])
            for _ in range(TTFP_RUNS):
                await asyncio.sleep(rng.uniform(0.3, 1.3))  # land anywhere in the 1 s GOP
                runs.append(await _ours_first_playable(ours, registry, camera_id))
        ha_runs = first_playable.setdefault("ha", [])
        for _ in range(HA_TTFP_RUNS):
            await asyncio.sleep(rng.uniform(0.3, 1.3))
            ha_runs.append(await _ha_first_playable(hass, router, anonymous))

        # -- latency: ours (recording on, then off) next to HA's running stream -----------------
        ha_playlist, ha_base = await _ha_stream_urls(router, anonymous)
        for name, recording in (("rec_on", True), ("rec_off", False)):
            recorder.set_recording(camera_id, recording)
            await ours.get(our_live)
            await _wait_source(registry, camera_id, LiveSource.MUXER)
            await asyncio.sleep(3)  # the recorder started or stopped
            ha_segments = results.setdefault("ha_segments", Listing("HA segments"))
            ha_parts = results.setdefault("ha_parts", Listing("HA parts"))
            await asyncio.gather(
                _poll(
                    ours,
                    clock=clock,
                    playlist_url=our_live,
                    base="",
                    segments=results.setdefault(name, Listing(name)),
                    parts=results.setdefault(f"{name}_parts", Listing(f"{name} parts")),
                    seconds=LATENCY_SECONDS,
                ),
                _poll(
                    anonymous,
                    clock=clock,
                    playlist_url=ha_playlist,
                    base=ha_base,
                    segments=ha_segments,
                    parts=ha_parts if ll_hls else None,
                    seconds=LATENCY_SECONDS,
                ),
            )
        await _stop_ha_stream(hass)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await router.close()

    ha_name = "HA LL-HLS (default)" if ll_hls else "HA, ll_hls: false"
    print()
    settings = "6 s segments, 1 s parts" if ll_hls else "2 s segments"
    print(f"Live HLS, 1080p25 H.264 (GOP 1 s), seconds — HA's stream: {ha_name}, {settings}")
    print(f"| {'path':<52} | runs |   median |      p90 |      min |      max |")
    print(f"|{'-' * 54}|------|----------|----------|----------|----------|")
    print(f"| {'Latency: frame arrival → its segment listed':<52} |      |          |")
    print(_row("LightNVR, recording on (muxer shared with recorder)", results["rec_on"].latencies))
    print(_row("LightNVR, recording on: part (EXT-X-PART)", results["rec_on_parts"].latencies))
    print(_row("LightNVR, recording off (muxer for live HLS)", results["rec_off"].latencies))
    print(_row("LightNVR, recording off: part (EXT-X-PART)", results["rec_off_parts"].latencies))
    print(_row(f"{ha_name}: segment", results["ha_segments"].latencies))
    if ll_hls:
        print(_row(f"{ha_name}: part (EXT-X-PART)", results["ha_parts"].latencies))
    print(f"| {'Time to first playable segment (cold start)':<52} |      |          |")
    print(_row("LightNVR, recording on", first_playable["rec_on"]))
    print(_row("LightNVR, recording off", first_playable["rec_off"]))
    print(_row(f"{ha_name} (camera/stream → 1st segment)", first_playable["ha"]))
    missed = sum(listing.missed for listing in results.values())
    if missed:
        print(f"({missed} listed segment(s) could not be matched to a frame and were left out)")
