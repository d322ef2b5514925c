"""Base class of the entities that belong to one camera device."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import (
    AddConfigEntryEntitiesCallback,
    async_get_platforms,
)

from .const import DOMAIN, MANUFACTURER
from .hub import StreamHub
from .models import CameraConfig
from .runtime import LightNvrConfigEntry, LightNvrRuntime, camera_removed_signal

if TYPE_CHECKING:
    from .detection.events import DetectionEvents


class LightNvrCameraEntity(Entity):
    """An entity of a camera device; availability follows the camera's hub."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, runtime: LightNvrRuntime, camera: CameraConfig) -> None:
        """Attach to a camera."""
        self._runtime = runtime
        self._camera = camera
        self._hub: StreamHub = runtime.engine.hub(camera.camera_id)
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, camera.camera_id)},
            name=camera.name,
            manufacturer=MANUFACTURER,
            model=f"{runtime.engine.engine_name(camera.camera_id)} engine",
        )
        if (onvif := camera.onvif) is not None and onvif.manufacturer:
            # A camera added through ONVIF says what it is: the device shows that.
            self._attr_device_info = DeviceInfo(
                identifiers={(DOMAIN, camera.camera_id)},
                name=camera.name,
                manufacturer=onvif.manufacturer,
                model=onvif.model,
                serial_number=onvif.serial,
                sw_version=onvif.firmware,
            )

    @property
    def available(self) -> bool:
        """Available while the hub gets video from the camera."""
        return self._hub.available

    async def async_added_to_hass(self) -> None:
        """Write our state whenever the hub's connection state changes."""
        await super().async_added_to_hass()
        self.async_on_remove(self._hub.add_listener(self.async_write_ha_state))
        # Reconfigured or deleted camera: this entity goes; a new one replaces it if needed.
        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, camera_removed_signal(self._camera.camera_id), self._async_removed
            )
        )

    async def _async_removed(self) -> None:
        await self.async_remove(force_remove=True)


@callback
def async_remove_stale_entities(
    hass: HomeAssistant, entry_id: str, *, stale: Callable[[er.RegistryEntry], bool] | None = None
) -> list[str]:
    """Remove registry entries of this hub that no entity provides any more; return their ids.

    Entities the integration stops creating (another engine, detection switched off, a label
    taken off the list) would otherwise stay in the registry as "unavailable" forever. Without
    `stale`, every entry no loaded entity provides goes: call it once the platforms have added
    their entities. With `stale`, only entries it picks go (a platform cleaning up after a
    camera change, before its new entities exist). Entries the user disabled are left alone.
    """
    registry = er.async_get(hass)
    provided = {
        entity_id
        for platform in async_get_platforms(hass, DOMAIN)
        if platform.config_entry is not None and platform.config_entry.entry_id == entry_id
        for entity_id in platform.entities
    }
    removed = []
    for entity in er.async_entries_for_config_entry(registry, entry_id):
        if entity.disabled_by is not None or entity.entity_id in provided:
            continue
        if stale is None or stale(entity):
            registry.async_remove(entity.entity_id)
            removed.append(entity.entity_id)
    return removed


@callback
def async_setup_detection_entities(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    *,
    domain: str,
    unique_id: Callable[[str], str],
    create: Callable[[CameraConfig, DetectionEvents], Entity],
) -> None:
    """Add one entity per camera that runs detection, now and for cameras added later.

    A camera whose detection was switched off loses its old entity of this platform.
    """
    runtime = entry.runtime_data

    def add_camera(camera: CameraConfig) -> None:
        wanted = unique_id(camera.camera_id)
        events = runtime.detection_events.get(camera.camera_id)
        if events is None:
            async_remove_stale_entities(
                hass,
                entry.entry_id,
                stale=lambda entity: entity.domain == domain and entity.unique_id == wanted,
            )
            return
        async_add_entities([create(camera, events)], config_subentry_id=camera.camera_id)

    runtime.entity_factories.append(add_camera)
    for camera in runtime.cameras.values():
        add_camera(camera)
