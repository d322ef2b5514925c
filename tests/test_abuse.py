"""What one user can start is limited: live view sessions (both engines), clips on demand.

A logged-in user of any kind can open WebRTC sessions; a loop of offers that never send a
candidate must neither pile up peers in Home Assistant nor starve go2rtc's health checks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection
from homeassistant.auth.const import GROUP_ID_USER
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import CLIENT_ID, MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import CONF_MAX_VIEWERS, CONF_MAX_VIEWERS_PER_CAMERA, DOMAIN
from custom_components.lightnvr.engine import viewers as viewers_module
from custom_components.lightnvr.recorder.clips import MAX_SAVES_PER_CAMERA

from .conftest import camera_subentry, hub_entry_data
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures found by name
from .go2rtc_double.fixtures import DoubleBinary
from .infra.rtsp import RtspServer
from .webrtc_client import WsRouter

ENTITY_ID = "camera.front_door"


async def _browser_offer() -> str:
    """An offer shaped like HA's frontend's (audio, then video, both receive-only)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _offer_storm(router: WsRouter, offer: str, count: int) -> list[dict[str, Any]]:
    """Send `count` offers without ever sending a candidate; return each one's first reply."""
    ids = [
        await router.send({"type": "camera/webrtc/offer", "entity_id": ENTITY_ID, "offer": offer})
        for _ in range(count)
    ]
    replies = []
    for msg_id in ids:
        queue = router.queue(msg_id)
        async with asyncio.timeout(60):
            while True:
                message = await queue.get()
                if message["type"] == "result":
                    assert message["success"], message
                    continue
                event = message["event"]
                if event["type"] in ("answer", "error"):
                    replies.append(event)
                    break
    return replies


async def _ping(router: WsRouter) -> None:
    async with asyncio.timeout(10):
        reply = await router.call({"type": "ping"})
    assert reply["type"] == "pong"


async def _wait(predicate: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)


@pytest.mark.usefixtures("webrtc_loopback")
async def test_offer_storm_is_capped_and_pending_viewers_expire(
    hass: HomeAssistant,
    setup_camera: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 offers: the per-camera limit is answered, the rest refused; HA keeps answering."""
    monkeypatch.setattr(viewers_module, "VIEWER_CONNECT_TIMEOUT", 3.0)
    engine = setup_camera.runtime_data.engine
    limit = setup_camera.runtime_data.options.viewer_limits.per_camera
    router = WsRouter(await hass_ws_client(hass))
    try:
        await _ping(router)
        replies = await _offer_storm(router, await _browser_offer(), 200)
        await _ping(router)
        answers = [r for r in replies if r["type"] == "answer"]
        refused = [r for r in replies if r["type"] == "error"]
        assert len(answers) == limit
        assert len(refused) == 200 - limit
        assert all("Too many live views of this camera" in r["message"] for r in refused)
        assert engine.viewer_count == limit
        # None of them ever connects: each is closed when its time is up, sockets and all.
        await _wait(lambda: engine.viewer_count == 0)
        # Room again: the next viewer is answered.
        (reply,) = await _offer_storm(router, await _browser_offer(), 1)
        assert reply["type"] == "answer"
    finally:
        await router.close()


@pytest.mark.usefixtures("webrtc_loopback", "allow_unix_sockets")
async def test_go2rtc_viewers_never_starve_its_health_checks(
    hass: HomeAssistant,
    go2rtc_double: DoubleBinary,
    rtsp_camera: RtspServer,
    hass_ws_client: WebSocketGenerator,
    tmp_path: Path,
) -> None:
    """More pending go2rtc viewers than the API pool has connections: checks still answer."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            "engine": "go2rtc",
            "go2rtc_binary": str(go2rtc_double.path),
            "go2rtc_webrtc_lan": False,
            CONF_MAX_VIEWERS_PER_CAMERA: 30,
            CONF_MAX_VIEWERS: 30,
        },
        subentries_data=[camera_subentry("Front door", rtsp_camera.url("cam"), record=False)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    engine = entry.runtime_data.engine
    assert engine.name == "go2rtc"
    router = WsRouter(await hass_ws_client(hass))
    try:
        replies = await _offer_storm(router, await _browser_offer(), 40)
        assert [r["type"] for r in replies].count("answer") == 30
        refused = [r for r in replies if r["type"] == "error"]
        assert len(refused) == 10
        assert all("Too many live views" in r["message"] for r in refused)
        # 30 WebSockets to go2rtc are open (more than the 20 connections of the API's pool).
        assert engine.viewer_count == 30
        streams = await engine.default.async_check_api(5.0)
        assert streams  # answered while every viewer holds its connection
        await _ping(router)
        assert engine.default.health.healthy
        assert engine.default.health.restart_count == 0
    finally:
        await router.close()
        assert await hass.config_entries.async_unload(entry.entry_id)


async def _porch(hass: HomeAssistant, camera_url: str, tmp_path: Path) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path / "rec"),
        subentries_data=[camera_subentry("Porch", camera_url, record=False)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    camera_id = next(iter(entry.subentries))
    async with asyncio.timeout(30):
        while entry.runtime_data.clips.buffered_seconds(camera_id) < 1:
            await asyncio.sleep(0.2)
    return entry


async def test_save_clip_is_for_admins_and_limited(
    hass: HomeAssistant,
    rtsp_camera: RtspServer,
    tmp_path: Path,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """A non-admin user is refused; a storm of calls gets a clear error past the limit."""
    entry = await _porch(hass, rtsp_camera.url("cam"), tmp_path)
    # A regular household member: may control every entity, is not an admin.
    user = await hass.auth.async_create_user("Member", group_ids=[GROUP_ID_USER])
    assert not user.is_admin
    refresh = await hass.auth.async_create_refresh_token(user, CLIENT_ID)
    token = hass.auth.async_create_access_token(refresh)
    call = {
        "type": "call_service",
        "domain": DOMAIN,
        "service": "save_clip",
        "target": {"entity_id": "camera.porch"},
        "service_data": {"duration": 1, "pre_roll": 0},
        "return_response": True,
    }
    user_ws = await hass_ws_client(hass, token)
    await user_ws.send_json_auto_id(call)
    reply = await user_ws.receive_json()
    assert not reply["success"]
    # HA's Unauthorized (what its own admin-only services raise); 2025.4 reports it as such.
    assert reply["error"]["message"] == "Unauthorized", reply
    assert not entry.runtime_data.clips.clips(next(iter(entry.subentries)))

    admin_ws = await hass_ws_client(hass)
    await admin_ws.send_json_auto_id(call)
    reply = await admin_ws.receive_json()
    assert reply["success"], reply
    assert reply["result"]["response"]["camera.porch"]["media_content_id"]

    # Ten calls at once (an automation gone wrong): two clips are made, eight refused.
    results = await asyncio.gather(
        *(
            hass.services.async_call(
                DOMAIN,
                "save_clip",
                {"entity_id": "camera.porch", "duration": 2, "pre_roll": 0},
                blocking=True,
                return_response=True,
            )
            for _ in range(10)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, ServiceValidationError)]
    saved = [r for r in results if isinstance(r, dict)]
    assert len(saved) == MAX_SAVES_PER_CAMERA
    assert len(refused) == 10 - MAX_SAVES_PER_CAMERA
    assert all("being saved already" in str(r) for r in refused)
    assert len(entry.runtime_data.clips.clips(next(iter(entry.subentries)))) == 3
    assert await hass.config_entries.async_unload(entry.entry_id)
