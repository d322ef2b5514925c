"""Live view of every camera shape: time to first picture, sound, path, CPU and lip sync.

For each camera of the matrix (tests/infra/cameras.py) a viewer shaped like HA's frontend
(audio first, VP8 listed before H.264, no H.265) watches through Home Assistant's websocket
API: offer → first decoded picture (median of 7; the first run of a transcoded camera starts
the shared transcode, so it is shown apart), whether sound arrives, and the path the engine
chose. Then, with one viewer watching for 15 s, the CPU of each thread group and the lip sync
(how much later audio leaves us than video, for the same camera instant: browsers align the
two tracks by send time, so that difference is what a viewer sees).

Run: .venv/bin/python -m bench.cameras   (or .venv-latest/bin/python -m bench.cameras)
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
from collections.abc import Iterator
import random
import statistics
import threading
import time
from typing import Any

import av
from homeassistant.core import HomeAssistant
import psutil
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.lightnvr.const import CONF_RECORD, CONF_SUBSTREAM_URL, DOMAIN
from custom_components.lightnvr.engine import webrtc as webrtc_module
from custom_components.lightnvr.hub import MediaPacket
from tests.conftest import camera_subentry, hub_entry_data
from tests.infra.cameras import MATRIX, CameraMatrix, CameraShape
from tests.webrtc_client import WebRTCTestClient, WsRouter

from ._harness import CACHE

ENTITY_ID = "camera.bench"
RUNS = 7
CPU_SECONDS = 15.0
# A 1080p H.265 camera besides the matrix's 720p ones, for the transcode's CPU at 1080p.
H265_1080P = CameraShape("h265_1080p", "hevc", "main", None, 1920, 1080, bitrate="2M")
SHAPES = (*MATRIX, H265_1080P)
# The CPU table's rows: (label, camera).
CPU_ROWS = (
    ("H.264 pass-through (720p15 + G.711)", "h264_high_pcma"),
    ("H.265 → H.264 transcode, 720p15", "h265_noaudio"),
    ("H.265 → H.264 transcode, 1080p15", "h265_1080p"),
    ("AAC → Opus (720p15 H.264 + AAC)", "h264_main_aac"),
)


@pytest.fixture(scope="module")
def matrix() -> Iterator[CameraMatrix]:
    with CameraMatrix(CACHE / "cameras", SHAPES) as served:
        yield served


async def _setup(hass: HomeAssistant, matrix: CameraMatrix, shape: CameraShape, tmp: Any) -> Any:
    extra: dict[str, Any] = {CONF_RECORD: False}
    if shape.has_substream:
        extra[CONF_SUBSTREAM_URL] = matrix.substream_url(shape)
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp),
        subentries_data=[camera_subentry("Bench", matrix.url(shape), **extra)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    camera_id = next(iter(entry.subentries))
    engine = entry.runtime_data.engine
    hubs = [engine.hub(camera_id)]
    if (substream := engine.substream_hub(camera_id)) is not None:
        hubs.append(substream)
    async with asyncio.timeout(30):
        while any(hub.latest_keyframe() is None for hub in hubs):
            await asyncio.sleep(0.1)
    return entry


class _SendLog:
    """Camera time and send time of every packet the viewers' tracks hand to aiortc."""

    def __init__(self) -> None:
        self.video: list[tuple[float, float]] = []
        self.audio: list[tuple[float, float]] = []

    def lip_sync_ms(self) -> float | None:
        """Median (send − camera time) of audio minus that of video, in ms."""
        if len(self.video) < 10 or len(self.audio) < 10:
            return None

        def delay(samples: list[tuple[float, float]]) -> float:
            return statistics.median(sent - camera for camera, sent in samples)

        return 1000 * (delay(self.audio) - delay(self.video))


@pytest.fixture
def send_log(monkeypatch: pytest.MonkeyPatch) -> _SendLog:
    log = _SendLog()
    for cls, samples in (
        (webrtc_module.HubVideoTrack, log.video),
        (webrtc_module.HubAudioTrack, log.audio),
    ):
        original = cls._rtp_timestamp

        def wrapped(self: Any, packet: MediaPacket, _o: Any = original, _s: Any = samples) -> int:
            if packet.pts is not None:
                _s.append((float(packet.pts * packet.time_base), time.monotonic()))
            return _o(self, packet)

        monkeypatch.setattr(cls, "_rtp_timestamp", wrapped)
    return log


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread group of this process."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    groups: dict[str, float] = {}
    for thread in psutil.Process().threads():
        name = names.get(thread.id, "")
        if name.startswith("lightnvr-hub-"):
            group = "camera reader (hub)"
        elif name.startswith("lightnvr-transcode-video"):
            group = "video transcode"
        elif name.startswith("lightnvr-transcode-audio"):
            group = "audio transcode"
        elif name == "MainThread":
            group = "event loop (RTP/SRTP of both peers, HA)"
        elif "decoder_worker" in name:
            group = "test viewer's decoder (not ours)"
        else:
            group = "other threads"
        groups[group] = groups.get(group, 0.0) + thread.user_time + thread.system_time
    return groups


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


