"""PTZ of ONVIF cameras in Home Assistant: one OnvifPtz per camera, the entity services.

The runtime owns the OnvifPtz objects (`runtime.ptz`, by camera id), created by
`async_setup_camera_ptz` when a camera starts and closed when it stops. The camera platform
registers `lightnvr.ptz` and `lightnvr.ptz_preset` with `async_register_ptz_services`.
"""

from __future__ import annotations

from collections.abc import Awaitable
import logging
from typing import TYPE_CHECKING, Any

from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.entity_platform import EntityPlatform
import voluptuous as vol

from .const import DOMAIN
from .models import CameraConfig
from .onvif.client import OnvifError
from .onvif.ptz import OnvifPtz

if TYPE_CHECKING:
    from .entity import LightNvrCameraEntity

_LOGGER = logging.getLogger(__name__)

SERVICE_PTZ = "ptz"
SERVICE_PTZ_PRESET = "ptz_preset"
ATTR_PAN = "pan"
ATTR_TILT = "tilt"
ATTR_ZOOM = "zoom"
ATTR_SPEED = "speed"
ATTR_DURATION = "duration"
ATTR_PRESET = "preset"

# Direction → sign of the ONVIF velocity (generic space: x right, y up, zoom in positive).
PAN_DIRECTIONS = {"left": -1.0, "right": 1.0, "none": 0.0}
TILT_DIRECTIONS = {"down": -1.0, "up": 1.0, "none": 0.0}
ZOOM_DIRECTIONS = {"out": -1.0, "in": 1.0, "none": 0.0}
DEFAULT_SPEED = 0.5
DEFAULT_DURATION = 0.5

_SPEED = vol.All(vol.Coerce(float), vol.Range(min=0.1, max=1.0))
PTZ_SCHEMA: dict[Any, Any] = {
    vol.Optional(ATTR_PAN, default="none"): vol.In(list(PAN_DIRECTIONS)),
    vol.Optional(ATTR_TILT, default="none"): vol.In(list(TILT_DIRECTIONS)),
    vol.Optional(ATTR_ZOOM, default="none"): vol.In(list(ZOOM_DIRECTIONS)),
    vol.Optional(ATTR_SPEED, default=DEFAULT_SPEED): _SPEED,
    vol.Optional(ATTR_DURATION, default=DEFAULT_DURATION): vol.All(
        vol.Coerce(float), vol.Range(min=0.1, max=10.0)
    ),
    vol.Optional(ATTR_PRESET): cv.string,
}
PTZ_PRESET_SCHEMA: dict[Any, Any] = {
    vol.Optional(ATTR_PRESET): cv.string,
    vol.Optional(ATTR_SPEED): _SPEED,
}


async def async_setup_camera_ptz(hass: HomeAssistant, camera: CameraConfig) -> OnvifPtz | None:
    """Return the PTZ control of a camera added through ONVIF with PTZ; None for the others.

    Nothing is sent yet: the camera may be down while the hub starts, and the first command
    (or the preset buttons, reading the presets in the background) connects.
    """
    access = camera.onvif
    if access is None or not access.ptz:
        return None
    return OnvifPtz(
        hass,
        access.host,
        access.port,
        camera.source.username,
        camera.source.password,
        access.main_profile,
    )


def async_register_ptz_services(platform: EntityPlatform) -> None:
    """Register `lightnvr.ptz` and `lightnvr.ptz_preset` on the camera entities."""
    platform.async_register_entity_service(SERVICE_PTZ, PTZ_SCHEMA, async_handle_ptz)
    platform.async_register_entity_service(
        SERVICE_PTZ_PRESET,
        PTZ_PRESET_SCHEMA,
        async_handle_ptz_preset,
        supports_response=SupportsResponse.OPTIONAL,
    )


def camera_ptz(entity: LightNvrCameraEntity) -> OnvifPtz:
    """Return the entity's camera's PTZ control, or refuse the call clearly."""
    ptz = entity._runtime.ptz.get(entity._camera.camera_id)
    if ptz is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="ptz_not_supported",
            translation_placeholders={"camera": entity._camera.name},
        )
    return ptz


async def async_handle_ptz(entity: LightNvrCameraEntity, call: ServiceCall) -> None:
    """`lightnvr.ptz`: move in the given directions for `duration` seconds, or go to `preset`."""
    ptz = camera_ptz(entity)
    data = call.data
    if (preset := data.get(ATTR_PRESET)) is not None:
        await async_ptz_command(entity._camera, ptz.async_goto_preset(preset, data[ATTR_SPEED]))
        return
    speed = data[ATTR_SPEED]
    await async_ptz_command(
        entity._camera,
        ptz.async_move(
            PAN_DIRECTIONS[data[ATTR_PAN]] * speed,
            TILT_DIRECTIONS[data[ATTR_TILT]] * speed,
            ZOOM_DIRECTIONS[data[ATTR_ZOOM]] * speed,
            data[ATTR_DURATION],
        ),
    )


async def async_handle_ptz_preset(
    entity: LightNvrCameraEntity, call: ServiceCall
) -> ServiceResponse:
    """`lightnvr.ptz_preset`: go to `preset`; without one, return the camera's presets."""
    ptz = camera_ptz(entity)
    if (preset := call.data.get(ATTR_PRESET)) is not None:
        await async_ptz_command(
            entity._camera, ptz.async_goto_preset(preset, call.data.get(ATTR_SPEED))
        )
        return None
    if not call.return_response:
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="ptz_preset_missing"
        )
    presets = await async_ptz_command(entity._camera, ptz.async_presets())
    return {"presets": [{"token": token, "name": name} for token, name in presets]}


async def async_ptz_command[T](camera: CameraConfig, command: Awaitable[T]) -> T:
    """Await a PTZ command; a camera that fails says so in a translated error."""
    try:
        result: T = await command
    except OnvifError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="ptz_failed",
            translation_placeholders={
                "camera": camera.name,
                "error": err.detail or err.reason,
            },
        ) from err
    return result
