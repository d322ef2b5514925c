"""The go2rtc engine inside Home Assistant: chosen in the UI, same camera entity, hub entities."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

from homeassistant.components.camera import async_get_image
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from PIL import Image
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN

from .conftest import camera_subentry, hub_entry_data
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures found by name
from .go2rtc_double.fixtures import DoubleBinary, ExternalDouble, pid_alive, wait_for
from .infra.rtsp import RtspServer
from .webrtc_client import WebRTCTestClient, WsRouter, negotiated_video_codec

# Viewers in these tests run on this machine: keep go2rtc's WebRTC on loopback.
LOOPBACK = {"go2rtc_webrtc_lan": False}


def _go2rtc_entry(tmp_path: Path, binary: Path, url: str, **hub: object) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            "engine": "go2rtc",
            "go2rtc_binary": str(binary),
            **LOOPBACK,
            **hub,
        },
        subentries_data=[camera_subentry("Front door", url, record=False)],
    )


@pytest.mark.usefixtures("webrtc_loopback", "allow_unix_sockets")
async def test_live_view_and_snapshot_through_go2rtc(
    hass: HomeAssistant,
    go2rtc_double: DoubleBinary,
    rtsp_camera: RtspServer,
    hass_ws_client: WebSocketGenerator,
    tmp_path: Path,
) -> None:
    """The same camera entity plays over WebRTC with go2rtc; the camera sees one connection."""
    entry = _go2rtc_entry(tmp_path, go2rtc_double.path, rtsp_camera.url("cam"))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    engine = entry.runtime_data.engine
    assert engine.name == "go2rtc"
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, entry.entry_id)})
    assert device is not None
    assert device.model == "go2rtc engine"
    assert hass.states.get("binary_sensor.lightnvr_stream_engine").state == "off"
    assert hass.states.get("sensor.lightnvr_go2rtc_restarts").state == "0"

    # The hub reads go2rtc's restream: stream_source is that restream, not the camera.
    camera_id = next(iter(entry.subentries))
    source = await engine.async_stream_source(camera_id)
    assert source is not None
    restream = urlsplit(source)
    assert (restream.scheme, restream.hostname) == ("rtsp", "127.0.0.1")
    assert restream.port != rtsp_camera.port

    router = WsRouter(await hass_ws_client(hass))
    client = WebRTCTestClient(router, "camera.front_door")
    try:
        await client.start()
        viewer = await client.wait_frames(25, timeout=40)
        assert (viewer.width, viewer.height) == (640, 360)
        assert negotiated_video_codec(client.answer_sdp or "") == "H264"
    finally:
        await client.close()
        await router.close()
    image = await async_get_image(hass, "camera.front_door")
    assert Image.open(io.BytesIO(image.content)).size == (640, 360)
    # go2rtc upscales on request; a huge size is never passed on.
    image = await async_get_image(hass, "camera.front_door", width=4000, height=2250)
    assert Image.open(io.BytesIO(image.content)).size == (640, 360)
    rtsp_camera.poll()
    assert rtsp_camera.connected_clients == 1  # go2rtc's; hub and viewer share it

    pid = engine.default.health.pid
    assert pid is not None
    assert pid_alive(pid)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await wait_for(lambda: not pid_alive(pid))


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_config_flow_accepts_a_usable_go2rtc(
    hass: HomeAssistant, go2rtc_double: DoubleBinary, tmp_path: Path
) -> None:
    """Choosing go2rtc with a usable binary path creates the hub, which runs go2rtc."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {
            "engine": "go2rtc",
            "go2rtc_binary": str(go2rtc_double.path),
            "storage_path": str(tmp_path / "rec"),
            "retention_days": 7,
            "min_free_gb": 1,
            **LOOPBACK,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    entry = result["result"]
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.engine.name == "go2rtc"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_auto_falls_back_to_embedded_and_says_why(
    hass: HomeAssistant, tmp_path: Path, socket_enabled: None
) -> None:
    """Auto with a broken go2rtc: the built-in engine runs and a repair issue explains."""
    broken = tmp_path / "go2rtc"
    broken.write_text("not a program")
    broken.chmod(0o644)  # not executable
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "engine": "auto", "go2rtc_binary": str(broken)},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.runtime_data.engine.name == "embedded"
    issue = ir.async_get(hass).async_get_issue(DOMAIN, "go2rtc_binary_unusable")
    assert issue is not None
    assert str(broken) in issue.translation_placeholders["path"]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_go2rtc_engine_without_binary_is_a_clear_error(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """Engine go2rtc but nothing usable: setup fails with a repair issue, no retry loop."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            "engine": "go2rtc",
            "go2rtc_binary": str(tmp_path / "missing" / "go2rtc"),
        },
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    registry = ir.async_get(hass)
    assert (
        registry.async_get_issue(DOMAIN, "go2rtc_binary_missing")
        or registry.async_get_issue(DOMAIN, "go2rtc_binary_unusable")
    ) is not None


@pytest.mark.usefixtures("webrtc_loopback")
async def test_external_go2rtc_from_the_config_flow(
    hass: HomeAssistant,
    external_double: ExternalDouble,
    rtsp_camera: RtspServer,
    hass_ws_client: WebSocketGenerator,
    tmp_path: Path,
) -> None:
    """An external go2rtc: unreachable URL refused, a live one accepted and used for viewing."""
    base = {
        "engine": "external",
        "storage_path": str(tmp_path / "rec"),
        "retention_days": 7,
        "min_free_gb": 1,
    }
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**base, "go2rtc_url": "http://127.0.0.1:9"}
    )
    assert result["errors"] == {"go2rtc_url": "go2rtc_unreachable"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**base, "go2rtc_url": "not a url"}
    )
    assert result["errors"] == {"go2rtc_url": "invalid_go2rtc_url"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**base, "go2rtc_url": external_double.url}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    entry = result["result"]
    hass.config_entries.async_add_subentry(
        entry,
        __import__("homeassistant.config_entries", fromlist=["ConfigSubentry"]).ConfigSubentry(
            **camera_subentry("Garden", rtsp_camera.url("cam"), record=False)
        ),
    )
    await hass.async_block_till_done()
    router = WsRouter(await hass_ws_client(hass))
    client = WebRTCTestClient(router, "camera.garden")
    try:
        await client.start()
        viewer = await client.wait_frames(10, timeout=40)
        assert viewer.width == 640
    finally:
        await client.close()
        await router.close()
    assert entry.runtime_data.engine.default.health.mode == "external"
    assert await hass.config_entries.async_unload(entry.entry_id)
