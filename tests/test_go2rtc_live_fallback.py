"""go2rtc mode: viewers go2rtc cannot serve get the built-in engine's rules, from the restream.

go2rtc's WebRTC sends the camera's codecs as they are: a viewer without H.265 gets "codecs not
matched" from it for an H.265 camera, and AAC audio reaches nobody. For such viewers LightNVR
answers itself (sub-stream, shared transcode, Opus), reading go2rtc's restream, so the camera
still has one connection; the rest go to go2rtc.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_component import async_update_entity
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN

from .conftest import hub_entry_data
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures found by name
from .go2rtc_double.fixtures import DoubleBinary
from .infra.cameras import SHAPES, CameraMatrix
from .test_camera_matrix import ENTITY_ID, LIVE_VIEW_SENSOR, _add_camera, _wait_for
from .test_rtp_h265 import h265_registered, receive_h265  # noqa: F401 - a fixture
from .webrtc_client import WebRTCTestClient, WsRouter, negotiated_video_codec


@pytest.fixture
async def go2rtc_hub(
    hass: HomeAssistant, go2rtc_double: DoubleBinary, tmp_path: Path, allow_unix_sockets: None
) -> AsyncIterator[MockConfigEntry]:
    """A loaded hub on the go2rtc engine (the double), without cameras, not recording."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            "engine": "go2rtc",
            "go2rtc_binary": str(go2rtc_double.path),
            "go2rtc_webrtc_lan": False,
        },
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.runtime_data.engine.name == "go2rtc"
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


async def _live_view(hass: HomeAssistant) -> str:
    await async_update_entity(hass, LIVE_VIEW_SENSOR)
    return hass.states.get(LIVE_VIEW_SENSOR).state


@pytest.mark.usefixtures("webrtc_loopback")
async def test_h265_aac_camera_plays_with_sound_to_a_browser_in_go2rtc_mode(
    hass: HomeAssistant,
    go2rtc_hub: MockConfigEntry,
    camera_matrix: CameraMatrix,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """H.265 + AAC and a viewer without H.265: H.264 from the shared transcode, Opus sound."""
    shape = SHAPES["h265_aac"]
    camera_id = await _add_camera(hass, go2rtc_hub, camera_matrix, shape)
    restream = go2rtc_hub.runtime_data.engine.hub(camera_id)
    await _wait_for(lambda: restream.info is not None and restream.info.audio_codec == "aac")
    router = WsRouter(await hass_ws_client(hass))
    client = WebRTCTestClient(router, ENTITY_ID)  # VP8 and H.264, audio first: no H.265
    try:
        await client.start()
        viewer = await client.wait_frames(10, timeout=40)
        assert negotiated_video_codec(client.answer_sdp or "") == "H264"
        assert viewer.width == 1280  # the camera's 720p, as H.264
        await _wait_for(lambda: viewer.audio_frames >= 10, timeout=20)
        assert await _live_view(hass) == "transcode"
    finally:
        await client.close()
        await router.close()


@pytest.mark.usefixtures("webrtc_loopback", "h265_registered")
async def test_go2rtc_serves_h265_viewers_and_lightnvr_the_others(
    hass: HomeAssistant,
    go2rtc_hub: MockConfigEntry,
    camera_matrix: CameraMatrix,
    hass_ws_client: WebSocketGenerator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """H.265 + G.711: a viewer with H.265 goes to go2rtc; one without gets H.264 and G.711."""
    received = receive_h265(monkeypatch)
    shape = SHAPES["h265_pcma"]
    camera_id = await _add_camera(hass, go2rtc_hub, camera_matrix, shape)
    restream = go2rtc_hub.runtime_data.engine.hub(camera_id)
    await _wait_for(lambda: restream.info is not None and restream.info.audio_codec == "pcm_alaw")
    router = WsRouter(await hass_ws_client(hass))
    h265_viewer = WebRTCTestClient(
        router, ENTITY_ID, codecs=("video/h265", "video/h264", "video/rtx")
    )
    browser = WebRTCTestClient(router, ENTITY_ID)
    try:
        await h265_viewer.start()
        frames = await h265_viewer.wait_frames(10, timeout=40)
        assert negotiated_video_codec(h265_viewer.answer_sdp or "") == "H265"
        assert (frames.width, frames.height) == (shape.width, shape.height)
        assert received
        assert await _live_view(hass) == "go2rtc"

        await browser.start()
        viewer = await browser.wait_frames(10, timeout=40)
        assert negotiated_video_codec(browser.answer_sdp or "") == "H264"
        await _wait_for(lambda: viewer.audio_frames >= 10, timeout=20)
        assert "PCMA/8000" in (browser.answer_sdp or "")  # the camera's G.711, as it is
        assert await _live_view(hass) == "transcode"
    finally:
        await h265_viewer.close()
        await browser.close()
        await router.close()
