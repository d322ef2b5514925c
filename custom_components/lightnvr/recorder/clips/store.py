"""Event clips on disk: names, sidecars, scanning, recovery, the index and retention.

Layout (next to the recordings, in the shared day tree of `files.py`, local time of HA's time
zone like the recorder)::

    <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.mp4        the clip
    <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.mp4.part   while written
    <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.json       labels, times, box
    <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.jpg        snapshot, if given

The sidecar is written when the clip opens (so a crash leaves its labels and start) and again
when it is finished; a `.part` left by a crash is cut after its last complete fragment and
finished at the next start. The finished file's mtime is its end, as for segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, tzinfo
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Final

from homeassistant.exceptions import HomeAssistantError

from ..files import DayTree, TimedFile, file_stem, plausible_end
from ..storage import DayIndex, Indexed

_LOGGER = logging.getLogger(__name__)

EVENTS_DIR: Final = "events"
CLIP_SUFFIX: Final = ".mp4"
SIDECAR_SUFFIX: Final = ".json"
SNAPSHOT_SUFFIX: Final = ".jpg"
MANUAL_LABEL: Final = "manual"  # the label of clips saved on demand
SIDECAR_VERSION: Final = 1
DEFAULT_CLIP_RETENTION_DAYS: Final = 30.0
# When space must be freed, clips beyond this share of the stored bytes go first (see
# storage.RetentionPeer): recordings keep the rest however many clips are saved.
CLIP_SHARE: Final = 0.25


class ClipBusyError(HomeAssistantError):
    """Too many clips on demand are being made; try again when one is finished."""


class ClipError(HomeAssistantError):
    """A clip could not be made (unknown camera, stopped, no video)."""


# ----- clips on disk ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventClip(TimedFile):
    """One finished event clip and what its sidecar says."""

    camera_id: str
    path: Path  # the `.mp4`
    start: float  # epoch seconds of the first frame
    end: float  # epoch seconds of the end of the last frame
    labels: tuple[str, ...]  # in the order they triggered the clip; the first names the file
    size: int  # bytes of the video
    confidence: float | None = None  # best confidence seen while the clip ran
    box: dict[str, float] | None = None  # box of that best detection (relative coordinates)
    snapshot: Path | None = None  # the `.jpg`, if one was given
    trigger: float | None = None  # epoch seconds of the first trigger (after `start`: pre-roll)
    manual: bool = False  # saved on demand (`lightnvr.save_clip`)
    best_label: str | None = None  # the label of the best detection (the sidecar's)

    @property
    def label(self) -> str:
        """Return the label that started the clip."""
        return self.labels[0] if self.labels else "event"

    @property
    def sidecar(self) -> Path:
        """Return the `.json` beside the clip."""
        return sidecar_path(self.path)


def sidecar_path(video: Path) -> Path:
    """Return the `.json` of a clip (or of its part file)."""
    return video.with_name(file_stem(video) + SIDECAR_SUFFIX)


def snapshot_path(video: Path) -> Path:
    """Return the `.jpg` of a clip (or of its part file)."""
    return video.with_name(file_stem(video) + SNAPSHOT_SUFFIX)


class ClipLayout(DayTree):
    """Where clips live: `<storage>/events/<camera_id>/<local day>/<HH-MM-SS>_<label>.mp4`.

    The shared day tree (`files.py`) with the labelled naming rule; the sidecar and snapshot
    are the clip's side files, so a name is only free when none of them exists either.
    """

    def __init__(self, storage_root: Path, tz: tzinfo) -> None:
        """Put clips under `storage_root`/events; `tz` names day folders and files."""
        self.storage_root = Path(storage_root)
        super().__init__(
            self.storage_root / EVENTS_DIR,
            tz,
            labelled=True,
            side_suffixes=(SIDECAR_SUFFIX, SNAPSHOT_SUFFIX),
        )

    def relative(self, path: Path) -> str:
        """Return `path` relative to the STORAGE root (`events/…`), as media ids and URLs use."""
        return Path(path).relative_to(self.storage_root).as_posix()


def write_sidecar(path: Path, data: Mapping[str, Any]) -> None:
    """Write a sidecar atomically (a reader never sees half of it). Blocking."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """Return a sidecar's data, or None if it is missing or unreadable. Blocking."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def clip_from_files(
    layout: ClipLayout, camera_id: str, video: Path, *, end: float | None = None
) -> EventClip | None:
    """Build an index entry from a finished clip and its sidecar (blocking).

    The sidecar is preferred; a clip without one (deleted by hand) is still listed, with the
    start from its name and the end from its mtime.
    """
    try:
        stat = video.stat()
    except OSError:
        return None
    meta = read_sidecar(sidecar_path(video)) or {}
    if end is None:
        # The sidecar keeps the exact end; the mtime (to the nanosecond) is the fallback.
        end = _float_or_none(meta.get("end"))
        if end is None:
            end = stat.st_mtime
    start = _float_or_none(meta.get("start"))
    if start is None:
        start = layout.start_from_name(video, end_hint=end)
        if start is None:
            return None
    end = plausible_end(video, start, end)
    raw_labels = meta.get("labels")
    labels = (
        tuple(str(label) for label in raw_labels)
        if isinstance(raw_labels, list) and raw_labels
        else (layout.label_from_name(video) or "event",)
    )
    box = meta.get("box")
    snapshot = snapshot_path(video)
    return EventClip(
        camera_id=camera_id,
        path=video,
        start=start,
        end=end,
        labels=labels,
        size=stat.st_size,
        confidence=_float_or_none(meta.get("confidence")),
        box=(
            {str(k): float(v) for k, v in box.items() if _float_or_none(v) is not None}
            if isinstance(box, dict)
            else None
        ),
        snapshot=snapshot if snapshot.exists() else None,
        trigger=_float_or_none(meta.get("trigger")),
        manual=bool(meta.get("manual", False)),
        best_label=best if isinstance(best := meta.get("best_label"), str) else None,
    )


