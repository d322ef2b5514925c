"""Preset buttons of PTZ cameras: one `button` per preset ("<camera> Preset <name>")."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
import logging

from homeassistant.components.button import ButtonEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_track_time_interval

from .const import DOMAIN
from .entity import LightNvrCameraEntity
from .models import CameraConfig
from .onvif.client import OnvifError
from .onvif.ptz import OnvifPtz
from .ptz import async_ptz_command
from .runtime import LightNvrConfigEntry, LightNvrRuntime

_LOGGER = logging.getLogger(__name__)

# Each press is one request to the camera.
PARALLEL_UPDATES = 1
# At start-up the presets are read before the platform is done (so the hub's clean-up of
# stale entities keeps their registry entries), but a camera that does not answer must not
# hold up Home Assistant: it gets its buttons from a background retry instead.
SETUP_TIMEOUT = 5.0
RETRY_DELAYS = (10.0, 30.0, 60.0)  # then every 60 s until the camera answers
# Presets set in the camera's own app appear (and deleted ones go) within this long.
PRESET_REFRESH = timedelta(hours=1)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the preset buttons of every PTZ camera, now and for cameras added later.

    The buttons follow the camera's presets: every read of them (at start-up, hourly, and
    each `lightnvr.ptz_preset` listing) adds a button for a new preset and removes the button
    of a preset that is gone.
    """
    runtime = entry.runtime_data

    def follow_presets(camera: CameraConfig, ptz: OnvifPtz) -> None:
        shown: set[str] = set()  # tokens of this camera's presets that have a button

        @callback
        def sync(presets: tuple[tuple[str, str], ...]) -> None:
            if runtime.cameras.get(camera.camera_id) is not camera:
                return  # removed or reconfigured: its successor follows the presets
            tokens = {token for token, _ in presets}
            added = [
                PresetButton(runtime, camera, ptz, token, name)
                for token, name in presets
                if token not in shown
            ]
            if added:
                async_add_entities(added, config_subentry_id=camera.camera_id)
            registry = er.async_get(hass)
            for token in shown - tokens:
                unique_id = preset_unique_id(camera, token)
                if entity_id := registry.async_get_entity_id("button", DOMAIN, unique_id):
                    _LOGGER.info(
                        "Preset %s of %s is gone: its button is removed", token, camera.name
                    )
                    registry.async_remove(entity_id)
            shown.clear()
            shown.update(tokens)

        entry.async_on_unload(ptz.listen_presets(sync))

    async def async_read_presets(camera: CameraConfig, ptz: OnvifPtz) -> None:
        """Read the presets until the camera answers (the buttons follow the read)."""
        attempt = 0
        while True:
            try:
                await ptz.async_presets()
            except OnvifError as err:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                _LOGGER.debug(
                    "Presets of %s not read (%s), again in %.0f s", camera.name, err.reason, delay
                )
                attempt += 1
                await asyncio.sleep(delay)
                if runtime.cameras.get(camera.camera_id) is not camera:
                    return  # removed or reconfigured meanwhile
                continue
            return

    def add_camera(camera: CameraConfig) -> None:
        if (ptz := runtime.ptz.get(camera.camera_id)) is None:
            return  # not an ONVIF PTZ camera: no buttons
        follow_presets(camera, ptz)
        entry.async_create_background_task(
            hass, async_read_presets(camera, ptz), f"{DOMAIN} presets {camera.camera_id}"
        )

    async def async_initial(camera: CameraConfig, ptz: OnvifPtz) -> None:
        follow_presets(camera, ptz)
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                await ptz.async_presets()
        except (OnvifError, TimeoutError) as err:
            _LOGGER.warning(
                "Presets of %s could not be read yet (%s): their buttons come once it answers",
                camera.name,
                err.reason if isinstance(err, OnvifError) else "timeout",
            )
            entry.async_create_background_task(
                hass, async_read_presets(camera, ptz), f"{DOMAIN} presets {camera.camera_id}"
            )

    async def async_refresh(_now: datetime) -> None:
        """Read every PTZ camera's presets again (a camera that does not answer waits)."""
        for camera_id, ptz in list(runtime.ptz.items()):
            if camera_id in runtime.cameras:
                with contextlib.suppress(OnvifError):
                    await ptz.async_presets()

    runtime.entity_factories.append(add_camera)
    entry.async_on_unload(async_track_time_interval(hass, async_refresh, PRESET_REFRESH))
    await asyncio.gather(
        *(
            async_initial(camera, ptz)
            for camera in runtime.cameras.values()
            if (ptz := runtime.ptz.get(camera.camera_id)) is not None
        )
    )


def preset_unique_id(camera: CameraConfig, token: str) -> str:
    """Return the unique id of the button of preset `token`."""
    return f"{camera.camera_id}_preset_{token}"


class PresetButton(LightNvrCameraEntity, ButtonEntity):
    """`button.<camera>_preset_<name>`: move the camera to one of its presets."""

    _attr_translation_key = "preset"

    def __init__(
        self,
        runtime: LightNvrRuntime,
        camera: CameraConfig,
        ptz: OnvifPtz,
        token: str,
        name: str,
    ) -> None:
        """Create the button of preset `token`."""
        super().__init__(runtime, camera)
        self._ptz = ptz
        self._token = token
        self._attr_unique_id = preset_unique_id(camera, token)
        self._attr_translation_placeholders = {"name": name}

    @property
    def available(self) -> bool:
        """PTZ goes through ONVIF, not the video stream: usable while the stream is down."""
        return True

    async def async_press(self) -> None:
        """Go to the preset."""
        await async_ptz_command(self._camera, self._ptz.async_goto_preset(self._token))
