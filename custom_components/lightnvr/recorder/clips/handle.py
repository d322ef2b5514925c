"""A clip being made: the handle callers wait on, and the clip's state in the muxer thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
import math
from pathlib import Path
import threading
from typing import Any

from ...detection import Box
from ...media.muxer import Fragment
from ..files import DayTree
from ..segment_writer import SegmentWriter
from .store import SIDECAR_VERSION, EventClip, snapshot_path


def box_dict(box: Box | Mapping[str, float] | Sequence[float] | None) -> dict[str, float] | None:
    """Return a box as `{x_min, y_min, x_max, y_max}` (the `lightnvr_detection` event's form)."""
    if box is None:
        return None
    keys = ("x_min", "y_min", "x_max", "y_max")
    if isinstance(box, Box):
        values = [box.x_min, box.y_min, box.x_max, box.y_max]
    elif isinstance(box, Mapping):
        values = [box[key] for key in keys]
    else:
        values = list(box)
        if len(values) != 4:
            raise ValueError("a box has four coordinates")
    return {key: round(float(value), 4) for key, value in zip(keys, values, strict=True)}


class ClipHandle:
    """A clip being made, as `ClipManager.async_trigger` / `ClipRecorder.trigger` return it.

    Triggers that extend a running clip return the same handle. `wait()` returns the finished
    clip, or None when nothing could be written (no video came before the clip's end).
    """

    def __init__(
        self,
        camera_id: str,
        label: str,
        loop: asyncio.AbstractEventLoop,
        *,
        manual: bool,
        triggered: float,
    ) -> None:
        """Create a pending handle (any thread); it is resolved in `loop`."""
        self.camera_id = camera_id
        self.label = label
        self.manual = manual
        self.triggered = triggered  # epoch seconds of the first trigger
        self._loop = loop
        self._future: asyncio.Future[EventClip | None] = loop.create_future()
        self._labels: list[str] = [label]
        self._result: EventClip | None = None
        self._finished = threading.Event()
        self.part_path: Path | None = None  # set once the clip is being written

    @property
    def labels(self) -> tuple[str, ...]:
        """Return the labels seen so far (first one first)."""
        return tuple(self._labels)

    @property
    def done(self) -> bool:
        """Return True once the clip is finished (or given up)."""
        return self._finished.is_set()

    @property
    def clip(self) -> EventClip | None:
        """Return the finished clip (None while running, or if nothing was written)."""
        return self._result

    async def wait(self) -> EventClip | None:
        """Wait until the clip is finished; return it (None if nothing was written)."""
        return await asyncio.shield(self._future)

    def _add_label(self, label: str) -> bool:
        if label in self._labels:
            return False
        self._labels.append(label)
        return True

    def _resolve(self, clip: EventClip | None) -> None:
        """Finish the handle (any thread); waiters wake up in the loop."""
        self._result = clip
        self._finished.set()

        def _set() -> None:
            if not self._future.done():
                self._future.set_result(clip)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_set)

    def __repr__(self) -> str:
        """Describe the handle for logs."""
        return f"<ClipHandle {self.camera_id} {','.join(self._labels)} done={self.done}>"


@dataclass(eq=False, slots=True)
class ClipState:
    """One clip's state. Fields marked (lock) are shared with the callers' threads."""

    handle: ClipHandle
    trigger_at: float  # epoch second of the first trigger (or of the call, for a save)
    pre_roll: float
    max_length: float | None
    end_at: float = math.inf  # (lock) epoch deadline of its media; inf while a label is held
    held: set[str] = field(default_factory=set)  # (lock)
    detections: dict[str, dict[str, Any]] = field(default_factory=dict)  # (lock)
    snapshot: bytes | None = None  # (lock) given, not yet written
    dirty: bool = False  # (lock) labels or detections changed since the sidecar was written
    done: bool = False  # (lock) finished (or given up) and reported
    # Muxer thread only:
    writer: SegmentWriter | None = None
    last: Fragment | None = None  # the newest fragment written
    has_snapshot: bool = False

    def note(self, label: str, confidence: float | None, box: dict[str, float] | None) -> None:
        """Remember the best detection of `label` (lock held)."""
        best = self.detections.get(label)
        if best is None or (
            confidence is not None
            and (best["confidence"] is None or confidence > best["confidence"])
        ):
            self.detections[label] = {"confidence": confidence, "box": box}
            self.dirty = True
        if self.handle._add_label(label):
            self.dirty = True

    def sidecar(self, camera_id: str, writer: SegmentWriter, end: float | None) -> dict[str, Any]:
        """Return the sidecar of the clip (lock held); `end` is None while it is written."""
        best_label, best = None, None
        for label, seen in self.detections.items():
            confidence = seen["confidence"]
            if best is None or (
                confidence is not None
                and (best["confidence"] is None or confidence > best["confidence"])
            ):
                best_label, best = label, seen
        labels = list(self.handle.labels)
        return {
            "version": SIDECAR_VERSION,
            "camera_id": camera_id,
            "label": labels[0],
            "labels": labels,
            "manual": self.handle.manual,
            # The best detection while the clip ran (titles and thumbnails use it).
            "confidence": best["confidence"] if best is not None else None,
            "box": best["box"] if best is not None else None,
            "best_label": best_label,
            "detections": {label: dict(seen) for label, seen in self.detections.items()},
            "trigger": self.handle.triggered,
            "pre_roll": self.pre_roll,
            "start": writer.start_wall,
            "end": end,
            "video": DayTree.final_path(writer.path).name,
            "snapshot": snapshot_path(writer.path).name if self.has_snapshot else None,
        }


type ClipFinishedCallback = Callable[[ClipHandle, EventClip | None], None]
