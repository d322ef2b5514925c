"""Recording cost: LightNVR's recorder vs `ffmpeg -c copy -f segment`, cameras per machine, RSS.

One run, one RTSP camera (1080p25 H.264, keyframe every second, ~4 Mbit/s):

(a) CPU-seconds per minute, in steady state, of a process running one StreamHub, the camera's
    muxer and a Segmenter (60 s fragmented-MP4 segments) next to `ffmpeg -c copy -f segment`
    (60 s MP4 segments), both reading the same stream at the same time; a bare PyAV demux →
    mux loop (the floor of any PyAV recorder); and a process that also serves live HLS and
    writes an event clip at the same time, all three sinks of the camera's one muxer
    (everything at once).
    Start-up is excluded: CPU is sampled with psutil at the start and end of a window that
    opens after a warm-up.
(b) Cameras recording at once inside Home Assistant (real hass, RecorderManager, one real
    RTSP connection per camera to the one shared mount), stepped up while the event loop's
    lag p99 stays < 20 ms and no segment is lost (no packet dropped, no reconnect, every
    camera's segments back to back, sample files checked with ffprobe).
(c) RSS per recorded camera at the largest step that passed: (RSS − RSS before any camera) / N,
    hub + recorder together, and the recorder's own share.

Run: .venv/bin/python -m bench.recording      (about 5 minutes; clip cached in .cache/bench)
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--record" not in sys.argv:
    # Run through pytest (a real in-process Home Assistant) before anything imports it.
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
import itertools
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from homeassistant.core import HomeAssistant
import psutil
import pytest

from custom_components.lightnvr.hls.live_types import LiveSource, chunk_from_fragment
from custom_components.lightnvr.hub import StreamHub
from custom_components.lightnvr.media.fragments import CameraFragments
from custom_components.lightnvr.models import CameraConfig, HubOptions
from custom_components.lightnvr.recorder import RecorderManager, Segment
from custom_components.lightnvr.recorder.clips import ClipLayout, ClipRecorder
from custom_components.lightnvr.recorder.segment_writer import FragmentInfo
from custom_components.lightnvr.recorder.segmenter import Segmenter
from custom_components.lightnvr.recorder.storage import DiskUsage, StorageLayout
from custom_components.lightnvr.source import CameraSource
from tests.infra.media import ffmpeg_binary, make_h264
from tests.infra.rtsp import RtspServer

from ._harness import CACHE, ROOT, lag_sampler, p99

WARMUP_S = 12.0
CPU_WINDOW_S = 60.0
STEPS = (16, 32, 48, 64, 72)
STEP_WARMUP_S = 8.0
STEP_WINDOW_S = 25.0
STEP_SEGMENT_S = 10.0
GOAL_RATIO = 1.2
GOAL_ALL_RATIO = 1.3
GOAL_CAMERAS = 64
GOAL_LAG_P99_MS = 20.0
GOAL_RSS_MB = 15.0


@pytest.fixture
def camera_1080p(socket_enabled: None) -> Iterator[RtspServer]:
    clip = make_h264(CACHE / "bench_1080p25.mp4", width=1920, height=1080, fps=25, seconds=20)
    server = RtspServer({"cam": clip})
    server.start()
    yield server
    server.stop()


# ----- (a) CPU: our recorder process vs ffmpeg ---------------------------------------------


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _thread_cpu(process: psutil.Process, native_ids: dict[str, int]) -> dict[str, float]:
    by_id = {thread.id: thread.user_time + thread.system_time for thread in process.threads()}
    return {name: by_id.get(native_id, 0.0) for name, native_id in native_ids.items()}


def _cpu_comparison(url: str, folder: Path) -> dict[str, float]:
    ours_dir = folder / "ours"
    ffmpeg_dir = folder / "ffmpeg"
    ffmpeg_dir.mkdir(parents=True)
    log = (folder / "children.log").open("wb")
    ours = subprocess.Popen(
        [sys.executable, "-m", "bench.recording", "--record", url, str(ours_dir)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    everything = subprocess.Popen(
        [sys.executable, "-m", "bench.recording", "--record", url, str(folder / "all"), "all"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # The floor of any PyAV recorder: a bare demux → mux loop, no LightNVR code at all.
    pyav = subprocess.Popen(
        [sys.executable, "-c", _PYAV_REMUX, url, str(folder / "pyav.mp4")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ffmpeg = subprocess.Popen(
        [
            ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error",
            "-rtsp_transport", "tcp", "-i", url, "-map", "0:v", "-c", "copy",
            "-f", "segment", "-segment_time", "60", "-reset_timestamps", "1",
            str(ffmpeg_dir / "%05d.mp4"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(WARMUP_S)
        assert ours.poll() is None, "our recorder exited early"
        assert ffmpeg.poll() is None, "ffmpeg exited early"
        assert pyav.poll() is None, "the PyAV loop exited early"
        assert everything.poll() is None, "the recorder + live HLS + clip process exited early"
        processes = {
            "ours": psutil.Process(ours.pid),
            "ffmpeg": psutil.Process(ffmpeg.pid),
            "pyav": psutil.Process(pyav.pid),
            "all": psutil.Process(everything.pid),
        }
        threads = json.loads((ours_dir / "threads.json").read_text())
        before = {name: _cpu_seconds(p) for name, p in processes.items()}
        threads_before = _thread_cpu(processes["ours"], threads)
        started = time.monotonic()
        time.sleep(CPU_WINDOW_S)
        elapsed = time.monotonic() - started
        after = {name: _cpu_seconds(p) for name, p in processes.items()}
        threads_after = _thread_cpu(processes["ours"], threads)
        rss = processes["ours"].memory_info().rss
    finally:
        for child in (ours, ffmpeg, pyav, everything):
            child.terminate()
        for child in (ours, ffmpeg, pyav, everything):
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        log.close()
    per_minute = {name: (after[name] - before[name]) * 60 / elapsed for name in processes}
    thread_minute = {
        name: (threads_after[name] - threads_before[name]) * 60 / elapsed for name in threads
    }
    written = sum(p.stat().st_size for p in ours_dir.rglob("*.mp4*"))
    return {
        "ours": per_minute["ours"],
        "ffmpeg": per_minute["ffmpeg"],
        "pyav": per_minute["pyav"],
        "all": per_minute["all"],
        "hub_thread": thread_minute["hub"],
        "recorder_thread": thread_minute["recorder"],
        "ratio": per_minute["ours"] / per_minute["ffmpeg"],
        "ours_rss_mb": rss / 2**20,
        "ours_written_mb": written / 2**20,
    }


_PYAV_REMUX = """
import sys, av
source = av.open(sys.argv[1], options={"rtsp_transport": "tcp"})
video = source.streams.video[0]
out = av.open(sys.argv[2], "w", format="mp4",
              options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
add = getattr(out, "add_stream_from_template", None)  # PyAV 14+
stream = add(video) if add else out.add_stream(template=video)
for packet in source.demux(video):
    if packet.dts is not None:
        packet.stream = stream
        out.mux(packet)
"""


def _serve_live(info: FragmentInfo) -> None:
    """Live HLS's share of a recorder fragment: listed, and its bytes served once."""
    chunk_from_fragment(info.fragment, LiveSource.MUXER).wall_clock_bytes()


def _record(url: str, folder: str, everything: bool) -> None:
    """The recorder process of (a): one hub, the camera's muxer and the recorder, no HA.

    As the integration runs them: the camera's one muxer (`CameraFragments`) with the recorder
    as its sink. With `everything`, live HLS also takes the fragments (each moved onto the wall
    clock once, as one viewer's requests would) and an event clip, a second sink of the same
    muxer, runs for the whole window.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = StreamHub("bench", CameraSource(url), loop)
        hub.start()
        fragments = CameraFragments("bench", hub)
        segmenter = Segmenter(
            "bench",
            fragments,
            StorageLayout(Path(folder), UTC),
            segment_seconds=60,
            on_fragment=_serve_live if everything else None,
        )
        segmenter.start()
        others: list[Any] = []
        if everything:
            layout = ClipLayout(Path(folder), UTC)
            clips = ClipRecorder("bench", fragments, layout, loop, pre_roll=0)
            clips.start()
            clips.save(3000.0, 0.0)
            others = [clips]
        fragments.start()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await asyncio.sleep(1)
        ids = {
            "hub": next(t.native_id for t in threading.enumerate() if t.name.endswith("-bench")),
            "recorder": next(t.native_id for t in threading.enumerate() if "-mux-" in t.name),
        }
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "threads.json").write_text(json.dumps(ids))
        await stop.wait()
        for other in others:
            await loop.run_in_executor(None, other.stop)
        await loop.run_in_executor(None, fragments.stop)
        await loop.run_in_executor(None, segmenter.stop)
        await hub.async_stop()

    asyncio.run(main())


# ----- (b) and (c): cameras inside Home Assistant ------------------------------------------------


@dataclass
class Step:
    cameras: int
    lag_p99_ms: float
    lag_max_ms: float
    dropped: int
    reconnects: int
    segments: int
    gaps: int
    bad_files: int
    rss_hubs_mb: float
    rss_mb: float
    cpu_percent: float
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _probe_ok(path: Path) -> bool:
    result = subprocess.run(
        [
            "/usr/bin/ffprobe", "-v", "error", "-count_frames", "-show_entries",
            "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0 or result.stderr:
        return False
    stream = json.loads(result.stdout)["streams"][0]
    return (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1920, 1080) and (
        int(stream["nb_read_frames"]) > 0
    )


async def _scale(hass: HomeAssistant, url: str, folder: Path) -> tuple[list[Step], float, float]:
    process = psutil.Process()
    options = HubOptions(
        engine="embedded",
        go2rtc_binary=None,
        go2rtc_url=None,
        storage_path=folder,
        retention_days=1,
        min_free_gb=0.0,
    )
    manager = RecorderManager(
        hass,
        options,
        segment_seconds=STEP_SEGMENT_S,
        usage_fn=lambda _path: DiskUsage(10**13, 0, 10**13),
    )
    finished: dict[str, list[Segment]] = {}
    manager.add_segment_listener(lambda s: finished.setdefault(s.camera_id, []).append(s))
    await manager.async_start()
    hubs: dict[str, StreamHub] = {}
    steps: list[Step] = []
    baseline = process.memory_info().rss
    recorder_share = 0.0
    try:
        for count in STEPS:
            new_ids = [f"cam{n:03d}" for n in range(len(hubs), count)]
            for camera_id in new_ids:
                hub = StreamHub(camera_id, CameraSource(url), hass.loop)
                hub.start()
                hubs[camera_id] = hub
            await asyncio.sleep(4)
            rss_hubs = process.memory_info().rss
            for camera_id in new_ids:
                camera = CameraConfig(camera_id, camera_id, CameraSource(url), None, True, False)
                await manager.async_add_camera(camera, hubs[camera_id])
            await asyncio.sleep(STEP_WARMUP_S)

            before = {cid: manager.camera_state(cid) for cid in hubs}
            reconnects = {cid: hub.stats().reconnects for cid, hub in hubs.items()}
            counts = {cid: len(finished.get(cid, [])) for cid in hubs}
            samples: list[float] = []
            stop = asyncio.Event()
            cpu_before = _cpu_seconds(process)
            started = time.monotonic()
            sampler = asyncio.create_task(lag_sampler(stop, samples))
            await asyncio.sleep(STEP_WINDOW_S)
            stop.set()
            await sampler
            cpu = (_cpu_seconds(process) - cpu_before) / (time.monotonic() - started) * 100
            rss = process.memory_info().rss
            recorder_share += rss - rss_hubs

            problems: list[str] = []
            dropped = gaps = segments = 0
            for cid, hub in hubs.items():
                state, old = manager.camera_state(cid), before[cid]
                assert state is not None
                assert old is not None
                dropped += state.dropped_packets - old.dropped_packets
                if state.pause_reason is not None:
                    problems.append(f"{cid} paused: {state.pause_reason}")
                new = finished.get(cid, [])[counts[cid] :]
                segments += len(new)
                if len(new) < int(STEP_WINDOW_S // STEP_SEGMENT_S) - 1:
                    problems.append(f"{cid}: only {len(new)} segment(s) in the window")
                chain = finished.get(cid, [])[max(0, counts[cid] - 1) :]
                gaps += sum(1 for a, b in itertools.pairwise(chain) if b.start - a.end > 0.1)
                if hub.stats().reconnects != reconnects[cid]:
                    problems.append(f"{cid} reconnected")
            reconnected = sum(hub.stats().reconnects - reconnects[c] for c, hub in hubs.items())
            sample = finished.get(new_ids[0], [])[-2:]
            bad = 0
            for segment in sample:
                if not await hass.async_add_executor_job(_probe_ok, segment.path):
                    bad += 1
            lag_ms = p99(samples) * 1000
            if lag_ms >= GOAL_LAG_P99_MS:
                problems.append(f"loop lag p99 {lag_ms:.1f} ms")
            if dropped:
                problems.append(f"{dropped} packet(s) dropped")
            if gaps:
                problems.append(f"{gaps} gap(s) between segments")
            if bad:
                problems.append(f"{bad} unreadable file(s)")
            step = Step(
                cameras=count,
                lag_p99_ms=lag_ms,
                lag_max_ms=max(samples) * 1000,
                dropped=dropped,
                reconnects=reconnected,
                segments=segments,
                gaps=gaps,
                bad_files=bad,
                rss_hubs_mb=(rss_hubs - baseline) / 2**20,
                rss_mb=(rss - baseline) / 2**20,
                cpu_percent=cpu,
                problems=problems,
            )
            steps.append(step)
            print(
                f"  {count:>3} cameras: lag p99 {lag_ms:6.1f} ms, max {step.lag_max_ms:6.1f} ms, "
                f"CPU {cpu:5.0f} %, RSS +{step.rss_mb:6.0f} MB, {segments} segments"
                + (f"  FAIL: {'; '.join(problems[:4])}" if problems else ""),
                flush=True,
            )
            # Keep the disk in check between steps: the files were judged already.
            for segments_of in finished.values():
                for segment in segments_of[:-1]:
                    segment.path.unlink(missing_ok=True)
            if problems:
                break
    finally:
        await manager.async_stop()
        await asyncio.gather(*(hub.async_stop() for hub in hubs.values()))
    last_good = next((s for s in reversed(steps) if s.passed), None)
    cameras = last_good.cameras if last_good else 0
    recorder_mb = recorder_share / 2**20 / max(1, steps[-1].cameras)
    total_mb = last_good.rss_mb / cameras if last_good else float("nan")
    return steps, total_mb, recorder_mb


async def bench_recording(hass: HomeAssistant, camera_1080p: RtspServer) -> None:
    """Print the table."""
    folder = Path(tempfile.mkdtemp(prefix="lightnvr-bench-rec-"))
    url = camera_1080p.url("cam")
    try:
        print("\n(a) CPU, ours vs ffmpeg, same stream, same minute …", flush=True)
        cpu = await hass.async_add_executor_job(_cpu_comparison, url, folder / "cpu")
        print("(b) cameras recording at once …", flush=True)
        # The test harness runs the loop in asyncio debug mode (a traceback captured for every
        # callback, slow-callback checks), which Home Assistant in production does not: it
        # roughly triples the lag measured here. Measure the loop as users run it.
        hass.loop.set_debug(False)
        try:
            steps, rss_per_camera, recorder_per_camera = await _scale(hass, url, folder / "scale")
        finally:
            hass.loop.set_debug(True)
    finally:
        await hass.async_add_executor_job(shutil.rmtree, folder, True)

    passed = [s for s in steps if s.passed]
    cameras = passed[-1].cameras if passed else 0
    ceiling = f" (max step {STEPS[-1]})" if steps and steps[-1].passed else ""
    lag = passed[-1].lag_p99_ms if passed else float("nan")

    def line(measure: str, goal: str, measured: str, good: bool | None = None) -> str:
        verdict = "" if good is None else ("yes" if good else "NO")
        return f"| {measure:<44} | {goal:<9} | {measured:>12} | {verdict:<3} |"

    print()
    print(f"Recording, 1080p25 H.264 ~4 Mbit/s, keyframe every 1 s; {os.cpu_count()} cores")
    print(line("measure", "goal", "measured"))
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 14}|{'-' * 5}|")
    print(line("CPU-s/min, LightNVR hub + recorder process", "", f"{cpu['ours']:.2f}"))
    print(line("  of which the hub thread (RTSP demux)", "", f"{cpu['hub_thread']:.2f}"))
    print(line("  of which the muxer thread (mux, write)", "", f"{cpu['recorder_thread']:.2f}"))
    print(line("CPU-s/min, ffmpeg -c copy -f segment", "", f"{cpu['ffmpeg']:.2f}"))
    print(line("CPU-s/min, bare PyAV demux+mux loop", "", f"{cpu['pyav']:.2f}"))
    print(
        line(
            "(a) CPU ratio LightNVR / ffmpeg",
            f"<= {GOAL_RATIO:.1f}x",
            f"{cpu['ratio']:.2f}x",
            cpu["ratio"] <= GOAL_RATIO,
        )
    )
    print(
        line(
            "    muxer thread alone / ffmpeg",
            "",
            f"{cpu['recorder_thread'] / cpu['ffmpeg']:.2f}x",
        )
    )
    print(line("    bare PyAV loop / ffmpeg", "", f"{cpu['pyav'] / cpu['ffmpeg']:.2f}x"))
    all_ratio = cpu["all"] / cpu["ffmpeg"]
    print(line("CPU-s/min, recorder + live HLS + event clip", "", f"{cpu['all']:.2f}"))
    print(
        line(
            "    all at once / ffmpeg",
            f"<= {GOAL_ALL_RATIO:.1f}x",
            f"{all_ratio:.2f}x",
            all_ratio <= GOAL_ALL_RATIO,
        )
    )
    print(
        line(
            f"(b) cameras recording at once{ceiling}",
            f">= {GOAL_CAMERAS}",
            f"{cameras}",
            cameras >= GOAL_CAMERAS,
        )
    )
    print(line("    loop lag p99 at that count (ms)", f"< {GOAL_LAG_P99_MS:.0f}", f"{lag:.1f}"))
    print(
        line(
            "(c) RSS per camera, hub + recorder (MB)",
            f"<= {GOAL_RSS_MB:.0f}",
            f"{rss_per_camera:.1f}",
            rss_per_camera <= GOAL_RSS_MB,
        )
    )
    print(line("    of which the recorder (MB)", "", f"{recorder_per_camera:.1f}"))
    print()
    print("Steps (b):")
    print("| cameras | lag p99 ms | lag max ms | CPU % | RSS +MB hubs / total | segments | result")
    print("|---------|------------|------------|-------|----------------------|----------|-------")
    for s in steps:
        result = "pass" if s.passed else "FAIL: " + "; ".join(s.problems[:3])
        print(
            f"| {s.cameras:>7} | {s.lag_p99_ms:>10.1f} | {s.lag_max_ms:>10.1f} | "
            f"{s.cpu_percent:>5.0f} | {s.rss_hubs_mb:>8.0f} / {s.rss_mb:>9.0f} | "
            f"{s.segments:>8} | {result}"
        )
    print(
        f"\n(a) window {CPU_WINDOW_S:.0f} s after {WARMUP_S:.0f} s warm-up; our process RSS "
        f"{cpu['ours_rss_mb']:.0f} MB (interpreter included), "
        f"wrote {cpu['ours_written_mb']:.0f} MB."
    )


def _child_args() -> tuple[str, str, bool]:
    index = sys.argv.index("--record")
    return sys.argv[index + 1], sys.argv[index + 2], sys.argv[index + 3 :] == ["all"]


if __name__ == "__main__":
    _record(*_child_args())
