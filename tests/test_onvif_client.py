"""ONVIF client and discovery against the ONVIF double (real SOAP over HTTP, real WS-Security)."""

from __future__ import annotations

import logging
import socket

from homeassistant.core import HomeAssistant
import pytest

from custom_components.lightnvr.onvif.client import (
    OnvifCamera,
    OnvifError,
    OnvifProfile,
    async_read_camera,
    async_stream_uri,
    best_main_profile,
    best_sub_profile,
)
from custom_components.lightnvr.onvif.discovery import async_discover

from .infra.rtsp import RtspServer
from .onvif_double import DiscoveryResponder, OnvifDouble, PlainHttpServer, StreamProfile
from .onvif_double.fixtures import *  # noqa: F403 - fixtures (until conftest imports them)
from .onvif_double.fixtures import DOUBLE_HARDWARE, DOUBLE_NAME, OnvifDoubleFactory

CAM = "rtsp://192.0.2.10"
PROFILES = [
    StreamProfile("main", "Main", f"{CAM}/h264Preview_01_main", width=2560, height=1440),
    StreamProfile("sub", "Sub", f"{CAM}/h264Preview_01_sub?a=1&b=2", width=640, height=360),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _read(
    hass: HomeAssistant, double: OnvifDouble, password: str | None = None
) -> OnvifCamera:
    return await async_read_camera(
        hass, double.host, double.port, double.username, password or double.password
    )


async def test_read_camera(
    hass: HomeAssistant, onvif_camera: OnvifDouble, rtsp_camera: RtspServer
) -> None:
    """Device information, every video profile with its RTSP URI, the snapshot URI."""
    camera = await _read(hass, onvif_camera)

    assert camera.info.manufacturer == "LightNVR Labs"
    assert camera.info.model == DOUBLE_HARDWARE
    assert camera.info.firmware == "1.2.3"
    assert camera.info.serial == "SN-0001"
    assert [p.token for p in camera.profiles] == ["main", "sub", "jpeg"]
    main, sub, jpeg = camera.profiles
    assert (main.encoding, main.width, main.height, main.fps) == ("H264", 1920, 1080, 25.0)
    assert (sub.encoding, sub.width, sub.height, sub.fps) == ("H264", 640, 360, 15.0)
    assert jpeg.encoding == "JPEG"
    assert main.ptz
    assert sub.ptz
    assert not jpeg.ptz
    # As the camera gives it: no credentials added.
    assert main.stream_uri == rtsp_camera.auth_url("cam", credentials=False)
    assert camera.snapshot_uri == f"{onvif_camera.base_url}/snapshot/main.jpg"
    assert abs(camera.clock_offset) < 2
    assert best_main_profile(camera.profiles) == main
    assert best_sub_profile(camera.profiles, main) == sub
    assert main.label() == "Main — H264 1920×1080 25 fps"
    # Only GetSystemDateAndTime went without a login, and no login was refused.
    assert onvif_camera.refused == []


async def test_stream_uri_with_query_is_read_whole(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """URIs with `&` (escaped in the XML) come back as the camera meant them."""
    double = onvif_double_factory(PROFILES)
    camera = await _read(hass, double)
    assert camera.profiles[1].stream_uri == "rtsp://192.0.2.10/h264Preview_01_sub?a=1&b=2"
    assert not any(p.ptz for p in camera.profiles)  # no PTZ service, no PTZ configuration


@pytest.mark.parametrize("auth_status", [400, 401])
async def test_wrong_password(
    hass: HomeAssistant,
    onvif_double_factory: OnvifDoubleFactory,
    auth_status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A NotAuthorized fault (HTTP 400 or 401, as cameras differ) is `invalid_auth`."""
    caplog.set_level(logging.DEBUG)
    double = onvif_double_factory(PROFILES, auth_status=auth_status)
    with pytest.raises(OnvifError) as err:
        await _read(hass, double, password="not-the-password")
    assert err.value.reason == "invalid_auth"
    assert double.refused  # the double checked the digest and refused it
    assert "not-the-password" not in str(err.value)
    assert "not-the-password" not in caplog.text  # digests only, even in debug logs


async def test_not_onvif(hass: HomeAssistant, plain_http_server: PlainHttpServer) -> None:
    """A web server that answers HTML is `not_onvif`."""
    with pytest.raises(OnvifError) as err:
        await async_read_camera(hass, "127.0.0.1", plain_http_server.port, "admin", "pw")
    assert err.value.reason == "not_onvif"


async def test_nothing_listening(hass: HomeAssistant, socket_enabled: None) -> None:
    """A refused connection is `cannot_connect`."""
    with pytest.raises(OnvifError) as err:
        await async_read_camera(hass, "127.0.0.1", _free_port(), "admin", "pw")
    assert err.value.reason == "cannot_connect"


async def test_no_profiles(hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory) -> None:
    """A device without video profiles is `no_profiles`."""
    double = onvif_double_factory([])
    with pytest.raises(OnvifError) as err:
        await _read(hass, double)
    assert err.value.reason == "no_profiles"


@pytest.mark.parametrize("offset", [3600.0, -3600.0, 7 * 86400.0])
async def test_camera_clock_far_off(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory, offset: float
) -> None:
    """The login is signed with the camera's time when its clock is off (it refuses ours)."""
    double = onvif_double_factory(PROFILES, clock_offset=offset)
    camera = await _read(hass, double)
    assert abs(camera.clock_offset - offset) < 2
    assert [p.token for p in camera.profiles] == ["main", "sub"]
    assert double.refused == []


async def test_clock_skew_reported_when_it_cannot_be_bridged(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """A camera that tells only its local time, an hour off: the error says how far off."""
    double = onvif_double_factory(PROFILES, clock_offset=3600.0, utc_time=False)
    with pytest.raises(OnvifError) as err:
        await _read(hass, double)
    assert err.value.reason == "clock_skew"
    assert err.value.skew_seconds is not None
    assert abs(err.value.skew_seconds - 3600) < 2


async def test_stream_uri_read_again(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """After a firmware update moved the stream, asking again gives the new URI."""
    double = onvif_double_factory(PROFILES)
    args = (hass, double.host, double.port, double.username, double.password)
    assert await async_stream_uri(*args, "main") == PROFILES[0].stream_uri
    double.set_stream_uri("main", "rtsp://192.0.2.10/Streaming/Channels/101")
    assert await async_stream_uri(*args, "main") == "rtsp://192.0.2.10/Streaming/Channels/101"
    with pytest.raises(OnvifError):
        await async_stream_uri(*args, "no-such-profile")


def _profile(token: str, encoding: str, width: int, height: int, **extra: object) -> OnvifProfile:
    values: dict[str, object] = {
        "fps": 25.0,
        "ptz": False,
        "stream_uri": f"rtsp://cam/{token}",
        **extra,
    }
    return OnvifProfile(token, token.title(), encoding, width, height, **values)  # type: ignore[arg-type]


def test_best_profiles() -> None:
    """Main: the largest video profile (JPEG never); sub: the smallest other H.264 one."""
    h265 = _profile("big", "H265", 2560, 1440)
    h264 = _profile("main", "H264", 1920, 1080)
    small = _profile("small", "H264", 640, 360)
    tiny = _profile("tiny", "H264", 320, 240)
    jpeg = _profile("jpeg", "JPEG", 3840, 2160)
    assert best_main_profile([jpeg, h264, h265, small]) == h265
    assert best_main_profile([jpeg, small, h264]) == h264
    same_size_h265 = _profile("h265", "H265", 1920, 1080)
    assert best_main_profile([same_size_h265, h264]) == h264  # plays in every browser
    assert best_sub_profile([h265, h264, small, tiny, jpeg], h265) == tiny
    assert best_sub_profile([h265, jpeg], h265) is None
    no_uri = _profile("nouri", "H264", 320, 180, stream_uri=None)
    assert best_sub_profile([h264, no_uri], h264) is None
    assert _profile("x", "H265", 2560, 1440).label() == "X — H265 2560×1440 25 fps"


async def test_discovery_unicast(
    hass: HomeAssistant, ws_discovery: DiscoveryResponder, onvif_camera: OnvifDouble
) -> None:
    """A WS-Discovery probe to the responder finds the camera with its name and hardware."""
    devices = await async_discover(hass, timeout=0.5, unicast_to=[ws_discovery.address])
    assert ws_discovery.probes  # the probe reached the responder
    assert len(devices) == 1
    device = devices[0]
    assert (device.host, device.port) == ("127.0.0.1", onvif_camera.port)
    assert device.name == DOUBLE_NAME
    assert device.hardware == DOUBLE_HARDWARE
    assert device.xaddrs == (onvif_camera.device_xaddr,)
    # What discovery found is enough to read the camera.
    camera = await async_read_camera(
        hass, device.host, device.port, onvif_camera.username, onvif_camera.password
    )
    assert camera.profiles


async def test_discovery_nothing_answers(hass: HomeAssistant, socket_enabled: None) -> None:
    """No responder: an empty list after the timeout, no error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        assert await async_discover(hass, timeout=0.3, unicast_to=[f"127.0.0.1:{port}"]) == []
