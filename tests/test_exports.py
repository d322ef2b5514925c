"""Exports: `lightnvr.export` through Home Assistant, and the stream-copy writer itself.

The camera's recordings are four real fragmented-MP4 files (H.264 + AAC, 45 s each, made by
FFmpeg as the recorder makes them: each file's media time starts at 0) with a 20 s camera
outage between the second and the third. A 3-minute export across the four comes out as one MP4
that ffprobe reads with both tracks and the length of the recorded time (the outage cut, and
noted in the sidecar), listed under Exports in the Media panel. A queued export is cancelled,
a non-admin is refused, bad ranges get clear errors, and the writer stopped mid-file leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
import json
from pathlib import Path
import subprocess
import threading
import time
from typing import Any

from homeassistant.core import Context, Event, HomeAssistant
from homeassistant.exceptions import ServiceValidationError, Unauthorized
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.exports import EVENT_EXPORT, export_file_name
from custom_components.lightnvr.recorder.export import (
    PART_SUFFIX,
    ExportCancelledError,
    write_export,
)
from custom_components.lightnvr.recorder.storage import Segment

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer

ENTITY_ID = "camera.yard"
FILE_SECONDS = 45
FILES = 4
OUTAGE_SECONDS = 20.0  # between the second and the third file
# Where the first file starts: an hour ago, on a whole second.
ORIGIN = float(int(time.time()) - 3600)


@pytest.fixture(scope="session")
def recording_files(media_cache: Path, camera_clip: Path) -> list[Path]:
    """Four 45 s recording files (H.264 + AAC fMP4, media time from 0 in each), made once."""
    folder = media_cache / "export_sources"
    files = sorted(folder.glob("part*.mp4"))
    if len(files) == FILES:
        return files
    folder.mkdir(exist_ok=True)
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-stream_loop", "-1", "-i", str(camera_clip),
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
            "-t", str(FILE_SECONDS * FILES),
            "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
            "-f", "segment", "-segment_time", str(FILE_SECONDS), "-reset_timestamps", "1",
            "-segment_format", "mp4",
            "-segment_format_options", "movflags=frag_keyframe+empty_moov+default_base_moof",
            str(folder / "part%d.mp4"),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    files = sorted(folder.glob("part*.mp4"))
    assert len(files) == FILES
    return files


def _probe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            "ffprobe", "-v", "error", "-show_entries",
            "format=duration,format_name:stream=codec_type,codec_name,duration",
            "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    probed: dict[str, Any] = json.loads(result.stdout)
    return probed


def _segments(files: list[Path], camera_id: str, root: Path) -> list[Segment]:
    """Place the files in the recorder's day tree, one after the other with the outage."""
    segments = []
    start = ORIGIN
    for number, source in enumerate(files):
        if number == 2:
            start += OUTAGE_SECONDS
        duration = float(_probe(source)["format"]["duration"])
        name = datetime.fromtimestamp(start, UTC)
        path = root / camera_id / f"{name:%Y-%m-%d}" / f"{name:%H-%M-%S}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())
        segments.append(Segment(camera_id, path, start, start + duration, path.stat().st_size))
        start += duration
    return segments