@pytest.mark.usefixtures("webrtc_loopback", "socket_enabled")
async def bench_cameras(
    hass: HomeAssistant,
    matrix: CameraMatrix,
    hass_ws_client: Any,
    tmp_path: Any,
    send_log: _SendLog,
) -> None:
    """Print the tables."""
    rng = random.Random(7)
    first_frame_rows: list[str] = []
    cpu_rows: list[str] = []
    for shape in SHAPES:
        entry = await _setup(hass, matrix, shape, tmp_path / shape.name)
        engine = entry.runtime_data.engine
        camera_id = next(iter(entry.subentries))
        router = WsRouter(await hass_ws_client(hass))
        times: list[float] = []
        audio = False
        path = "?"
        try:
            for run in range(RUNS):
                await asyncio.sleep(rng.uniform(0.3, 1.3))  # land anywhere in the 1 s GOP
                client = WebRTCTestClient(router, ENTITY_ID)
                try:
                    await client.start()
                    viewer = await client.wait_frames(1, timeout=30)
                    assert viewer.time_to_first_frame is not None
                    times.append(viewer.time_to_first_frame)
                    path = engine.live_view_path(camera_id)
                    if run == RUNS - 1 and shape.audio is not None:
                        async with asyncio.timeout(5):
                            while viewer.audio_frames < 5:
                                await asyncio.sleep(0.1)
                        audio = True
                finally:
                    await client.close()
            label = next((label for label, name in CPU_ROWS if name == shape.name), None)
            if label is not None:
                cpu_rows.append(await _cpu_row(hass, router, label, send_log, shape))
        finally:
            await router.close()
            # Removed, not unloaded: the next camera gets the same entity id.
            await hass.config_entries.async_remove(entry.entry_id)
            await hass.async_block_till_done()
        warm = times[1:] if path == "transcode" else times
        first_frame_rows.append(
            f"| {shape.name:<22} | {path:<16} | {statistics.median(warm):>6.3f} | "
            f"{_p90(warm):>6.3f} | {times[0]:>6.3f} | "
            f"{'yes' if audio else ('—' if shape.audio is None else 'NO'):<5} |"
        )

    print()
    print(f"Offer → first decoded picture, seconds (PyAV {av.__version__}, median of {RUNS})")
    print("| camera                 | path             | median |    p90 |  first | audio |")
    print("|------------------------|------------------|--------|--------|--------|-------|")
    print("\n".join(first_frame_rows))
    print("(transcode: median/p90 of the warm runs; 'first' starts the shared transcode)")
    print("goals: pass-through median <= 0.3 s; transcode <= 1.5 s")
    print()
    print(f"One camera, one viewer, {CPU_SECONDS:.0f} s: % of one core per thread group")
    print("| camera                                 | reader | transcode | event loop | lip sync |")
    print("|----------------------------------------|--------|-----------|------------|----------|")
    print("\n".join(cpu_rows))
    print("goals: AAC → Opus <= 2 %; H.265 → H.264 720p15 <= 60 %; lip sync within ±100 ms")
    print("(event loop: both WebRTC peers' RTP/SRTP and HA, the viewer's decoding excluded)")


async def _cpu_row(
    hass: HomeAssistant, router: WsRouter, label: str, send_log: _SendLog, shape: CameraShape
) -> str:
    send_log.video.clear()
    send_log.audio.clear()
    client = WebRTCTestClient(router, ENTITY_ID)
    try:
        await client.start()
        await client.wait_frames(5, timeout=30)
        await asyncio.sleep(2)  # past start-up
        before, started = _thread_cpu(), time.monotonic()
        await asyncio.sleep(CPU_SECONDS)
        after, elapsed = _thread_cpu(), time.monotonic() - started
    finally:
        await client.close()

    def pct(*groups: str) -> float:
        used = sum(after.get(g, 0.0) - before.get(g, 0.0) for g in groups)
        return 100 * used / elapsed

    transcode = pct("video transcode", "audio transcode")
    sync = send_log.lip_sync_ms()
    sync_text = f"{sync:+.0f} ms" if sync is not None else "—"
    return (
        f"| {label:<38} | {pct('camera reader (hub)'):>5.1f}% | {transcode:>8.1f}% | "
        f"{pct('event loop (RTP/SRTP of both peers, HA)'):>9.1f}% | {sync_text:>8} |"
    )
