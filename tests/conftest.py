"""Real-infrastructure fixtures: a GStreamer RTSP camera, HA core, a LightNVR hub entry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
import warnings

import aioice.ice
from homeassistant.config_entries import SOURCE_USER, ConfigSubentryData
from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.lightnvr.const import (
    CONF_DETECT_MOTION,
    CONF_ENGINE,
    CONF_MIN_FREE_GB,
    CONF_RECORD,
    CONF_RETENTION_DAYS,
    CONF_STORAGE_PATH,
    CONF_STREAM_URL,
    DOMAIN,
    ENGINE_EMBEDDED,
    SUBENTRY_CAMERA,
)

from .infra.cameras import CameraMatrix
from .infra.media import make_default_clip
from .infra.rtsp import RtspServer

CAMERA_USER = "viewer"
CAMERA_PASSWORD = "s3cret-Pa55word!"  # looked for in logs and diagnostics by the tests


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Load custom_components/lightnvr in every test."""


@pytest.fixture(scope="session")
def media_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for generated media, made once per test session."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def camera_clip(media_cache: Path) -> Path:
    """640x360 25 fps H.264, keyframe every second, like a camera's substream."""
    return make_default_clip(media_cache)


@pytest.fixture(scope="session")
def camera_matrix_session(media_cache: Path) -> Iterator[tuple[CameraMatrix, list[str]]]:
    """The camera matrix's one RTSP server for the whole session, and what it crashed with."""
    crashes: list[str] = []
    with CameraMatrix(media_cache, user=CAMERA_USER, password=CAMERA_PASSWORD) as matrix:
        yield matrix, crashes
    if crashes:
        warnings.warn(
            "the camera matrix's RTSP server crashed and was started again: " + " | ".join(crashes),
            pytest.PytestWarning,
            stacklevel=1,
        )


@pytest.fixture
def camera_matrix(camera_matrix_session: tuple[CameraMatrix, list[str]]) -> CameraMatrix:
    """Every camera shape of infra/cameras.py at its own mount of one real RTSP server.

    Shared by the whole session (the clips are made once): never stop or restart it in a test.
    GStreamer's RTSP server can abort under load ("gst_rtsp_media_get_rates: assertion
    failed"); a server found dead is started again on its ports before the next test, like a
    camera coming back, and the crash is reported at the end of the session.
    """
    matrix, crashes = camera_matrix_session
    server = matrix.server
    if not server.running:
        crashes.append(f"status {server.exit_status}: {server.stderr_text()[-1000:]}")
        server.stop()
        server.start()
    return matrix


@pytest.fixture
def rtsp_camera(camera_clip: Path, socket_enabled: None) -> Iterator[RtspServer]:
    """A real RTSP camera (GStreamer) on 127.0.0.1, with an auth-protected twin port."""
    server = RtspServer({"cam": camera_clip}, user=CAMERA_USER, password=CAMERA_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webrtc_loopback(monkeypatch: pytest.MonkeyPatch, socket_enabled: None) -> None:
    """Keep ICE on 127.0.0.1: both WebRTC peers run on this machine and nothing may leave it.

    aioice gathers host candidates from every interface except loopback; the tests swap in the
    loopback address so no connectivity check is ever sent to another address.
    """
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def hub_entry_data(storage: Path) -> dict[str, Any]:
    """Hub entry data as the config flow stores it."""
    return {
        CONF_ENGINE: ENGINE_EMBEDDED,
        CONF_STORAGE_PATH: str(storage),
        CONF_RETENTION_DAYS: 7,
        CONF_MIN_FREE_GB: 1.0,
    }


async def open_stream_url_form(hass: HomeAssistant, entry_id: str) -> Any:
    """Start "Add camera" and choose "Stream URL" in its menu; return the form."""
    result = await hass.config_entries.subentries.async_init(
        (entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["onvif", "discover", "stream_url"]
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": "stream_url"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "stream_url"
    return result


def camera_subentry(name: str, url: str, **extra: Any) -> ConfigSubentryData:
    """A camera subentry as the subentry flow stores it."""
    data: dict[str, Any] = {
        CONF_NAME: name,
        CONF_STREAM_URL: url,
        CONF_RECORD: True,
        CONF_DETECT_MOTION: False,
        **extra,
    }
    return ConfigSubentryData(data=data, subentry_type=SUBENTRY_CAMERA, title=name, unique_id=None)


@pytest.fixture
async def setup_camera(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A loaded LightNVR hub with one camera ("Front door") behind RTSP auth."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="LightNVR",
        data=hub_entry_data(tmp_path / "recordings"),
        subentries_data=[
            camera_subentry(
                "Front door",
                rtsp_camera.auth_url("cam", credentials=False),
                **{CONF_USERNAME: CAMERA_USER, CONF_PASSWORD: CAMERA_PASSWORD},
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    if entry.state.recoverable:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
