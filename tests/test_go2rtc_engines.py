"""Cameras over several engines: a camera may name a go2rtc server of its own.

Two go2rtc servers (protocol doubles, run by the test like someone else's go2rtc) each carry one
camera; a third camera stays on the hub's built-in engine. One server going down makes only its
camera unavailable, with a repair issue naming that server; the others keep streaming and
recording, and the camera recovers when its server is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import json
from pathlib import Path
import socket
from urllib.parse import urlsplit

from homeassistant.config_entries import SOURCE_RECONFIGURE
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN, SUBENTRY_CAMERA
from custom_components.lightnvr.engine.embedded import EmbeddedEngine
from custom_components.lightnvr.engine.go2rtc import Go2RtcSettings
from custom_components.lightnvr.engine.router import EngineRouter
from custom_components.lightnvr.models import ViewerLimits

from .conftest import camera_subentry, hub_entry_data, open_stream_url_form
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures found by name
from .go2rtc_double.fixtures import DoubleBinary, ExternalDouble, camera_config, fast_timings
from .infra.rtsp import RtspServer
from .webrtc_client import WebRTCTestClient, WsRouter

SEGMENT_SECONDS = 3
# A login in the first server's URL: it must never show in an issue, a state or diagnostics.
LOGIN = "viewer:s3cret-go2rtc-pass"


@pytest.fixture(autouse=True)
def fast_camera_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cameras' go2rtc watchdogs check every 0.3 s (the default is 10 s)."""
    monkeypatch.setattr(EngineRouter, "timings", fast_timings())


@pytest.fixture
async def two_servers(
    go2rtc_double: DoubleBinary, tmp_path: Path, socket_enabled: None
) -> AsyncIterator[tuple[ExternalDouble, ExternalDouble]]:
    """Two running go2rtc servers on ports of their own."""
    servers = (
        ExternalDouble(go2rtc_double, tmp_path / "go2rtc-1"),
        ExternalDouble(go2rtc_double, tmp_path / "go2rtc-2"),
    )
    try:
        for server in servers:
            await server.async_start()
        yield servers
    finally:
        for server in servers:
            await server.async_stop()
            server.kill_now()


def _with_login(url: str) -> str:
    return url.replace("http://", f"http://{LOGIN}@")


async def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)


def _available(hass: HomeAssistant, entity_id: str) -> bool:
    state = hass.states.get(entity_id)
    return state is not None and state.state != STATE_UNAVAILABLE


def _camera_issues(hass: HomeAssistant) -> list[ir.IssueEntry]:
    return [
        issue
        for (domain, _), issue in ir.async_get(hass).issues.items()
        if domain == DOMAIN and issue.translation_key == "camera_go2rtc_unreachable"
    ]


