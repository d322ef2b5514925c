"""Pan, tilt, zoom and presets of one ONVIF camera profile (PTZ service, ver20)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
from typing import Any

from homeassistant.core import HomeAssistant
from onvif import ONVIFCamera
from onvif.util import is_auth_error
from zeep.exceptions import Fault

from .client import ONVIF_ERRORS, OnvifError, async_connect, onvif_error, timed

_LOGGER = logging.getLogger(__name__)


def _clamp(value: float) -> float:
    """ONVIF's generic velocity space runs from -1 to 1."""
    return max(-1.0, min(1.0, float(value)))


class OnvifPtz:
    """PTZ of one camera profile. Connects on first use and keeps the connection.

    A refused login reconnects once: the camera's clock may have drifted since the library
    measured it, and a fresh connection measures it again.
    """

    def __init__(  # noqa: PLR0917 - the login travels with the address
        self,
        hass: HomeAssistant,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        profile_token: str,
    ) -> None:
        """Remember where the camera is; nothing is sent yet."""
        self._hass = hass
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self.profile_token = profile_token
        self._camera: ONVIFCamera | None = None
        self._service: Any = None
        self._skew: float | None = None
        self._lock = asyncio.Lock()
        # Each move gets a number: a timed stop only stops the move that asked for it.
        self._move = 0
        self._presets: tuple[tuple[str, str], ...] = ()
        # Told the presets after every read (the preset buttons follow the camera's list).
        self._preset_listeners: list[Callable[[tuple[tuple[str, str], ...]], None]] = []
        self._closed = False

    def __repr__(self) -> str:
        """Return a repr without the login."""
        return f"OnvifPtz({self._host}:{self._port}, profile={self.profile_token})"

    @property
    def presets(self) -> tuple[tuple[str, str], ...]:
        """Return the presets (token, name) as last read by `async_presets`."""
        return self._presets

    async def async_move(
        self, pan: float, tilt: float, zoom: float, duration: float | None
    ) -> None:
        """Move at the given velocities (-1..1) and stop after `duration` seconds if given."""
        velocity: dict[str, Any] = {}
        if pan or tilt:
            velocity["PanTilt"] = {"x": _clamp(pan), "y": _clamp(tilt)}
        if zoom:
            # Only the axes that move: cameras without zoom refuse a Zoom velocity.
            velocity["Zoom"] = {"x": _clamp(zoom)}
        if not velocity:
            await self.async_stop()
            return
        self._move += 1
        move = self._move
        await self._async_call(
            "ContinuousMove", {"ProfileToken": self.profile_token, "Velocity": velocity}
        )
        if duration is None:
            return
        # Cameras often ignore ContinuousMove's own Timeout: stop explicitly, as HA's onvif does.
        await asyncio.sleep(duration)
        if move == self._move and not self._closed:
            await self.async_stop()

    async def async_stop(self) -> None:
        """Stop every movement."""
        self._move += 1
        await self._async_call(
            "Stop", {"ProfileToken": self.profile_token, "PanTilt": True, "Zoom": True}
        )

    async def async_goto_preset(self, preset_token: str, speed: float | None = None) -> None:
        """Move to a preset, at `speed` (0..1) when given, else at the camera's default."""
        request: dict[str, Any] = {
            "ProfileToken": self.profile_token,
            "PresetToken": preset_token,
        }
        if speed is not None:
            speed = max(0.0, min(1.0, float(speed)))
            request["Speed"] = {"PanTilt": {"x": speed, "y": speed}, "Zoom": {"x": speed}}
        self._move += 1
        await self._async_call("GotoPreset", request)

    def listen_presets(
        self, listener: Callable[[tuple[tuple[str, str], ...]], None]
    ) -> Callable[[], None]:
        """Call `listener` with the presets after every read; return the way to stop."""
        self._preset_listeners.append(listener)
        return lambda: self._preset_listeners.remove(listener)

    async def async_presets(self) -> list[tuple[str, str]]:
        """Read the presets from the camera: (token, name), the name falling back to the token."""
        answer = await self._async_call("GetPresets", {"ProfileToken": self.profile_token})
        presets = []
        for preset in answer or ():
            token = getattr(preset, "token", None)
            if not token:
                continue
            name = str(getattr(preset, "Name", None) or "").strip() or str(token)
            presets.append((str(token), name))
        self._presets = tuple(presets)
        for listener in list(self._preset_listeners):
            listener(self._presets)
        return presets

    async def async_close(self) -> None:
        """Close the connection for good (the camera is removed or the hub stops).

        A timed stop still pending or a call still running does not connect again.
        """
        self._closed = True
        await self._async_reset(self._service)

    async def _async_reset(self, used: Any) -> None:
        """Drop the connection `used` (a later call connects afresh), unless one replaced it."""
        async with self._lock:
            if used is None or self._service is not used:
                return
            camera, self._camera, self._service = self._camera, None, None
        if camera is not None:
            await camera.close()

    async def _async_service(self) -> Any:
        async with self._lock:
            if self._closed:
                raise OnvifError("cannot_connect", "the camera's PTZ control is closed")
            if self._service is None:
                camera, self._skew = await async_connect(
                    self._host, self._port, self._username, self._password
                )
                try:
                    self._service = await camera.create_ptz_service()
                except ONVIF_ERRORS as err:
                    await camera.close()
                    raise onvif_error(err, self._skew) from err
                self._camera = camera
            return self._service

    async def _async_call(self, operation: str, request: dict[str, Any]) -> Any:
        for attempt in (1, 2):
            service = await self._async_service()
            try:
                return await timed(getattr(service, operation)(request))
            except Fault as err:
                if attempt == 1 and is_auth_error(err):
                    _LOGGER.debug("%r: login refused, measuring the clock again", self)
                    await self._async_reset(service)
                    continue
                raise onvif_error(err, self._skew) from err
            except ONVIF_ERRORS as err:
                await self._async_reset(service)  # the next call connects afresh
                raise onvif_error(err, self._skew) from err
        raise OnvifError("invalid_auth", "login refused")  # pragma: no cover - loop returns
