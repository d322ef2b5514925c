"""Detections as Home Assistant events: `lightnvr_detection` for automations.

Motion turning on and every (rate-limited) object detection fire one event each, carrying the
camera's entity id, the label, the confidence, the box, a unique `event_id` and the entity id of
the image holding the detection's snapshot (`snapshot`), so an automation can trigger on
"a person at the front door" and attach its picture without knowing LightNVR's internals.

The same detections reach the camera's `event` and `image` entities through `async_add_listener`.
A motion detection's picture is encoded in the executor first (object detections come with their
JPEG already), so the image entity holds this detection's snapshot when the event fires; the
event clip does not wait for it (the hook runs at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
import logging
from typing import Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.util.ulid import ulid_now

from ..const import DOMAIN, EVENT_DETECTION, LABEL_MOTION
from . import Box
from .frames import DetectionFrame
from .pipeline import DetectionPipeline, MotionUpdate, ObjectEvent

_LOGGER = logging.getLogger(__name__)

# Called when a detection starts or ends: (camera id, label, started, event data, snapshot JPEG)
# — event clips start and stop with it. The data of a start holds its `event_id`.
type DetectionHook = Callable[[str, str, bool, dict[str, Any], bytes | None], None]


def box_dict(box: Box | None) -> dict[str, float] | None:
    """Return a box as plain data (relative coordinates)."""
    return {k: round(v, 4) for k, v in asdict(box).items()} if box is not None else None


def camera_entity_unique_id(camera_id: str) -> str:
    """Return the unique id of a camera's `camera` entity."""
    return f"{camera_id}_camera"


def event_entity_unique_id(camera_id: str) -> str:
    """Return the unique id of a camera's `event.<camera>_detection` entity."""
    return f"{camera_id}_detection_event"


def image_entity_unique_id(camera_id: str) -> str:
    """Return the unique id of a camera's `image.<camera>_last_detection` entity."""
    return f"{camera_id}_last_detection"


@dataclass(frozen=True, slots=True)
class Detection:
    """A detection that started, as the camera's event and image entities get it."""

    camera_id: str
    label: str
    event_id: str
    time: datetime  # UTC
    confidence: float | None
    box: dict[str, float] | None
    snapshot: bytes | None  # JPEG (None when no picture could be had)


class DetectionEvents:
    """Fires `lightnvr_detection` for one camera's pipeline and tells the camera's entities."""

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
        self._snapshot_width = pipeline.options.snapshot_width
        self._listeners: list[Callable[[Detection], None]] = []
        self._encoding: set[asyncio.Task[None]] = set()
        # The newest detection, and the newest one with a picture (the image entity's).
        self.last: Detection | None = None
        self.last_with_snapshot: Detection | None = None
        self._removers: list[CALLBACK_TYPE] = [
            pipeline.async_add_motion_listener(self._on_motion),
            pipeline.async_add_object_listener(self._on_object),
            pipeline.async_add_label_listener(self._on_label),
        ]

    @callback
    def detach(self) -> None:
        """Stop firing events (a motion picture being encoded is dropped)."""
        for remove in self._removers:
            remove()
        self._removers.clear()
        for task in self._encoding:
            task.cancel()
        self._encoding.clear()
        self._listeners.clear()

    @callback
    def async_add_listener(self, listener: Callable[[Detection], None]) -> CALLBACK_TYPE:
        """Call `listener` for every detection that starts; return a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _entity_id(self, domain: str, unique_id: str) -> str | None:
        return er.async_get(self._hass).async_get_entity_id(domain, DOMAIN, unique_id)

    def _event(
        self, label: str, confidence: float | None, box: Box | None, time: datetime
    ) -> dict[str, Any]:
        return {
            "camera_entity_id": self._entity_id("camera", camera_entity_unique_id(self._camera_id)),
            "label": label,
            "confidence": round(confidence, 4) if confidence is not None else None,
            "box": box_dict(box),
            "time": time.isoformat(),
            "event_id": ulid_now(),
            "snapshot": self._entity_id("image", image_entity_unique_id(self._camera_id)),
        }

    @callback
    def _on_motion(self, update: MotionUpdate) -> None:
        data = self._event(LABEL_MOTION, update.fraction or None, update.box, update.time)
        if self._hook is not None:
            # First: the clip's pre-roll is counted from the trigger.
            self._hook(self._camera_id, LABEL_MOTION, update.motion, data, None)
        if not update.motion:
            return
        if update.frame is None:
            self._publish(update.time, data, None)
            return
        task = self._hass.async_create_background_task(
            self._async_publish_motion(update.time, data, update.frame),
            f"lightnvr motion snapshot {self._camera_id}",
        )
        self._encoding.add(task)
        task.add_done_callback(self._encoding.discard)

    async def _async_publish_motion(
        self, time: datetime, data: dict[str, Any], frame: DetectionFrame
    ) -> None:
        """Encode the frame that turned motion on (executor), then publish the detection."""
        snapshot: bytes | None = None
        try:
            jpeg = await self._hass.async_add_executor_job(frame.to_jpeg, self._snapshot_width)
            snapshot = jpeg.data
        except Exception:
            # The event still matters without its picture.
            _LOGGER.exception("Cannot encode the motion snapshot of %s", self._camera_id)
        if self._removers:  # not detached meanwhile
            self._publish(time, data, snapshot)

    @callback
    def _on_object(self, event: ObjectEvent) -> None:
        data = self._event(event.label, event.confidence, event.box, event.time)
        self._publish(event.time, data, event.snapshot.data)
        if self._hook is not None:
            self._hook(self._camera_id, event.label, True, data, event.snapshot.data)

    @callback
    def _on_label(self, update: Any) -> None:
        # A label that is no longer seen ends its clip (its start came with the ObjectEvent).
        if not update.detected and self._hook is not None:
            self._hook(self._camera_id, update.label, False, {}, None)

    @callback
    def _publish(self, time: datetime, data: dict[str, Any], snapshot: bytes | None) -> None:
        """Tell the entities first (an automation may read them), then fire the event."""
        detection = Detection(
            camera_id=self._camera_id,
            label=data["label"],
            event_id=data["event_id"],
            time=time,
            confidence=data["confidence"],
            box=data["box"],
            snapshot=snapshot,
        )
        self.last = detection
        if snapshot:
            self.last_with_snapshot = detection
        for listener in list(self._listeners):
            try:
                listener(detection)
            except Exception:
                _LOGGER.exception("Error in a detection listener of %s", self._camera_id)
        self._hass.bus.async_fire(EVENT_DETECTION, data)
