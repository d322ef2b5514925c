"""Segmenter with real parts: RTSP camera → StreamHub → fragmented MP4 files judged by ffprobe.

Also run as a program (``python -m tests.test_recorder_segmenter URL ROOT``) it records a
camera until killed: the SIGKILL test runs it in a child process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from datetime import UTC
import errno
from fractions import Fraction
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any
from zoneinfo import ZoneInfo

import av
from av.bitstream import BitStreamFilterContext
import pytest

from custom_components.lightnvr.hub import MediaPacket, StreamHub, StreamInfo, ThreadPacketQueue
from custom_components.lightnvr.media.bmff import iter_boxes, traf_fields
from custom_components.lightnvr.media.params import parameter_sets_from_keyframe
from custom_components.lightnvr.recorder import (
    segment_writer as segment_writer_module,
    segmenter as segmenter_module,
)
from custom_components.lightnvr.recorder.segment_writer import FragmentInfo
from custom_components.lightnvr.recorder.segmenter import PAUSE_STORAGE_FULL, Segmenter
from custom_components.lightnvr.recorder.storage import (
    PART_SUFFIX,
    Segment,
    StorageLayout,
    recover_part,
)
from custom_components.lightnvr.source import CameraSource

from .infra.media import ffmpeg_binary
from .infra.rtsp import RtspServer

FFPROBE = "/usr/bin/ffprobe"
ROOT = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/Berlin")
GOP_SECONDS = 1.0  # every test clip has a keyframe each second


# ----- helpers shared by the recorder tests --------------------------------------------------


def ffprobe(path: Path) -> dict[str, Any]:
    """Probe a file, decoding every frame (-count_frames); fail on any error message."""
    result = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string,width,height,nb_read_frames,"
            "duration,sample_rate,channels:format=duration,format_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"{path.name}: {result.stderr[-1000:]}"
    return json.loads(result.stdout)


def video_of(probe: dict[str, Any]) -> dict[str, Any]:
    """Return the video stream of an ffprobe result."""
    return next(s for s in probe["streams"] if s["codec_type"] == "video")


def duration_of(probe: dict[str, Any]) -> float:
    """Return the container duration of an ffprobe result."""
    return float(probe["format"]["duration"])


def first_packet_is_keyframe(path: Path) -> bool:
    """Return True when the file's first video packet is a keyframe."""
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            return bool(packet.is_keyframe)
    return False


def encode(path: Path, args: list[str]) -> Path:
    """Run Debian's ffmpeg once per cache path (into a temporary name, then renamed)."""
    if path.exists():
        return path
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    os.replace(tmp, path)
    return path


def make_av_clip(folder: Path) -> Path:
    """640x360 25 fps H.264 (keyframe each second, no B-frames) with 48 kHz AAC, 12 s."""
    return encode(
        folder / "h264_aac_640x360_12s.mp4",
        [
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=12",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=12",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25",
            "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0", "-b:v", "800k",
            "-c:a", "aac", "-b:a", "64k", "-ac", "1",
        ],
    )  # fmt: skip


def make_hevc_clip(folder: Path) -> Path:
    """640x360 25 fps H.265 with B-frames (so PTS != DTS), keyframe each second, 6 s."""
    return encode(
        folder / "hevc_640x360_6s_bframes.mp4",
        [
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=6",
            "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-x265-params", "keyint=25:min-keyint=25:scenecut=0:bframes=2:log-level=error",
            "-b:v", "600k",
        ],
    )  # fmt: skip


