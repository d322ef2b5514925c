"""Detection: built-in motion and remote object detection for each camera.

The data path (one `DetectionPipeline` per camera, see `pipeline.py`)::

    StreamHub ──packets──▶ frames.FrameSource (thread: decode, keep `fps` frames, downscale)
                              │ newest frame only (older ones are dropped, never queued)
                              ▼
                           pipeline analysis thread ──▶ motion.MotionDetector (numpy)
                              │ results, via call_soon_threadsafe
                              ▼
                           event loop: motion on/off (+ off-delay), listeners
                              └──▶ remote.RemoteDetector (aiohttp, DeepStack API) ──▶ objects

This module holds only the small value types shared by the others, so that importing one
submodule never drags the rest in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle in relative coordinates: 0..1 of the frame's width and height."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @classmethod
    def clamped(cls, x_min: float, y_min: float, x_max: float, y_max: float) -> Box:
        """Build a box with every side clamped to 0..1 and the corners in order."""

        def clamp(value: float) -> float:
            return min(1.0, max(0.0, float(value)))

        x0, x1 = sorted((clamp(x_min), clamp(x_max)))
        y0, y1 = sorted((clamp(y_min), clamp(y_max)))
        return cls(x0, y0, x1, y1)

    @property
    def area(self) -> float:
        """Return the fraction of the frame the box covers."""
        return max(0.0, self.x_max - self.x_min) * max(0.0, self.y_max - self.y_min)

    def as_list(self) -> list[float]:
        """Return `[x_min, y_min, x_max, y_max]` rounded for events and attributes."""
        return [round(v, 4) for v in (self.x_min, self.y_min, self.x_max, self.y_max)]


__all__ = ["Box"]
