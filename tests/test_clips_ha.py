"""Event clips in HA: from detections and from `lightnvr.save_clip`, in the Media panel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import subprocess

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN

from .conftest import camera_subentry, hub_entry_data
from .infra.media import make_motion_clip
from .infra.rtsp import RtspServer


def _duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


async def _browse(ws, media_id: str) -> dict:
    await ws.send_json_auto_id({"type": "media_source/browse_media", "media_content_id": media_id})
    reply = await ws.receive_json()
    assert reply["success"], reply
    return reply["result"]


async def _download(hass: HomeAssistant, ws, client, media_id: str, target: Path) -> Path:
    await ws.send_json_auto_id({"type": "media_source/resolve_media", "media_content_id": media_id})
    resolved = await ws.receive_json()
    assert resolved["success"], resolved
    response = await client.get(resolved["result"]["url"])
    assert response.status == 200
    target.write_bytes(await response.read())
    return target


async def test_save_clip_service(
    hass: HomeAssistant,
    rtsp_camera: RtspServer,
    tmp_path: Path,
    hass_ws_client: WebSocketGenerator,
    hass_client_no_auth: ClientSessionGenerator,
) -> None:
    """`lightnvr.save_clip` writes a clip with pre-roll, listed and playable under Events."""
    assert await async_setup_component(hass, "media_source", {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path / "rec"),
        subentries_data=[camera_subentry("Porch", rtsp_camera.url("cam"), record=False)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    camera_id = next(iter(entry.subentries))
    clips = entry.runtime_data.clips
    async with asyncio.timeout(30):
        while clips.buffered_seconds(camera_id) < 2:
            await asyncio.sleep(0.2)

    response = await hass.services.async_call(
        DOMAIN,
        "save_clip",
        {"entity_id": "camera.porch", "duration": 4, "pre_roll": 2},
        blocking=True,
        return_response=True,
    )
    media_id = response["camera.porch"]["media_content_id"]
    assert media_id.startswith("media-source://lightnvr/events/")

    ws = await hass_ws_client(hass)
    events = await _browse(ws, "media-source://lightnvr/events")
    assert [c["title"] for c in events["children"]] == ["Porch"]
    days = await _browse(ws, events["children"][0]["media_content_id"])
    day = await _browse(ws, days["children"][0]["media_content_id"])
    assert [c["media_content_id"] for c in day["children"]] == [media_id]
    clip = await _download(hass, ws, await hass_client_no_auth(), media_id, tmp_path / "c.mp4")
    assert abs(_duration(clip) - 4) <= 1.0  # one GOP

    # Bad arguments are a clear service error, not a crash.
    await ws.send_json_auto_id(
        {
            "type": "execute_script",
            "sequence": [
                {
                    "action": "lightnvr.save_clip",
                    "target": {"entity_id": "camera.porch"},
                    "data": {"duration": 2, "pre_roll": 10},
                }
            ],
        }
    )
    reply = await ws.receive_json()
    assert not reply["success"]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_motion_saves_an_event_clip_with_pre_roll(
    hass: HomeAssistant,
    media_cache: Path,
    socket_enabled: None,
    tmp_path: Path,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """Motion starts a clip that begins before it (from memory) and ends after it."""
    assert await async_setup_component(hass, "media_source", {})
    # Still for 7 s, moving for 3 s: the quiet part outlasts the 5 s post-roll, so clips end.
    clip_file = make_motion_clip(media_cache / "motion_7s_static.mp4", seconds=10, static_seconds=7)
    with RtspServer({"yard": clip_file}) as camera:
        entry = MockConfigEntry(
            domain=DOMAIN,
            data=hub_entry_data(tmp_path / "rec"),
            subentries_data=[
                camera_subentry(
                    "Yard", camera.url("yard"), detect_motion=True, motion_off_delay=0, record=False
                )
            ],
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        clips = entry.runtime_data.clips
        async with asyncio.timeout(60):
            while not clips.clips(next(iter(entry.subentries))):
                await asyncio.sleep(0.5)
        event_clip = clips.clips(next(iter(entry.subentries)))[0]
        assert event_clip.labels[0] == "motion"
        assert event_clip.trigger is not None
        assert event_clip.trigger - event_clip.start >= 4.0  # ~5 s of pre-roll from memory
        assert event_clip.end - event_clip.trigger >= 3.0  # the motion, then the post-roll
        assert abs(_duration(event_clip.path) - event_clip.duration) <= 1.0
        ws = await hass_ws_client(hass)
        day = await _browse(
            ws,
            f"media-source://lightnvr/events/{event_clip.camera_id}/{event_clip.day.isoformat()}",
        )
        assert "motion" in day["children"][0]["title"]
        assert await hass.config_entries.async_unload(entry.entry_id)
