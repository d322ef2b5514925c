"""Image entities: `image.<camera>_last_detection`, the latest detection's snapshot.

A notification can attach `/api/image_proxy/image.<camera>_last_detection`: HA serves it to
the companion apps with their own login. The JPEG comes encoded with the detection (the motion
frame is encoded in the executor, object detections bring theirs): this entity only keeps bytes.
Before the first detection since Home Assistant started there is no picture (state unknown).
"""

from __future__ import annotations

from homeassistant.components.image import ImageEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .detection.events import Detection, DetectionEvents, image_entity_unique_id
from .entity import LightNvrCameraEntity, async_setup_detection_entities
from .models import CameraConfig
from .runtime import LightNvrConfigEntry, LightNvrRuntime

# Entities only push in-memory state: no limit needed.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a last-detection image for every camera that runs detection."""
    runtime = entry.runtime_data
    async_setup_detection_entities(
        hass,
        entry,
        async_add_entities,
        domain="image",
        unique_id=image_entity_unique_id,
        create=lambda camera, events: LastDetectionImage(hass, runtime, camera, events),
    )


class LastDetectionImage(LightNvrCameraEntity, ImageEntity):
    """`image.<camera>_last_detection`: the snapshot of the camera's latest detection."""

    _attr_content_type = "image/jpeg"
    _attr_translation_key = "last_detection"

    def __init__(
        self,
        hass: HomeAssistant,
        runtime: LightNvrRuntime,
        camera: CameraConfig,
        events: DetectionEvents,
    ) -> None:
        """Create the entity (with the picture of a detection seen before, if any)."""
        LightNvrCameraEntity.__init__(self, runtime, camera)
        ImageEntity.__init__(self, hass)  # its access tokens
        self._events = events
        self._attr_unique_id = image_entity_unique_id(camera.camera_id)
        self._image: bytes | None = None
        if (last := events.last_with_snapshot) is not None:
            self._set(last)

    @property
    def available(self) -> bool:
        """Always: the last picture stays valid while the camera is away."""
        return True

    async def async_image(self) -> bytes | None:
        """Return the JPEG of the latest detection (None before the first one)."""
        return self._image

    async def async_added_to_hass(self) -> None:
        """Follow the camera's detections."""
        await super().async_added_to_hass()
        self.async_on_remove(self._events.async_add_listener(self._on_detection))

    def _set(self, detection: Detection) -> None:
        self._image = detection.snapshot
        self._attr_image_last_updated = detection.time

    @callback
    def _on_detection(self, detection: Detection) -> None:
        if not detection.snapshot:
            return  # keep the previous picture rather than none
        self._set(detection)
        self.async_write_ha_state()
