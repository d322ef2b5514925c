"""Diagnostics show settings and live counters, never credentials."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from .conftest import CAMERA_PASSWORD, CAMERA_USER
from .infra.rtsp import RtspServer


async def test_diagnostics_are_redacted(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    setup_camera: MockConfigEntry,
    rtsp_camera: RtspServer,
) -> None:
    """Camera settings and stream counters are there; user, password and URL login are not."""
    assert await async_setup_component(hass, "diagnostics", {})
    hub = setup_camera.runtime_data.engine.hub(next(iter(setup_camera.subentries)))
    await rtsp_camera.async_wait_for(lambda: hub.stats().packets > 10)
    # Also a URL that carries a login by itself (entered before the split was introduced).
    subentry = next(iter(setup_camera.subentries.values()))
    hass.config_entries.async_update_subentry(
        setup_camera,
        subentry,
        data={**subentry.data, "substream_url": rtsp_camera.auth_url("cam")},
    )
    await hass.async_block_till_done()
    hub = setup_camera.runtime_data.engine.hub(next(iter(setup_camera.subentries)))
    await rtsp_camera.async_wait_for(lambda: hub.stats().packets > 10)
    fragments = setup_camera.runtime_data.fragments[subentry.subentry_id]
    await rtsp_camera.async_wait_for(lambda: fragments.stats().fragments > 0)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, setup_camera)
    text = json.dumps(diagnostics)
    assert CAMERA_PASSWORD not in text
    assert f"{CAMERA_USER}:" not in text
    camera = diagnostics["cameras"][subentry.subentry_id]
    assert camera["data"]["password"] == "**REDACTED**"
    assert camera["data"]["username"] == "**REDACTED**"
    assert "***@" in camera["data"]["substream_url"]
    assert camera["video"] == {
        "codec": "h264",
        "width": 640,
        "height": 360,
        "fps": 25.0,
        "audio_codec": None,
    }
    assert camera["stream"]["state"] == "streaming"
    assert camera["stream"]["packets"] > 10
    assert diagnostics["engine"] == {"name": "embedded", "configured": "embedded"}
    assert camera["recording"]["enabled"] is True
    # One muxer per camera, shared by the recorder (on), event clips and live HLS.
    assert camera["muxer"]["consumers"] >= 1
    assert camera["muxer"]["muxing"] is True
    assert camera["muxer"]["dropped_packets"] == 0
    assert diagnostics["storage"]["segments"] >= 0


async def test_detection_api_key_is_redacted(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, setup_camera: MockConfigEntry
) -> None:
    """The object detection server's key and URL login never reach diagnostics."""
    assert await async_setup_component(hass, "diagnostics", {})
    hass.config_entries.async_update_entry(
        setup_camera,
        options={
            **setup_camera.data,
            "object_url": "http://user:hunter22@127.0.0.1:32168",
            "object_api_key": "det-key-987",
        },
    )
    await hass.async_block_till_done()
    text = json.dumps(await get_diagnostics_for_config_entry(hass, hass_client, setup_camera))
    assert "det-key-987" not in text
    assert "hunter22" not in text