@pytest.mark.usefixtures("webrtc_loopback")
async def test_one_go2rtc_down_affects_only_its_cameras(  # noqa: PLR0917 - pytest fixtures
    hass: HomeAssistant,
    two_servers: tuple[ExternalDouble, ExternalDouble],
    rtsp_cameras: RtspServer,
    hass_ws_client: WebSocketGenerator,
    hass_client: ClientSessionGenerator,
    tmp_path: Path,
) -> None:
    """A on server 1, B on server 2, C on the built-in engine; server 1 goes down and back."""
    first, second = two_servers
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": SEGMENT_SECONDS},
        subentries_data=[
            camera_subentry("A", rtsp_cameras.url("cam1"), go2rtc_url=_with_login(first.url)),
            camera_subentry("B", rtsp_cameras.url("cam2"), go2rtc_url=second.url + "/"),
            camera_subentry("C", rtsp_cameras.url("cam3"), record=False),
        ],
    )
    assert await async_setup_component(hass, "diagnostics", {})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    ids = {sub.title: sub_id for sub_id, sub in entry.subentries.items()}
    assert runtime.engine.name == "embedded"  # the hub's engine
    assert {runtime.engine.engine_name(ids[n]) for n in "AB"} == {"go2rtc"}
    assert runtime.engine.engine_name(ids["C"]) == "embedded"
    devices = dr.async_get(hass)
    device = devices.async_get_device(identifiers={(DOMAIN, ids["A"])})
    assert device is not None
    assert device.model == "go2rtc engine"
    # One go2rtc engine per server, each with its camera; the URL is shown without login.
    engines = {own.url: own.camera_ids for own in runtime.engine.camera_engines()}
    assert engines == {first.url: (ids["A"],), second.url: (ids["B"],)}
    await _until(lambda: all(_available(hass, f"camera.{n}") for n in "abc"))

    router = WsRouter(await hass_ws_client(hass))
    viewer_a = WebRTCTestClient(router, "camera.a")
    viewer_b = WebRTCTestClient(router, "camera.b")
    recorder = runtime.recorder
    try:
        await viewer_a.start()
        await viewer_b.start()
        await viewer_a.wait_frames(10, timeout=30)
        await viewer_b.wait_frames(10, timeout=30)
        await viewer_a.close()
        # Both record through their own go2rtc's restream.
        await _until(
            lambda: all(
                (state := recorder.camera_state(ids[n])) is not None and state.segments_written
                for n in "AB"
            )
        )
        assert _camera_issues(hass) == []

        await first.async_stop()
        await _until(lambda: not _available(hass, "camera.a"))
        await _until(lambda: len(_camera_issues(hass)) == 1)
        issue = _camera_issues(hass)[0]
        assert issue.issue_id.startswith("go2rtc_unreachable_")  # per server, not the hub's
        placeholders = issue.translation_placeholders or {}
        assert urlsplit(placeholders["url"]).port == first.api_port
        assert placeholders["cameras"] == "A"
        assert "s3cret" not in str(placeholders)
        assert ir.async_get(hass).async_get_issue(DOMAIN, "go2rtc_unreachable") is None

        # B keeps playing and recording, C stays available: only A's server is gone.
        frames = viewer_b.viewer.frames
        written = recorder.camera_state(ids["B"]).segments_written
        await _until(lambda: viewer_b.viewer.frames >= frames + 25)
        await _until(lambda: recorder.camera_state(ids["B"]).segments_written > written)
        assert _available(hass, "camera.b")
        assert _available(hass, "camera.c")
        assert not _available(hass, "camera.a")
        for entity_id in ("camera.a", "camera.b", "camera.c"):
            assert "s3cret" not in str(hass.states.get(entity_id))
        # Diagnostics tell which server carries which camera and how it is, without the login.
        diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
        assert "s3cret" not in json.dumps(diagnostics)
        servers = {s["url"]: s for s in diagnostics["engine"]["camera_go2rtc"]}
        assert servers[first.url]["cameras"] == [ids["A"]]
        assert servers[first.url]["go2rtc"]["healthy"] is False
        assert servers[second.url]["go2rtc"]["healthy"] is True
        assert diagnostics["cameras"][ids["B"]]["engine"] == "go2rtc"

        # Server 1 comes back (empty, like a restarted go2rtc): A is registered again.
        await first.async_start()
        await _until(lambda: _available(hass, "camera.a"))
        await _until(lambda: _camera_issues(hass) == [])
        written = recorder.camera_state(ids["A"]).segments_written
        await _until(lambda: recorder.camera_state(ids["A"]).segments_written > written)
    finally:
        await viewer_a.close()
        await viewer_b.close()
        await router.close()
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert runtime.engine.camera_engines() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_camera_go2rtc_url_in_the_subentry_flow(
    hass: HomeAssistant,
    external_double: ExternalDouble,
    rtsp_camera: RtspServer,
    tmp_path: Path,
) -> None:
    """The camera's go2rtc URL is checked like the hub's; clearing it moves the camera back."""
    entry = MockConfigEntry(domain=DOMAIN, data=hub_entry_data(tmp_path / "rec"))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    base = {"name": "Shed", "stream_url": rtsp_camera.url("cam"), "record": False}
    result = await open_stream_url_form(hass, entry.entry_id)
    flow_id = result["flow_id"]
    for url, error in (
        ("not a url", "invalid_go2rtc_url"),
        ("rtsp://127.0.0.1:8554", "invalid_go2rtc_url"),
        (f"http://127.0.0.1:{_closed_port()}", "go2rtc_unreachable"),
    ):
        result = await hass.config_entries.subentries.async_configure(
            flow_id, {**base, "go2rtc_url": url}
        )
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"go2rtc_url": error}
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {**base, "go2rtc_url": f" {external_double.url} "}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"]["go2rtc_url"] == external_double.url
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    (camera_id,) = runtime.cameras
    assert runtime.cameras[camera_id].go2rtc_url == external_double.url
    assert runtime.engine.engine_name(camera_id) == "go2rtc"
    assert [own.url for own in runtime.engine.camera_engines()] == [external_double.url]

    # Reconfigured without it: back on the hub's engine, the camera's go2rtc engine stopped.
    subentry = entry.subentries[camera_id]
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CAMERA),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": camera_id},
    )
    assert result["step_id"] == "reconfigure"
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in result["data_schema"].schema
    }
    assert suggested["go2rtc_url"] == external_double.url
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], base)
    assert result["type"] is FlowResultType.ABORT
    await hass.async_block_till_done()
    assert "go2rtc_url" not in entry.subentries[subentry.subentry_id].data
    assert runtime.engine.engine_name(camera_id) == "embedded"
    assert runtime.engine.camera_engines() == []

    # A camera only its go2rtc reaches (another network): not reachable from here is accepted
    # with a go2rtc URL, refused without one.
    remote = {**base, "name": "Barn", "stream_url": f"rtsp://127.0.0.1:{_closed_port()}/s"}
    result = await open_stream_url_form(hass, entry.entry_id)
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], remote)
    assert result["errors"] == {"base": "cannot_connect"}
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {**remote, "go2rtc_url": external_double.url}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert len(runtime.engine.camera_engines()) == 1
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_cameras_share_their_servers_engine(
    hass: HomeAssistant, external_double: ExternalDouble, rtsp_camera: RtspServer
) -> None:
    """One engine per server: started by its first camera, stopped with its last.

    A camera naming the hub's own go2rtc is carried by the hub's engine, and a server that is
    down when its first camera comes is reported at once, naming it; the report goes with it.
    """
    hub_url = f"http://127.0.0.1:{_closed_port()}"
    router = EngineRouter(
        hass,
        EmbeddedEngine(hass),
        settings=Go2RtcSettings(),
        limits=ViewerLimits(),
        hub_go2rtc_url=hub_url + "/",
    )
    await router.async_start()
    source = rtsp_camera.url("cam")
    try:
        await router.async_add_camera(camera_config("a", source, go2rtc_url=external_double.url))
        await router.async_add_camera(
            camera_config("b", source, go2rtc_url=external_double.url + "/")
        )
        assert [own.camera_ids for own in router.camera_engines()] == [("a", "b")]
        await router.async_remove_camera("a")
        assert [own.camera_ids for own in router.camera_engines()] == [("b",)]
        await router.async_remove_camera("b")
        assert router.camera_engines() == []

        await router.async_add_camera(camera_config("hub", source, go2rtc_url=hub_url))
        assert router.engine_name("hub") == "embedded"
        assert router.camera_engines() == []

        down = f"http://admin:pa55word@127.0.0.1:{_closed_port()}"
        await router.async_add_camera(camera_config("d", source, name="Shed", go2rtc_url=down))
        (issue,) = _camera_issues(hass)
        assert issue.translation_placeholders is not None
        assert issue.translation_placeholders["cameras"] == "Shed"
        assert issue.translation_placeholders["url"] == down.replace("admin:pa55word", "***")
        await router.async_remove_camera("d")
        assert _camera_issues(hass) == []
    finally:
        await router.async_stop()


def test_camera_go2rtc_url_is_read_and_redacted() -> None:
    """The URL comes from the subentry (blank: the hub's engine) and never shows its login."""
    camera = camera_config("x", "rtsp://cam/s", go2rtc_url=" http://adm:s3cret-pw@nas:1984 ")
    assert camera.go2rtc_url == "http://adm:s3cret-pw@nas:1984"
    assert "s3cret" not in repr(camera)
    assert "nas:1984" in repr(camera)
    assert camera_config("y", "rtsp://cam/s", go2rtc_url="  ").go2rtc_url is None
