"""Event clips with real parts: RTSP camera → StreamHub → ClipManager → MP4 judged by ffprobe.

Where a clip's frames come from is checked against the camera itself: an independent
subscriber of the same hub logs every packet with its arrival time, and the clip's first and
last pictures are found among them by their bytes (stream copy keeps them identical), so
"the clip starts before the trigger" is a fact about the video, not about our own numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import contextlib
from dataclasses import replace
import json
import os
from pathlib import Path
import shutil
import subprocess
import threading
import time
from typing import Any
from zoneinfo import ZoneInfo

import av
from av.bitstream import BitStreamFilterContext
from homeassistant.core import HomeAssistant
import pytest

from custom_components.lightnvr.detection import Box
from custom_components.lightnvr.hub import MediaPacket, StreamHub, StreamInfo, ThreadPacketQueue
from custom_components.lightnvr.media.fragments import CameraFragments
from custom_components.lightnvr.recorder.clips import (
    EVENTS_DIR,
    MANUAL_LABEL,
    ClipError,
    ClipHandle,
    ClipLayout,
    ClipManager,
    ClipRecorder,
    EventClip,
    label_slug,
    sidecar_path,
    snapshot_path,
)
from custom_components.lightnvr.recorder.segmenter import Segmenter
from custom_components.lightnvr.recorder.storage import (
    PART_SUFFIX,
    Segment,
    StorageLayout,
    UnsafePathError,
)
from custom_components.lightnvr.source import CameraSource

from .fragment_helpers import CollectingSink
from .infra.media import ffmpeg_binary
from .infra.rtsp import RtspServer

FFPROBE = "/usr/bin/ffprobe"
TZ = ZoneInfo("Europe/Berlin")  # not UTC: names and day folders must be local
GOP = 1.0  # the test camera sends a keyframe every second
FRAME = 0.04  # 25 fps
# Arrival times, media times and the wall clock agree to within this on a loaded 2-core machine.
SLACK = 0.35
# Clips take the camera muxer's whole fragments (cut at least this often): a clip ends at the
# fragment boundary nearest to its end, within half of this.
FRAGMENT = 0.5
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00test-snapshot\xff\xd9"

type ManagerFactory = Callable[..., Awaitable[ClipManager]]


# ----- helpers --------------------------------------------------------------------------------


def ffprobe(path: Path) -> dict[str, Any]:
    """Probe a file, decoding every frame; fail on any error message."""
    result = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,nb_read_frames,duration,sample_rate"
            ":format=duration",
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


def check_video(path: Path) -> float:
    """Assert the file is the camera's H.264, fully decodable, starting on a keyframe.

    Return its duration in seconds.
    """
    probe = ffprobe(path)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
    duration = float(probe["format"]["duration"])
    # Every frame decodes and nothing was lost: 25 fps for the whole length.
    assert abs(int(video["nb_read_frames"]) - duration * 25) <= 1
    pictures = clip_pictures(path)
    assert pictures[0][0], "the clip does not start on a keyframe"
    return duration


def clip_pictures(path: Path) -> list[tuple[bool, bytes]]:
    """Return (keyframe, picture NAL units) of every video packet of an MP4, in order."""
    with av.open(str(path)) as container:
        return [
            (bool(packet.is_keyframe), picture_key(avcc_nals(bytes(packet))))
            for packet in container.demux(container.streams.video[0])
            if packet.size
        ]


def avcc_nals(data: bytes) -> list[bytes]:
    """Split a length-prefixed (MP4) access unit into NAL units."""
    nals: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        nals.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return nals


def fragment_offsets(path: Path) -> list[int]:
    """Return where each complete top-level `moof` of an MP4 starts."""
    data = path.read_bytes()
    offsets: list[int] = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size < 8 or pos + size > len(data):
            break
        if data[pos + 4 : pos + 8] == b"moof":
            offsets.append(pos)
        pos += size
    return offsets


def mdat_payloads(data: bytes) -> list[bytes]:
    """Return the media data of each top-level `mdat` of an MP4 (what retiming never touches)."""
    payloads: list[bytes] = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size < 8 or pos + size > len(data):
            break
        if data[pos + 4 : pos + 8] == b"mdat":
            payloads.append(data[pos + 8 : pos + size])
        pos += size
    return payloads


def annexb_nals(data: bytes) -> list[bytes]:
    """Split an Annex B access unit (what the hub publishes) into NAL units."""
    return [nal.rstrip(b"\x00") for nal in data.split(b"\x00\x00\x01") if nal.rstrip(b"\x00")]


def picture_key(nals: list[bytes]) -> bytes:
    """Return the coded picture alone: no SEI, SPS, PPS or delimiter (muxers may move those)."""
    return b"|".join(
        nal.rstrip(b"\x00") for nal in nals if nal and nal[0] & 0x1F not in {6, 7, 8, 9}
    )


class PacketLog:
    """An independent subscriber of the hub: every video packet with its arrival time."""

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub
        self._queue: ThreadPacketQueue = hub.subscribe_thread(16384, from_keyframe=False)
        self.packets: list[MediaPacket] = []

    def drain(self) -> list[MediaPacket]:
        """Take what arrived (never blocks: timeout 0)."""
        with contextlib.suppress(EOFError):  # closed: everything was taken
            while (packet := self._queue.get(timeout=0)) is not None:
                if packet.kind == "video":
                    self.packets.append(packet)
        return self.packets

    def seconds(self) -> float:
        """Return the time span logged so far."""
        packets = self.drain()
        return packets[-1].received - packets[0].received if packets else 0.0

    def close(self) -> None:
        """Unsubscribe (after a last drain)."""
        self.drain()
        self._hub.unsubscribe(self._queue)

    def arrival_of(self, picture: bytes, near: float, window: float = 4.0) -> float:
        """Return when the camera sent `picture`, searching `window` seconds around `near`.

        The test camera loops a 10 s file, so the same picture comes back every 10 s: the
        window keeps the search to one loop.
        """
        found = [
            packet.received
            for packet in self.packets
            if abs(packet.received - near) <= window
            and picture_key(annexb_nals(packet.data)) == picture
        ]
        assert len(found) == 1, f"picture found {len(found)} times near the expected time"
        return found[0]


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `predicate` without blocking the loop."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def finished(handle: ClipHandle, timeout: float = 60.0) -> EventClip:
    """Wait for a clip and return it (it must have been written)."""
    async with asyncio.timeout(timeout):
        clip = await handle.wait()
    assert clip is not None
    return clip


def event_files(root: Path) -> list[Path]:
    """Return every file under the events folder, by name."""
    return sorted(path for path in (root / EVENTS_DIR).rglob("*") if path.is_file())


class FeedSource:
    """A hub-like source fed from a real file: what a StreamHub would publish for it.

    The packets are all handed over at once, with arrival times spread over the file's
    length and ending now, as if the camera had been streaming it until this moment. The
    camera then stays silent until `end()`, which closes the subscriptions as a stopping hub
    does (the muxer then completes the fragment it was building).
    """

    name = "feed"

    def __init__(self, path: Path) -> None:
        self.info, self.packets = self._demux(path)
        self._queues: list[ThreadPacketQueue] = []
        self._ended = False

    def end(self) -> None:
        """Stop the feed: open subscriptions end, new ones get nothing."""
        self._ended = True
        for queue in self._queues:
            queue.close()

    @staticmethod
    def _demux(path: Path) -> tuple[StreamInfo, list[MediaPacket]]:
        packets: list[MediaPacket] = []
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            audio = container.streams.audio[0]
            vctx: Any = video.codec_context
            actx: Any = audio.codec_context
            info = StreamInfo(
                generation=1,
                video_codec=vctx.name,
                width=vctx.width,
                height=vctx.height,
                time_base=video.time_base,
                fps=float(video.average_rate),
                extradata=bytes(vctx.extradata),
                audio_codec=actx.name,
                audio_sample_rate=actx.sample_rate,
                audio_channels=actx.channels,
                audio_extradata=bytes(actx.extradata),
            )
            bsf = BitStreamFilterContext("h264_mp4toannexb", video)
            for packet in container.demux(video, audio):
                if not packet.size:
                    continue
                kind = "video" if packet.stream is video else "audio"
                pts, dts, time_base = packet.pts, packet.dts, packet.time_base
                keyframe = bool(packet.is_keyframe) and kind == "video"
                outs = bsf.filter(packet) if kind == "video" else [packet]
                packets.extend(
                    MediaPacket(kind, bytes(out), pts, dts, time_base, keyframe, 0.0, 1)
                    for out in outs
                )
        end = max(float((p.dts or 0) * p.time_base) for p in packets)
        base = time.monotonic() - end
        timed = [replace(p, received=base + float((p.dts or 0) * p.time_base)) for p in packets]
        timed.sort(key=lambda p: p.received)
        return info, timed

    def subscribe_thread(
        self, maxlen: int = 1024, *, from_keyframe: bool = True
    ) -> ThreadPacketQueue:
        queue = ThreadPacketQueue(len(self.packets) + 1)
        if not self._ended:
            for packet in self.packets:
                queue.put(packet)
            self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: ThreadPacketQueue) -> None:
        queue.close()


class SilentSource:
    """A hub that never delivers a packet (a camera that is down from the start)."""

    name = "silent"
    info: StreamInfo | None = None

    def __init__(self) -> None:
        self.queues: list[ThreadPacketQueue] = []

    def subscribe_thread(
        self, maxlen: int = 1024, *, from_keyframe: bool = True
    ) -> ThreadPacketQueue:
        queue = ThreadPacketQueue(maxlen)
        self.queues.append(queue)
        return queue

    def unsubscribe(self, queue: ThreadPacketQueue) -> None:
        queue.close()


# ----- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def camera_hub(hass: HomeAssistant, rtsp_camera: RtspServer) -> AsyncIterator[StreamHub]:
    """A started hub reading the test camera (640x360 H.264, 25 fps, keyframe each second)."""
    hub = StreamHub(
        "Front door",
        CameraSource(rtsp_camera.url("cam")),
        hass.loop,
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    hub.start()
    yield hub
    await hub.async_stop()


@pytest.fixture
async def make_manager(hass: HomeAssistant, tmp_path: Path) -> AsyncIterator[ManagerFactory]:
    """Start ClipManagers (storage in tmp_path unless given); stop them all at the end."""
    managers: list[ClipManager] = []

    async def _make(root: Path | None = None, **kwargs: Any) -> ClipManager:
        manager = ClipManager(hass, root or tmp_path / "storage", tz=TZ, **kwargs)
        await manager.async_start()
        managers.append(manager)
        return manager

    yield _make
    for manager in managers:
        await manager.async_stop()


def make_av_clip(folder: Path) -> Path:
    """640x360 25 fps H.264 (keyframe each second) with 48 kHz mono AAC, 6 s (cached)."""
    path = folder / "clips_h264_aac_640x360_6s.mp4"
    if not path.exists():
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
        result = subprocess.run(
            [
                ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=6",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=6",
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25",
                "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0", "-b:v", "800k",
                "-c:a", "aac", "-b:a", "64k", "-ac", "1", str(tmp),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        os.replace(tmp, path)
    return path


async def buffering(manager: ClipManager, hub: StreamHub, seconds: float) -> None:
    """Add the camera and wait until its buffer holds `seconds` of video."""
    await manager.async_add_camera("cam1", hub)
    await wait_until(lambda: manager.buffered_seconds("cam1") >= seconds)


# ----- tests ----------------------------------------------------------------------------------


async def test_event_clip_has_pre_roll_and_post_roll(
    camera_hub: StreamHub, make_manager: ManagerFactory, tmp_path: Path
) -> None:
    """Trigger after streaming, release: one valid clip from before the trigger to post-roll."""
    pre, post = 2.0, 1.0
    manager = await make_manager(pre_roll=pre, post_roll=post)
    finished_clips: list[EventClip] = []
    manager.add_listener(finished_clips.append)
    log = PacketLog(camera_hub)
    try:
        await buffering(manager, camera_hub, pre)
        await wait_until(lambda: log.seconds() >= pre + 2 * GOP)
        trigger_mono, trigger_wall = time.monotonic(), time.time()
        handle = manager.async_trigger(
            "cam1", "Person", confidence=0.91, box=Box(0.1, 0.2, 0.3, 0.4), snapshot=JPEG
        )
        await asyncio.sleep(1.5)
        assert not handle.done
        assert manager.active_clip("cam1") is handle
        release_mono, release_wall = time.monotonic(), time.time()
        assert manager.async_release("cam1", "Person")
        clip = await finished(handle)
        await wait_until(lambda: bool(finished_clips))  # listeners run in the loop too
    finally:
        log.close()

    # Files: video, snapshot, sidecar under events/<camera>/<local day>/<HH-MM-SS>_<label>.
    start_local = clip.start_time.astimezone(TZ)
    stem = f"{start_local:%H-%M-%S}_person"
    folder = tmp_path / "storage" / EVENTS_DIR / "cam1" / f"{start_local:%Y-%m-%d}"
    assert clip.path == folder / f"{stem}.mp4"
    assert event_files(tmp_path / "storage") == sorted(
        [clip.path, folder / f"{stem}.json", folder / f"{stem}.jpg"]
    )
    assert snapshot_path(clip.path).read_bytes() == JPEG
    assert clip.snapshot == snapshot_path(clip.path)
    assert abs(clip.path.stat().st_mtime - clip.end) < 0.01
    meta = json.loads(sidecar_path(clip.path).read_text())
    assert meta["camera_id"] == "cam1"
    assert meta["labels"] == ["Person"]
    assert meta["confidence"] == pytest.approx(0.91)
    assert meta["box"] == {"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}
    assert (meta["start"], meta["end"]) == (pytest.approx(clip.start), pytest.approx(clip.end))
    assert meta["manual"] is False
    assert (clip.labels, clip.confidence, clip.manual) == (("Person",), 0.91, False)

    # The video: valid, starts on a keyframe, as long as its index entry says.
    duration = check_video(clip.path)
    assert abs(duration - clip.duration) < 0.05
    # Starts `pre` seconds before the trigger, on the keyframe at or before that moment ...
    assert trigger_wall - pre - GOP - SLACK <= clip.start <= trigger_wall - pre + 0.05
    # ... and ends `post` seconds after the release.
    assert abs(clip.end - (release_wall + post)) < SLACK
    active = release_wall - trigger_wall
    assert pre + active + post - SLACK <= duration <= pre + active + post + GOP + SLACK

    # The camera's own packets: the clip's first picture was sent before the trigger, by at
    # least the pre-roll; its last one about `post` seconds after the release (the clip ends
    # at the fragment boundary nearest to that moment).
    pictures = clip_pictures(clip.path)
    first = log.arrival_of(pictures[0][1], near=trigger_mono - pre)
    assert trigger_mono - pre - GOP - SLACK <= first <= trigger_mono - pre + 0.01
    last = log.arrival_of(pictures[-1][1], near=release_mono + post)
    assert release_mono + post - SLACK <= last <= release_mono + post + FRAGMENT / 2 + 0.01

    # Indexed, announced once, and over: a second release finds nothing to end.
    assert finished_clips == [clip]
    assert manager.clips("cam1") == [clip]
    assert manager.days("cam1") == [start_local.date()]
    assert manager.get(clip.path) == clip
    assert manager.relative(clip.path) == f"events/cam1/{start_local:%Y-%m-%d}/{stem}.mp4"
    assert manager.resolve(manager.relative(clip.path)) == clip.path.resolve()
    assert manager.active_clip("cam1") is None
    assert not manager.async_release("cam1", "Person")


async def test_overlapping_triggers_extend_one_clip(
    camera_hub: StreamHub, make_manager: ManagerFactory, tmp_path: Path
) -> None:
    """Triggers while a clip runs (or is in its post-roll) extend it; labels are all kept."""
    pre, post = 1.0, 2.0
    manager = await make_manager(pre_roll=pre, post_roll=post)
    await buffering(manager, camera_hub, pre)

    first_wall = time.time()
    handle = manager.async_trigger("cam1", "motion")
    await asyncio.sleep(0.5)
    assert manager.async_trigger("cam1", "person", confidence=0.7, snapshot=JPEG) is handle
    assert manager.async_release("cam1", "motion")
    await asyncio.sleep(0.5)
    assert not handle.done  # "person" still holds it
    assert manager.async_release("cam1", "person")
    await asyncio.sleep(0.5)  # in the post-roll
    assert not handle.done
    again = manager.async_trigger("cam1", "car", confidence=0.95, box=[0.5, 0.5, 0.9, 0.9])
    assert again is handle
    await asyncio.sleep(0.3)
    last_release_wall = time.time()
    assert manager.async_release("cam1", "car")
    clip = await finished(handle)

    assert clip.labels == ("motion", "person", "car")
    assert handle.labels == clip.labels
    assert clip.confidence == pytest.approx(0.95)  # the best detection titles the clip
    assert clip.box == {"x_min": 0.5, "y_min": 0.5, "x_max": 0.9, "y_max": 0.9}
    assert clip.path.name.endswith("_motion.mp4")  # named by the label that started it
    assert [p.suffix for p in event_files(tmp_path / "storage")] == [".jpg", ".json", ".mp4"]
    meta = json.loads(sidecar_path(clip.path).read_text())
    assert set(meta["detections"]) == {"motion", "person", "car"}
    assert meta["detections"]["person"]["confidence"] == pytest.approx(0.7)

    duration = check_video(clip.path)
    expected = pre + (last_release_wall - first_wall) + post
    assert expected - SLACK <= duration <= expected + GOP + SLACK

    # A trigger after the end starts a new clip.
    fresh = manager.async_trigger("cam1", "motion")
    assert fresh is not handle
    assert manager.async_release("cam1", "motion")
    second = await finished(fresh)
    assert second.path != clip.path
    assert second.start >= clip.end - pre - GOP - SLACK  # its pre-roll may overlap the first
    check_video(second.path)
    assert len(manager.clips("cam1")) == 2


async def test_max_length_bounds_a_clip_never_released(
    camera_hub: StreamHub, make_manager: ManagerFactory
) -> None:
    """A detection stuck "on" gets a clip of `max_length` seconds, then the clip is over."""
    manager = await make_manager(pre_roll=1.0, post_roll=1.0, max_length=3.0)
    await buffering(manager, camera_hub, 1.0)
    handle = manager.async_trigger("cam1", "person")
    clip = await finished(handle)

    duration = check_video(clip.path)
    # Measured on the media timeline: never longer, at most a frame shorter (GOP-aligned start).
    assert 3.0 - FRAME - 0.005 <= duration <= 3.0 + 0.005
    assert abs(clip.duration - duration) < 0.01
    # The held label is forgotten with the clip: releasing it ends nothing.
    assert manager.active_clip("cam1") is None
    assert not manager.async_release("cam1", "person")


async def test_save_clip_has_requested_length_and_pre_roll(
    camera_hub: StreamHub, make_manager: ManagerFactory
) -> None:
    """`save_clip`: `duration` in all, `pre_roll` of it before the call; beside event clips."""
    manager = await make_manager(pre_roll=1.0, post_roll=1.0, buffer_seconds=3.0)
    await buffering(manager, camera_hub, 3.0)
    event = manager.async_trigger("cam1", "person")  # an event clip running meanwhile

    call_wall = time.time()
    path = await manager.async_save_clip("cam1", 4.0, 3.0)
    assert manager.async_release("cam1", "person")
    event_clip = await finished(event)

    clip = manager.get(path)
    assert clip is not None
    assert clip.manual
    assert clip.labels == (MANUAL_LABEL,)
    assert path.name.endswith(f"_{MANUAL_LABEL}.mp4")
    assert json.loads(sidecar_path(path).read_text())["manual"] is True
    duration = check_video(path)
    assert 4.0 - SLACK <= duration <= 4.0 + GOP + SLACK
    assert call_wall - 3.0 - GOP - SLACK <= clip.start <= call_wall - 3.0 + 0.05
    assert abs(clip.end - (call_wall + 1.0)) < SLACK
    # The event clip went on by itself: two files, not one.
    assert event_clip.path != path
    assert not event_clip.manual
    check_video(event_clip.path)

    with pytest.raises(ValueError):
        await manager.async_save_clip("cam1", 2.0, 3.0)  # more pre-roll than length
    with pytest.raises(ValueError):
        await manager.async_save_clip("cam1", 0.0, 0.0)
    with pytest.raises(ClipError):
        await manager.async_save_clip("nope", 2.0, 1.0)


async def test_save_clip_without_video_fails(make_manager: ManagerFactory, tmp_path: Path) -> None:
    """A camera that sends nothing: the service fails instead of waiting forever."""
    manager = await make_manager(post_roll=0.5)
    await manager.async_add_camera("cam1", SilentSource())
    with pytest.raises(ClipError):
        await manager.async_save_clip("cam1", 0.5, 0.0)
    handle = manager.async_trigger("cam1", "motion")
    assert manager.async_release("cam1", "motion")
    async with asyncio.timeout(30):
        assert await handle.wait() is None
    assert event_files(tmp_path / "storage") == []


async def test_restart_indexes_clips_and_retention_deletes_old_ones(
    camera_hub: StreamHub, make_manager: ManagerFactory, tmp_path: Path
) -> None:
    """Clips are found again after a restart; retention deletes them (and folders) by age."""
    manager = await make_manager(pre_roll=1.0, post_roll=0.5)
    await buffering(manager, camera_hub, 1.0)
    handle = manager.async_trigger("cam1", "person", confidence=0.8, snapshot=JPEG)
    assert manager.async_release("cam1", "person")
    clip = await finished(handle)
    await manager.async_stop()

    again = await make_manager(retention_days=30)
    assert again.clips("cam1") == [clip]  # same start, end, labels, snapshot from disk

    assert await again.async_run_retention(now=clip.end + 29 * 86400) == []
    assert clip.path.exists()
    deleted = await again.async_run_retention(now=clip.end + 31 * 86400)
    assert deleted == [clip]
    assert event_files(tmp_path / "storage") == []
    assert not (tmp_path / "storage" / EVENTS_DIR / "cam1").exists()  # emptied folders go
    assert (tmp_path / "storage" / EVENTS_DIR).is_dir()
    assert again.clips("cam1") == []


async def test_leftover_part_is_recovered_and_stop_finishes_clip(
    camera_hub: StreamHub, make_manager: ManagerFactory, tmp_path: Path
) -> None:
    """A crash mid-clip leaves a `.part` that the next start makes a clip; a stop finishes."""
    manager = await make_manager(pre_roll=1.0)
    await buffering(manager, camera_hub, 1.0)
    handle = manager.async_trigger("cam1", "person", confidence=0.66, snapshot=JPEG)
    await wait_until(lambda: handle.part_path is not None)
    part = handle.part_path
    assert part is not None
    assert part.name.endswith(".mp4" + PART_SUFFIX)
    await wait_until(lambda: len(fragment_offsets(part)) >= 3)

    # What a crash leaves: the files as they are on disk, the last fragment half written.
    crashed = tmp_path / "crashed"
    copy = crashed / part.relative_to(tmp_path / "storage")
    copy.parent.mkdir(parents=True)
    data = part.read_bytes()
    last_fragment = fragment_offsets(part)[-1]
    copy.write_bytes(data[: last_fragment + (len(data) - last_fragment) // 2])
    shutil.copyfile(sidecar_path(part), sidecar_path(copy))
    shutil.copyfile(snapshot_path(part), snapshot_path(copy))
    assert json.loads(sidecar_path(copy).read_text())["end"] is None

    # Stopping with the clip held finishes it validly.
    await manager.async_stop()
    stopped = await finished(handle)
    check_video(stopped.path)
    assert not list((tmp_path / "storage").rglob("*" + PART_SUFFIX))

    recovered_manager = await make_manager(root=crashed)
    (recovered,) = recovered_manager.clips("cam1")
    assert not copy.exists()
    assert recovered.path == copy.with_name(copy.name.removesuffix(PART_SUFFIX))
    assert recovered.size == last_fragment  # the torn fragment was cut off
    duration = check_video(recovered.path)
    assert abs(recovered.duration - duration) < 0.05
    assert recovered.start == pytest.approx(stopped.start)
    assert (recovered.labels, recovered.confidence) == (("person",), pytest.approx(0.66))
    assert recovered.snapshot == snapshot_path(recovered.path)
    meta = json.loads(sidecar_path(recovered.path).read_text())
    assert meta["recovered"] is True
    assert meta["end"] == pytest.approx(recovered.end)
    assert abs(os.stat(recovered.path).st_mtime - recovered.end) < 0.01


async def test_camera_going_away_finishes_the_clip(
    camera_hub: StreamHub, rtsp_camera: RtspServer, make_manager: ManagerFactory
) -> None:
    """The camera stops mid-clip: the clip is finished, valid, up to the last frame."""
    manager = await make_manager(pre_roll=1.0)
    await buffering(manager, camera_hub, 1.0)
    handle = manager.async_trigger("cam1", "person")
    await wait_until(lambda: handle.part_path is not None)
    await asyncio.sleep(1.5)
    rtsp_camera.stop()
    down_wall = time.time()
    clip = await finished(handle)  # never released: the end of the video ends it

    duration = check_video(clip.path)
    assert duration >= 1.5
    assert clip.end <= down_wall + SLACK
    assert manager.active_clip("cam1") is None

    # The camera comes back: a new clip's pre-roll never reaches into the outage.
    rtsp_camera.start()
    back_wall = time.time()
    await wait_until(lambda: manager.buffered_seconds("cam1") >= 0.5)
    again = manager.async_trigger("cam1", "person")
    assert again is not handle
    assert manager.async_release("cam1", "person")
    second = await finished(again)
    check_video(second.path)
    assert second.start >= back_wall


async def test_hub_restart_ends_the_clip_and_buffering_resumes(
    camera_hub: StreamHub, make_manager: ManagerFactory
) -> None:
    """The hub stops mid-clip (its queues close): the clip ends; once it is back, clips work."""
    manager = await make_manager(pre_roll=1.0)
    await buffering(manager, camera_hub, 1.0)
    handle = manager.async_trigger("cam1", "person")
    await wait_until(lambda: handle.part_path is not None)
    await asyncio.sleep(1.0)
    await camera_hub.async_stop()
    clip = await finished(handle)  # never released: the end of the stream ends it
    check_video(clip.path)
    assert manager.active_clip("cam1") is None
    await wait_until(lambda: manager.buffered_seconds("cam1") == 0.0)  # gone with the stream

    camera_hub.start()  # the recorder subscribes again by itself
    await wait_until(lambda: manager.buffered_seconds("cam1") >= 0.5)
    again = manager.async_trigger("cam1", "person")
    assert again is not handle
    assert manager.async_release("cam1", "person")
    check_video((await finished(again)).path)


async def test_clips_and_recorder_share_one_muxer(
    hass: HomeAssistant, camera_hub: StreamHub, tmp_path: Path
) -> None:
    """A clip recorder and a recorder on one CameraFragments: the camera is muxed once.

    Both files are runs of the very fragments the one muxer made (their media data is the
    same bytes), and the clip's pre-roll is fragments muxed before the trigger.
    """
    pre = 1.0
    fragments = CameraFragments("cam1", camera_hub)
    probe = CollectingSink()  # every fragment the muxer hands out
    segments: list[Segment] = []
    segmenter = Segmenter(
        "cam1",
        fragments,
        StorageLayout(tmp_path / "recordings", TZ),
        segment_seconds=3600,
        on_segment=segments.append,
    )
    recorder = ClipRecorder(
        "cam1",
        fragments,
        ClipLayout(tmp_path / "clips", TZ),
        hass.loop,
        pre_roll=pre,
        post_roll=0.5,
    )
    fragments.add_sink(probe)
    segmenter.start()
    recorder.start()
    fragments.start()
    try:
        await wait_until(lambda: recorder.buffered_seconds >= pre + 2 * GOP)
        threads = {thread.name for thread in threading.enumerate()}
        assert "lightnvr-mux-cam1" in threads
        assert not threads & {"lightnvr-clips-cam1", "lightnvr-rec-cam1"}  # no muxer of their own
        muxed_before = list(probe.fragments)
        trigger_wall = time.time()
        handle = recorder.trigger("person")
        await asyncio.sleep(1.0)
        assert recorder.release("person")
        clip = await finished(handle)
    finally:
        await hass.async_add_executor_job(fragments.stop)  # the runtime's order
        await hass.async_add_executor_job(segmenter.stop)
        await hass.async_add_executor_job(recorder.stop)

    # Muxed once: every fragment the muxer made reached every sink, and nothing else was muxed.
    assert fragments.fragments == len(probe.fragments) > 0
    (segment,) = segments
    check_video(clip.path)
    check_video(segment.path)
    muxed = [mdat_payloads(fragment.data)[0] for fragment in probe.fragments]
    clip_data = mdat_payloads(clip.path.read_bytes())
    segment_data = mdat_payloads(segment.path.read_bytes())
    first = muxed.index(clip_data[0])
    assert muxed[first : first + len(clip_data)] == clip_data
    offset = muxed.index(segment_data[0])
    assert muxed[offset : offset + len(segment_data)] == segment_data
    # The clip's fragments are the segment's own (the same moments of the one muxer).
    assert offset <= first
    assert first + len(clip_data) <= offset + len(segment_data)

    # The pre-roll: a keyframe fragment muxed before the trigger, that arrived at least the
    # pre-roll before it (and at most a GOP more).
    opening = probe.fragments[first]
    assert any(fragment is opening for fragment in muxed_before)
    assert opening.keyframe
    assert opening.arrived is not None
    assert trigger_wall - pre - GOP - SLACK <= opening.arrived <= trigger_wall - pre + 0.01
    assert clip.start == pytest.approx(opening.arrived)


async def test_stop_before_start_gives_up_pending_clips(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """A recorder stopped before its thread ever ran still resolves the clips asked of it."""
    recorder = ClipRecorder("cam1", SilentSource(), ClipLayout(tmp_path, TZ), hass.loop)
    handle = recorder.save(2.0, 0.0)
    await hass.async_add_executor_job(recorder.stop)
    async with asyncio.timeout(5):
        assert await handle.wait() is None
    assert not recorder.alive
    with pytest.raises(ClipError):
        recorder.trigger("motion")


async def test_audio_is_copied_with_the_video(
    media_cache: Path, make_manager: ManagerFactory
) -> None:
    """AAC audio goes into the clip beside the video, over the same time span."""
    source = FeedSource(make_av_clip(media_cache))
    manager = await make_manager(pre_roll=3.0)
    await manager.async_add_camera("cam1", source)
    await wait_until(lambda: manager.buffered_seconds("cam1") >= 3.0)
    saving = asyncio.create_task(manager.async_save_clip("cam1", 3.0, 3.0))  # all pre-roll
    # The clip opens from the ring; the feed then ends, which completes the fragment the muxer
    # was building (the last half second of the feed) and ends the clip with it.
    root = manager.layout.root
    await wait_until(lambda: any(p.name.endswith(PART_SUFFIX) for p in root.rglob("*")))
    source.end()
    path = await saving

    duration = check_video(path)
    assert 3.0 - 0.05 <= duration <= 3.0 + GOP + 0.05
    probe = ffprobe(path)
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (audio["codec_name"], int(audio["sample_rate"])) == ("aac", 48000)
    assert abs(float(audio["duration"]) - float(video["duration"])) < 0.1


async def test_names_and_paths_are_safe(hass: HomeAssistant, tmp_path: Path) -> None:
    """Labels become safe file names; camera ids and relative paths cannot leave the root."""
    assert label_slug("Person") == "person"
    assert label_slug("../../etc/passwd") == "etc-passwd"
    assert label_slug("Fahrrad_mit Anhänger") == "fahrrad-mit-anh-nger"
    assert label_slug("___") == "event"
    assert len(label_slug("x" * 100)) == 32

    layout = ClipLayout(tmp_path, TZ)
    with pytest.raises(UnsafePathError):
        layout.camera_dir("../escape")
    part = await hass.async_add_executor_job(layout.new_part_path, "cam1", 1.7e9, "a/b")
    assert part.parent.parent == tmp_path / EVENTS_DIR / "cam1"
    assert part.name.endswith("_a-b.mp4" + PART_SUFFIX)

    manager = ClipManager(hass, tmp_path, tz=TZ)
    with pytest.raises(UnsafePathError):
        await manager.async_add_camera("..", SilentSource())
    for bad in ("../x.mp4", "/etc/passwd", "events/../../x.mp4"):
        with pytest.raises(UnsafePathError):
            manager.resolve(bad)
    with pytest.raises(ClipError):
        manager.async_trigger("unknown", "person")
    assert not manager.async_release("unknown", "person")
