"""Read an ONVIF camera: device information, media profiles, stream and snapshot URIs.

The SOAP work is done by onvif-zeep-async (the library and version Home Assistant's own `onvif`
integration uses); this module turns its answers into plain dataclasses and its many exception
types into one `OnvifError` with a reason the config flow can show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
import datetime as dt
import logging
import os
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
import httpx
import onvif
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError
from onvif.util import is_auth_error, stringify_onvif_error
from zeep.exceptions import (
    Error as ZeepError,
    Fault,
    TransportError as ZeepTransportError,
    XMLParseError,
    XMLSyntaxError,
)

_LOGGER = logging.getLogger(__name__)

# The WSDL files ship with the library; no_cache=True keeps zeep from opening an SQLite cache.
WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl") + os.sep
# The library waits up to 90 s for an answer; a config flow should give up much sooner.
REQUEST_TIMEOUT = 10.0
# Cameras refuse a WS-Security token whose Created time is more than a few seconds off their
# own clock; beyond this we sign with the camera's time instead of ours.
MAX_CLOCK_SKEW = 5.0
VIDEO_CODECS = ("H264", "H265")

# Everything the library raises for a camera that misbehaves: zeep, and its HTTP client
# underneath (httpx up to onvif-zeep-async 3.x, aiohttp from 4.0 on, which newer HA pins).
ONVIF_ERRORS: tuple[type[BaseException], ...] = (
    Fault,
    ZeepError,
    ONVIFError,
    httpx.HTTPError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class OnvifDeviceInfo:
    """What the camera says about itself (GetDeviceInformation; name from discovery scopes)."""

    manufacturer: str | None
    model: str | None
    firmware: str | None
    serial: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class OnvifProfile:
    """One media profile: a stream the camera offers."""

    token: str
    name: str
    encoding: str  # "H264" | "H265" | "JPEG" | whatever else the camera says
    width: int | None
    height: int | None
    fps: float | None
    ptz: bool  # the profile has a PTZ configuration and the camera a PTZ service
    stream_uri: str | None  # RTSP URI as the camera gives it (no credentials added)

    def label(self) -> str:
        """Return a line for a select list, e.g. "Main — H265 2560×1440 25 fps"."""
        parts = [self.encoding]
        if self.width and self.height:
            parts.append(f"{self.width}×{self.height}")
        if self.fps:
            parts.append(f"{self.fps:g} fps")
        return f"{self.name} — {' '.join(parts)}"

    @property
    def pixels(self) -> int:
        """Return the picture's size in pixels (0 when the camera does not say)."""
        return (self.width or 0) * (self.height or 0)


@dataclass(frozen=True, slots=True)
class OnvifCamera:
    """Everything the config flow needs from a camera."""

    info: OnvifDeviceInfo
    profiles: tuple[OnvifProfile, ...]
    snapshot_uri: str | None
    clock_offset: float  # seconds, the camera's clock minus ours (0 when it did not say)


class OnvifError(Exception):
    """The camera could not be read; `reason` is a config flow error key."""

    def __init__(self, reason: str, detail: str = "", skew_seconds: float | None = None) -> None:
        """Create the error; `detail` is for logs (never holds a password)."""
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.skew_seconds = skew_seconds


async def timed[T](awaitable: Awaitable[T]) -> T:
    """Await one request, giving up after REQUEST_TIMEOUT."""
    async with asyncio.timeout(REQUEST_TIMEOUT):
        return await awaitable


def onvif_error(err: BaseException, skew: float | None = None) -> OnvifError:
    """Translate what the library raised into an OnvifError.

    `skew` is the camera's clock offset when known: a refused login from a camera whose clock
    is far off is most likely the clock's fault (WS-Security digests carry a timestamp).
    """
    if isinstance(err, OnvifError):
        return err
    if isinstance(err, Fault):
        detail = stringify_onvif_error(err)
        if is_auth_error(err):
            if skew is not None and abs(skew) > MAX_CLOCK_SKEW:
                return OnvifError("clock_skew", detail, skew_seconds=skew)
            return OnvifError("invalid_auth", detail)
        # A SOAP answer, but not one an ONVIF camera gives to these requests.
        return OnvifError("not_onvif", detail)
    if isinstance(err, ZeepTransportError):
        # HTTP-level login (some web servers put one in front of the ONVIF service).
        if err.status_code == 401:
            return OnvifError("invalid_auth", f"HTTP {err.status_code}")
        return OnvifError("not_onvif", f"HTTP {err.status_code}: not a SOAP answer")
    if isinstance(err, (XMLSyntaxError, XMLParseError)):
        return OnvifError("not_onvif", str(err))
    if isinstance(
        err,
        (
            httpx.RemoteProtocolError,
            httpx.DecodingError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientResponseError,
        ),
    ):
        return OnvifError("not_onvif", f"not HTTP: {err}")  # something else listens there
    if isinstance(err, (httpx.HTTPError, aiohttp.ClientError, TimeoutError, OSError)):
        return OnvifError("cannot_connect", str(err) or type(err).__name__)
    # ONVIFError (e.g. "device doesn't support service media"), other zeep errors.
    return OnvifError("not_onvif", str(err))


