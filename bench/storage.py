"""Storage: the archive mover against `cp`, and exports against FFmpeg's concat, in one run.

Both parts use one-minute 1080p25 recording files (H.264 at ~4 Mbit/s with AAC sound, each
file's media time from 0, as the recorder writes them), hard links to one file so an hour costs
one minute of disk.

(a) **Archive mover** (`bench_archive_mover`): 40 such files, two days old, in a recorder's
    main folder; 8 cameras record into it meanwhile (a real RTSP camera, real StreamHubs and
    segmenters in a real in-process Home Assistant). Timed, alternately, `MOVER_RUNS` times:
    - LightNVR: one pass of the mover (`RecorderManager.async_start_archive_pass`): copy,
      fsync, check size and boxes, rename, swap the index, delete the original;
    - `cp` of the same files into another folder, and `cp` followed by `sync` of the copies
      (the mover makes every copy durable before deleting the original; `cp` alone does not).
    The event loop's lag is sampled every 10 ms during the mover's passes.
    Goals: mover throughput ≥ 0.8 × cp's; loop lag p99 < 20 ms.
    Both folders are on the same disk here (no NAS on this machine).
(b) **Export** (`bench_export`): `recorder.export.write_export` over an hour of such files
    (what `lightnvr.export` runs in its worker thread) against
    `ffmpeg -f concat -safe 0 -i list.txt -c copy -movflags +faststart`, alternately `RUNS`
    times each. Goal: LightNVR's time ≤ 1.2 × FFmpeg's. Both outputs are checked with ffprobe
    (duration, both tracks).

Run: .venv/bin/python -m bench.storage        (about 3 minutes; -k mover or -k export for one)
"""

from __future__ import annotations

if __name__ == "__main__":
    # Run through pytest (a real in-process Home Assistant) before anything imports it.
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
import json
import os
from pathlib import Path
import shutil
import statistics
import subprocess
import tempfile
import time

from homeassistant.core import HomeAssistant

from custom_components.lightnvr.hub import StreamHub
from custom_components.lightnvr.models import CameraConfig, HubOptions
from custom_components.lightnvr.recorder import RecorderManager
from custom_components.lightnvr.recorder.export import write_export
from custom_components.lightnvr.recorder.storage import DiskUsage, Segment
from custom_components.lightnvr.source import CameraSource
from tests.infra.media import make_h264
from tests.infra.rtsp import RtspServer

from ._harness import CACHE, lag_sampler, p99

FILES = 60
FILE_SECONDS = 60
RUNS = 3
GOAL = 1.2


def _one_minute() -> Path:
    """A one-minute recording file like the recorder's (made once, cached)."""
    path = CACHE / "storage_minute_1080p.mp4"
    if path.exists():
        return path
    clip = make_h264(CACHE / "bench_1080p25.mp4", width=1920, height=1080, fps=25, seconds=20)
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip),
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(FILE_SECONDS), "-map", "0:v", "-map", "1:a",
            "-c:v", "copy", "-c:a", "aac", "-b:a", "64k",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def _minutes(folder: Path, count: int, start: float, camera_id: str = "bench") -> list[Segment]:
    """`count` hard links to the minute in `folder`, indexed one after the other from `start`."""
    minute = _one_minute()
    folder.mkdir(parents=True, exist_ok=True)
    segments = []
    for number in range(count):
        begin = start + number * FILE_SECONDS
        path = folder / time.strftime("%H-%M-%S.mp4", time.localtime(begin))
        os.link(minute, path)
        os.utime(path, (begin + FILE_SECONDS, begin + FILE_SECONDS))  # mtime = end
        segments.append(Segment(camera_id, path, begin, begin + FILE_SECONDS, path.stat().st_size))
    return segments


def _hour(folder: Path) -> list[Segment]:
    """Sixty minutes, one after the other from an hour ago."""
    return _minutes(folder, FILES, time.time() - FILES * FILE_SECONDS)


