"""The camera subentry flow's ONVIF steps: add a camera by its address and login.

The first step of "Add camera" is a menu: an ONVIF camera (address and login), a search of the
network (WS-Discovery), or a stream URL (the form `config_flow.py` has always had). On the ONVIF
path the camera itself answers which streams it has: its media profiles are listed with their
codec, size and frame rate, the best main stream and the smallest H.264 profile (as sub-stream)
are proposed, and the chosen streams are then probed exactly like typed URLs. The device's
manufacturer, model, serial and firmware become the Home Assistant device's fields.
"""

from __future__ import annotations

import logging
from typing import Any

from homeassistant.config_entries import ConfigSubentryFlow, SubentryFlowResult
from homeassistant.const import CONF_HOST, CONF_NAME, CONF_PASSWORD, CONF_PORT, CONF_USERNAME
from homeassistant.helpers import selector
import voluptuous as vol

from .const import (
    CONF_DETECT_MOTION,
    CONF_ONVIF_FIRMWARE,
    CONF_ONVIF_HOST,
    CONF_ONVIF_MANUFACTURER,
    CONF_ONVIF_MODEL,
    CONF_ONVIF_PORT,
    CONF_ONVIF_PROFILE,
    CONF_ONVIF_PTZ,
    CONF_ONVIF_SERIAL,
    CONF_ONVIF_SNAPSHOT_URI,
    CONF_ONVIF_SUB_PROFILE,
    CONF_RECORD,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_URL,
    DEFAULT_ONVIF_PORT,
    SUBENTRY_CAMERA,
)
from .onvif.client import (
    OnvifCamera,
    OnvifError,
    OnvifProfile,
    async_read_camera,
    best_main_profile,
    best_sub_profile,
)
from .onvif.discovery import DiscoveredDevice, async_discover
from .reachability import camera_address

_LOGGER = logging.getLogger(__name__)

CONF_PROBE_ADDRESS = "probe_address"
CONF_DEVICE = "device"
NO_SUB_STREAM = "none"
MANUAL_ENTRY = "manual"
DISCOVERY_SECONDS = 3.0
WS_DISCOVERY_PORT = 3702


def _parse_address(text: str) -> tuple[str, int | None] | None:
    """Return (host, port or None) of "host" or "host:port"; None when it is neither."""
    text = text.strip()
    if not text or "/" in text or "@" in text or " " in text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:  # no port (an IPv6 literal keeps its colons)
        return text.strip("[]"), None
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    return host.strip("[]"), int(port)


def _skew_text(seconds: float) -> str:
    """Say how far the camera's clock is off, for the form."""
    ahead = "ahead of" if seconds > 0 else "behind"
    off = abs(seconds)
    if off >= 3600 - 30:  # to the minute: the measure itself is off by the round trip
        hours, minutes = divmod(round(off / 60), 60)
        amount = f"{hours} h {minutes} min"
    else:
        minutes, secs = divmod(round(off), 60)
        amount = f"{minutes} min {secs} s"
    return f"The camera's clock is {amount} {ahead} Home Assistant's."


