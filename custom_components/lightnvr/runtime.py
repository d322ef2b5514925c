"""Everything a loaded hub entry owns, kept in `entry.runtime_data`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import logging

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.dispatcher import async_dispatcher_send

from .const import DOMAIN
from .engine.base import StreamEngine
from .models import CameraConfig, HubOptions
from .recorder.manager import RecorderManager

_LOGGER = logging.getLogger(__name__)

type CameraEntityFactory = Callable[[CameraConfig], None]


def camera_removed_signal(camera_id: str) -> str:
    """Return the dispatcher signal that tells a camera's entities to go away."""
    return f"{DOMAIN}_camera_removed_{camera_id}"


@dataclass(slots=True)
class LightNvrRuntime:
    """The running pieces of one LightNVR hub.

    Cameras can come and go while the hub runs (subentries added, removed, reconfigured):
    only the camera concerned is stopped or started, so the others keep streaming and recording.
    """

    hass: HomeAssistant
    options: HubOptions
    engine: StreamEngine
    recorder: RecorderManager
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    # One per entity platform: creates that platform's entities for a camera.
    entity_factories: list[CameraEntityFactory] = field(default_factory=list)
    stopped: bool = False

    async def async_add_camera(self, camera: CameraConfig) -> None:
        """Start a camera and its recorder, and create its entities on every loaded platform."""
        hub = await self.engine.async_add_camera(camera)
        await self.recorder.async_add_camera(camera, hub, retention_days=camera.retention_days)
        self.cameras[camera.camera_id] = camera
        for factory in self.entity_factories:
            factory(camera)

    async def async_remove_camera(self, camera_id: str) -> None:
        """Remove a camera's entities and stop it."""
        if self.cameras.pop(camera_id, None) is None:
            return
        async_dispatcher_send(self.hass, camera_removed_signal(camera_id))
        await self.recorder.async_remove_camera(camera_id)
        await self.engine.async_remove_camera(camera_id)

    async def async_stop(self) -> None:
        """Stop recording first (it subscribes to the hubs), then the engine. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        await self.recorder.async_stop()
        await self.engine.async_stop()

    async def async_apply_cameras(self, wanted: dict[str, CameraConfig]) -> None:
        """Bring the running cameras in line with the subentries."""
        for camera_id in [c for c in self.cameras if c not in wanted]:
            _LOGGER.debug("Camera %s removed", self.cameras[camera_id].name)
            await self.async_remove_camera(camera_id)
        for camera_id, camera in wanted.items():
            current = self.cameras.get(camera_id)
            if current == camera:
                continue
            if current is not None:
                _LOGGER.debug("Camera %s changed: restarting it", camera.name)
                await self.async_remove_camera(camera_id)
            await self.async_add_camera(camera)


type LightNvrConfigEntry = ConfigEntry[LightNvrRuntime]