def clip_packets(
    path: Path, *, annexb: bool = True, start: float | None = None
) -> tuple[StreamInfo, list[MediaPacket]]:
    """Demux a clip into the MediaPackets and StreamInfo a StreamHub would publish.

    Like the hub, H.264 becomes Annex B (StreamInfo keeps the file's avcC extradata); H.265 is
    passed on as the file has it unless `annexb` asks for the Annex B form of an RTSP camera.
    `received` follows the media clock from `start` (time.monotonic() by default).
    """
    base = time.monotonic() if start is None else start
    packets: list[MediaPacket] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        vctx: Any = video.codec_context
        actx: Any = audio.codec_context if audio is not None else None
        bsf_name = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}[vctx.name]
        bsf = BitStreamFilterContext(bsf_name, video) if annexb or vctx.name == "h264" else None
        info = StreamInfo(
            generation=1,
            video_codec=vctx.name,
            width=vctx.width,
            height=vctx.height,
            time_base=video.time_base,
            fps=float(video.average_rate) if video.average_rate else None,
            extradata=bytes(vctx.extradata) if vctx.extradata else None,
            audio_codec=actx.name if actx is not None else None,
            audio_sample_rate=actx.sample_rate if actx is not None else None,
            audio_channels=actx.channels if actx is not None else None,
            audio_extradata=bytes(actx.extradata) if actx is not None else None,
        )
        streams = [video] if audio is None else [video, audio]
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            kind = "video" if packet.stream is video else "audio"
            # Read everything first: filtering consumes the packet.
            time_base, pts, dts = packet.time_base, packet.pts, packet.dts
            keyframe = bool(packet.is_keyframe) and kind == "video"
            outs = bsf.filter(packet) if kind == "video" and bsf is not None else [packet]
            packets.extend(
                MediaPacket(
                    kind=kind,
                    data=bytes(out),
                    pts=pts,
                    dts=dts,
                    time_base=time_base,
                    keyframe=keyframe,
                    received=base + float((dts or 0) * time_base),
                    generation=1,
                )
                for out in outs
            )
    # A live source delivers audio and video as they happen, not in the file's chunk order.
    packets.sort(key=lambda p: p.received)
    return info, packets


class ClipFeed:
    """A hub-like source: MediaPackets from a real clip through real ThreadPacketQueues.

    `preload` packets are put into every new subscription at once (like the hub's GOP replay);
    `maxlen` bounds each queue like the hub does (so a preload larger than it loses packets).
    """

    def __init__(
        self, info: StreamInfo, *, preload: Iterable[MediaPacket] = (), maxlen: int = 100_000
    ) -> None:
        self.name = "clip"
        self.info: StreamInfo | None = info
        self._preload = list(preload)
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self.queues: list[ThreadPacketQueue] = []
        self.subscriptions = 0

    def subscribe_thread(
        self, maxlen: int = 1024, *, from_keyframe: bool = True
    ) -> ThreadPacketQueue:
        queue = ThreadPacketQueue(self._maxlen)
        for packet in self._preload:
            queue.put(packet)
        with self._lock:
            self.queues.append(queue)
            self.subscriptions += 1
        return queue

    def unsubscribe(self, queue: ThreadPacketQueue) -> None:
        with self._lock:
            if queue in self.queues:
                self.queues.remove(queue)
        queue.close()

    def put(self, packets: Iterable[MediaPacket]) -> None:
        with self._lock:
            queues = list(self.queues)
        for packet in packets:
            for queue in queues:
                queue.put(packet)

    def close(self) -> None:
        """End every subscription, like a hub that stops."""
        with self._lock:
            queues, self.queues = self.queues, []
        for queue in queues:
            queue.close()


