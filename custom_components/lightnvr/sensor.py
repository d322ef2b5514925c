"""Sensors: the hub's storage; per camera its last recording and how its live view is made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfInformation
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN, MANUFACTURER
from .engine.base import LIVE_VIEW_PATHS
from .engine.go2rtc import Go2RtcEngine
from .entity import LightNvrCameraEntity
from .models import CameraConfig
from .recorder.manager import RecorderManager, StorageStatus
from .runtime import LightNvrConfigEntry, LightNvrRuntime

# Entities read in-memory state (no I/O per update): no limit needed.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class StorageSensorDescription(SensorEntityDescription):
    """A hub sensor computed from the recorder's storage status."""

    value: Callable[[StorageStatus], int | datetime | None]


STORAGE_SENSORS = (
    StorageSensorDescription(
        key="storage_used",
        translation_key="storage_used",
        device_class=SensorDeviceClass.DATA_SIZE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfInformation.BYTES,
        suggested_unit_of_measurement=UnitOfInformation.GIGABYTES,
        suggested_display_precision=2,
        value=lambda status: status.used_bytes,
    ),
    StorageSensorDescription(
        key="free_space",
        translation_key="free_space",
        device_class=SensorDeviceClass.DATA_SIZE,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfInformation.BYTES,
        suggested_unit_of_measurement=UnitOfInformation.GIGABYTES,
        suggested_display_precision=1,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=lambda status: status.free_bytes,
    ),
    StorageSensorDescription(
        key="oldest_recording",
        translation_key="oldest_recording",
        device_class=SensorDeviceClass.TIMESTAMP,
        value=lambda status: status.oldest_recording,
    ),
)


# Only when an archive folder is set.
ARCHIVE_SENSOR = StorageSensorDescription(
    key="archive_used",
    translation_key="archive_used",
    device_class=SensorDeviceClass.DATA_SIZE,
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=UnitOfInformation.BYTES,
    suggested_unit_of_measurement=UnitOfInformation.GIGABYTES,
    suggested_display_precision=2,
    value=lambda status: status.archive_used_bytes,
)


def hub_device_info(entry: LightNvrConfigEntry) -> DeviceInfo:
    """Return the device that groups the hub's own entities."""
    return DeviceInfo(
        identifiers={(DOMAIN, entry.entry_id)},
        name="LightNVR",
        manufacturer=MANUFACTURER,
        model=f"{entry.runtime_data.engine.name} engine",
        entry_type=DeviceEntryType.SERVICE,
    )


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the hub's storage sensors and each camera's last-recording sensor."""
    runtime = entry.runtime_data
    device = hub_device_info(entry)
    storage: tuple[StorageSensorDescription, ...] = STORAGE_SENSORS
    if runtime.recorder.archive is not None:
        storage = (*storage, ARCHIVE_SENSOR)
    async_add_entities(
        StorageSensor(runtime.recorder, entry.entry_id, device, description)
        for description in storage
    )
    # The hub's go2rtc; a camera's own go2rtc shows in its camera's availability and repairs.
    if isinstance(hub_engine := runtime.engine.default, Go2RtcEngine):
        async_add_entities([Go2RtcRestartsSensor(hub_engine, entry.entry_id, device)])

    def add_camera(camera: CameraConfig) -> None:
        async_add_entities(
            [LastRecordingSensor(runtime, camera), LiveViewSensor(runtime, camera)],
            config_subentry_id=camera.camera_id,
        )

    runtime.entity_factories.append(add_camera)
    for camera in runtime.cameras.values():
        add_camera(camera)


class StorageSensor(SensorEntity):
    """A number about the recordings folder."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    entity_description: StorageSensorDescription

    def __init__(
        self,
        recorder: RecorderManager,
        entry_id: str,
        device: DeviceInfo,
        description: StorageSensorDescription,
    ) -> None:
        """Create the sensor."""
        self.entity_description = description
        self._recorder = recorder
        self._attr_unique_id = f"{entry_id}_{description.key}"
        self._attr_device_info = device

    @property
    def native_value(self) -> int | datetime | None:
        """Return the current value."""
        return self.entity_description.value(self._recorder.storage_status())

    async def async_added_to_hass(self) -> None:
        """Update whenever the recorder's state changes."""
        self.async_on_remove(self._recorder.add_listener(self.async_write_ha_state))


class LastRecordingSensor(LightNvrCameraEntity, SensorEntity):
    """When this camera's newest finished recording ends."""

    _attr_translation_key = "last_recording"
    _attr_device_class = SensorDeviceClass.TIMESTAMP

    def __init__(self, runtime: LightNvrRuntime, camera: CameraConfig) -> None:
        """Create the sensor."""
        super().__init__(runtime, camera)
        self._attr_unique_id = f"{camera.camera_id}_last_recording"
        self._recorder = runtime.recorder

    @property
    def available(self) -> bool:
        """Known from the files even while the camera is down."""
        return True

    @property
    def native_value(self) -> datetime | None:
        """Return the end of the newest finished segment."""
        return self._recorder.last_segment_time(self._camera.camera_id)

    async def async_added_to_hass(self) -> None:
        """Update whenever the recorder's state changes."""
        await super().async_added_to_hass()
        self.async_on_remove(self._recorder.add_listener(self.async_write_ha_state))


class LiveViewSensor(LightNvrCameraEntity, SensorEntity):
    """How the camera's live view is made now: pass-through, sub-stream, transcode, idle.

    Polled: viewers come and go inside the engine, and a state written at most every few
    seconds is all a user needs to see why a camera costs CPU.
    """

    _attr_translation_key = "live_view"
    _attr_device_class = SensorDeviceClass.ENUM
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_should_poll = True

    def __init__(self, runtime: LightNvrRuntime, camera: CameraConfig) -> None:
        """Create the sensor."""
        super().__init__(runtime, camera)
        self._attr_unique_id = f"{camera.camera_id}_live_view"
        self._attr_options = list(LIVE_VIEW_PATHS)
        self._engine = runtime.engine

    @property
    def available(self) -> bool:
        """Known whether or not the camera is up."""
        return True

    @property
    def native_value(self) -> str:
        """Return the path of the costliest viewer, or "idle"."""
        return self._engine.live_view_path(self._camera.camera_id)


class Go2RtcRestartsSensor(SensorEntity):
    """How often the watchdog had to restart go2rtc since Home Assistant started."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _attr_translation_key = "go2rtc_restarts"
    _attr_state_class = SensorStateClass.TOTAL_INCREASING
    _attr_entity_category = EntityCategory.DIAGNOSTIC

    def __init__(self, engine: Go2RtcEngine, entry_id: str, device: DeviceInfo) -> None:
        """Create the sensor."""
        self._engine = engine
        self._attr_unique_id = f"{entry_id}_go2rtc_restarts"
        self._attr_device_info = device

    @property
    def native_value(self) -> int:
        """Return the restart count."""
        return self._engine.health.restart_count

    async def async_added_to_hass(self) -> None:
        """Follow the watchdog."""
        self.async_on_remove(self._engine.add_listener(self.async_write_ha_state))
