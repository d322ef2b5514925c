"""Binary sensors: a camera's stream (connectivity), motion, object labels; go2rtc's health."""

from __future__ import annotations

from typing import Any

from homeassistant.components.binary_sensor import BinarySensorDeviceClass, BinarySensorEntity
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .detection.events import box_dict
from .detection.pipeline import DetectionPipeline, LabelUpdate
from .engine.go2rtc import Go2RtcEngine
from .entity import LightNvrCameraEntity, async_remove_stale_entities
from .models import CameraConfig
from .runtime import LightNvrConfigEntry, LightNvrRuntime
from .sensor import hub_device_info

# Entities only read in-memory state and push their updates: no limit needed.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a stream sensor per camera, motion and object sensors where detection runs."""
    runtime = entry.runtime_data
    # The hub's go2rtc; a camera's own go2rtc shows in its camera's availability and repairs.
    if isinstance(hub_engine := runtime.engine.default, Go2RtcEngine):
        async_add_entities([EngineProblemSensor(hub_engine, entry)])

    def add_camera(camera: CameraConfig) -> None:
        entities: list[BinarySensorEntity] = [StreamSensor(runtime, camera)]
        pipeline = runtime.detection.get(camera.camera_id)
        if pipeline is not None:
            entities.append(MotionSensor(runtime, camera, pipeline))
            entities += [
                ObjectSensor(runtime, camera, pipeline, label) for label in runtime.object_labels
            ]
        wanted = {entity.unique_id for entity in entities}
        prefixes = (f"{camera.camera_id}_motion", f"{camera.camera_id}_object_")

        def stale(entity: er.RegistryEntry) -> bool:
            # Detection switched off, or a label no longer on the list, for this camera.
            return entity.unique_id.startswith(prefixes) and entity.unique_id not in wanted

        async_remove_stale_entities(hass, entry.entry_id, stale=stale)
        async_add_entities(entities, config_subentry_id=camera.camera_id)

    runtime.entity_factories.append(add_camera)
    for camera in runtime.cameras.values():
        add_camera(camera)


class StreamSensor(LightNvrCameraEntity, BinarySensorEntity):
    """`binary_sensor.<camera>_stream`: on while LightNVR gets video from the camera.

    Always available (it says whether the camera is); how often it reconnected and why it
    failed last are in the camera's diagnostics.
    """

    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_translation_key = "stream"

    def __init__(self, runtime: LightNvrRuntime, camera: CameraConfig) -> None:
        """Create the sensor."""
        super().__init__(runtime, camera)
        self._attr_unique_id = f"{camera.camera_id}_stream"

    @property
    def available(self) -> bool:
        """Always: this sensor reports the connection itself."""
        return True

    @property
    def is_on(self) -> bool:
        """Return True while the camera's hub receives video."""
        return self._hub.available


class _DetectionSensor(LightNvrCameraEntity, BinarySensorEntity):
    def __init__(
        self, runtime: LightNvrRuntime, camera: CameraConfig, pipeline: DetectionPipeline
    ) -> None:
        super().__init__(runtime, camera)
        self._pipeline = pipeline

    @property
    def available(self) -> bool:
        """Known while the camera streams and detection is switched on."""
        return super().available and self._pipeline.enabled

    async def async_added_to_hass(self) -> None:
        """Follow the pipeline's switch state too."""
        await super().async_added_to_hass()
        self.async_on_remove(self._pipeline.async_add_state_listener(self.async_write_ha_state))


class MotionSensor(_DetectionSensor):
    """`binary_sensor.<camera>_motion` (includes the camera's off-delay)."""

    _attr_device_class = BinarySensorDeviceClass.MOTION
    _attr_translation_key = "motion"

    def __init__(
        self, runtime: LightNvrRuntime, camera: CameraConfig, pipeline: DetectionPipeline
    ) -> None:
        """Create the sensor."""
        super().__init__(runtime, camera, pipeline)
        self._attr_unique_id = f"{camera.camera_id}_motion"

    @property
    def is_on(self) -> bool:
        """Return True while there is motion."""
        return self._pipeline.motion

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """The changed region of the latest moving frame."""
        return {"box": box_dict(self._pipeline.motion_box)}

    async def async_added_to_hass(self) -> None:
        """Update on every motion change."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self._pipeline.async_add_motion_listener(lambda _update: self.async_write_ha_state())
        )


class ObjectSensor(_DetectionSensor):
    """`binary_sensor.<camera>_<label>`: the detection server sees this kind of object."""

    _attr_device_class = BinarySensorDeviceClass.OCCUPANCY
    _attr_translation_key = "object"

    def __init__(
        self,
        runtime: LightNvrRuntime,
        camera: CameraConfig,
        pipeline: DetectionPipeline,
        label: str,
    ) -> None:
        """Create the sensor for `label`."""
        super().__init__(runtime, camera, pipeline)
        self._label = label
        self._attr_unique_id = f"{camera.camera_id}_object_{label}"
        self._attr_translation_placeholders = {"label": label.capitalize()}
        self._last: dict[str, Any] = {"confidence": None, "box": None, "last_seen": None}

    @property
    def is_on(self) -> bool:
        """Return True while the label is detected (including its off-delay)."""
        return self._label in self._pipeline.detected_labels

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Confidence and box of the latest sighting."""
        current = self._pipeline.detected_labels.get(self._label)
        if current is not None:
            return {**self._last, "confidence": round(current[0], 4), "box": box_dict(current[1])}
        return self._last

    async def async_added_to_hass(self) -> None:
        """Update when this label comes and goes, and on every detection event."""
        await super().async_added_to_hass()
        self.async_on_remove(self._pipeline.async_add_label_listener(self._on_label))
        self.async_on_remove(
            self._pipeline.async_add_object_listener(lambda _event: self.async_write_ha_state())
        )

    @callback
    def _on_label(self, update: LabelUpdate) -> None:
        if update.label != self._label:
            return
        if update.detected:
            self._last = {
                "confidence": round(update.confidence, 4) if update.confidence else None,
                "box": box_dict(update.box),
                "last_seen": update.time.isoformat(),
            }
        self.async_write_ha_state()


class EngineProblemSensor(BinarySensorEntity):
    """`binary_sensor.lightnvr_stream_engine`: on when go2rtc does not work right now."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _attr_device_class = BinarySensorDeviceClass.PROBLEM
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_translation_key = "engine_problem"

    def __init__(self, engine: Go2RtcEngine, entry: LightNvrConfigEntry) -> None:
        """Create the sensor."""
        self._engine = engine
        self._attr_unique_id = f"{entry.entry_id}_engine_problem"
        self._attr_device_info = hub_device_info(entry)

    @property
    def is_on(self) -> bool:
        """Return True while go2rtc is unhealthy."""
        return not self._engine.health.healthy

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """What the watchdog knows."""
        health = self._engine.health
        return {
            "mode": health.mode,
            "version": health.version,
            "last_error": health.last_error,
            "restarts": health.restart_count,
            "streams_reregistered": health.reregistrations,
        }

    async def async_added_to_hass(self) -> None:
        """Follow the watchdog."""
        self.async_on_remove(self._engine.add_listener(self.async_write_ha_state))