class OnvifCameraSteps(ConfigSubentryFlow):
    """The menu, the ONVIF and the discovery steps of the camera subentry flow."""

    _onvif: OnvifCamera | None = None
    _onvif_login: tuple[str, int, str | None, str | None] | None = None
    _onvif_defaults: dict[str, Any] | None = None
    _discovered: list[DiscoveredDevice] | None = None

    async def _async_validate_camera(
        self, user_input: dict[str, Any], current: dict[str, Any], editing: str | None
    ) -> tuple[dict[str, Any], dict[str, str], str]:
        """Check a camera's streams as the stream URL form does (`config_flow.py` has it)."""
        raise NotImplementedError

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Choose how to add the camera."""
        return self.async_show_menu(
            step_id="user", menu_options=["onvif", "discover", "stream_url"]
        )

    # ----- address and login -------------------------------------------------------------------

    async def async_step_onvif(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Ask the camera for its streams, given its address and login."""
        errors: dict[str, str] = {}
        placeholders = {"detail": ""}
        defaults: dict[str, Any] = dict(self._onvif_defaults or {})
        if user_input is not None:
            defaults = {k: v for k, v in user_input.items() if k != CONF_PASSWORD}
            address = _parse_address(str(user_input[CONF_HOST]))
            # A camera already added is refused by its stream URL (`duplicate_url`) once its
            # profiles are chosen: an NVR or encoder has one address for several cameras.
            if address is None or address[1] is not None:
                errors[CONF_HOST] = "invalid_host"
            else:
                host, port = address[0], int(user_input.get(CONF_PORT) or DEFAULT_ONVIF_PORT)
                username = (user_input.get(CONF_USERNAME) or "").strip() or None
                password = user_input.get(CONF_PASSWORD) or None
                try:
                    self._onvif = await async_read_camera(self.hass, host, port, username, password)
                except OnvifError as err:
                    errors["base"] = err.reason
                    placeholders["detail"] = (
                        _skew_text(err.skew_seconds)
                        if err.reason == "clock_skew" and err.skew_seconds is not None
                        else err.detail
                    )
                else:
                    self._onvif_login = (host, port, username, password)
                    return await self.async_step_onvif_profiles()
        return self.async_show_form(
            step_id="onvif",
            data_schema=vol.Schema(
                {
                    vol.Required(
                        CONF_HOST, description={"suggested_value": defaults.get(CONF_HOST)}
                    ): str,
                    vol.Required(
                        CONF_PORT, default=int(defaults.get(CONF_PORT) or DEFAULT_ONVIF_PORT)
                    ): selector.NumberSelector(
                        selector.NumberSelectorConfig(
                            min=1, max=65535, step=1, mode=selector.NumberSelectorMode.BOX
                        )
                    ),
                    vol.Optional(
                        CONF_USERNAME, description={"suggested_value": defaults.get(CONF_USERNAME)}
                    ): str,
                    vol.Optional(CONF_PASSWORD): selector.TextSelector(
                        selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
                    ),
                }
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    def _added_as(self, host: str) -> str | None:
        """Return the name of a camera already added at `host` (by ONVIF or by URL)."""
        wanted = host.lower()
        for subentry in self._get_entry().subentries.values():
            if subentry.subentry_type != SUBENTRY_CAMERA:
                continue
            data = subentry.data
            if str(data.get(CONF_ONVIF_HOST) or "").lower() == wanted:
                return subentry.title
            address = camera_address(str(data.get(CONF_STREAM_URL) or ""))
            if address is not None and address[0].lower() == wanted:
                return subentry.title
        return None

    # ----- the streams --------------------------------------------------------------------------

    async def async_step_onvif_profiles(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Choose the main stream and the sub-stream among the camera's profiles."""
        camera, login = self._onvif, self._onvif_login
        assert camera is not None
        assert login is not None
        playable = [p for p in camera.profiles if p.stream_uri]
        by_token = {p.token: p for p in playable}
        main = best_main_profile(playable)
        sub = best_sub_profile(playable, main)
        errors: dict[str, str] = {}
        placeholders = {"detail": "", "device": self._device_text(camera)}
        defaults: dict[str, Any] = {
            CONF_NAME: camera.info.name or camera.info.model or login[0],
            CONF_ONVIF_PROFILE: main.token,
            CONF_ONVIF_SUB_PROFILE: sub.token if sub is not None else NO_SUB_STREAM,
        }
        if user_input is not None:
            defaults.update(user_input)
            chosen = by_token[user_input[CONF_ONVIF_PROFILE]]
            sub_token = user_input.get(CONF_ONVIF_SUB_PROFILE, NO_SUB_STREAM)
            chosen_sub = by_token.get(sub_token) if sub_token != chosen.token else None
            data, errors, detail = await self._async_validate_camera(
                self._stream_input(user_input, chosen, chosen_sub), {}, None
            )
            placeholders["detail"] = detail
            if not errors:
                data.update(self._onvif_data(camera, chosen, chosen_sub))
                return self.async_create_entry(title=data[CONF_NAME], data=data)
        profile_options = [
            selector.SelectOptionDict(value=p.token, label=p.label()) for p in playable
        ]
        return self.async_show_form(
            step_id="onvif_profiles",
            data_schema=vol.Schema(
                {
                    vol.Required(
                        CONF_NAME, description={"suggested_value": defaults[CONF_NAME]}
                    ): str,
                    vol.Required(
                        CONF_ONVIF_PROFILE, default=defaults[CONF_ONVIF_PROFILE]
                    ): selector.SelectSelector(
                        selector.SelectSelectorConfig(options=profile_options)
                    ),
                    vol.Required(
                        CONF_ONVIF_SUB_PROFILE, default=defaults[CONF_ONVIF_SUB_PROFILE]
                    ): selector.SelectSelector(
                        selector.SelectSelectorConfig(
                            options=[
                                selector.SelectOptionDict(value=NO_SUB_STREAM, label="—"),
                                *profile_options,
                            ],
                            translation_key=CONF_ONVIF_SUB_PROFILE,
                        )
                    ),
                    vol.Required(CONF_RECORD, default=defaults.get(CONF_RECORD, True)): bool,
                    vol.Required(
                        CONF_DETECT_MOTION, default=defaults.get(CONF_DETECT_MOTION, False)
                    ): bool,
                }
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    @staticmethod
    def _device_text(camera: OnvifCamera) -> str:
        info = camera.info
        parts = [part for part in (info.manufacturer, info.model) if part]
        if info.firmware:
            parts.append(f"firmware {info.firmware}")
        return " ".join(parts) or "ONVIF camera"

    def _stream_input(
        self, user_input: dict[str, Any], main: OnvifProfile, sub: OnvifProfile | None
    ) -> dict[str, Any]:
        """Return what the stream URL form would have been given for these profiles."""
        assert self._onvif_login is not None
        _host, _port, username, password = self._onvif_login
        streams: dict[str, Any] = {
            CONF_NAME: user_input[CONF_NAME],
            CONF_STREAM_URL: main.stream_uri,
            CONF_RECORD: user_input.get(CONF_RECORD, True),
            CONF_DETECT_MOTION: user_input.get(CONF_DETECT_MOTION, False),
        }
        if sub is not None:
            streams[CONF_SUBSTREAM_URL] = sub.stream_uri
        if username:
            streams[CONF_USERNAME] = username
        if password:
            streams[CONF_PASSWORD] = password
        return streams

    def _onvif_data(
        self, camera: OnvifCamera, main: OnvifProfile, sub: OnvifProfile | None
    ) -> dict[str, Any]:
        """Return the subentry fields that let LightNVR ask the camera again (and PTZ)."""
        assert self._onvif_login is not None
        host, port, _username, _password = self._onvif_login
        data: dict[str, Any] = {
            CONF_ONVIF_HOST: host,
            CONF_ONVIF_PORT: port,
            CONF_ONVIF_PROFILE: main.token,
            CONF_ONVIF_PTZ: main.ptz,
        }
        if sub is not None:
            data[CONF_ONVIF_SUB_PROFILE] = sub.token
        info = camera.info
        described = {
            CONF_ONVIF_MANUFACTURER: info.manufacturer,
            CONF_ONVIF_MODEL: info.model,
            CONF_ONVIF_SERIAL: info.serial,
            CONF_ONVIF_FIRMWARE: info.firmware,
            CONF_ONVIF_SNAPSHOT_URI: camera.snapshot_uri,
        }
        return data | {key: value for key, value in described.items() if value}

    # ----- search the network -------------------------------------------------------------------

    async def async_step_discover(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Look for ONVIF cameras (WS-Discovery), and ask one address directly if given."""
        errors: dict[str, str] = {}
        if user_input is not None:
            targets: list[str] = []
            if probe := (user_input.get(CONF_PROBE_ADDRESS) or "").strip():
                address = _parse_address(probe)
                if address is None:
                    errors[CONF_PROBE_ADDRESS] = "invalid_host"
                else:
                    targets.append(f"{address[0]}:{address[1] or WS_DISCOVERY_PORT}")
            if not errors:
                self._discovered = await async_discover(
                    self.hass, DISCOVERY_SECONDS, unicast_to=targets
                )
                if self._discovered:
                    return await self.async_step_discovered()
                errors["base"] = "no_devices_found"
        return self.async_show_form(
            step_id="discover",
            data_schema=vol.Schema({vol.Optional(CONF_PROBE_ADDRESS): str}),
            errors=errors,
        )

    async def async_step_discovered(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Pick a found camera: it fills in the ONVIF step (nothing is added without a login)."""
        found = {f"{d.host}:{d.port}": d for d in self._discovered or []}
        if user_input is not None:
            device = found.get(user_input[CONF_DEVICE])
            self._onvif_defaults = (
                {CONF_HOST: device.host, CONF_PORT: device.port} if device is not None else {}
            )
            return await self.async_step_onvif()
        options = [
            selector.SelectOptionDict(value=key, label=self._found_label(device))
            for key, device in found.items()
        ]
        options.append(selector.SelectOptionDict(value=MANUAL_ENTRY, label="…"))
        return self.async_show_form(
            step_id="discovered",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_DEVICE): selector.SelectSelector(
                        selector.SelectSelectorConfig(
                            options=options, translation_key="onvif_device"
                        )
                    )
                }
            ),
            description_placeholders={"count": str(len(found))},
        )

    def _found_label(self, device: DiscoveredDevice) -> str:
        name = " ".join(part for part in (device.name, device.hardware) if part) or "ONVIF"
        label = f"{name} ({device.host})"
        if (added := self._added_as(device.host)) is not None:
            label += f" — already added as {added}"
        return label