async def async_clock_offset(devicemgmt: Any) -> tuple[float | None, bool]:
    """Return (camera clock minus ours in seconds, whether the camera gave its UTC time).

    GetSystemDateAndTime needs no login by the ONVIF spec; a camera that wants one anyway
    answers with a fault, and the offset stays unknown (None).
    """
    try:
        answer = await timed(devicemgmt.authless_GetSystemDateAndTime())
    except Fault:
        return None, False
    if not answer:
        return None, False
    when, has_utc = answer.UTCDateTime, True
    zone: dt.tzinfo | None = dt.UTC
    if when is None:
        when, has_utc = answer.LocalDateTime, False
        tz_name = answer.TimeZone.TZ if answer.TimeZone is not None else None
        # POSIX zone strings ("CST-6CDT") do not resolve: then the offset stays unknown.
        zone = await dt_util.async_get_time_zone(tz_name) if tz_name else None
    if when is None or zone is None:
        return None, False
    try:
        camera_now = dt.datetime(
            when.Date.Year,
            when.Date.Month,
            when.Date.Day,
            when.Time.Hour,
            when.Time.Minute,
            when.Time.Second,
            tzinfo=zone,
        )
    except (TypeError, ValueError, AttributeError):
        return None, False
    return (camera_now - dt_util.utcnow()).total_seconds(), has_utc


async def async_connect(
    host: str, port: int, username: str | None, password: str | None
) -> tuple[ONVIFCamera, float | None]:
    """Return the library's camera with its service addresses read, and its clock offset.

    When the camera's clock is off by more than MAX_CLOCK_SKEW, the library signs every
    request with the camera's time (its `adjust_time` mode, as Home Assistant's onvif
    integration relies on): the login works however wrong the camera's clock is.
    The caller closes the camera (`await camera.close()`).
    """
    camera = ONVIFCamera(
        host, port, username or "", password or "", WSDL_DIR, no_cache=True, adjust_time=False
    )
    skew: float | None = None
    try:
        devicemgmt = await camera.create_devicemgmt_service()
        skew, has_utc = await async_clock_offset(devicemgmt)
        if skew is not None and abs(skew) > MAX_CLOCK_SKEW:
            _LOGGER.debug("ONVIF camera %s:%s clock is off by %.0f s", host, port, skew)
            # The library reads the camera's UTC time again and keeps the difference.
            camera.adjust_time = has_utc
        await timed(camera.update_xaddrs())
    except ONVIF_ERRORS as err:
        await camera.close()
        raise onvif_error(err, skew) from err
    except BaseException:
        await camera.close()
        raise
    return camera, skew


async def async_read_camera(
    hass: HomeAssistant, host: str, port: int, username: str | None, password: str | None
) -> OnvifCamera:
    """Read a camera's device information, media profiles with their URIs, snapshot URI."""
    camera, skew = await async_connect(host, port, username, password)
    try:
        return await _async_read(camera, skew)
    except ONVIF_ERRORS as err:
        raise onvif_error(err, skew) from err
    finally:
        await camera.close()


