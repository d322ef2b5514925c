"""RecorderManager in a real Home Assistant: real camera, real files, injected free space."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
import os
from pathlib import Path
import threading
import time

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.hub import StreamHub
from custom_components.lightnvr.models import CameraConfig, HubOptions
from custom_components.lightnvr.recorder import (
    ISSUE_STORAGE_FULL,
    PAUSE_STORAGE_FULL,
    RecorderManager,
    Segment,
)
from custom_components.lightnvr.recorder.storage import PART_SUFFIX, DiskUsage, StorageLayout
from custom_components.lightnvr.source import CameraSource

from .infra.rtsp import RtspServer
from .test_recorder_segmenter import duration_of, encode, ffprobe, video_of, wait_until

GB = 1_000_000_000
CAMERA_ID = "01JCAMERA0000000000000000"


class FakeDisk:
    """The one disk-usage boundary, with a free space the test sets."""

    def __init__(self, free: int = 50 * GB, total: int = 100 * GB) -> None:
        self.free = free
        self.total = total

    def __call__(self, path: Path) -> DiskUsage:
        return DiskUsage(self.total, self.total - self.free, self.free)


def _options(root: Path, *, retention_days: int = 7, min_free_gb: float = 1.0) -> HubOptions:
    return HubOptions(
        engine="embedded",
        go2rtc_binary=None,
        go2rtc_url=None,
        storage_path=root,
        retention_days=retention_days,
        min_free_gb=min_free_gb,
    )


def _camera(url: str, *, record: bool = True) -> CameraConfig:
    return CameraConfig(
        camera_id=CAMERA_ID,
        name="Front door",
        source=CameraSource(url),
        substream=None,
        record=record,
        detect_motion=False,
    )


@pytest.fixture
async def hub(hass: HomeAssistant, rtsp_camera: RtspServer) -> AsyncIterator[StreamHub]:
    """The camera's hub: the recorder's only way to the camera."""
    hub = StreamHub("Front door", CameraSource(rtsp_camera.url("cam")), hass.loop)
    hub.start()
    yield hub
    await hub.async_stop()


async def test_records_and_reports_state(
    hass: HomeAssistant, hub: StreamHub, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """Segments appear on disk and in the index; sensors' numbers and listeners follow."""
    disk = FakeDisk()
    manager = RecorderManager(hass, _options(tmp_path / "rec"), segment_seconds=2.0, usage_fn=disk)
    await manager.async_start()
    loop_thread = threading.get_ident()
    calls: list[int] = []
    finished: list[Segment] = []
    manager.add_listener(lambda: calls.append(threading.get_ident()))
    remove_segment_listener = manager.add_segment_listener(finished.append)
    try:
        await manager.async_add_camera(_camera(rtsp_camera.url("cam")), hub)
        await wait_until(lambda: len(finished) >= 2, timeout=60)
        assert rtsp_camera.connected_clients == 1  # recording opened no connection of its own

        state = manager.camera_state(CAMERA_ID)
        assert state is not None
        assert state.enabled
        assert state.recording
        assert manager.is_recording_enabled(CAMERA_ID)
        assert calls
        assert set(calls) == {loop_thread}  # listeners run in the event loop

        status = manager.storage_status()
        assert status.path == tmp_path / "rec"
        assert status.used_bytes >= sum(s.size for s in finished)
        assert (status.free_bytes, status.total_bytes) == (disk.free, disk.total)
        assert status.min_free_bytes == GB
        assert status.oldest_recording == finished[0].start_time
        assert not status.storage_full
        assert status.last_check is not None
        assert manager.oldest_recording() == finished[0].start_time
        last = manager.last_segment_time(CAMERA_ID)
        assert last is not None
        assert last >= finished[1].end_time

        indexed = manager.index.segments(CAMERA_ID)
        assert finished[0] in indexed
        relative = manager.layout.relative(finished[0].path)
        assert relative.startswith(f"{CAMERA_ID}/")
        assert manager.resolve(relative) == finished[0].path

        remove_segment_listener()
        manager.set_recording(CAMERA_ID, False)
        await wait_until(lambda: not manager.camera_state(CAMERA_ID).recording)
        assert not manager.is_recording_enabled(CAMERA_ID)
        with pytest.raises(KeyError):
            manager.set_recording("unknown", True)
    finally:
        await manager.async_stop()
    files = sorted((tmp_path / "rec").rglob("*.mp4"))
    assert len(files) >= 2
    assert not list((tmp_path / "rec").rglob("*" + PART_SUFFIX))
    for path in files:
        probe = ffprobe(path)
        assert (video_of(probe)["codec_name"], video_of(probe)["width"]) == ("h264", 640)
        assert duration_of(probe) < 2.0 + 1.0 + 0.05  # within one GOP of the target


