"""The camera entity end to end: WebRTC through HA's websocket API, snapshots, availability."""

from __future__ import annotations

import asyncio
import io
import logging

from homeassistant.components.camera import async_get_image
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_component import async_update_entity
from PIL import Image
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from .conftest import CAMERA_PASSWORD
from .infra.rtsp import RtspServer
from .webrtc_client import WebRTCTestClient, WsRouter, negotiated_video_codec

ENTITY_ID = "camera.front_door"
LIVE_VIEW_SENSOR = "sensor.front_door_live_view"
SOURCE_SIZE = (640, 360)


async def _wait_state(hass: HomeAssistant, entity_id: str, predicate, timeout: float = 20):
    async with asyncio.timeout(timeout):
        while True:
            state = hass.states.get(entity_id)
            if state is not None and predicate(state.state):
                return state
            await asyncio.sleep(0.1)


async def _live_view(hass: HomeAssistant) -> str:
    """Return the camera's live view sensor after asking it to update."""
    await async_update_entity(hass, LIVE_VIEW_SENSOR)
    state = hass.states.get(LIVE_VIEW_SENSOR)
    assert state is not None
    return state.state


@pytest.mark.usefixtures("webrtc_loopback")
async def test_webrtc_live_view_decodes_frames(
    hass: HomeAssistant,
    setup_camera: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """An aiortc viewer gets H.264 pictures at the source's resolution through HA."""
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming")
    assert await _live_view(hass) == "idle"
    router = WsRouter(await hass_ws_client(hass))
    client = WebRTCTestClient(router, ENTITY_ID)
    try:
        await client.start()
        viewer = await client.wait_frames(25)
        assert (viewer.width, viewer.height) == SOURCE_SIZE
        assert await _live_view(hass) == "h264_passthrough"
        assert viewer.audio_frames == 0  # the camera has no audio: the audio m-line is idle
        # The viewer offered VP8 first, as browsers do: we still answer with H.264 only.
        assert client.answer_sdp is not None
        assert negotiated_video_codec(client.answer_sdp) == "H264"
        assert "VP8" not in client.answer_sdp
        assert viewer.session_id
        assert viewer.remote_candidates >= 1  # the camera trickled its candidates
        assert not viewer.errors
    finally:
        await client.close()
        await router.close()


@pytest.mark.usefixtures("webrtc_loopback")
async def test_two_viewers_share_one_camera_connection(
    hass: HomeAssistant,
    setup_camera: MockConfigEntry,
    rtsp_camera: RtspServer,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """Two simultaneous viewers: both play, the camera sees exactly one RTSP session."""
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming")
    hub = setup_camera.runtime_data.engine.hub(next(iter(setup_camera.runtime_data.cameras)))
    subscribers_before = hub.stats().subscribers  # the recorder
    router = WsRouter(await hass_ws_client(hass))
    first = WebRTCTestClient(router, ENTITY_ID)
    second = WebRTCTestClient(router, ENTITY_ID)
    try:
        await first.start()
        await second.start()
        await first.wait_frames(25)
        await second.wait_frames(25)
        rtsp_camera.poll()
        assert rtsp_camera.connected_clients == 1
        assert rtsp_camera.total_connections == 1
        runtime = setup_camera.runtime_data
        assert runtime.engine.viewer_count == 2
    finally:
        await first.close()
        await second.close()
        await router.close()
    # Leaving closes the sessions and frees their hub subscriptions.
    await hass.async_block_till_done()
    assert setup_camera.runtime_data.engine.viewer_count == 0
    assert hub.stats().subscribers == subscribers_before


async def test_snapshot_is_a_jpeg_of_the_source_size(
    hass: HomeAssistant, setup_camera: MockConfigEntry
) -> None:
    """A snapshot decodes the newest keyframe to a JPEG; a width request scales it."""
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming")
    image = await async_get_image(hass, ENTITY_ID)
    assert image.content_type == "image/jpeg"
    picture = Image.open(io.BytesIO(image.content))
    assert picture.format == "JPEG"
    assert picture.size == SOURCE_SIZE
    small = await async_get_image(hass, ENTITY_ID, width=320)
    assert Image.open(io.BytesIO(small.content)).size == (320, 180)


async def test_camera_down_goes_unavailable_and_recovers(
    hass: HomeAssistant,
    setup_camera: MockConfigEntry,
    rtsp_camera: RtspServer,
) -> None:
    """The server stops: unavailable; it returns: available and streaming again by itself."""
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming")
    rtsp_camera.stop()
    await _wait_state(hass, ENTITY_ID, lambda s: s == STATE_UNAVAILABLE)
    rtsp_camera.start()
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming", timeout=30)
    hub_id = next(iter(setup_camera.runtime_data.cameras))
    stats = setup_camera.runtime_data.engine.hub(hub_id).stats()
    assert stats.reconnects >= 1
    image = await async_get_image(hass, ENTITY_ID)
    assert Image.open(io.BytesIO(image.content)).size == SOURCE_SIZE


async def test_password_never_logged(
    hass: HomeAssistant,
    setup_camera: MockConfigEntry,
    rtsp_camera: RtspServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Debug logging through a reconnect never prints the camera password."""
    caplog.set_level(logging.DEBUG)
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming")
    rtsp_camera.stop()
    await _wait_state(hass, ENTITY_ID, lambda s: s == STATE_UNAVAILABLE)
    rtsp_camera.start()
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming", timeout=30)
    assert "lightnvr" in caplog.text
    assert CAMERA_PASSWORD not in caplog.text
    state = hass.states.get(ENTITY_ID)
    assert CAMERA_PASSWORD not in str(state.attributes)


@pytest.mark.usefixtures("webrtc_loopback")
async def test_bad_offers_get_a_clear_error(
    hass: HomeAssistant,
    setup_camera: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """An offer without video, or not SDP at all, is answered with an error; nothing leaks."""
    await _wait_state(hass, ENTITY_ID, lambda s: s == "streaming")
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    audio_only = pc.localDescription.sdp
    await pc.close()

    router = WsRouter(await hass_ws_client(hass))
    try:
        for offer in (audio_only, "this is not SDP"):
            sub = await router.send(
                {"type": "camera/webrtc/offer", "entity_id": ENTITY_ID, "offer": offer}
            )
            queue = router.queue(sub)
            assert (await queue.get())["success"]
            events = []
            while not events or events[-1]["type"] not in ("error", "answer"):
                events.append((await asyncio.wait_for(queue.get(), 10))["event"])
            assert events[0]["type"] == "session"
            assert events[-1]["type"] == "error"
            assert events[-1]["code"] == "webrtc_offer_failed"
        # A candidate for a session that does not exist is ignored, not an error.
        result = await router.call(
            {
                "type": "camera/webrtc/candidate",
                "entity_id": ENTITY_ID,
                "session_id": "no-such-session",
                "candidate": {
                    "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                    "sdpMLineIndex": 0,
                },
            }
        )
        assert result["success"]
    finally:
        await router.close()
    await hass.async_block_till_done()
    assert setup_camera.runtime_data.engine.viewer_count == 0
