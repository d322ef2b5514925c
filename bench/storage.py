"""Exports: one hour of 1080p recordings into one MP4, against FFmpeg's concat in the same run.

The recordings are 60 one-minute fragmented-MP4 files (1080p25 H.264 at ~4 Mbit/s with AAC
sound, each file's media time from 0, as the recorder writes them), hard links to one file so
the hour costs one minute of disk; both tools read the same bytes, from the page cache after
the first run. Measured, alternately, `RUNS` times each:

- LightNVR: `recorder.export.write_export` over the hour (what `lightnvr.export` runs in its
  worker thread), into an MP4 with its index at the front;
- FFmpeg: `ffmpeg -f concat -safe 0 -i list.txt -c copy -movflags +faststart` of the same files
  (the same kind of output).

Goal: LightNVR's time ≤ 1.2 × FFmpeg's. Both outputs are checked with ffprobe (duration, both
tracks).

Run: .venv/bin/python -m bench.storage
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from custom_components.lightnvr.recorder.export import write_export
from custom_components.lightnvr.recorder.storage import Segment
from tests.infra.media import make_h264

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"
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


def _hour(folder: Path) -> list[Segment]:
    """Sixty hard links to the minute, indexed one after the other from an hour ago."""
    minute = _one_minute()
    start = time.time() - FILES * FILE_SECONDS
    segments = []
    for number in range(FILES):
        path = folder / f"{number:02d}.mp4"
        os.link(minute, path)
        begin = start + number * FILE_SECONDS
        segments.append(Segment("bench", path, begin, begin + FILE_SECONDS, path.stat().st_size))
    return segments


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


def main() -> int:
    """Run the comparison and print the table."""
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed: run scripts/setup")
        return 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