@pytest.fixture
async def export_entry(
    hass: HomeAssistant, rtsp_camera: RtspServer, recording_files: list[Path], tmp_path: Path
) -> AsyncIterator[tuple[MockConfigEntry, list[Segment]]]:
    """A hub with the camera ("Yard", not recording) whose index holds the four files."""
    assert await async_setup_component(hass, "http", {})
    assert await async_setup_component(hass, "media_source", {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path / "rec"),
        subentries_data=[camera_subentry("Yard", rtsp_camera.url("cam"), record=False)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    camera_id = next(iter(entry.subentries))
    recorder = entry.runtime_data.recorder
    segments = await hass.async_add_executor_job(
        _segments, recording_files, camera_id, recorder.layout.root
    )
    for segment in segments:
        recorder.index.add(segment)
    yield entry, segments
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


def _events(hass: HomeAssistant) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def record(event: Event) -> None:
        seen.append(dict(event.data))

    hass.bus.async_listen(EVENT_EXPORT, record)
    return seen


async def _until(seen: list[dict[str, Any]], export_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            for data in seen:
                if data["export_id"] == export_id and data["status"] == status:
                    return data
            await asyncio.sleep(0.05)


async def _export(hass: HomeAssistant, start: float, end: float, **extra: Any) -> dict[str, Any]:
    context = extra.pop("context", None)
    response = await hass.services.async_call(
        DOMAIN,
        "export",
        {
            "entity_id": ENTITY_ID,
            "start": datetime.fromtimestamp(start, UTC),
            "end": datetime.fromtimestamp(end, UTC),
            **extra,
        },
        blocking=True,
        return_response=True,
        context=context,
    )
    assert response is not None
    return dict(response)


async def test_export_across_files_and_an_outage(
    hass: HomeAssistant,
    export_entry: tuple[MockConfigEntry, list[Segment]],
    hass_ws_client: WebSocketGenerator,
    hass_client: ClientSessionGenerator,
) -> None:
    """A 3-minute range over four files and an outage → one MP4, both tracks, outage cut."""
    entry, segments = export_entry
    seen = _events(hass)
    start, end = segments[0].start + 5, segments[-1].end - 5
    answer = await _export(hass, start, end, name="Yard for the insurer")
    finished = await _until(seen, answer["export_id"], "finished")
    assert finished["media_content_id"] == answer["media_content_id"]
    assert answer["media_content_id"].endswith("/exports/yard-for-the-insurer.mp4")
    progress = [
        data["percent"]
        for data in seen
        if data["export_id"] == answer["export_id"] and data["status"] == "progress"
    ]
    assert progress == sorted(progress)
    assert progress
    assert all(10 <= percent < 100 and percent % 10 == 0 for percent in progress)

    path = entry.runtime_data.recorder.layout.root / "exports" / "yard-for-the-insurer.mp4"
    probed = await hass.async_add_executor_job(_probe, path)
    assert "mp4" in probed["format"]["format_name"]
    assert sorted(stream["codec_type"] for stream in probed["streams"]) == ["audio", "video"]
    # The recorded time of the range (the outage cut out), from the keyframe at or before the
    # start (1 s GOP).
    recorded = (segments[1].end - start) + (end - segments[2].start)
    assert float(probed["format"]["duration"]) == pytest.approx(recorded, abs=1.5)
    assert finished["duration"] == pytest.approx(recorded, abs=1.5)
    assert finished["cuts"] == 1
    sidecar = json.loads(path.with_suffix(".json").read_text())
    (cut,) = sidecar["cuts"]
    assert cut["wall_from"] == pytest.approx(segments[1].end)
    assert cut["wall_to"] == pytest.approx(segments[2].start)
    assert cut["at"] == pytest.approx(segments[1].end - start, abs=1.1)
    assert sidecar["camera"] == ENTITY_ID
    assert not list(path.parent.glob(f"*{PART_SUFFIX}"))

    # Media panel: Exports lists it, and it resolves to a file the recordings view serves.
    ws = await hass_ws_client(hass)
    await ws.send_json_auto_id(
        {
            "type": "media_source/browse_media",
            "media_content_id": f"media-source://{DOMAIN}/exports",
        }
    )
    browsed_reply = await ws.receive_json()
    assert browsed_reply["success"], browsed_reply
    browsed = browsed_reply["result"]
    assert [child["media_content_id"] for child in browsed["children"]] == [
        answer["media_content_id"]
    ]
    await ws.send_json_auto_id(
        {"type": "media_source/resolve_media", "media_content_id": answer["media_content_id"]}
    )
    resolved = (await ws.receive_json())["result"]
    assert resolved["mime_type"] == "video/mp4"
    assert "/exports/yard-for-the-insurer.mp4" in resolved["url"]
    client = await hass_client()
    served = await client.get(resolved["url"])
    assert served.status == 200
    assert len(await served.read()) == path.stat().st_size

    # The size cap counts the exports (and never deletes them: recordings give way).
    assert entry.runtime_data.recorder.reserved_bytes is not None
    assert entry.runtime_data.recorder.reserved_bytes() == path.stat().st_size


async def test_cancel_refuse_and_bad_ranges(
    hass: HomeAssistant,
    export_entry: tuple[MockConfigEntry, list[Segment]],
    hass_read_only_user: MockUser,
) -> None:
    """A queued export is cancelled (no file); non-admins and bad ranges get clear errors."""
    entry, segments = export_entry
    seen = _events(hass)
    start, end = segments[0].start, segments[-1].end
    first = await _export(hass, start, end, name="first")
    second = await _export(hass, start, end, name="second")  # waits for the first
    await hass.services.async_call(
        DOMAIN, "cancel_export", {"export_id": second["export_id"]}, blocking=True
    )
    await _until(seen, first["export_id"], "finished")
    await _until(seen, second["export_id"], "cancelled")
    exports = entry.runtime_data.recorder.layout.root / "exports"
    assert sorted(path.name for path in exports.iterdir()) == ["first.json", "first.mp4"]
    with pytest.raises(ServiceValidationError, match="no export is running"):
        await hass.services.async_call(
            DOMAIN, "cancel_export", {"export_id": second["export_id"]}, blocking=True
        )

    with pytest.raises(Unauthorized):
        await _export(hass, start, end, context=Context(user_id=hass_read_only_user.id))
    with pytest.raises(ServiceValidationError, match="end must come after"):
        await _export(hass, end, start)
    with pytest.raises(ServiceValidationError, match="at most 24 hours"):
        await _export(hass, start - 86400, end)
    with pytest.raises(ServiceValidationError, match="nothing is recorded"):
        await _export(hass, end + 60, end + 120)


def test_writer_stopped_mid_file_leaves_nothing(
    recording_files: list[Path], tmp_path: Path
) -> None:
    """Stopped between packets: ExportCancelledError, no part file, no export."""
    segments = _segments(recording_files, "cam", tmp_path / "rec")
    checks = 0

    def stop_after_a_while() -> bool:
        nonlocal checks
        checks += 1
        return checks > 20  # well inside the first file

    target = tmp_path / "out" / export_file_name("stopped")
    target.parent.mkdir()
    with pytest.raises(ExportCancelledError):
        write_export(
            segments, segments[0].start, segments[-1].end, target, should_stop=stop_after_a_while
        )
    assert not list(target.parent.iterdir())
    assert not _reader_threads()  # the thread reading ahead stopped with the export


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lightnvr-export-reader"]


@pytest.mark.parametrize("damage", ["not_mp4", "missing"])
def test_a_damaged_file_fails_the_export_cleanly(
    recording_files: list[Path], tmp_path: Path, damage: str
) -> None:
    """A file that is not an MP4, or is gone: the export fails with that file's error (what
    the export manager reports as "failed") and leaves no part file and no reading thread."""
    segments = _segments(recording_files, "cam", tmp_path / "rec")
    damaged = segments[2].path
    if damage == "not_mp4":
        damaged.write_bytes(b"this is not a recording" * 100)
    else:
        damaged.unlink()
    target = tmp_path / "out" / export_file_name("damaged")
    target.parent.mkdir()
    expected = FileNotFoundError if damage == "missing" else ValueError
    with pytest.raises(expected, match=damaged.name):
        write_export(segments, segments[0].start, segments[-1].end, target)
    assert not list(target.parent.iterdir())
    assert not _reader_threads()


def test_a_file_cut_short_exports_what_it_holds(
    recording_files: list[Path], tmp_path: Path
) -> None:
    """A recording cut short (a crash before fragments reached the disk) is shorter, not an
    error: the export holds every complete file plus what that one holds."""
    segments = _segments(recording_files, "cam", tmp_path / "rec")[:2]
    whole = float(_probe(segments[1].path)["format"]["duration"])
    segments[1].path.write_bytes(segments[1].path.read_bytes()[: segments[1].size // 2])
    target = tmp_path / "out" / export_file_name("cut")
    target.parent.mkdir()
    result = write_export(segments, segments[0].start, segments[-1].end, target)
    first = float(_probe(segments[0].path)["format"]["duration"])
    exported = float(_probe(result.path)["format"]["duration"])
    assert first + 1 < exported < first + whole - 1
    assert not _reader_threads()


def test_export_file_names_are_safe() -> None:
    """Names become plain file names: no folders, no dots, never empty."""
    assert export_file_name("../../etc/passwd") == "etc-passwd.mp4"
    assert export_file_name("Yard 2026-12-05 07-42") == "yard-2026-12-05-07-42.mp4"
    assert export_file_name("...") == "export.mp4"


async def test_home_assistant_stopping_cancels_exports(
    hass: HomeAssistant, export_entry: tuple[MockConfigEntry, list[Segment]]
) -> None:
    """HA stopping does not unload the hub: its stop still cancels an export, leaving nothing."""
    entry, segments = export_entry
    seen = _events(hass)
    answer = await _export(hass, segments[0].start, segments[-1].end, name="at shutdown")
    await entry.runtime_data.async_stop()
    await _until(seen, answer["export_id"], "cancelled")
    exports = entry.runtime_data.recorder.layout.root / "exports"
    assert not exports.exists() or not list(exports.iterdir())
