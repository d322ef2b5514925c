"""Preset buttons of PTZ cameras: one `button` per preset ("<camera> Preset <name>")."""

from __future__ import annotations

import asyncio
import logging

from homeassistant.components.button import ButtonEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

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


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the preset buttons of every PTZ camera, now and for cameras added later."""
    runtime = entry.runtime_data

    def add_presets(camera: CameraConfig, ptz: OnvifPtz) -> None:
        async_add_entities(
            [PresetButton(runtime, camera, ptz, token, name) for token, name in ptz.presets],
            config_subentry_id=camera.camera_id,
        )

    async def async_read_presets(camera: CameraConfig, ptz: OnvifPtz) -> None:
        """Read the presets until the camera answers, then add the buttons (once)."""
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
            if runtime.cameras.get(camera.camera_id) is camera:
                add_presets(camera, ptz)
            return

    def add_camera(camera: CameraConfig) -> None:
        if (ptz := runtime.ptz.get(camera.camera_id)) is None:
            return  # not an ONVIF PTZ camera: no buttons
        entry.async_create_background_task(
            hass, async_read_presets(camera, ptz), f"{DOMAIN} presets {camera.camera_id}"
        )

    async def async_initial(camera: CameraConfig, ptz: OnvifPtz) -> None:
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                await ptz.async_presets()
        except (OnvifError, TimeoutError) as err:
            _LOGGER.warning(
                "Presets of %s could not be read yet (%s): their buttons come once it answers",
                camera.name,
                err.reason if isinstance(err, OnvifError) else "timeout",
            )
            add_camera(camera)
            return
        add_presets(camera, ptz)

    runtime.entity_factories.append(add_camera)
    await asyncio.gather(
        *(
            async_initial(camera, ptz)
            for camera in runtime.cameras.values()
            if (ptz := runtime.ptz.get(camera.camera_id)) is not None
        )
    )


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
        self._attr_unique_id = f"{camera.camera_id}_preset_{token}"
        self._attr_translation_placeholders = {"name": name}

    @property
    def available(self) -> bool:
        """PTZ goes through ONVIF, not the video stream: usable while the stream is down."""
        return True

    async def async_press(self) -> None:
        """Go to the preset."""
        await async_ptz_command(self._camera, self._ptz.async_goto_preset(self._token))