async def _async_read(camera: ONVIFCamera, skew: float | None) -> OnvifCamera:
    devicemgmt = await camera.create_devicemgmt_service()
    info = await _async_device_info(devicemgmt)
    media = await camera.create_media_service()
    has_ptz = _has_service(camera, "ptz")
    profiles = []
    for raw in await timed(media.GetProfiles()) or ():
        encoder = raw.VideoEncoderConfiguration
        if encoder is None:  # audio- or metadata-only profile
            continue
        resolution = encoder.Resolution
        rate = encoder.RateControl
        profiles.append(
            OnvifProfile(
                token=str(raw.token),
                name=str(raw.Name or raw.token),
                encoding=str(encoder.Encoding or "unknown"),
                width=_int(resolution.Width) if resolution is not None else None,
                height=_int(resolution.Height) if resolution is not None else None,
                fps=_float(rate.FrameRateLimit) if rate is not None else None,
                ptz=has_ptz and raw.PTZConfiguration is not None,
                stream_uri=await _async_stream_uri(media, str(raw.token)),
            )
        )
    if not profiles:
        raise OnvifError("no_profiles", "no media profile with video")
    main = best_main_profile(profiles)
    snapshot = await _async_snapshot_uri(media, main.token)
    return OnvifCamera(info, tuple(profiles), snapshot, skew or 0.0)


async def async_stream_uri(  # noqa: PLR0917 - the login travels with the address
    hass: HomeAssistant,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    profile_token: str,
) -> str:
    """Ask the camera for one profile's RTSP URI again (its path may change with firmware)."""
    camera, skew = await async_connect(host, port, username, password)
    try:
        media = await camera.create_media_service()
        uri = await _async_stream_uri(media, profile_token, quiet=False)
    except ONVIF_ERRORS as err:
        raise onvif_error(err, skew) from err
    finally:
        await camera.close()
    if uri is None:
        raise OnvifError("no_profiles", f"no stream URI for profile {profile_token}")
    return uri


def best_main_profile(profiles: Iterable[OnvifProfile]) -> OnvifProfile:
    """Return the profile to record: the largest H.265/H.264 one that has a stream URI.

    Video codecs beat JPEG whatever the size; at equal size H.264 wins (every viewer plays it).
    """
    candidates = list(profiles)
    if not candidates:
        raise ValueError("no profiles")
    return max(
        candidates,
        key=lambda p: (
            p.stream_uri is not None,
            p.encoding in VIDEO_CODECS,
            p.pixels,
            p.encoding == "H264",
            p.fps or 0.0,
        ),
    )


def best_sub_profile(profiles: Iterable[OnvifProfile], main: OnvifProfile) -> OnvifProfile | None:
    """Return the smallest H.264 profile other than `main` (for live view and detection)."""
    candidates = [
        p
        for p in profiles
        if p.token != main.token and p.encoding == "H264" and p.stream_uri is not None
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (p.pixels, p.fps or 0.0))


async def _async_device_info(devicemgmt: Any) -> OnvifDeviceInfo:
    """Device information; cameras with broken XML here still stream (Home Assistant's finding)."""
    try:
        answer = await timed(devicemgmt.GetDeviceInformation())
    except (XMLParseError, XMLSyntaxError, ZeepTransportError) as err:
        _LOGGER.debug("Unreadable ONVIF device information: %s", err)
        return OnvifDeviceInfo(None, None, None, None, None)
    return OnvifDeviceInfo(
        manufacturer=_text(answer.Manufacturer),
        model=_text(answer.Model),
        firmware=_text(answer.FirmwareVersion),
        serial=_text(answer.SerialNumber),
        name=None,  # ONVIF has no device name here; discovery's scopes carry it
    )


async def _async_stream_uri(media: Any, token: str, *, quiet: bool = True) -> str | None:
    """Return a profile's RTSP URI (RTP unicast over RTSP), None if the camera has none."""
    request = {
        "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
        "ProfileToken": token,
    }
    try:
        answer = await timed(media.GetStreamUri(request))
    except Fault as err:
        if is_auth_error(err) or not quiet:
            raise
        # Some profiles (JPEG, say) cannot be streamed over RTSP: not an error for the camera.
        _LOGGER.debug("No stream URI for ONVIF profile %s: %s", token, stringify_onvif_error(err))
        return None
    return _text(getattr(answer, "Uri", None))


async def _async_snapshot_uri(media: Any, token: str) -> str | None:
    """Return the profile's snapshot URI, None when the camera has none."""
    try:
        answer = await timed(media.GetSnapshotUri({"ProfileToken": token}))
    except Fault as err:
        if is_auth_error(err):
            raise
        return None
    return _text(getattr(answer, "Uri", None))


def _has_service(camera: ONVIFCamera, name: str) -> bool:
    """Whether GetCapabilities named an address for the service."""
    try:
        camera.get_definition(name)
    except ONVIFError:
        return False
    return True


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
