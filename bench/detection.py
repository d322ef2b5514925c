"""Detection benchmark: motion latency and CPU per camera. Run: python -m bench.detection

Real parts only: ffmpeg-made clips served by the GStreamer RTSP test camera, a StreamHub, the
DetectionPipeline (PyAV decode, numpy motion) and a bare Home Assistant core for its loop and
executor.

Latency: a clip that is still for 4 s, then shows a moving box for 2 s, loops forever, so the
camera shows a motion onset every 6 s. A reference decoder in the benchmark (its own hub
subscription, every frame decoded) finds each onset frame (the first picture with the white box
after a still stretch); the onset time is the arrival (time.monotonic) of that frame's packet,
found by its pts. Latency = wall time of the pipeline's "motion on" callback - onset time.

CPU: a busy 25 fps test pattern (motion everywhere: the detector does its full work), once as
a 640x360 substream and once as a 1080p main stream. Process CPU time (time.process_time) over
a window with the hub alone, then with the hub and detection: the difference is what detection
costs, event-loop callbacks included. The decoder and analysis threads' own CPU time (from
/proc) is shown too.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
import os
from pathlib import Path
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import av
from homeassistant.core import HomeAssistant

from custom_components.lightnvr.detection.pipeline import (
    DetectionOptions,
    DetectionPipeline,
    MotionUpdate,
)
from custom_components.lightnvr.hub import MediaPacket, StreamHub
from custom_components.lightnvr.source import CameraSource
from tests.infra.media import make_h264, make_motion_clip
from tests.infra.rtsp import RtspServer, unavailable_reason

LATENCY_GOAL = 1.0  # seconds, median
CPU_GOAL = 5.0  # percent of one core per camera
# 101 still frames, then 50 moving (25 fps): 151 frames a loop is not a multiple of the 5 frames
# between two detection frames, so each onset falls at a different phase of the sampling, as a
# real onset would.
STATIC_SECONDS, MOTION_SECONDS = 4.04, 2.0
BOX_LUMA = 200  # the moving box is white, the background ~80


@dataclass
class Row:
    what: str
    goal: str
    measured: str
    ok: bool | None


def media_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "lightnvr-bench-media"
    path.mkdir(exist_ok=True)
    return path


class OnsetFinder:
    """Reference decoder: every frame decoded; records the arrival time of each onset frame."""

    def __init__(self, hub: StreamHub) -> None:
        self._queue = hub.subscribe_thread(2048, from_keyframe=True)
        self._hub = hub
        self.onsets: list[float] = []
        self._thread = threading.Thread(target=self._run, name="bench-onsets", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._hub.unsubscribe(self._queue)
        self._thread.join(5)

    def _run(self) -> None:
        decoder: Any = None
        arrivals: dict[int, float] = {}
        still_frames = 0
        while True:
            try:
                packet = self._queue.get(timeout=1.0)
            except EOFError:
                return
            if packet is None or packet.kind != "video":
                continue
            if decoder is None:
                if not packet.keyframe:
                    continue
                decoder = av.CodecContext.create("h264", "r")
            arrivals[packet.pts or 0] = packet.received
            for frame in decoder.decode(_to_av(packet)):
                luma = frame.to_ndarray(format="gray")
                if int(luma.max()) > BOX_LUMA:
                    if still_frames >= 25:  # at least a second of stillness before
                        self.onsets.append(arrivals.get(frame.pts or 0, packet.received))
                    still_frames = 0
                else:
                    still_frames += 1
            if len(arrivals) > 256:
                arrivals.clear()


def _to_av(packet: MediaPacket) -> av.Packet:
    out = av.Packet(packet.data)
    if packet.pts is not None:
        out.pts = packet.pts
    if packet.dts is not None:
        out.dts = packet.dts
    out.time_base = packet.time_base
    return out


async def measure_latency(hass: HomeAssistant, onsets_wanted: int) -> list[float]:
    clip = make_motion_clip(
        media_dir() / "bench_motion_4.04s_2s.mp4",
        seconds=STATIC_SECONDS + MOTION_SECONDS,
        static_seconds=STATIC_SECONDS,
    )
    with RtspServer({"motion": clip}) as server:
        hub = StreamHub("bench", CameraSource(server.url("motion")), hass.loop)
        hub.start()
        finder = OnsetFinder(hub)
        pipeline = DetectionPipeline(hass, "bench", hub, DetectionOptions(), name="bench")
        motion_on: list[float] = []

        def on_motion(update: MotionUpdate) -> None:
            if update.motion:
                motion_on.append(time.monotonic())

        pipeline.async_add_motion_listener(on_motion)
        await pipeline.async_start()
        deadline = time.monotonic() + (onsets_wanted + 2) * (STATIC_SECONDS + MOTION_SECONDS) + 10
        try:
            while len(finder.onsets) < onsets_wanted + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # let the last onset's callback arrive
        finally:
            await pipeline.async_stop()
            await hass.async_add_executor_job(finder.stop)
            await hub.async_stop()
    latencies = []
    for onset in finder.onsets:
        after = [t for t in motion_on if t >= onset - 0.05]
        if after and after[0] - onset < STATIC_SECONDS:
            latencies.append(after[0] - onset)
    return latencies[:onsets_wanted]


def thread_cpu(tids: list[int]) -> float:
    """CPU seconds (user + system) of threads of this process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for tid in tids:
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


