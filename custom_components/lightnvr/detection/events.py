"""Detections as Home Assistant events: `lightnvr_detection` for automations.

Motion turning on and every (rate-limited) object detection fire one event each, carrying the
camera's entity id, the label, the confidence and the box, so an automation can trigger on
"a person at the front door" without knowing anything about LightNVR's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
import logging
from typing import Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er

from ..const import DOMAIN, EVENT_DETECTION, LABEL_MOTION
from . import Box
from .pipeline import DetectionPipeline, MotionUpdate, ObjectEvent

_LOGGER = logging.getLogger(__name__)

# Called when a detection starts or ends: (camera id, label, started, event data, snapshot JPEG)
# — event clips start and stop with it.
type DetectionHook = Callable[[str, str, bool, dict[str, Any], bytes | None], None]


def box_dict(box: Box | None) -> dict[str, float] | None:
    """Return a box as plain data (relative coordinates)."""
    return {k: round(v, 4) for k, v in asdict(box).items()} if box is not None else None


class DetectionEvents:
    """Fires `lightnvr_detection` for one camera's pipeline."""

    def __init__(
        self,
        hass: HomeAssistant,
        camera_id: str,
        pipeline: DetectionPipeline,
        hook: DetectionHook | None = None,
    ) -> None:
        """Attach to `pipeline` (call `detach` to stop)."""
        self._hass = hass
        self._camera_id = camera_id
        self._hook = hook
        self._removers: list[CALLBACK_TYPE] = [
            pipeline.async_add_motion_listener(self._on_motion),
            pipeline.async_add_object_listener(self._on_object),
            pipeline.async_add_label_listener(self._on_label),
        ]

    @callback
    def detach(self) -> None:
        """Stop firing events."""
        for remove in self._removers:
            remove()
        self._removers.clear()

    def _camera_entity_id(self) -> str | None:
        return er.async_get(self._hass).async_get_entity_id(
            "camera", DOMAIN, f"{self._camera_id}_camera"
        )

    def _event(
        self, label: str, confidence: float | None, box: Box | None, time: datetime
    ) -> dict[str, Any]:
        return {
            "camera_entity_id": self._camera_entity_id(),
            "label": label,
            "confidence": round(confidence, 4) if confidence is not None else None,
            "box": box_dict(box),
            "time": time.isoformat(),
        }

    @callback
    def _on_motion(self, update: MotionUpdate) -> None:
        data = self._event(LABEL_MOTION, update.fraction or None, update.box, update.time)
        if update.motion:
            self._hass.bus.async_fire(EVENT_DETECTION, data)
        if self._hook is not None:
            self._hook(self._camera_id, LABEL_MOTION, update.motion, data, None)

    @callback
    def _on_object(self, event: ObjectEvent) -> None:
        data = self._event(event.label, event.confidence, event.box, event.time)
        self._hass.bus.async_fire(EVENT_DETECTION, data)
        if self._hook is not None:
            self._hook(self._camera_id, event.label, True, data, event.snapshot.data)

    @callback
    def _on_label(self, update: Any) -> None:
        # A label that is no longer seen ends its clip (its start came with the ObjectEvent).
        if not update.detected and self._hook is not None:
            self._hook(self._camera_id, update.label, False, {}, None)
