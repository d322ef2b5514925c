"""A per-camera, per-day index of timed files, oldest first: recordings and event clips.

Thread-safe and cheap to read: the recorder threads add files, retention removes them, and
the Media panel, playlists, the timeline and exports read them.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
import threading
from typing import Protocol


class Indexed(Protocol):
    """What the day index needs of an item: recordings and event clips both qualify."""

    @property
    def camera_id(self) -> str: ...  # noqa: D102
    @property
    def path(self) -> Path: ...  # noqa: D102
    @property
    def start(self) -> float: ...  # noqa: D102
    @property
    def size(self) -> int: ...  # noqa: D102
    @property
    def day(self) -> date: ...  # noqa: D102


def start_key(item: Indexed) -> float:
    """Sort key: an item's start."""
    return item.start


@dataclass(slots=True)
class _CameraDays[T: Indexed]:
    days: dict[date, list[T]] = field(default_factory=dict)
    size: int = 0


class DayIndex[T: Indexed]:
    """Files per camera and day, oldest first. Thread-safe."""

    def __init__(self) -> None:
        """Create an empty index."""
        self._lock = threading.Lock()
        self._cameras: dict[str, _CameraDays[T]] = {}
        self._paths: dict[Path, T] = {}

    def add(self, item: T) -> None:
        """Add (or replace) an item."""
        with self._lock:
            if item.path in self._paths:
                self._remove_locked(self._paths[item.path])
            camera = self._cameras.setdefault(item.camera_id, _CameraDays())
            insort(camera.days.setdefault(item.day, []), item, key=start_key)
            camera.size += item.size
            self._paths[item.path] = item

    def remove(self, item: T) -> bool:
        """Forget an item; return False if it was not indexed."""
        with self._lock:
            known = self._paths.get(item.path)
            if known is None:
                return False
            self._remove_locked(known)
            return True

    def _remove_locked(self, item: T) -> None:
        del self._paths[item.path]
        camera = self._cameras[item.camera_id]
        day = camera.days[item.day]
        day.remove(item)
        camera.size -= item.size
        if not day:
            del camera.days[item.day]
        if not camera.days:
            del self._cameras[item.camera_id]

    def get(self, path: Path) -> T | None:
        """Return the item stored at `path`, if indexed."""
        with self._lock:
            return self._paths.get(Path(path))

    def cameras(self) -> list[str]:
        """Return the cameras that have items."""
        with self._lock:
            return sorted(self._cameras)

    def days(self, camera_id: str) -> list[date]:
        """Return a camera's days with items, oldest first."""
        with self._lock:
            camera = self._cameras.get(camera_id)
            return sorted(camera.days) if camera else []

    def items(self, camera_id: str, day: date | None = None) -> list[T]:
        """Return a camera's items (of one day, or all), oldest first."""
        with self._lock:
            camera = self._cameras.get(camera_id)
            if camera is None:
                return []
            if day is not None:
                return list(camera.days.get(day, ()))
            return [item for key in sorted(camera.days) for item in camera.days[key]]

    def oldest_first(self) -> list[T]:
        """Return every item of every camera, oldest first."""
        with self._lock:
            everything = list(self._paths.values())
        everything.sort(key=start_key)
        return everything

    def oldest(self, camera_id: str | None = None) -> T | None:
        """Return the oldest item (of one camera, or of all)."""
        with self._lock:
            ids = [camera_id] if camera_id is not None else list(self._cameras)
            firsts = [
                self._cameras[cid].days[min(self._cameras[cid].days)][0]
                for cid in ids
                if cid in self._cameras
            ]
        return min(firsts, key=start_key, default=None)

    def newest(self, camera_id: str) -> T | None:
        """Return a camera's newest item."""
        with self._lock:
            camera = self._cameras.get(camera_id)
            if camera is None:
                return None
            return max(camera.days[max(camera.days)], key=start_key)

    def total_size(self, camera_id: str | None = None) -> int:
        """Return the bytes held by items (of one camera, or of all)."""
        with self._lock:
            if camera_id is not None:
                camera = self._cameras.get(camera_id)
                return camera.size if camera else 0
            return sum(camera.size for camera in self._cameras.values())

    def __len__(self) -> int:
        """Return the number of items."""
        with self._lock:
            return len(self._paths)


class DayItems[T: Indexed](Protocol):
    """What readers of an index use: a `DayIndex`, or the two tiers of a `SegmentIndex`."""

    def get(self, path: Path) -> T | None: ...  # noqa: D102
    def cameras(self) -> list[str]: ...  # noqa: D102
    def days(self, camera_id: str) -> list[date]: ...  # noqa: D102
    def items(self, camera_id: str, day: date | None = None) -> list[T]: ...  # noqa: D102
    def oldest(self, camera_id: str | None = None) -> T | None: ...  # noqa: D102
    def newest(self, camera_id: str) -> T | None: ...  # noqa: D102