async def measure_cpu(
    hass: HomeAssistant, clip: Path, window: float, options: DetectionOptions
) -> tuple[float, float, float, float]:
    """Return (hub alone %, hub + detection %, detection %, detection threads %)."""
    with RtspServer({"cam": clip}) as server:
        hub = StreamHub("bench-cpu", CameraSource(server.url("cam")), hass.loop)
        hub.start()
        try:
            while hub.stats().packets < 50:
                await asyncio.sleep(0.1)
            # The hub alone (its packets are consumed by nobody: only the reader works).
            start = time.process_time()
            await asyncio.sleep(window)
            alone = (time.process_time() - start) / window * 100

            pipeline = DetectionPipeline(hass, "bench", hub, options, name="cpu")
            await pipeline.async_start()
            try:
                await asyncio.sleep(3.0)  # warm-up: decoder opened, first GOP done
                tids = pipeline.worker_thread_ids()
                threads_start = thread_cpu(tids)
                start = time.process_time()
                await asyncio.sleep(window)
                both = (time.process_time() - start) / window * 100
                threads = (thread_cpu(tids) - threads_start) / window * 100
                stats = pipeline.stats()
            finally:
                await pipeline.async_stop()
        finally:
            await hub.async_stop()
    print(
        f"  {clip.name}: kept {stats.frames_kept} frames, analysed {stats.frames_analysed}, "
        f"dropped {stats.frames_dropped}, decode errors {stats.decode_errors}",
        file=sys.stderr,
    )
    return alone, both, both - alone, threads


async def main(onsets: int, window: float) -> int:
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        try:
            print(f"latency: {onsets} motion onsets, one every 6 s ...", file=sys.stderr)
            latencies = await measure_latency(hass, onsets)
            sub = make_h264(
                media_dir() / "bench_testsrc2_640x360.mp4",
                width=640,
                height=360,
                seconds=10,
                bitrate="1M",
            )
            main_stream = make_h264(
                media_dir() / "bench_testsrc2_1080p.mp4", seconds=10, bitrate="4M"
            )
            cases = {
                "640x360 substream, 5 fps": (sub, DetectionOptions()),
                "1920x1080 main stream, 5 fps": (main_stream, DetectionOptions()),
                "1920x1080, keyframes only": (main_stream, DetectionOptions(keyframes_only=True)),
            }
            cpu: dict[str, tuple[float, float, float, float]] = {}
            for name, (clip, options) in cases.items():
                print(f"CPU: {name}, {window:g} s windows ...", file=sys.stderr)
                cpu[name] = await measure_cpu(hass, clip, window, options)
        finally:
            await hass.async_stop(force=True)

    rows: list[Row] = []
    if latencies:
        median = statistics.median(latencies)
        rows.append(
            Row(
                f"motion onset -> callback, median of {len(latencies)}",
                f"<= {LATENCY_GOAL:.1f} s",
                f"{median:.2f} s",
                median <= LATENCY_GOAL,
            )
        )
        rows.append(
            Row(
                "  min / max",
                "",
                f"{min(latencies):.2f} / {max(latencies):.2f} s",
                None,
            )
        )
    else:
        rows.append(Row("motion onset -> callback", f"<= {LATENCY_GOAL:.1f} s", "none", False))
    for name, (alone, both, detection, threads) in cpu.items():
        goal = f"<= {CPU_GOAL:.0f} %" if name.startswith("640") else "(info)"
        ok = detection <= CPU_GOAL if name.startswith("640") else None
        rows.append(Row(f"CPU detection, {name}", goal, f"{detection:.1f} %", ok))
        rows.append(Row("  of which decoder + analysis threads", "", f"{threads:.1f} %", None))
        rows.append(Row("  hub alone / hub + detection", "", f"{alone:.1f} / {both:.1f} %", None))

    width = max(len(r.what) for r in rows)
    print(f"\n{'measure':<{width}}  {'goal':<10}  {'measured':<14}  result")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 14}  ------")
    for row in rows:
        result = "" if row.ok is None else ("PASS" if row.ok else "FAIL")
        print(f"{row.what:<{width}}  {row.goal:<10}  {row.measured:<14}  {result}")
    print(f"\nlatencies (s): {', '.join(f'{x:.2f}' for x in latencies)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onsets", type=int, default=7, help="motion onsets to time (>= 5)")
    parser.add_argument("--window", type=float, default=15.0, help="CPU window, seconds")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(max(5, args.onsets), args.window)))
