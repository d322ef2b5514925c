"""Recordings in the Media panel and through the recordings view: browse, play, seek, refuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import json
import os
from pathlib import Path
import subprocess

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.hls.limits import VOD_MAX_FILES
from custom_components.lightnvr.media_source import _day_playlists
from custom_components.lightnvr.recorder.storage import Segment

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer

SEGMENT_SECONDS = 3


@pytest.fixture
async def recording_entry(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A hub recording one camera in 3-second segments, with the media source loaded."""
    assert await async_setup_component(hass, "media_source", {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": SEGMENT_SECONDS},
        subentries_data=[camera_subentry("Porch", rtsp_camera.url("cam"))],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def _wait_segments(entry: MockConfigEntry, count: int, timeout: float = 40) -> None:
    index = entry.runtime_data.recorder.index
    async with asyncio.timeout(timeout):
        while len(index) < count:
            await asyncio.sleep(0.2)


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-show_entries",
            "stream=codec_name,width,height:format=duration", "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


async def _browse(ws, media_id: str) -> dict:
    await ws.send_json_auto_id({"type": "media_source/browse_media", "media_content_id": media_id})
    reply = await ws.receive_json()
    assert reply["success"], reply
    return reply["result"]


async def test_browse_and_play_a_recording(
    hass: HomeAssistant,
    recording_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    tmp_path: Path,
) -> None:
    """LightNVR → camera → day → segment; the signed URL plays and supports Range."""
    await _wait_segments(recording_entry, 1)
    ws = await hass_ws_client(hass)
    root = await _browse(ws, "media-source://lightnvr")
    assert root["title"] == "LightNVR"
    assert [child["title"] for child in root["children"]] == ["Events", "Exports", "Porch"]
    camera = await _browse(ws, root["children"][2]["media_content_id"])
    assert len(camera["children"]) == 2  # live, today
    assert camera["children"][0]["title"] == "● Live"  # the live HLS playlist comes first
    day = await _browse(ws, camera["children"][1]["media_content_id"])
    assert day["children"][0]["title"] == "▶ Whole day"
    whole_day = day["children"][0]
    segment = next(c for c in day["children"] if c["media_content_type"] == "video/mp4")
    assert segment["can_play"]
    assert segment["media_class"] == "video"
    assert " – " in segment["title"]  # a time range

    await ws.send_json_auto_id(
        {"type": "media_source/resolve_media", "media_content_id": segment["media_content_id"]}
    )
    resolved = await ws.receive_json()
    assert resolved["success"], resolved
    url = resolved["result"]["url"]
    assert resolved["result"]["mime_type"] == "video/mp4"
    assert "authSig=" in url  # players need no auth header

    client = await hass_client_no_auth()
    response = await client.get(url)
    assert response.status == 200
    assert response.headers["Content-Type"] == "video/mp4"
    body = await response.read()
    saved = tmp_path / "played.mp4"
    saved.write_bytes(body)
    probe = _ffprobe(saved)
    assert probe["streams"][0]["codec_name"] == "h264"
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (640, 360)
    assert abs(float(probe["format"]["duration"]) - SEGMENT_SECONDS) <= 1.0  # one GOP

    ranged = await client.get(url, headers={"Range": "bytes=100-199"})
    assert ranged.status == 206
    assert await ranged.read() == body[100:200]

    # The whole day plays as one HLS playlist (HA signs its URL like any other).
    await ws.send_json_auto_id(
        {"type": "media_source/resolve_media", "media_content_id": whole_day["media_content_id"]}
    )
    resolved = await ws.receive_json()
    assert resolved["success"], resolved
    assert resolved["result"]["mime_type"] == "application/vnd.apple.mpegurl"
    playlist = await client.get(resolved["result"]["url"])
    assert playlist.status == 200
    text = await playlist.text()
    assert text.startswith("#EXTM3U")
    assert "#EXT-X-ENDLIST" in text
    assert "#EXT-X-PROGRAM-DATE-TIME" in text


async def test_recordings_view_refuses_unauthenticated_and_escapes(
    hass: HomeAssistant,
    recording_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    tmp_path: Path,
) -> None:
    """No auth: 401. Traversal, absolute paths, symlinks out of the root, other files: 404."""
    await _wait_segments(recording_entry, 1)
    recorder = recording_entry.runtime_data.recorder
    segment = recorder.index.oldest_first()[0]
    relative = recorder.layout.relative(segment.path)

    anonymous = await hass_client_no_auth()
    assert (await anonymous.get(f"/api/lightnvr/recordings/{relative}")).status == 401
    forged = f"/api/lightnvr/recordings/{relative}?authSig=forged.token.value"
    assert (await anonymous.get(forged)).status == 401

    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    os.symlink(secret, segment.path.parent / "link.mp4")
    (segment.path.parent / "notes.txt").write_text("not a recording")

    client = await hass_client()
    assert (await client.get(f"/api/lightnvr/recordings/{relative}")).status == 200
    # HA's security filter already answers 400 to some traversal spellings; what gets past it
    # reaches our view, which answers 404. Nothing outside the root is ever served.
    for bad in (
        "..%2F..%2Fsecret.mp4",
        "%2E%2E/%2E%2E/secret.mp4",
        f"{segment.camera_id}/..%2F..%2F..%2Fsecret.mp4",
    ):
        response = await client.get(f"/api/lightnvr/recordings/{bad}")
        assert response.status in (400, 404), bad
        assert await response.read() != b"not yours"
    for bad in (
        "%2Fetc%2Fpasswd",
        "foo%00.mp4",
        f"{relative.rsplit('/', 1)[0]}/link.mp4",
        f"{relative.rsplit('/', 1)[0]}/notes.txt",
        f"{relative}.part",
        "no-such-camera/2020-01-01/00-00-00.mp4",
    ):
        response = await client.get(f"/api/lightnvr/recordings/{bad}")
        assert response.status == 404, bad


async def test_resolving_unknown_media_fails_cleanly(
    hass: HomeAssistant, recording_entry: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    """A made-up or escaping media id is refused with an error, not served."""
    ws = await hass_ws_client(hass)
    for media_id in (
        "media-source://lightnvr/../../etc/passwd",
        "media-source://lightnvr/cam/2020-01-01/00-00-00.mp4",
    ):
        await ws.send_json_auto_id(
            {"type": "media_source/resolve_media", "media_content_id": media_id}
        )
        reply = await ws.receive_json()
        assert not reply["success"]
    await ws.send_json_auto_id(
        {"type": "media_source/browse_media", "media_content_id": "media-source://lightnvr/x/y/z"}
    )
    assert not (await ws.receive_json())["success"]


def test_whole_day_only_when_one_playlist_may_list_it() -> None:
    """A day of more files than one VOD playlist may list offers its hours only."""
    start = 1_800_000_000.0
    many = [
        Segment("cam1", Path(f"/x/{n}.mp4"), start + n * 2, start + n * 2 + 2, 100)
        for n in range(VOD_MAX_FILES + 1)
    ]
    titles = [item.title for item in _day_playlists("cam1", many)]
    assert "▶ Whole day" not in titles
    assert titles
    assert all(title.endswith(":00 hour") for title in titles)
    assert _day_playlists("cam1", many[:VOD_MAX_FILES])[0].title == "▶ Whole day"
