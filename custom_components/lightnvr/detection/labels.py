"""What the object detector's answers mean for one camera: detected labels and their events.

A label counts as detected from its first sighting until `hold` seconds after its latest one
(each label has its own timer, so a person leaving does not end a car), and fires at most one
event per `event_interval`. The pipeline decides when to ask the server; this module only keeps
that per-label bookkeeping, and the pipeline turns its callbacks into `LabelUpdate`s and
`ObjectEvent`s for the listeners. Event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
import time

from homeassistant.util import dt as dt_util

from . import Box
from .frames import DetectionFrame, JpegImage
from .remote import ObjectDetection


@dataclass(slots=True)
class _LabelState:
    confidence: float
    box: Box
    off_timer: asyncio.TimerHandle | None = None


class LabelTracker:
    """The detected labels of one camera, with their hold timers and event rate limit."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        hold: float,
        event_interval: float,
        on_label: Callable[[str, datetime, ObjectDetection | None], None],
        on_event: Callable[
            [str, tuple[ObjectDetection, ...], datetime, DetectionFrame, JpegImage], None
        ],
    ) -> None:
        """Track labels; `on_label` gets the best sighting when a label turns on, None for off.

        `on_event` gets every object of the label in the frame (best first) and the frame.
        """
        self._loop = loop
        self._hold = hold
        self._event_interval = event_interval
        self._on_label = on_label
        self._on_event = on_event
        self._labels: dict[str, _LabelState] = {}
        self._last_event: dict[str, float] = {}

    @property
    def detected(self) -> dict[str, tuple[float, Box]]:
        """Return the labels currently detected with their latest confidence and box."""
        return {label: (s.confidence, s.box) for label, s in self._labels.items()}

    def on_detections(
        self, frame: DetectionFrame, jpeg: JpegImage, detections: list[ObjectDetection]
    ) -> None:
        """Take the server's answer about `frame` (sent as `jpeg`)."""
        now = dt_util.utcnow()
        by_label: dict[str, list[ObjectDetection]] = {}
        for detection in detections:  # best first, as the client sorts them
            by_label.setdefault(detection.label, []).append(detection)
        for label, found in by_label.items():
            best = found[0]
            state = self._labels.get(label)
            if state is None:
                state = self._labels[label] = _LabelState(best.confidence, best.box)
                self._on_label(label, now, best)
            else:
                state.confidence, state.box = best.confidence, best.box
            if state.off_timer is not None:
                state.off_timer.cancel()
            state.off_timer = self._loop.call_later(self._hold, self.label_off, label)
            mono = time.monotonic()
            if mono - self._last_event.get(label, float("-inf")) >= self._event_interval:
                self._last_event[label] = mono
                self._on_event(label, tuple(found), now, frame, jpeg)

    def label_off(self, label: str) -> None:
        """Turn `label` off now (its hold ran out, or detection was switched off)."""
        state = self._labels.pop(label, None)
        if state is None:
            return
        if state.off_timer is not None:
            state.off_timer.cancel()
        self._on_label(label, dt_util.utcnow(), None)

    def all_off(self) -> None:
        """Turn every detected label off, telling the listeners."""
        for label in list(self._labels):
            self.label_off(label)

    def cancel_timers(self) -> None:
        """Cancel the hold timers (the labels stay detected)."""
        for state in self._labels.values():
            if state.off_timer is not None:
                state.off_timer.cancel()
                state.off_timer = None

    def forget(self) -> None:
        """Drop every label silently: the listeners are going away with the pipeline."""
        self._labels.clear()