async def test_full_disk_pauses_recording_with_a_repair_and_resumes(
    hass: HomeAssistant, hub: StreamHub, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """Below the floor with nothing left to delete: paused + repair; space back: resumed."""
    disk = FakeDisk()
    root = tmp_path / "rec"
    manager = RecorderManager(
        hass, _options(root, min_free_gb=1.0), segment_seconds=2.0, usage_fn=disk
    )
    await manager.async_start()
    issues = ir.async_get(hass)
    try:
        await manager.async_add_camera(_camera(rtsp_camera.url("cam")), hub)
        await wait_until(lambda: len(manager.index) >= 1, timeout=60)

        disk.free = GB // 2
        result = await manager.async_run_retention()
        assert result is not None
        assert result.storage_full
        assert result.deleted  # everything finished went first
        assert manager.storage_full
        issue = issues.async_get_issue(DOMAIN, ISSUE_STORAGE_FULL)
        assert issue is not None
        assert issue.translation_key == "storage_full"
        assert issue.severity is ir.IssueSeverity.ERROR
        assert issue.translation_placeholders == {
            "path": str(root),
            "free": "0.5 GB",
            "minimum": "1.0 GB",
        }
        await wait_until(lambda: not manager.camera_state(CAMERA_ID).recording)
        state = manager.camera_state(CAMERA_ID)
        assert (state.enabled, state.paused, state.pause_reason) == (
            True,
            True,
            PAUSE_STORAGE_FULL,
        )
        assert manager.storage_status().storage_full

        # Just above the floor is not enough to flip back (no flapping at the edge).
        disk.free = GB + GB // 50
        await manager.async_run_retention()
        assert manager.storage_full
        assert issues.async_get_issue(DOMAIN, ISSUE_STORAGE_FULL) is not None

        disk.free = 5 * GB
        await manager.async_run_retention()
        assert not manager.storage_full
        assert issues.async_get_issue(DOMAIN, ISSUE_STORAGE_FULL) is None
        await wait_until(lambda: manager.camera_state(CAMERA_ID).recording, timeout=30)
        assert not manager.camera_state(CAMERA_ID).paused
    finally:
        await manager.async_stop()
    for path in root.rglob("*.mp4"):
        assert video_of(ffprobe(path))["codec_name"] == "h264"


async def test_retention_runs_at_start_and_on_its_timer(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """Old segments go at start-up; the periodic run applies a camera's own days."""
    root = tmp_path / "rec"
    layout = StorageLayout(root, dt_util.get_default_time_zone())
    now = time.time()
    paths = {}
    for name, age_days in (("old", 10), ("recent", 2)):
        part = layout.new_part_path(CAMERA_ID, now - age_days * 86400)
        part.write_bytes(b"\0" * 1000)
        end = now - age_days * 86400 + 60
        final = layout.final_path(part)
        part.rename(final)
        os.utime(final, (end, end))
        paths[name] = final
    manager = RecorderManager(hass, _options(root), usage_fn=FakeDisk())
    await manager.async_start()
    try:
        assert not paths["old"].exists()
        assert paths["recent"].exists()
        assert [s.path for s in manager.index.segments(CAMERA_ID)] == [paths["recent"]]

        manager.set_retention_days(CAMERA_ID, 1)
        async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=2))
        await hass.async_block_till_done()
        await wait_until(lambda: not paths["recent"].exists())
        assert len(manager.index) == 0
        assert manager.oldest_recording() is None
    finally:
        await manager.async_stop()


async def test_start_recovers_a_leftover_part(
    hass: HomeAssistant, media_cache: Path, camera_clip: Path, tmp_path: Path
) -> None:
    """A part file left by a crash is made playable, renamed and indexed at start-up."""
    clip = encode(
        media_cache / "fragmented_640x360_10s.mp4",
        [
            "-i", str(camera_clip), "-c", "copy", "-f", "mp4",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof",
        ],
    )  # fmt: skip
    root = tmp_path / "rec"
    layout = StorageLayout(root, dt_util.get_default_time_zone())
    start = float(int(time.time()) - 3600)
    part = layout.new_part_path(CAMERA_ID, start)
    data = clip.read_bytes()
    part.write_bytes(data[: len(data) * 3 // 4])  # killed in the middle of a fragment
    manager = RecorderManager(hass, _options(root), usage_fn=FakeDisk())
    await manager.async_start()
    try:
        assert not part.exists()
        final = layout.final_path(part)
        assert final.exists()
        segments = manager.index.segments(CAMERA_ID)
        assert [s.path for s in segments] == [final]
        assert segments[0].start == start
        probe = ffprobe(final)
        assert segments[0].duration == pytest.approx(duration_of(probe), abs=0.05)
        assert 5.0 <= duration_of(probe) < 8.0
    finally:
        await manager.async_stop()


async def test_stop_without_start_and_camera_removal(
    hass: HomeAssistant, hub: StreamHub, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """Removing a camera finishes its file; stopping a manager never started is harmless."""
    idle = RecorderManager(hass, _options(tmp_path / "idle"), usage_fn=FakeDisk())
    await idle.async_stop()

    manager = RecorderManager(hass, _options(tmp_path / "rec"), usage_fn=FakeDisk())
    await manager.async_add_camera(_camera(rtsp_camera.url("cam")), hub)  # before start
    assert manager.camera_ids == [CAMERA_ID]
    await manager.async_start()
    try:
        await wait_until(lambda: manager.camera_state(CAMERA_ID).bytes_written > 50_000)
        await manager.async_remove_camera(CAMERA_ID)
        assert manager.camera_state(CAMERA_ID) is None
        assert manager.camera_ids == []
        await asyncio.sleep(0)
        files = list((tmp_path / "rec").rglob("*.mp4"))
        assert len(files) == 1
        assert [s.path for s in manager.index.segments(CAMERA_ID)] == files
    finally:
        await manager.async_stop()