class Collector:
    """Collects the segmenter's callbacks (called in the recorder thread)."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.fragments: list[FragmentInfo] = []

    def on_segment(self, segment: Segment) -> None:
        self.segments.append(segment)

    def on_fragment(self, fragment: FragmentInfo) -> None:
        self.fragments.append(fragment)


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `predicate` without blocking the loop."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def stop_segmenter(segmenter: Segmenter) -> None:
    """Stop (and join) a segmenter off the event loop."""
    await asyncio.get_running_loop().run_in_executor(None, segmenter.stop)


def finished_files(root: Path) -> list[Path]:
    """Return every finished segment under `root`, by name."""
    return sorted(root.rglob("*.mp4"))


@pytest.fixture
async def camera_hub(rtsp_camera: RtspServer) -> AsyncIterator[StreamHub]:
    """A started hub reading the test camera (640x360 H.264, 25 fps, keyframe each second)."""
    hub = StreamHub(
        "Front door",
        CameraSource(rtsp_camera.url("cam")),
        asyncio.get_running_loop(),
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    hub.start()
    yield hub
    await hub.async_stop()


# ----- tests -----------------------------------------------------------------------------------


async def test_records_rtsp_into_keyframe_cut_segments(
    camera_hub: StreamHub, tmp_path: Path
) -> None:
    """3 s segments from the real camera: right length, codec and size; every frame decodes."""
    layout = StorageLayout(tmp_path, TZ)
    got = Collector()
    segmenter = Segmenter(
        "cam1",
        camera_hub,
        layout,
        segment_seconds=3.0,
        on_segment=got.on_segment,
        on_fragment=got.on_fragment,
    )
    segmenter.start()
    try:
        await wait_until(lambda: len(got.segments) >= 3, timeout=60)
        state = segmenter.state()
        assert state.recording
        assert state.current_path is not None
        assert state.current_path.name.endswith(".mp4" + PART_SUFFIX)
    finally:
        await stop_segmenter(segmenter)

    state = segmenter.state()
    assert not state.recording
    assert state.dropped_packets == 0
    assert state.timestamp_repairs == 0
    assert state.segments_written == len(got.segments) >= 4  # the last one finished on stop
    assert not list(tmp_path.rglob("*" + PART_SUFFIX))

    for number, segment in enumerate(got.segments):
        assert segment.path.exists()
        # <storage>/<camera>/<local day>/<local HH-MM-SS>.mp4
        relative = segment.path.relative_to(tmp_path).parts
        assert relative[0] == "cam1"
        assert relative[1] == segment.start_time.astimezone(TZ).strftime("%Y-%m-%d")
        assert relative[2].startswith(segment.start_time.astimezone(TZ).strftime("%H-%M-%S"))
        probe = ffprobe(segment.path)
        video = video_of(probe)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
        assert int(video["nb_read_frames"]) >= 1
        assert first_packet_is_keyframe(segment.path)
        duration = duration_of(probe)
        assert abs(segment.duration - duration) < 0.05
        # The file's mtime is its end: what the index reads back after a restart.
        assert abs(segment.path.stat().st_mtime - segment.end) < 0.01
        if number < len(got.segments) - 1:  # cut on the first keyframe after 3 s
            assert 3.0 <= duration < 3.0 + GOP_SECONDS + 0.05
            assert int(video["nb_read_frames"]) == round(duration * 25)
            # One connection: each segment starts where the previous one ended.
            assert abs(got.segments[number + 1].start - segment.end) < 0.01

    # Fragments: each file is its init section and then the fragments reported to live HLS,
    # byte for byte but for their decode times: a `moof` at every keyframe (1 s GOP) and after
    # 0.5 s, the first of the file on a keyframe, together as long as the segment.
    for segment in got.segments:
        fragments = [
            f.fragment
            for f in got.fragments
            if segment.start - 0.01 <= f.start < segment.end - 0.01
        ]
        assert fragments
        data = segment.path.read_bytes()
        boxes = list(iter_boxes(data))
        assert [box[0] for box in boxes[:2]] == [b"ftyp", b"moov"]
        assert data[: boxes[1][3]] == fragments[0].init.data
        pairs = boxes[2:]
        assert [box[0] for box in pairs] == [b"moof", b"mdat"] * len(fragments)
        assert fragments[0].keyframe
        assert sum(f.keyframe for f in fragments) == round(segment.duration / GOP_SECONDS)
        # Every file's decode time starts at 0, although the fragments came from one container.
        first_moof = pairs[0]
        assert [f.value for f in traf_fields(data, first_moof[2], first_moof[3], 0)] == [0]
        for fragment, moof, mdat in zip(fragments, pairs[::2], pairs[1::2], strict=True):
            assert 0 < fragment.duration <= 0.5 + 0.04  # a frame past the cut at most
            assert len(fragment.data) == mdat[3] - moof[1]
            assert fragment.data[moof[3] - moof[1] :] == data[mdat[1] : mdat[3]]
        assert abs(sum(f.duration for f in fragments) - segment.duration) < 0.05
        assert abs(fragments[0].start - segment.start) < 0.01


async def test_switch_off_finishes_segment_and_on_starts_a_new_one(
    camera_hub: StreamHub, tmp_path: Path
) -> None:
    """Recording off closes the file at once (valid); on again starts a new file."""
    got = Collector()
    segmenter = Segmenter(
        "cam1", camera_hub, StorageLayout(tmp_path, TZ), on_segment=got.on_segment
    )
    segmenter.start()
    try:
        await wait_until(lambda: segmenter.state().bytes_written > 100_000)
        segmenter.set_enabled(False)
        await wait_until(lambda: len(got.segments) == 1 and not segmenter.state().recording)
        assert not segmenter.state().paused
        segmenter.pause(PAUSE_STORAGE_FULL)  # paused while off: not reported as paused
        assert not segmenter.state().paused
        segmenter.resume(PAUSE_STORAGE_FULL)
        segmenter.set_enabled(True)
        await wait_until(lambda: segmenter.state().bytes_written > 100_000)
        segmenter.pause(PAUSE_STORAGE_FULL)
        await wait_until(lambda: len(got.segments) == 2)
        state = segmenter.state()
        assert (state.paused, state.pause_reason, state.recording) == (
            True,
            PAUSE_STORAGE_FULL,
            False,
        )
    finally:
        await stop_segmenter(segmenter)
    assert len(finished_files(tmp_path)) == 2
    for segment in got.segments:
        assert video_of(ffprobe(segment.path))["codec_name"] == "h264"
    assert got.segments[1].start > got.segments[0].end
    # Re-subscribing replays the hub's cached GOP: nothing is written twice.
    assert segmenter.state().timestamp_repairs == 0


async def test_camera_restart_mid_segment_resumes_in_new_segment(
    camera_hub: StreamHub, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """The camera goes away mid-segment and comes back: two valid files with a gap between."""
    got = Collector()
    segmenter = Segmenter(
        "cam1", camera_hub, StorageLayout(tmp_path, TZ), on_segment=got.on_segment
    )
    segmenter.start()
    try:
        await wait_until(lambda: segmenter.state().bytes_written > 50_000)
        first_part = segmenter.state().current_path
        rtsp_camera.stop()
        down_at = time.time()
        await wait_until(lambda: camera_hub.stats().reconnects >= 1)
        rtsp_camera.start()
        await wait_until(
            lambda: (path := segmenter.state().current_path) is not None and path != first_part,
            timeout=60,
        )
        await wait_until(lambda: segmenter.state().bytes_written > 50_000)
    finally:
        await stop_segmenter(segmenter)
    files = finished_files(tmp_path)
    assert len(files) == 2
    assert [s.path for s in got.segments] == files
    first, second = got.segments
    assert first.end <= down_at + 0.5
    assert second.start - first.end > 0.3  # the outage shows as a gap, it is not hidden
    for segment in got.segments:
        probe = ffprobe(segment.path)
        assert (video_of(probe)["width"], video_of(probe)["height"]) == (640, 360)
        assert first_packet_is_keyframe(segment.path)
        assert abs(duration_of(probe) - segment.duration) < 0.05


def _corrupt(packets: list[MediaPacket]) -> tuple[list[MediaPacket], dict[str, int]]:
    """Break timestamps the way cameras do; return the packets and the faults by kind."""
    out: list[MediaPacket] = []
    faults = {"missing": 0, "non_monotonic": 0, "jump": 0}
    video_index = -1
    previous_video: MediaPacket | None = None
    for packet in packets:
        seconds = float((packet.dts or 0) * packet.time_base)
        shift = 0
        if seconds >= 3.5:
            shift += round(3600 / packet.time_base)  # the camera's clock jumps an hour ahead
        if seconds >= 7.5:
            shift -= round(7200 / packet.time_base)  # ... and then two hours back
        pts = None if packet.pts is None else packet.pts + shift
        dts = None if packet.dts is None else packet.dts + shift
        if packet.kind == "video":
            video_index += 1
            if video_index in {30, 31, 130}:
                pts = dts = None
                faults["missing"] += 1
            elif video_index in {60, 160} and previous_video is not None:
                pts, dts = previous_video.pts, previous_video.dts  # repeated timestamp
                faults["non_monotonic"] += 1
            elif video_index == 230 and previous_video is not None:
                assert previous_video.dts is not None
                dts = previous_video.dts - 5  # slightly backwards
                pts = dts
                faults["non_monotonic"] += 1
        fixed = replace(packet, pts=pts, dts=dts)
        if packet.kind == "video":
            previous_video = fixed
        out.append(fixed)
    faults["jump"] = 4  # two jumps, in the video and in the audio clock
    return out, faults


async def test_broken_timestamps_keep_recording(media_cache: Path, tmp_path: Path) -> None:
    """Missing, repeated, backwards and jumping timestamps: repaired, counted, all recorded."""
    info, packets = clip_packets(make_av_clip(media_cache))
    broken, faults = _corrupt(packets)
    feed = ClipFeed(info)
    got = Collector()
    segmenter = Segmenter(
        "cam1", feed, StorageLayout(tmp_path, TZ), segment_seconds=4.0, on_segment=got.on_segment
    )
    segmenter.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(broken)
        video_packets = sum(1 for p in packets if p.kind == "video")
    finally:  # stopping drains what is queued: every packet is written
        await stop_segmenter(segmenter)

    state = segmenter.state()
    counts = segmenter.repair_counts()
    assert counts.get("missing", 0) == faults["missing"]
    assert counts.get("non_monotonic", 0) >= faults["non_monotonic"]
    assert counts.get("jump", 0) == faults["jump"]
    assert state.timestamp_repairs == sum(counts.values())
    assert state.dropped_packets == 0

    frames = 0
    total = 0.0
    for segment in got.segments:
        probe = ffprobe(segment.path)
        video = video_of(probe)
        audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
        assert (audio["codec_name"], int(audio["sample_rate"])) == ("aac", 48000)
        # Lip sync survives the repairs: audio spans the same time as video in every file.
        assert abs(float(audio["duration"]) - float(video["duration"])) < 0.25
        frames += int(video["nb_read_frames"])
        total += duration_of(probe)
    assert frames == video_packets  # nothing was lost to the repairs
    assert len(got.segments) == 3
    assert abs(total - 12.0) < 0.3


@pytest.mark.parametrize("annexb", [False, True], ids=["hvcC", "annexb-in-band-only"])
async def test_hevc_is_copied(media_cache: Path, tmp_path: Path, annexb: bool) -> None:
    """H.265 with B-frames, from an hvcC source or in-band parameter sets only, plays in MP4."""
    info, packets = clip_packets(make_hevc_clip(media_cache), annexb=annexb)
    if annexb:
        # A camera that sends VPS/SPS/PPS only in-band: nothing in the SDP.
        assert parameter_sets_from_keyframe("hevc", packets[0].data)
        info = replace(info, extradata=None)
    feed = ClipFeed(info)
    got = Collector()
    segmenter = Segmenter("cam1", feed, StorageLayout(tmp_path, TZ), on_segment=got.on_segment)
    segmenter.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets)
    finally:
        await stop_segmenter(segmenter)
    assert len(got.segments) == 1
    probe = ffprobe(got.segments[0].path)
    video = video_of(probe)
    assert (video["codec_name"], video["codec_tag_string"]) == ("hevc", "hvc1")
    assert (video["width"], video["height"]) == (640, 360)
    assert int(video["nb_read_frames"]) == 150
    assert abs(duration_of(probe) - 6.0) < 0.1


async def test_lost_packets_are_counted_and_recording_resyncs(
    camera_clip: Path, tmp_path: Path
) -> None:
    """A queue that overflowed: the loss is counted, the file restarts cleanly on a keyframe."""
    info, packets = clip_packets(camera_clip)
    maxlen = 60
    feed = ClipFeed(info, preload=packets, maxlen=maxlen)  # 250 packets into a queue of 60
    got = Collector()
    segmenter = Segmenter("cam1", feed, StorageLayout(tmp_path, TZ), on_segment=got.on_segment)
    segmenter.start()
    try:
        await wait_until(lambda: segmenter.state().dropped_packets > 0)
    finally:
        await stop_segmenter(segmenter)
    assert segmenter.state().dropped_packets == len(packets) - maxlen
    assert len(got.segments) == 1
    probe = ffprobe(got.segments[0].path)
    # What was kept starts mid-GOP: the file starts at the next keyframe (the last 2 s).
    assert int(video_of(probe)["nb_read_frames"]) == 50
    assert first_packet_is_keyframe(got.segments[0].path)


async def test_write_error_keeps_what_is_on_disk_and_retries(
    camera_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails mid-segment: the complete fragments are kept, recording resumes later."""
    monkeypatch.setattr(segmenter_module, "_WRITE_RETRY_SECONDS", 0.3)
    original_write = segment_writer_module.SegmentWriter._write
    failed: list[int] = []

    def write(self: Any, data: bytes) -> None:
        if not failed and self.size + len(data) > 250_000:  # in the 3rd fragment
            failed.append(self.size)
            raise OSError(errno.ENOSPC, "No space left on device")
        original_write(self, data)

    monkeypatch.setattr(segment_writer_module.SegmentWriter, "_write", write)
    info, packets = clip_packets(camera_clip)
    feed = ClipFeed(info)
    got = Collector()
    segmenter = Segmenter("cam1", feed, StorageLayout(tmp_path, TZ), on_segment=got.on_segment)
    segmenter.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets)
        await wait_until(lambda: len(got.segments) == 1)
        state = segmenter.state()
        assert state.last_error is not None
        assert "No space left" in state.last_error
        # The retry comes by itself, on a new subscription; the camera went on meanwhile.
        await wait_until(lambda: feed.subscriptions == 2)
        assert not segmenter.state().paused
        later = clip_packets(camera_clip, start=packets[-1].received + 1)[1]
        feed.info = replace(info, generation=2)
        feed.put(replace(packet, generation=2) for packet in later)
    finally:
        await stop_segmenter(segmenter)
    assert failed
    salvaged, resumed = got.segments
    probe = ffprobe(salvaged.path)  # cut after its last complete fragment, playable
    # 25 fps, a keyframe each second, a fragment at each keyframe and after 0.5 s (13 frames).
    assert int(video_of(probe)["nb_read_frames"]) % 25 in (0, 13)
    assert 1.0 <= duration_of(probe) <= 3.0
    assert salvaged.size <= failed[0]
    assert abs(duration_of(ffprobe(resumed.path)) - 10.0) < 0.05
    assert not list(tmp_path.rglob("*" + PART_SUFFIX))