def recover_clip_part(layout: ClipLayout, camera_id: str, part: Path) -> EventClip | None:
    """Make a leftover `.mp4.part` a finished clip (blocking); None if nothing was playable.

    The shared recovery (`DayTree.recover`: cut after the last complete fragment, end time into
    the mtime, rename, side files follow). The sidecar (written when the clip opened) gives the
    start and labels and gets the end; a part without one playable fragment is deleted with its
    sidecar and snapshot.
    """
    meta = read_sidecar(sidecar_path(part)) or {}
    saved = layout.recover(part, start=_float_or_none(meta.get("start")))
    if saved is None:
        return None
    meta.update(
        {
            "camera_id": camera_id,
            "start": saved.start,
            "end": saved.end,
            "video": saved.path.name,
            "recovered": True,
            "version": SIDECAR_VERSION,
        }
    )
    meta.setdefault("labels", [layout.label_from_name(saved.path) or "event"])
    meta.setdefault("label", meta["labels"][0])
    try:
        write_sidecar(sidecar_path(saved.path), meta)
    except OSError as err:
        _LOGGER.warning("Could not recover the clip %s: %s", part.name, err)
        return None
    return clip_from_files(layout, camera_id, saved.path, end=saved.end)


@dataclass(frozen=True, slots=True)
class ClipScan:
    """What a start-up scan found."""

    clips: list[EventClip]
    parts: list[tuple[str, Path]]  # (camera_id, part) left behind by a crash


def scan_clips(layout: ClipLayout) -> ClipScan:
    """Walk the events folder (blocking); delete side files whose clip is gone.

    Symlinks are not followed and foreign names are ignored (see `DayTree.scan`), so retention
    can only delete files this module wrote.
    """
    clips: list[EventClip] = []
    parts: list[tuple[str, Path]] = []
    for folder in layout.scan():
        parts.extend((folder.camera_id, part) for part in folder.parts)
        for entry in folder.finished:
            clip = clip_from_files(layout, folder.camera_id, Path(entry.path))
            if clip is not None:
                clips.append(clip)
        for path in folder.orphans():
            path.unlink(missing_ok=True)  # the clip was deleted by hand
        layout.remove_empty_dirs(folder.path)
    return ClipScan(clips, parts)


def delete_clip(layout: ClipLayout, clip: EventClip) -> bool:
    """Delete a clip with its sidecar and snapshot (blocking); False if it could not be."""
    try:
        layout.delete(clip.path)
    except OSError as err:
        _LOGGER.warning("Could not delete %s: %s", layout.relative(clip.path), err)
        return False
    return True


# ----- the index ---------------------------------------------------------------------------------


class ClipRetentionPeer:
    """The clips as the recordings' retention sees them (storage.RetentionPeer)."""

    share = CLIP_SHARE

    def __init__(self, layout: ClipLayout, index: ClipIndex) -> None:
        """Weigh the clips of `index`."""
        self._layout = layout
        self._index = index

    def oldest_first(self) -> list[EventClip]:
        """Return the finished clips, oldest first."""
        return self._index.oldest_first()

    def total_size(self) -> int:
        """Return their bytes."""
        return self._index.total_size()

    def delete(self, item: Indexed) -> bool:
        """Delete a clip with its sidecar and snapshot (blocking)."""
        if not isinstance(item, EventClip) or not delete_clip(self._layout, item):
            return False
        self._index.remove(item)
        return True


class ClipIndex(DayIndex[EventClip]):
    """Finished clips per camera and day, oldest first. Thread-safe."""

    def clips(self, camera_id: str, day: date | None = None) -> list[EventClip]:
        """Return a camera's clips (of one day, or all), oldest first."""
        return self.items(camera_id, day)

    def all_clips(self) -> list[EventClip]:
        """Return every clip of every camera, oldest first."""
        return self.oldest_first()


def apply_clip_retention(
    layout: ClipLayout, index: ClipIndex, retention_days: float, now: float
) -> list[EventClip]:
    """Delete clips that ended more than `retention_days` before `now` (blocking).

    `retention_days <= 0` keeps clips forever. Only indexed (finished) clips are considered,
    so a clip being written is never touched.
    """
    if retention_days <= 0:
        return []
    cutoff = now - retention_days * 86400
    deleted: list[EventClip] = []
    for clip in index.all_clips():
        if clip.end >= cutoff:
            continue  # sorted by start, not end: a long clip may end later than a newer one
        if delete_clip(layout, clip):
            index.remove(clip)
            deleted.append(clip)
    return deleted