def _probe(path: Path) -> tuple[float, list[str]]:
    result = subprocess.run(
        [
            "ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type",
            "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    return float(data["format"]["duration"]), sorted(s["codec_type"] for s in data["streams"])


def _ffmpeg(segments: list[Segment], out: Path) -> float:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{s.path}'\n" for s in segments))
    started = time.perf_counter()
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
            "-c", "copy", "-movflags", "+faststart", str(out),
        ],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def _lightnvr(segments: list[Segment], out: Path) -> float:
    started = time.perf_counter()
    write_export(segments, segments[0].start, segments[-1].end, out)
    return time.perf_counter() - started


def bench_export() -> None:
    """Export an hour against FFmpeg's concat; print the table."""
    assert shutil.which("ffmpeg") is not None, "ffmpeg is not installed: run scripts/setup"
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lightnvr-bench-storage-") as scratch:
        folder = Path(scratch)
        sources = folder / "recordings"
        sources.mkdir()
        segments = _hour(sources)
        times: dict[str, list[float]] = {"lightnvr": [], "ffmpeg": []}
        outputs = {"lightnvr": folder / "lightnvr.mp4", "ffmpeg": folder / "ffmpeg.mp4"}
        for _ in range(RUNS):
            for name, run in (("ffmpeg", _ffmpeg), ("lightnvr", _lightnvr)):
                outputs[name].unlink(missing_ok=True)
                # The previous run's 1.77 GB is on disk before this one starts: neither tool
                # pays for the other's writeback.
                os.sync()
                times[name].append(run(segments, outputs[name]))
        probes = {name: _probe(path) for name, path in outputs.items()}
        sizes = {name: path.stat().st_size for name, path in outputs.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["lightnvr"] / median["ffmpeg"]
    source_gb = FILES * segments[0].size / 1024**3
    print(f"\nExport of 1 hour of 1080p25 ({FILES} files, {source_gb:.2f} GB), {RUNS} runs each")
    print("| tool | median s | runs s | output GB | duration s | tracks |")
    print("|---|---|---|---|---|---|")
    for name in ("lightnvr", "ffmpeg"):
        duration, tracks = probes[name]
        runs = " / ".join(f"{value:.2f}" for value in times[name])
        print(
            f"| {name} | {median[name]:.2f} | {runs} | {sizes[name] / 1024**3:.2f} | "
            f"{duration:.1f} | {', '.join(tracks)} |"
        )
    verdict = "met" if ratio <= GOAL else "not met"
    print(f"\nLightNVR / ffmpeg: {ratio:.2f}× (goal ≤ {GOAL}×: {verdict})")


# ----- (a) the archive mover --------------------------------------------------------------------

MOVER_FILES = 40
MOVER_RUNS = 3
RECORDING_CAMERAS = 8
GOAL_THROUGHPUT = 0.8
GOAL_LAG_P99_MS = 20.0


def _cp(sources: list[Segment], target: Path, sync: bool) -> float:
    """Copy the files with coreutils (then `sync` them); return the seconds."""
    target.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run(["cp", *(str(s.path) for s in sources), str(target)], check=True)
    if sync:
        subprocess.run(["sync", *(str(p) for p in target.iterdir())], check=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    return seconds


def _old_files(manager: RecorderManager) -> list[Segment]:
    """Place the files two days back in the main folder and index them."""
    start = time.time() - 2 * 86400
    day = time.strftime("%Y-%m-%d", time.localtime(start))
    segments = _minutes(manager.layout.root / "old" / day, MOVER_FILES, start, "old")
    for segment in segments:
        manager.index.add(segment)
    return segments


async def bench_archive_mover(hass: HomeAssistant, bench_camera: RtspServer) -> None:
    """Move 40 one-minute 1080p files while 8 cameras record; compare with cp; print the table."""
    CACHE.mkdir(parents=True, exist_ok=True)
    _one_minute()
    with tempfile.TemporaryDirectory(prefix="lightnvr-bench-archive-", dir=CACHE) as scratch:
        folder = Path(scratch)
        (folder / "archive").mkdir()
        options = HubOptions(
            engine="embedded",
            go2rtc_binary=None,
            go2rtc_url=None,
            storage_path=folder / "main",
            retention_days=7,
            min_free_gb=0.0,
            archive_path=folder / "archive",
            archive_after_days=1,
        )
        manager = RecorderManager(
            hass, options, usage_fn=lambda _path: DiskUsage(10**13, 0, 10**13)
        )
        await manager.async_start()
        url = bench_camera.url("cam")
        hubs = []
        for number in range(RECORDING_CAMERAS):
            camera_id = f"cam{number}"
            hub = StreamHub(camera_id, CameraSource(url), hass.loop)
            hub.start()
            hubs.append(hub)
            camera = CameraConfig(camera_id, camera_id, CameraSource(url), None, True, False)
            await manager.async_add_camera(camera, hub)
        await asyncio.sleep(5)  # every camera connected and recording
        times: dict[str, list[float]] = {"mover": [], "cp": [], "cp + sync": []}
        samples: list[float] = []
        moved_ok = True
        try:
            for _ in range(MOVER_RUNS):
                sources = await hass.async_add_executor_job(_old_files, manager)
                size = sum(s.size for s in sources)
                for name, sync in (("cp", False), ("cp + sync", True)):
                    seconds = await hass.async_add_executor_job(_cp, sources, folder / "cp", sync)
                    times[name].append(seconds)
                stop = asyncio.Event()
                sampler = asyncio.create_task(lag_sampler(stop, samples))
                started = time.perf_counter()
                task = manager.async_start_archive_pass()
                assert task is not None
                await task
                times["mover"].append(time.perf_counter() - started)
                stop.set()
                await sampler
                result = manager.last_archive_pass
                assert result is not None
                moved_ok &= result.problem is None and result.moved_bytes == size
                moved_ok &= not manager.index.local.items("old")
                await hass.async_add_executor_job(
                    shutil.rmtree, folder / "archive" / "old"
                )  # ready for the next run
                for segment in manager.index.archive.items("old"):
                    manager.index.remove(segment)
            recording = all(manager.camera_state(f"cam{n}").recording for n in range(8))
        finally:
            await manager.async_stop()
            for hub in hubs:
                await hass.async_add_executor_job(hub.stop)
    gigabytes = size / 1e9
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"\nArchive mover: {MOVER_FILES} one-minute 1080p files ({gigabytes:.2f} GB) per run, "
        f"{MOVER_RUNS} runs, {RECORDING_CAMERAS} cameras recording meanwhile"
    )
    print("| tool | median s | runs s | MB/s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        runs = " / ".join(f"{value:.2f}" for value in values)
        print(f"| {name} | {median[name]:.2f} | {runs} | {size / 1e6 / median[name]:.0f} |")
    lag = p99(samples) * 1000
    versus_cp = median["cp"] / median["mover"]
    versus_sync = median["cp + sync"] / median["mover"]
    print(
        f"\nmover throughput / cp: {versus_cp:.2f}× (goal ≥ {GOAL_THROUGHPUT}×: "
        f"{'met' if versus_cp >= GOAL_THROUGHPUT else 'not met'}); "
        f"/ cp + sync: {versus_sync:.2f}×"
    )
    print(
        f"loop lag during the moves: p99 {lag:.1f} ms, max {max(samples) * 1000:.1f} ms "
        f"(goal p99 < {GOAL_LAG_P99_MS:.0f} ms: {'met' if lag < GOAL_LAG_P99_MS else 'not met'})"
    )
    print(f"every file moved and checked: {moved_ok}; cameras still recording: {recording}")