async def test_video_that_needs_transcoding_is_not_recorded(
    camera_clip: Path, tmp_path: Path
) -> None:
    """MJPEG (say) cannot be copied into MP4: the recorder says so and writes nothing."""
    info, packets = clip_packets(camera_clip)
    feed = ClipFeed(replace(info, video_codec="mjpeg"))
    segmenter = Segmenter("cam1", feed, StorageLayout(tmp_path, TZ))
    segmenter.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets[:60])
        await wait_until(lambda: segmenter.state().paused)
        state = segmenter.state()
        assert (state.pause_reason, state.recording) == ("unsupported_codec", False)
    finally:
        await stop_segmenter(segmenter)
    assert not list(tmp_path.rglob("*.mp4*"))


async def test_sigkill_mid_segment_loses_at_most_one_fragment(
    rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """A recorder process killed with SIGKILL leaves a readable file missing at most 2 s."""
    log = tmp_path / "child.log"
    root = tmp_path / "rec"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.test_recorder_segmenter", rtsp_camera.url("cam"), root],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        lines: list[str] = []

        def fragments() -> list[str]:
            lines[:] = [line for line in log.read_text().splitlines() if line.startswith("FRAG")]
            return lines

        await wait_until(lambda: len(fragments()) >= 1 or child.poll() is not None, timeout=60)
        assert lines, log.read_text()[-2000:]
        segment_start = float(lines[0].split()[2])
        await asyncio.sleep(5.3)  # mid-fragment, mid-segment (the segment is 10 min long)
        child.send_signal(signal.SIGKILL)
        killed_at = time.time()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    parts = list(root.rglob("*" + PART_SUFFIX))
    assert len(parts) == 1
    part = parts[0]
    probe = ffprobe(part)  # readable as it is, every frame decodes
    video = video_of(probe)
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
    recorded = duration_of(probe)
    missing = (killed_at - segment_start) - recorded
    assert recorded > 3.0
    assert -0.5 < missing <= 2.0

    # Start-up recovery makes it a normal segment with the same content.
    recovered = recover_part(StorageLayout(root, UTC), "cam", part)
    assert recovered is not None
    assert not part.exists()
    assert recovered.path.name == part.name.removesuffix(PART_SUFFIX)
    assert abs(duration_of(ffprobe(recovered.path)) - recorded) < 0.05
    assert abs(recovered.start - segment_start) < 1.0  # the name has whole seconds


async def test_timestamp_repair_unit() -> None:
    """The repair rules on their own: origin, missing, clamp, jumps both ways."""
    from custom_components.lightnvr.media.timestamps import TimestampRepair

    base = Fraction(1, 90000)
    clock = TimestampRepair(0.04)

    def packet(dts: int | None, received: float) -> MediaPacket:
        return MediaPacket("video", b"", dts, dts, base, False, received)

    assert clock.fix(packet(None, 0.0)) == (0, 0, None)  # RTSP's first packet: the origin
    assert clock.fix(packet(3600, 0.04)) == (3600, 3600, None)
    assert clock.fix(packet(None, 0.08)) == (7200, 7200, "missing")
    assert clock.fix(packet(7200, 0.12)) == (7201, 7201, "non_monotonic")
    assert clock.fix(packet(14400, 0.16)) == (14400, 14400, None)
    jumped = 14400 + 3600 * 90000
    assert clock.fix(packet(jumped, 0.20)) == (18000, 18000, "jump")
    assert clock.fix(packet(jumped + 3600, 0.24)) == (21600, 21600, None)
    assert clock.fix(packet(100, 0.28)) == (25200, 25200, "jump")  # clock reset to 0
    assert clock.fix(packet(3700, 0.32)) == (28800, 28800, None)


# ----- the child process of the SIGKILL test -----------------------------------------------------


def _child_main(url: str, root: str) -> None:
    """Record `url` into `root` until killed; print each fragment as it reaches the disk."""

    starts: list[float] = []  # the first fragment's start: the segment's (one segment only)

    def on_fragment(fragment: FragmentInfo) -> None:
        starts.append(fragment.start)
        sys.stdout.write(
            f"FRAGMENT {len(starts)} {starts[0]:.6f} {fragment.start + fragment.duration:.6f}\n"
        )
        sys.stdout.flush()

    async def record() -> None:
        hub = StreamHub("child", CameraSource(url), asyncio.get_running_loop())
        hub.start()
        segmenter = Segmenter(
            "cam",
            hub,
            StorageLayout(Path(root), UTC),
            segment_seconds=600.0,
            on_fragment=on_fragment,
        )
        segmenter.start()
        await asyncio.Event().wait()  # until SIGKILL

    asyncio.run(record())


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
