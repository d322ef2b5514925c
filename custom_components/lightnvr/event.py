"""Event entities: `event.<camera>_detection`, one per camera that detects.

Its state is the time of the latest detection that started; `event_type` is `motion` or the
object label, with the detection's `confidence`, `box` and `event_id` (the same id as in the
`lightnvr_detection` event and, later, its `lightnvr_clip_ready`).
"""

from __future__ import annotations

import logging

from homeassistant.components.event import EventDeviceClass, EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import LABEL_MOTION
from .detection.events import Detection, DetectionEvents, event_entity_unique_id
from .entity import LightNvrCameraEntity, async_setup_detection_entities
from .models import CameraConfig
from .runtime import LightNvrConfigEntry, LightNvrRuntime

_LOGGER = logging.getLogger(__name__)

# Entities only push in-memory state: no limit needed.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a detection event entity for every camera that runs detection."""
    runtime = entry.runtime_data
    async_setup_detection_entities(
        hass,
        entry,
        async_add_entities,
        domain="event",
        unique_id=event_entity_unique_id,
        create=lambda camera, events: DetectionEventEntity(runtime, camera, events),
    )


def event_types(runtime: LightNvrRuntime) -> list[str]:
    """Return `motion`, then each object label detected (none without a detection server)."""
    return list(dict.fromkeys((LABEL_MOTION, *runtime.object_labels)))


class DetectionEventEntity(LightNvrCameraEntity, EventEntity):
    """`event.<camera>_detection`: a detection started (motion or an object label)."""

    _attr_device_class = EventDeviceClass.MOTION
    _attr_translation_key = "detection"

    def __init__(
        self, runtime: LightNvrRuntime, camera: CameraConfig, events: DetectionEvents
    ) -> None:
        """Create the entity."""
        super().__init__(runtime, camera)
        self._events = events
        self._attr_unique_id = event_entity_unique_id(camera.camera_id)
        self._attr_event_types = event_types(runtime)

    async def async_added_to_hass(self) -> None:
        """Follow the camera's detections."""
        await super().async_added_to_hass()
        self.async_on_remove(self._events.async_add_listener(self._on_detection))

    @callback
    def _on_detection(self, detection: Detection) -> None:
        if detection.label not in self.event_types:
            # A label the server reports beyond the configured ones (an empty list means all).
            _LOGGER.debug("%s: no event type %s", self.entity_id, detection.label)
            return
        self._trigger_event(
            detection.label,
            {
                "confidence": detection.confidence,
                "box": detection.box,
                "event_id": detection.event_id,
            },
        )
        self.async_write_ha_state()
