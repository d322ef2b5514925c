"""Adding a camera through ONVIF, with real parts: the ONVIF double, the RTSP camera, real HA.

The double (`tests/onvif_double/`) is a real HTTP server speaking the SOAP the ONVIF library
sends, checking WS-Security digests against its own clock; its profiles stream from the
GStreamer RTSP test camera. Through Home Assistant's flow manager: the happy path creates a
camera that plays over WebRTC and records, with the device's fields from ONVIF; wrong
password, a web server that is not ONVIF, nothing listening and a camera clock far off each
get their error; the network search finds the double over unicast WS-Discovery; and a camera
that moved its stream (404 at the stored URL) is followed to the new address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import logging
from pathlib import Path
import socket
from typing import Any

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN, SUBENTRY_CAMERA

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer
from .onvif_double.double import DiscoveryResponder, OnvifDouble, PlainHttpServer, StreamProfile
from .onvif_double.fixtures import *  # noqa: F403 - fixtures found by name
from .onvif_double.fixtures import DOUBLE_NAME
from .webrtc_client import WebRTCTestClient, WsRouter


@pytest.fixture
async def hub(hass: HomeAssistant, tmp_path: Path) -> AsyncIterator[MockConfigEntry]:
    """A loaded hub without cameras, recording in 2 s files."""
    entry = MockConfigEntry(
        domain=DOMAIN, data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": 2}
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def _menu(hass: HomeAssistant, entry: MockConfigEntry, choice: str) -> dict[str, Any]:
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.MENU
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": choice}
    )
    assert result["type"] is FlowResultType.FORM
    return dict(result)


async def _onvif_login(
    hass: HomeAssistant, flow_id: str, port: int, username: str, password: str
) -> dict[str, Any]:
    return dict(
        await hass.config_entries.subentries.async_configure(
            flow_id,
            {"host": "127.0.0.1", "port": port, "username": username, "password": password},
        )
    )


def _defaults(form: dict[str, Any]) -> dict[str, Any]:
    """Return each field's default (or suggested value) of a form."""
    found: dict[str, Any] = {}
    for key in form["data_schema"].schema:
        default = key.default() if callable(key.default) else None
        suggested = (key.description or {}).get("suggested_value")
        found[str(key)] = suggested if suggested is not None else default
    return found


