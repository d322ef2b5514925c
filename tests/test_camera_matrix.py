"""Every camera shape people own, through Home Assistant: add, snapshot, live, record, HLS.

One row per camera of the matrix (tests/infra/cameras.py): H.264 Baseline/Main/High, H.265
Main, audio none/AAC/G.711 A-law/µ-law, a 4K H.265 camera with an H.264 sub-stream. For each:
the camera subentry flow accepts it (a real probe), the snapshot is a JPEG, a viewer offering
like HA's frontend (audio first, VP8 listed before H.264) gets decodable video and, when the
camera has audio, audio; the recording has every track the camera sends (ffprobe); the live
HLS playlist plays (PyAV over HTTP).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import io
import json
from pathlib import Path
import subprocess

from homeassistant.components.camera import async_get_image
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_NAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.entity_component import async_update_entity
from homeassistant.setup import async_setup_component
from PIL import Image
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import (
    CONF_DETECT_MOTION,
    CONF_RECORD,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_URL,
    CONF_TRANSCODE_FULL_SIZE,
    DOMAIN,
)
from custom_components.lightnvr.hls import live_playlist_path

from .conftest import hub_entry_data, open_stream_url_form
from .infra.cameras import MATRIX_NAMES, SHAPES, CameraMatrix, CameraShape
from .test_hls_live import Player
from .test_hls_views import register_hls, signed
from .test_rtp_h265 import h265_registered, receive_h265  # noqa: F401 - a fixture
from .webrtc_client import WebRTCTestClient, WsRouter, negotiated_video_codec

ENTITY_ID = "camera.matrix"
LIVE_VIEW_SENSOR = "sensor.matrix_live_view"
SEGMENT_SECONDS = 3


@pytest.fixture
async def hub(
    hass: HomeAssistant, tmp_path: Path, socket_enabled: None
) -> AsyncIterator[MockConfigEntry]:
    """A loaded hub without cameras, recording in short segments, HLS views registered."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": SEGMENT_SECONDS},
    )
    entry.add_to_hass(hass)
    assert await async_setup_component(hass, "http", {})
    register_hls(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


async def _add_camera(
    hass: HomeAssistant, hub: MockConfigEntry, matrix: CameraMatrix, shape: CameraShape
) -> str:
    """Add the camera through the subentry flow (which probes it) and return its id."""
    user_input: dict[str, object] = {
        CONF_NAME: "Matrix",
        CONF_STREAM_URL: matrix.url(shape),
        CONF_RECORD: True,
        CONF_DETECT_MOTION: False,
    }
    if shape.has_substream:
        user_input[CONF_SUBSTREAM_URL] = matrix.substream_url(shape)
    result = await open_stream_url_form(hass, hub.entry_id)
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    await hass.async_block_till_done()
    return next(iter(hub.subentries))


async def _wait_for(predicate, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)


def _probe(path: Path) -> dict[str, dict[str, object]]:
    """Return ffprobe's streams of a file by type."""
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {stream["codec_type"]: stream for stream in json.loads(output)["streams"]}


def _expected_path(shape: CameraShape) -> str:
    """How a viewer that decodes H.264 only (like the aiortc viewer) gets this camera."""
    if shape.video == "h264":
        return "h264_passthrough"
    return "substream" if shape.has_substream else "transcode"


@pytest.mark.usefixtures("webrtc_loopback")
@pytest.mark.parametrize("shape_name", MATRIX_NAMES)
async def test_camera_shape_end_to_end(  # noqa: PLR0917 - pytest fixtures
    hass: HomeAssistant,
    hub: MockConfigEntry,
    camera_matrix: CameraMatrix,
    shape_name: str,
    hass_ws_client: WebSocketGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """The camera is added, shows a JPEG, plays live with its sound, records every track."""
    shape = SHAPES[shape_name]
    camera_id = await _add_camera(hass, hub, camera_matrix, shape)
    engine = hub.runtime_data.engine
    main_hub = engine.hub(camera_id)
    await _wait_for(lambda: main_hub.latest_keyframe() is not None)
    info = main_hub.info
    assert info is not None
    assert (info.video_codec, info.width, info.height) == (shape.video, shape.width, shape.height)
    assert info.audio_codec == shape.audio_codec_name
    if shape.has_substream:
        substream = engine.substream_hub(camera_id)
        assert substream is not None
        await _wait_for(lambda: substream.latest_keyframe() is not None)

    # Snapshot: a JPEG of the camera's picture.
    image = await async_get_image(hass, ENTITY_ID, timeout=20)
    assert image.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).format == "JPEG"

    # Live: an offer shaped like HA's frontend; video decodes, audio plays when there is some.
    router = WsRouter(await hass_ws_client(hass))
    client = WebRTCTestClient(router, ENTITY_ID)
    try:
        await client.start()
        viewer = await client.wait_frames(10, timeout=40)
        assert viewer.width is not None
        assert viewer.height is not None
        assert viewer.width <= max(shape.width, 1280)
        if shape.audio is not None:
            await _wait_for(lambda: viewer.audio_frames >= 10, timeout=20)
            assert viewer.audio_sample_rate
        else:
            assert viewer.audio_frames == 0
        await async_update_entity(hass, LIVE_VIEW_SENSOR)
        assert hass.states.get(LIVE_VIEW_SENSOR).state == _expected_path(shape)
    finally:
        await client.close()
        await router.close()

    # Live HLS: PyAV plays the camera's playlist over HTTP.
    http = await hass_client_no_auth()
    path = await signed(hass, hass_access_token, live_playlist_path(camera_id))
    player = Player(str(http.make_url(path)))
    await hass.async_add_executor_job(player.play, shape.fps)
    assert player.error is None, player.error
    assert player.frames == shape.fps  # a second of the camera's pictures

    # Recording: a finished file has every track the camera sends.
    index = hub.runtime_data.recorder.index
    await _wait_for(lambda: len(index) >= 1, timeout=60)
    recordings = sorted(Path(hub.data["storage_path"]).rglob("*.mp4"))
    assert recordings
    streams = _probe(recordings[0])
    assert streams["video"]["codec_name"] == shape.video
    if shape.audio is None:
        assert "audio" not in streams
    else:
        # AAC is kept as it is; G.711 is recorded as AAC so browsers play it.
        assert streams["audio"]["codec_name"] == "aac"


@pytest.mark.parametrize("full_size", [False, True])
async def test_transcode_size_option(
    hass: HomeAssistant, hub: MockConfigEntry, camera_matrix: CameraMatrix, full_size: bool
) -> None:
    """A 4K H.265 camera without sub-stream is transcoded at most 1280 wide, or at full size."""
    shape = SHAPES["h265_4k_aac"]
    result = await open_stream_url_form(hass, hub.entry_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Matrix",
            CONF_STREAM_URL: camera_matrix.url(shape),
            CONF_RECORD: False,
            CONF_DETECT_MOTION: False,
            CONF_TRANSCODE_FULL_SIZE: full_size,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    await hass.async_block_till_done()
    subentry = next(iter(hub.subentries.values()))
    assert subentry.data[CONF_TRANSCODE_FULL_SIZE] is full_size
    shared = hub.runtime_data.engine.default._viewers.transcoders(subentry.subentry_id)
    expected = (3840, 2160) if full_size else (1280, 720)
    assert shared.video.output_size(shape.width, shape.height) == expected


@pytest.mark.usefixtures("webrtc_loopback", "h265_registered")
async def test_h265_passes_through_to_a_viewer_that_offers_it(
    hass: HomeAssistant,
    hub: MockConfigEntry,
    camera_matrix: CameraMatrix,
    hass_ws_client: WebSocketGenerator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A viewer that decodes H.265 (Safari, Chrome with hardware decoding) gets it as it is."""
    received = receive_h265(monkeypatch)  # the test viewer depacketizes and decodes H.265
    shape = SHAPES["h265_aac"]
    camera_id = await _add_camera(hass, hub, camera_matrix, shape)
    main_hub = hub.runtime_data.engine.hub(camera_id)
    await _wait_for(lambda: main_hub.latest_keyframe() is not None)
    router = WsRouter(await hass_ws_client(hass))
    client = WebRTCTestClient(router, ENTITY_ID, codecs=("video/h265", "video/h264", "video/rtx"))
    try:
        await client.start()
        viewer = await client.wait_frames(10, timeout=40)
        assert (viewer.width, viewer.height) == (shape.width, shape.height)  # not transcoded
        assert client.answer_sdp is not None
        assert negotiated_video_codec(client.answer_sdp) == "H265"
        assert received  # H.265 RTP arrived
        await _wait_for(lambda: viewer.audio_frames >= 10, timeout=20)  # AAC as Opus
        await async_update_entity(hass, LIVE_VIEW_SENSOR)
        assert hass.states.get(LIVE_VIEW_SENSOR).state == "h265_passthrough"
        assert not hub.runtime_data.engine.default._viewers.transcoders(camera_id).video.running
    finally:
        await client.close()
        await router.close()