def _closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(check: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


@pytest.mark.usefixtures("webrtc_loopback")
async def test_add_an_onvif_camera_by_address_and_login(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    onvif_camera: OnvifDouble,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """Address and login only: the profiles are proposed, the camera plays and records."""
    form = await _menu(hass, hub, "onvif")
    assert form["step_id"] == "onvif"
    form = await _onvif_login(
        hass, form["flow_id"], onvif_camera.port, onvif_camera.username, onvif_camera.password
    )
    assert form["step_id"] == "onvif_profiles", form
    assert "Double-PTZ" in form["description_placeholders"]["device"]
    proposed = _defaults(form)
    # The best main stream, and the smallest H.264 profile as sub-stream.
    assert proposed["onvif_profile"] == "main"
    assert proposed["onvif_sub_profile"] == "sub"
    result = await hass.config_entries.subentries.async_configure(
        form["flow_id"],
        {
            "name": "Garden",
            "onvif_profile": "main",
            "onvif_sub_profile": "sub",
            "record": True,
            "detect_motion": False,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    data = result["data"]
    main_uri = onvif_camera.profiles[0].stream_uri
    assert data["stream_url"] == main_uri
    assert data["substream_url"] == onvif_camera.profiles[1].stream_uri
    assert data["username"] == onvif_camera.username
    assert data["password"] == onvif_camera.password
    assert (data["onvif_host"], data["onvif_port"]) == ("127.0.0.1", onvif_camera.port)
    assert (data["onvif_profile"], data["onvif_sub_profile"], data["onvif_ptz"]) == (
        "main",
        "sub",
        True,
    )
    await hass.async_block_till_done()

    # The HA device shows what the camera says it is.
    runtime = hub.runtime_data
    camera_id = next(iter(runtime.cameras))
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, camera_id)})
    assert device is not None
    assert (device.manufacturer, device.model) == ("LightNVR Labs", "Double-PTZ")
    assert (device.serial_number, device.sw_version) == ("SN-0001", "1.2.3")

    # It plays (WebRTC, as the frontend asks) and records.
    viewer = WebRTCTestClient(WsRouter(await hass_ws_client(hass)), "camera.garden")
    try:
        await viewer.start()
        await viewer.wait_frames(10, timeout=30)
    finally:
        await viewer.close()
    await _until(lambda: len(runtime.recorder.index.segments(camera_id)) >= 1)


async def test_onvif_errors_are_clear(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    onvif_camera: OnvifDouble,
    plain_http_server: PlainHttpServer,
) -> None:
    """Wrong password, not ONVIF, nothing there, a bad address: each says so."""
    form = await _menu(hass, hub, "onvif")
    flow_id = form["flow_id"]
    wrong = await _onvif_login(hass, flow_id, onvif_camera.port, onvif_camera.username, "nope")
    assert wrong["errors"] == {"base": "invalid_auth"}
    web = await _onvif_login(hass, flow_id, plain_http_server.port, "admin", "x")
    assert web["errors"] == {"base": "not_onvif"}
    nothing = await _onvif_login(hass, flow_id, _closed_port(), "admin", "x")
    assert nothing["errors"] == {"base": "cannot_connect"}
    bad = await hass.config_entries.subentries.async_configure(
        flow_id, {"host": "http://127.0.0.1/onvif", "port": 80}
    )
    assert bad["errors"] == {"host": "invalid_host"}
    # The password never comes back in the form.
    assert "password" not in {k for k, v in _defaults(dict(bad)).items() if v}


async def test_camera_clock_far_off(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    rtsp_camera: RtspServer,
    onvif_double_factory: Callable[..., OnvifDouble],
) -> None:
    """An hour off: the login is made with the camera's time; a refusal says how far off."""
    uri = rtsp_camera.auth_url("cam", credentials=False)
    skewed = onvif_double_factory([StreamProfile("main", "Main", uri)], clock_offset=3600)
    form = await _menu(hass, hub, "onvif")
    works = await _onvif_login(hass, form["flow_id"], skewed.port, skewed.username, skewed.password)
    assert works["step_id"] == "onvif_profiles", works
    form = await _menu(hass, hub, "onvif")
    refused = await _onvif_login(hass, form["flow_id"], skewed.port, skewed.username, "wrong")
    assert refused["errors"] == {"base": "clock_skew"}
    assert "1 h 0 min ahead" in refused["description_placeholders"]["detail"]


async def test_search_the_network_prefills_the_onvif_step(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    onvif_camera: OnvifDouble,
    ws_discovery: DiscoveryResponder,
) -> None:
    """WS-Discovery finds the double; picking it fills in the address; nothing is added yet."""
    form = await _menu(hass, hub, "discover")
    found = await hass.config_entries.subentries.async_configure(
        form["flow_id"], {"probe_address": ws_discovery.address}
    )
    assert found["step_id"] == "discovered", found
    options = found["data_schema"].schema["device"].config["options"]
    key = f"127.0.0.1:{onvif_camera.port}"
    labels = {option["value"]: option["label"] for option in options}
    assert DOUBLE_NAME in labels[key]
    assert not hub.subentries  # found is not added
    form = await hass.config_entries.subentries.async_configure(found["flow_id"], {"device": key})
    assert form["step_id"] == "onvif"
    assert _defaults(dict(form))["host"] == "127.0.0.1"
    assert _defaults(dict(form))["port"] == onvif_camera.port


async def test_a_moved_stream_is_found_again_through_onvif(
    hass: HomeAssistant,
    rtsp_camera: RtspServer,
    onvif_camera: OnvifDouble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stored URL answers 404 (a firmware update moved it): ONVIF gives the new one."""
    caplog.set_level(logging.WARNING, logger="custom_components.lightnvr")
    new_url = onvif_camera.profiles[0].stream_uri
    old_url = new_url.replace("/cam", "/old-path")  # the server answers 404 there
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path / "rec"),
        subentries_data=[
            camera_subentry(
                "Garden",
                old_url,
                username=onvif_camera.username,
                password=onvif_camera.password,
                onvif_host="127.0.0.1",
                onvif_port=onvif_camera.port,
                onvif_profile="main",
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    subentry_id = next(iter(entry.subentries))
    try:
        await _until(lambda: entry.subentries[subentry_id].data["stream_url"] == new_url, 60)
        # The camera restarts with its new URL: streaming once it is back among the cameras.
        runtime = entry.runtime_data
        await _until(
            lambda: subentry_id in runtime.cameras and runtime.engine.hub(subentry_id).available,
            30,
        )
        assert "moved its stream" in caplog.text
        assert onvif_camera.password not in caplog.text
    finally:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
