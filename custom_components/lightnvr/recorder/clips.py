"""Event clips: a short MP4 per detection, starting before it, from memory (never the camera).

Per camera, a `ClipRecorder` thread is a thread subscriber of the camera's StreamHub and keeps
a **pre-roll buffer** in memory: the packets of the last `buffer_seconds`, extended back to the
keyframe before them so that a clip can always start on a keyframe. A trigger opens a clip
from that buffer (the newest keyframe at least `pre_roll` seconds before the trigger) and the
clip then follows the live stream until the detection is released plus `post_roll` seconds,
never longer than `max_length` seconds in all. Packets are copied into a fragmented MP4 by the
recorder's own writer (`segmenter`): no second muxer, and a crash loses at most the fragment
being built. Video is never decoded; audio other than AAC is transcoded to AAC as it arrives
(`audio.AacAudio`), so the buffer and every clip hold AAC.

- **One event clip at a time per camera**: a trigger while a clip runs (or is in its
  post-roll) extends that clip and adds its label; the clip ends once every label that
  triggered it was released (plus post-roll), at `max_length`, when the camera goes away
  (no packets, a new connection) or when the recorder stops. Labels still held then are
  forgotten: the next trigger starts a new clip, so a detector stuck "on" cannot fill the disk.
- **Clips on demand** (`lightnvr.save_clip`) are independent of event clips: `duration`
  seconds in all, `pre_roll` of them before the call (bounded by the buffer); like every
  clip they start on a keyframe, so they may be up to one GOP longer.
- `max_length` is measured on the media timeline: a file is never longer than that.
- **Layout** (next to the recordings, local time of HA's time zone like the recorder)::

      <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.mp4        the clip
      <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.mp4.part   while written
      <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.json       labels, times, box
      <storage>/events/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>_<label>.jpg        snapshot, if given

  The sidecar is written when the clip opens (so a crash leaves its labels and start) and
  again when it is finished; a `.part` left by a crash is cut after its last complete fragment
  and finished at the next start. The finished file's mtime is its end, as for segments.

Threads and the loop: `ClipManager` methods run in the event loop and never block it (file
work runs in the clip threads or the executor; only `resolve` touches the disk and is meant
for the executor, like `RecorderManager.resolve`); `ClipRecorder` calls `on_finished` in its
own thread and resolves `ClipHandle`s through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from fractions import Fraction
import json
import logging
import math
import os
from pathlib import Path
import re
import threading
import time
from typing import Any, Final, Literal

import av
import av.error
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.util import dt as dt_util

from ..detection import Box
from ..hub import MediaPacket, StreamInfo, ThreadPacketQueue
from .audio import AacAudio
from .segmenter import (
    AUDIO_CODECS,
    DEFAULT_FRAGMENT_SECONDS,
    VIDEO_CODECS,
    PacketSource,
    SegmentWriter,
    TimestampRepair,
    adts_header_length,
    adts_to_asc,
    video_extradata,
)
from .storage import (
    PART_SUFFIX,
    DayIndex,
    Indexed,
    UnsafePathError,
    complete_fragments_end,
    local_start,
    probe_duration,
    resolve_inside,
    valid_camera_id,
)

_LOGGER = logging.getLogger(__name__)

EVENTS_DIR: Final = "events"
CLIP_SUFFIX: Final = ".mp4"
SIDECAR_SUFFIX: Final = ".json"
SNAPSHOT_SUFFIX: Final = ".jpg"
MANUAL_LABEL: Final = "manual"  # the label of clips saved on demand
SIDECAR_VERSION: Final = 1

DEFAULT_PRE_ROLL: Final = 5.0
DEFAULT_POST_ROLL: Final = 5.0
DEFAULT_MAX_LENGTH: Final = 120.0
DEFAULT_CLIP_RETENTION_DAYS: Final = 30.0
DEFAULT_CLIP_RETENTION_INTERVAL: Final = timedelta(hours=1)
# A clip on demand longer than this is a recording, not a clip.
MAX_SAVE_SECONDS: Final = 3600.0
# Clips on demand being made at once, per camera and in all: a loop of service calls gets a
# clear error instead of a writer each.
MAX_SAVES_PER_CAMERA: Final = 2
MAX_SAVES: Final = 8
# When space must be freed, clips beyond this share of the stored bytes go first (see
# storage.RetentionPeer): recordings keep the rest however many clips are saved.
CLIP_SHARE: Final = 0.25

# The thread wakes up this often and takes everything queued meanwhile, instead of waking up
# for every packet (a wake-up costs more CPU than buffering a packet, as in the segmenter).
# Decisions use the packets' arrival stamps, so this delay never changes what a clip holds.
_BATCH_SECONDS = 0.25
# No packet for this long: the camera is gone, running clips are finished.
_IDLE_FINISH_SECONDS = 5.0
# After a clip's end, packets that arrived before it but are this late are not waited for.
_LATE_PACKET_SECONDS = 1.0
# The buffer keeps a little more than asked for: a trigger is applied a moment after the call.
_BUFFER_SLACK_SECONDS = 0.5
# Memory bound of one camera's buffer, whatever its bitrate and GOP (8 Mbit/s for 60 s).
_MAX_BUFFER_BYTES = 64 * 1024 * 1024
_QUEUE_PACKETS = 2048
_RESUBSCRIBE_SECONDS = 1.0
_MAX_NAME_SUFFIX = 1000
_MAX_LABEL_CHARS = 32
_MAX_CLIP_SECONDS = 6 * 3600  # beyond this a file's mtime is not believed to be its end

_LABEL_CHARS_RE = re.compile(r"[^a-z0-9]+")
_DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# <HH-MM-SS>_<label>[_<n>].mp4[.part]; labels are sanitised to [a-z0-9-], so "_" only separates.
_CLIP_RE = re.compile(
    r"^(?P<h>\d{2})-(?P<m>\d{2})-(?P<s>\d{2})_(?P<label>[a-z0-9-]{1,32})(?:_(?P<n>\d{1,4}))?"
    r"\.mp4(?P<part>\.part)?$"
)
_SIDE_RE = re.compile(r"^\d{2}-\d{2}-\d{2}_[a-z0-9-]{1,32}(?:_\d{1,4})?\.(?:json|jpg)$")


class ClipBusyError(HomeAssistantError):
    """Too many clips on demand are being made; try again when one is finished."""


class ClipError(HomeAssistantError):
    """A clip could not be made (unknown camera, stopped, no video)."""


def label_slug(label: str) -> str:
    """Return `label` as it appears in file names: lower-case letters, digits and dashes."""
    slug = _LABEL_CHARS_RE.sub("-", label.lower()).strip("-")[:_MAX_LABEL_CHARS].strip("-")
    return slug or "event"


def _parse_day(name: str) -> date | None:
    match = _DAY_RE.match(name)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _box_dict(box: Box | Mapping[str, float] | Sequence[float] | None) -> dict[str, float] | None:
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


# ----- clips on disk ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventClip:
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

    @property
    def label(self) -> str:
        """Return the label that started the clip."""
        return self.labels[0] if self.labels else "event"

    @property
    def duration(self) -> float:
        """Return the media duration in seconds."""
        return max(0.0, self.end - self.start)

    @property
    def sidecar(self) -> Path:
        """Return the `.json` beside the clip."""
        return sidecar_path(self.path)

    @property
    def day(self) -> date:
        """Return the local day the clip is filed under (its folder)."""
        parsed = _parse_day(self.path.parent.name)
        return parsed if parsed is not None else datetime.fromtimestamp(self.start, UTC).date()

    @property
    def start_time(self) -> datetime:
        """Return the start as an aware UTC datetime."""
        return datetime.fromtimestamp(self.start, UTC)

    @property
    def end_time(self) -> datetime:
        """Return the end as an aware UTC datetime."""
        return datetime.fromtimestamp(self.end, UTC)


def _stem(path: Path) -> str:
    """Return the name shared by a clip's files (`HH-MM-SS_label[_n]`)."""
    return path.name.removesuffix(PART_SUFFIX).removesuffix(CLIP_SUFFIX)


def sidecar_path(video: Path) -> Path:
    """Return the `.json` of a clip (or of its part file)."""
    return video.with_name(_stem(video) + SIDECAR_SUFFIX)


def snapshot_path(video: Path) -> Path:
    """Return the `.jpg` of a clip (or of its part file)."""
    return video.with_name(_stem(video) + SNAPSHOT_SUFFIX)


class ClipLayout:
    """Where clips live: `<storage>/events/<camera_id>/<local day>/<HH-MM-SS>_<label>.mp4`."""

    def __init__(self, storage_root: Path, tz: tzinfo) -> None:
        """Put clips under `storage_root`/events; `tz` names day folders and files."""
        self.storage_root = Path(storage_root)
        self.root = self.storage_root / EVENTS_DIR
        self.tz = tz

    def camera_dir(self, camera_id: str) -> Path:
        """Return a camera's clip folder (refuses ids that are no safe folder name)."""
        if not valid_camera_id(camera_id):
            raise UnsafePathError(f"invalid camera id {camera_id!r}")
        return self.root / camera_id

    def new_part_path(self, camera_id: str, start: float, label: str) -> Path:
        """Create the day folder and return an unused `.mp4.part` path (blocking).

        No file of the clip (video, part, sidecar, snapshot) may exist under the name, so a
        finished clip is never overwritten, nor its sidecar mixed up with another's.
        """
        local = datetime.fromtimestamp(start, self.tz)
        folder = self.camera_dir(camera_id) / local.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        base = f"{local:%H-%M-%S}_{label_slug(label)}"
        for number in range(_MAX_NAME_SUFFIX):
            stem = base if number == 0 else f"{base}_{number}"
            suffixes = (CLIP_SUFFIX, CLIP_SUFFIX + PART_SUFFIX, SIDECAR_SUFFIX, SNAPSHOT_SUFFIX)
            if not any((folder / f"{stem}{suffix}").exists() for suffix in suffixes):
                return folder / f"{stem}{CLIP_SUFFIX}{PART_SUFFIX}"
        raise FileExistsError(f"no free clip name for {base} in {folder}")

    @staticmethod
    def final_path(part: Path) -> Path:
        """Return the finished name of a part file."""
        return part.with_name(part.name.removesuffix(PART_SUFFIX))

    def relative(self, path: Path) -> str:
        """Return `path` relative to the STORAGE root (`events/…`), as media ids and URLs use."""
        return Path(path).relative_to(self.storage_root).as_posix()

    def start_from_name(self, path: Path, end_hint: float | None = None) -> float | None:
        """Return the epoch start encoded in a clip's day folder and name.

        Like the recorder, the repeated local hour at the end of daylight saving time is
        resolved with the file's end, when known.
        """
        day = _parse_day(path.parent.name)
        match = _CLIP_RE.match(path.name)
        if day is None or match is None:
            return None
        clock = (int(match["h"]), int(match["m"]), int(match["s"]))
        return local_start(day, clock, self.tz, end_hint)


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


def _clip_from_files(
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
    if not 0 <= end - start <= _MAX_CLIP_SECONDS:
        _LOGGER.debug("Implausible end time of %s; using its start", video.name)
        end = start
    match = _CLIP_RE.match(video.name)
    raw_labels = meta.get("labels")
    labels = (
        tuple(str(label) for label in raw_labels)
        if isinstance(raw_labels, list) and raw_labels
        else (match["label"] if match else "event",)
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
    )


def recover_clip_part(layout: ClipLayout, camera_id: str, part: Path) -> EventClip | None:
    """Make a leftover `.mp4.part` a finished clip (blocking); None if nothing was playable.

    Like the recorder's recovery: cut after the last complete fragment, end time into the
    mtime, rename. The sidecar (written when the clip opened) gives the start and labels and
    gets the end; a part without one playable fragment is deleted with its sidecar and snapshot.
    """
    sidecar = sidecar_path(part)
    try:
        size = part.stat().st_size
        with part.open("rb") as file:
            end_byte = complete_fragments_end(file, size)
        duration = 0.0
        if end_byte:
            if end_byte < size:
                os.truncate(part, end_byte)
            duration = probe_duration(part)
        if duration <= 0:
            _LOGGER.info("Deleting %s: nothing playable was written", part.name)
            for path in (part, sidecar, snapshot_path(part)):
                path.unlink(missing_ok=True)
            return None
        meta = read_sidecar(sidecar) or {}
        start = _float_or_none(meta.get("start"))
        if start is None:
            start = layout.start_from_name(part, end_hint=part.stat().st_mtime)
        if start is None:
            return None
        end = start + duration
        final = _free_final_path(layout.final_path(part))
        os.utime(part, (end, end))
        os.rename(part, final)
        if final.name != layout.final_path(part).name:  # renamed: its side files follow
            for old in (sidecar, snapshot_path(part)):
                if old.exists():
                    new = final.with_name(_stem(final) + old.suffix)
                    os.rename(old, new)
        meta.update(
            {
                "camera_id": camera_id,
                "start": start,
                "end": end,
                "video": final.name,
                "recovered": True,
                "version": SIDECAR_VERSION,
            }
        )
        meta.setdefault("labels", [_stem(final).split("_")[1]])
        meta.setdefault("label", meta["labels"][0])
        write_sidecar(sidecar_path(final), meta)
    except (OSError, av.error.FFmpegError) as err:
        _LOGGER.warning("Could not recover the clip %s: %s", part.name, err)
        return None
    _LOGGER.info("Recovered the clip %s (%.1f s)", final.name, duration)
    return _clip_from_files(layout, camera_id, final, end=end)


def _free_final_path(final: Path) -> Path:
    if not final.exists():
        return final
    stem = _stem(final)
    for number in range(1, _MAX_NAME_SUFFIX):
        candidate = final.with_name(f"{stem}_{number}{CLIP_SUFFIX}")
        if not candidate.exists() and not sidecar_path(candidate).exists():
            return candidate
    raise FileExistsError(final)


@dataclass(frozen=True, slots=True)
class ClipScan:
    """What a start-up scan found."""

    clips: list[EventClip]
    parts: list[tuple[str, Path]]  # (camera_id, part) left behind by a crash


def scan_clips(layout: ClipLayout) -> ClipScan:
    """Walk the events folder (blocking); delete side files whose clip is gone.

    Symlinked folders are not followed and foreign names are ignored, so retention can only
    delete files this module wrote.
    """
    clips: list[EventClip] = []
    parts: list[tuple[str, Path]] = []
    for camera_dir in _subdirs(layout.root):
        if not valid_camera_id(camera_dir.name):
            continue
        for day_dir in _subdirs(Path(camera_dir.path)):
            if _parse_day(day_dir.name) is None:
                continue
            entries = _entries(Path(day_dir.path))
            stems: set[str] = set()
            side_files: list[Path] = []
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                path = Path(entry.path)
                if _CLIP_RE.match(entry.name):
                    stems.add(_stem(path))
                    if entry.name.endswith(PART_SUFFIX):
                        parts.append((camera_dir.name, path))
                    elif (clip := _clip_from_files(layout, camera_dir.name, path)) is not None:
                        clips.append(clip)
                elif _SIDE_RE.match(entry.name):
                    side_files.append(path)
            for path in side_files:
                if path.name.rsplit(".", 1)[0] not in stems:
                    path.unlink(missing_ok=True)  # the clip was deleted by hand
            _remove_empty_dirs(layout, Path(day_dir.path))
    return ClipScan(clips, parts)


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    return [entry for entry in _entries(path) if entry.is_dir(follow_symlinks=False)]


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove_empty_dirs(layout: ClipLayout, folder: Path) -> None:
    """Remove an emptied day folder (and camera folder), never the events root."""
    for path in (folder, folder.parent):
        if path == layout.root or not path.is_relative_to(layout.root):
            return
        try:
            path.rmdir()
        except OSError:
            return  # not empty (or already gone): stop climbing


def delete_clip(layout: ClipLayout, clip: EventClip) -> bool:
    """Delete a clip with its sidecar and snapshot (blocking); False if it could not be."""
    try:
        clip.path.unlink(missing_ok=True)
    except OSError as err:
        _LOGGER.warning("Could not delete %s: %s", layout.relative(clip.path), err)
        return False
    for path in (sidecar_path(clip.path), snapshot_path(clip.path)):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    _remove_empty_dirs(layout, clip.path.parent)
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


# ----- a clip being made -------------------------------------------------------------------------


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
        """Finish the handle (clip thread); waiters wake up in the loop."""
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


@dataclass(frozen=True, slots=True)
class _Entry:
    """A buffered packet with repaired timestamps (repaired once, shared by every clip)."""

    kind: Literal["video", "audio"]
    data: bytes
    dts: int
    pts: int
    duration: int  # in time_base ticks
    keyframe: bool
    received: float  # time.monotonic() when the hub got it
    time_base: Fraction


@dataclass(eq=False, slots=True)
class _Clip:
    """One clip's state. Fields marked (lock) are shared with the callers' threads."""

    handle: ClipHandle
    trigger_at: float  # time.monotonic() of the first trigger
    pre_roll: float
    max_length: float | None
    end_at: float = math.inf  # (lock) monotonic deadline; inf while a label is held
    held: set[str] = field(default_factory=set)  # (lock)
    detections: dict[str, dict[str, Any]] = field(default_factory=dict)  # (lock)
    snapshot: bytes | None = None  # (lock) given, not yet written
    dirty: bool = False  # (lock) labels or detections changed since the sidecar was written
    # Thread only:
    writer: SegmentWriter | None = None
    opened_at: float = 0.0  # monotonic arrival of the first frame
    origin: int = 0  # repaired dts of the first frame
    need_keyframe: bool = False
    has_snapshot: bool = False
    done: bool = False  # finished and reported

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


type ClipFinishedCallback = Callable[[ClipHandle, EventClip | None], None]


class ClipRecorder:
    """Keeps one camera's pre-roll in memory and writes its clips, in its own thread."""

    def __init__(
        self,
        camera_id: str,
        source: PacketSource,
        layout: ClipLayout,
        loop: asyncio.AbstractEventLoop,
        *,
        pre_roll: float = DEFAULT_PRE_ROLL,
        post_roll: float = DEFAULT_POST_ROLL,
        max_length: float = DEFAULT_MAX_LENGTH,
        buffer_seconds: float | None = None,
        fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
        idle_seconds: float = _IDLE_FINISH_SECONDS,
        on_finished: ClipFinishedCallback | None = None,
    ) -> None:
        """Prepare a recorder; nothing runs before `start`.

        `buffer_seconds` (default `pre_roll`) is how much the buffer holds: the most pre-roll a
        clip on demand can have. `on_finished(handle, clip)` runs in the clip thread.
        """
        layout.camera_dir(camera_id)  # refuses an unsafe id before any thread starts
        self.camera_id = camera_id
        self._source = source
        self._layout = layout
        self._loop = loop
        self.pre_roll = max(0.0, pre_roll)
        self.post_roll = max(0.0, post_roll)
        self.max_length = max(1.0, max_length)
        self.buffer_seconds = max(self.pre_roll, buffer_seconds or 0.0)
        self._fragment_seconds = fragment_seconds
        self._idle_seconds = idle_seconds
        self._on_finished = on_finished

        self._lock = threading.Lock()  # guards _clips, _event and the (lock) fields of clips
        self._clips: list[_Clip] = []
        self._event: _Clip | None = None  # the clip new triggers extend

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._queue_lock = threading.Lock()
        self._queue: ThreadPacketQueue | None = None
        self._queue_dropped = 0
        self._resubscribe_at = 0.0
        self._last_packet_at = 0.0

        self._buffer: deque[_Entry] = deque()
        self._buffer_keyframes: deque[float] = deque()  # arrival of each buffered keyframe
        self._buffer_bytes = 0
        self._generation: int | None = None
        self._video_clock = TimestampRepair(None)
        self._audio_clock = TimestampRepair(None)
        self._audio_codec: str | None = None
        self._adts_config: bytes | None = None
        self._aac = AacAudio(source.name)
        self._unsupported_logged: set[str] = set()

        self.dropped_packets = 0
        self.clips_written = 0

    # ----- control (any thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start buffering (the clip thread)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"lightnvr-clips-{self.camera_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every running clip and stop the thread. Blocking: run it in an executor."""
        self._stopping.set()
        self._wake.set()
        with self._queue_lock:
            queue = self._queue
        if queue is not None:
            self._source.unsubscribe(queue)  # wakes a blocked get(); the thread drains and ends
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                _LOGGER.warning("Clip recorder of %s did not stop in time", self.camera_id)
        else:
            self._finish_all()  # never started: give up pending clips so nobody waits forever

    @property
    def alive(self) -> bool:
        """Return True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def trigger(
        self,
        label: str,
        *,
        confidence: float | None = None,
        box: Box | Mapping[str, float] | Sequence[float] | None = None,
        snapshot: bytes | None = None,
    ) -> ClipHandle:
        """Start an event clip, or extend the running one; return its handle (quick)."""
        if self._stopping.is_set():
            raise ClipError(f"the clip recorder of {self.camera_id} is stopped")
        now = time.monotonic()
        box_data = _box_dict(box)
        with self._lock:
            clip = self._event
            if clip is None:
                handle = ClipHandle(
                    self.camera_id, label, self._loop, manual=False, triggered=time.time()
                )
                clip = _Clip(handle, now, self.pre_roll, self.max_length)
                self._event = clip
                self._clips.append(clip)
            clip.note(label, confidence, box_data)
            clip.held.add(label)
            clip.end_at = math.inf  # a trigger in the post-roll keeps the clip going
            if snapshot and not clip.has_snapshot and clip.snapshot is None:
                clip.snapshot = snapshot
            handle = clip.handle
        self._wake.set()
        return handle

    def release(self, label: str) -> bool:
        """Release `label` from the running clip; return False if no running clip holds it.

        The clip ends `post_roll` seconds after the last of its labels is released.
        """
        now = time.monotonic()
        with self._lock:
            clip = self._event
            if clip is None or label not in clip.held:
                return False
            clip.held.discard(label)
            if not clip.held:
                clip.end_at = now + self.post_roll
        self._wake.set()
        return True

    def save(self, duration: float, pre_roll: float | None = None) -> ClipHandle:
        """Start a clip on demand: `duration` seconds in all, `pre_roll` of them before now.

        The pre-roll is bounded by the buffer; the clip starts on the keyframe at or before
        it, so it may be up to one GOP longer than asked.
        """
        if self._stopping.is_set():
            raise ClipError(f"the clip recorder of {self.camera_id} is stopped")
        pre = self.pre_roll if pre_roll is None else pre_roll
        if not 0 < duration <= MAX_SAVE_SECONDS or not math.isfinite(duration):
            raise ValueError(f"duration must be within 0..{MAX_SAVE_SECONDS:g} s")
        if not 0 <= pre <= duration:
            raise ValueError("pre-roll must be within 0..duration")
        if pre > self.buffer_seconds:
            _LOGGER.debug(
                "%s: pre-roll %.1f s limited to the buffer (%.1f s)",
                self.camera_id,
                pre,
                self.buffer_seconds,
            )
        now = time.monotonic()
        handle = ClipHandle(
            self.camera_id, MANUAL_LABEL, self._loop, manual=True, triggered=time.time()
        )
        pre = min(pre, self.buffer_seconds)  # the rest of the length comes after the call
        clip = _Clip(handle, now, pre, None, end_at=now + (duration - pre))
        with self._lock:
            self._clips.append(clip)
        self._wake.set()
        return handle

    @property
    def active(self) -> ClipHandle | None:
        """Return the running event clip's handle, if any."""
        with self._lock:
            return self._event.handle if self._event is not None else None

    @property
    def buffered_seconds(self) -> float:
        """Return how many seconds of video the pre-roll buffer holds (from its keyframe)."""
        with contextlib.suppress(IndexError):  # emptied by the thread meanwhile
            return max(0.0, self._buffer[-1].received - self._buffer[0].received)
        return 0.0

    # ----- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                queue = self._ensure_queue()
                if queue is None:
                    if self._stopping.is_set():
                        break
                    self._check_deadlines(time.monotonic())
                    continue
                try:
                    packet = queue.get(timeout=0)
                except EOFError:
                    self._on_queue_closed()
                    continue
                self._count_drops(queue)
                if packet is None:
                    if self._stopping.is_set():
                        self._on_queue_closed()  # drained: the end
                        continue
                    self._on_idle()
                    self._wake.wait(_BATCH_SECONDS)  # a trigger or stop() wakes it at once
                    self._wake.clear()
                    continue
                self._last_packet_at = time.monotonic()
                try:
                    self._on_packet(packet)
                except Exception:
                    # Never stop buffering for one bad packet: running clips end with what
                    # they have, the buffer starts over at the next keyframe.
                    _LOGGER.exception("Clip recorder of %s failed on a packet", self.camera_id)
                    self._finish_open("error")
                    self._clear_buffer()
        except Exception:
            _LOGGER.exception("Clip recorder of %s failed", self.camera_id)
        finally:
            self._finish_all()
            self._drop_queue()

    def _ensure_queue(self) -> ThreadPacketQueue | None:
        with self._queue_lock:
            if self._queue is not None or self._stopping.is_set():
                return self._queue
        wait = self._resubscribe_at - time.monotonic()
        if wait > 0:
            self._wake.wait(min(wait, _BATCH_SECONDS))
            self._wake.clear()
            return None
        queue = self._source.subscribe_thread(_QUEUE_PACKETS, from_keyframe=True)
        with self._queue_lock:
            self._queue = queue
            self._queue_dropped = 0
        if self._stopping.is_set():
            self._source.unsubscribe(queue)  # stop() ran while subscribing: drain and end
        self._last_packet_at = time.monotonic()
        return queue

    def _drop_queue(self) -> None:
        with self._queue_lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            self._source.unsubscribe(queue)

    def _on_queue_closed(self) -> None:
        """Handle the end of the subscription: we stop, or the hub stopped (and may restart)."""
        self._finish_open("the stream ended")
        self._drop_queue()
        self._clear_buffer()
        if not self._stopping.is_set():
            self._resubscribe_at = time.monotonic() + _RESUBSCRIBE_SECONDS

    def _count_drops(self, queue: ThreadPacketQueue) -> None:
        dropped = queue.dropped
        if dropped == self._queue_dropped:
            return
        self.dropped_packets += dropped - self._queue_dropped
        self._queue_dropped = dropped
        _LOGGER.warning(
            "Clip recorder of %s could not keep up and lost %d packet(s)",
            self.camera_id,
            self.dropped_packets,
        )
        # A lost packet breaks the references of the frames after it: the buffer starts over
        # and running clips continue at the next keyframe.
        self._clear_buffer()
        for clip in self._snapshot():
            clip.need_keyframe = True

    def _on_idle(self) -> None:
        now = time.monotonic()
        if now - self._last_packet_at > self._idle_seconds and (
            self._buffer or any(clip.writer is not None for clip in self._snapshot())
        ):
            _LOGGER.debug("%s: no packets; finishing running clips", self.camera_id)
            self._finish_open("no video")
            self._clear_buffer()  # stale: a later clip must not start with it
        self._check_deadlines(now)

    def _check_deadlines(self, now: float) -> None:
        """Finish clips whose end has passed while no packet came to tell."""
        late = now - _LATE_PACKET_SECONDS
        for clip in self._snapshot():
            if clip.writer is None and self._buffer and late > self._end_of(clip):
                self._try_open(clip)  # e.g. a clip on demand that is all pre-roll
            too_long = (
                clip.writer is not None
                and clip.max_length is not None
                and late > clip.opened_at + clip.max_length
            )
            if too_long or self._claim(clip, late):
                self._finish(clip)

    def _snapshot(self) -> list[_Clip]:
        with self._lock:
            return list(self._clips)

    def _end_of(self, clip: _Clip) -> float:
        """Return when (monotonic arrival time) the clip's last packet may have arrived."""
        with self._lock:
            return clip.end_at

    def _claim(self, clip: _Clip, arrival: float | None = None) -> bool:
        """Take a clip out of the running ones, so that no trigger extends it any more.

        With `arrival`, only if the clip's end is before it: the check and the removal happen
        under one lock, so a trigger either extends the clip in time or starts a new one.
        """
        with self._lock:
            if arrival is not None and arrival <= clip.end_at:
                return False
            if clip in self._clips:
                self._clips.remove(clip)
            if self._event is clip:
                self._event = None
            return True

    @staticmethod
    def _too_long(clip: _Clip, entry: _Entry) -> bool:
        """Return True if writing this video frame would make the clip exceed `max_length`.

        Measured on the media timeline, so the file is never longer than asked, whatever the
        arrival jitter.
        """
        if clip.max_length is None or entry.kind != "video":
            return False
        end = (entry.dts - clip.origin + entry.duration) * entry.time_base
        return float(end) > clip.max_length + 1e-6

    # ----- packets ----------------------------------------------------------------------------

    def _on_packet(self, packet: MediaPacket) -> None:
        if packet.generation != self._generation:
            self._new_generation(packet.generation)
        for media in self._aac.convert(packet):  # audio other than AAC comes out as AAC
            entry = self._entry(media)
            if entry is not None:
                self._on_entry(entry)

    def _on_entry(self, entry: _Entry) -> None:
        self._buffer_add(entry)
        for clip in self._snapshot():
            if clip.writer is None:
                # Opening writes the buffer up to this entry (or up to the clip's end).
                self._try_open(clip)
                if not clip.done and clip.writer is None and self._claim(clip, entry.received):
                    self._finish(clip)  # its time is over and no video came: nothing to save
            elif self._too_long(clip, entry) or self._claim(clip, entry.received):
                self._finish(clip)
            else:
                self._write(clip, entry)
            if clip.writer is not None:
                self._update_side_files(clip)

    def _new_generation(self, generation: int) -> None:
        """Start over on a new connection: running clips end (a gap is never hidden in one)."""
        if self._generation is not None:
            self._finish_open("new connection")
        self._clear_buffer()
        self._generation = generation
        info = self._aac.reset(self._source.info, generation)
        current = info is not None and info.generation == generation
        fps = info.fps if info is not None and current else None
        self._video_clock = TimestampRepair(1 / fps if fps else None)
        rate = info.audio_sample_rate if info is not None and current else None
        self._audio_clock = TimestampRepair(1024 / rate if rate else None)
        self._audio_codec = info.audio_codec if info is not None and current else None
        self._adts_config = None

    def _entry(self, packet: MediaPacket) -> _Entry | None:
        """Repair the packet's timestamps (once for all clips) as the recorder does."""
        if packet.kind == "video":
            dts, pts, _ = self._video_clock.fix(packet)
            return _Entry(
                "video",
                packet.data,
                dts,
                pts,
                self._video_clock.step,
                packet.keyframe,
                packet.received,
                packet.time_base,
            )
        if self._audio_codec not in AUDIO_CODECS:
            return None
        clock = self._audio_clock
        video_seconds = self._video_clock.last_seconds
        if video_seconds is not None:
            clock.align(packet, video_seconds + packet.received - self._video_clock.last_received)
        dts, pts, _ = clock.fix(packet)
        data = packet.data
        header = adts_header_length(data)
        if header:  # MP4 holds raw AAC; the config is learnt from the header if the SDP had none
            if self._adts_config is None:
                self._adts_config = adts_to_asc(data)
            data = data[header:]
        return _Entry("audio", data, dts, pts, clock.step, False, packet.received, packet.time_base)

    def _buffer_add(self, entry: _Entry) -> None:
        """Keep the last `buffer_seconds`, from the keyframe before them on."""
        buffer = self._buffer
        if not buffer and not entry.keyframe:
            return  # a clip can only start on a keyframe: nothing before one is useful
        buffer.append(entry)
        self._buffer_bytes += len(entry.data)
        keyframes = self._buffer_keyframes
        if entry.keyframe:
            keyframes.append(entry.received)
        limit = entry.received - self.buffer_seconds - _BUFFER_SLACK_SECONDS
        while len(keyframes) >= 2 and (
            keyframes[1] <= limit or self._buffer_bytes > _MAX_BUFFER_BYTES
        ):
            keyframes.popleft()
            first = buffer.popleft()  # the old keyframe, then everything up to the next one
            self._buffer_bytes -= len(first.data)
            while not buffer[0].keyframe:
                self._buffer_bytes -= len(buffer.popleft().data)
        if self._buffer_bytes > _MAX_BUFFER_BYTES:
            self._clear_buffer()  # one GOP larger than the bound: start over at the next one

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._buffer_keyframes.clear()
        self._buffer_bytes = 0

    # ----- writing ----------------------------------------------------------------------------

    def _try_open(self, clip: _Clip) -> None:
        """Open a pending clip from the buffer, at the keyframe before its pre-roll."""
        info = self._aac.stream_info(self._source.info)
        if info is None or info.generation != self._generation or not self._buffer:
            return
        if info.video_codec not in VIDEO_CODECS:
            if info.video_codec not in self._unsupported_logged:
                self._unsupported_logged.add(info.video_codec)
                _LOGGER.warning(
                    "%s: %s video cannot be saved as a clip without transcoding",
                    self.camera_id,
                    info.video_codec,
                )
            return
        entries = list(self._buffer)
        target = clip.trigger_at - clip.pre_roll
        start = 0  # the buffer always starts with a keyframe
        for index, entry in enumerate(entries):
            if entry.received > target:
                break
            if entry.keyframe:
                start = index
        first = entries[start]
        start_wall = time.time() - (time.monotonic() - first.received)
        try:
            part = self._layout.new_part_path(self.camera_id, start_wall, clip.handle.label)
            writer = SegmentWriter(
                part,
                info,
                video_extradata(info, first.data),
                self._audio_config(info),
                start_wall=start_wall,
                origin_seconds=first.dts * float(first.time_base),
                fragment_seconds=self._fragment_seconds,
            )
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("%s: could not start a clip: %s", self.camera_id, err)
            self._complete(clip, None)
            return
        clip.writer = writer
        clip.opened_at = first.received
        clip.origin = first.dts
        clip.handle.part_path = part
        _LOGGER.debug("%s: clip %s started", self.camera_id, self._layout.relative(part))
        self._update_side_files(clip, force=True)
        for entry in entries[start:]:
            if self._too_long(clip, entry) or self._claim(clip, entry.received):
                self._finish(clip)
                return
            self._write(clip, entry)
            if clip.writer is None:
                return  # the write failed and the clip was finished

    def _audio_config(self, info: StreamInfo) -> bytes | None:
        if info.audio_codec not in AUDIO_CODECS or not info.audio_sample_rate:
            return None
        return info.audio_extradata or self._adts_config

    def _write(self, clip: _Clip, entry: _Entry) -> None:
        writer = clip.writer
        if writer is None:
            return
        try:
            if entry.kind == "video":
                if clip.need_keyframe:
                    if not entry.keyframe:
                        return
                    clip.need_keyframe = False
                writer.write_video(
                    entry.data,
                    entry.dts - clip.origin,
                    entry.pts - clip.origin,
                    entry.keyframe,
                    entry.duration,
                )
            elif writer.audio is not None and not clip.need_keyframe:
                writer.write_audio(
                    entry.data, entry.dts, entry.pts, entry.time_base, entry.duration
                )
            writer.take_fragments()  # nobody follows clip fragments: don't let the list grow
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("%s: writing a clip failed: %s", self.camera_id, err)
            clip.writer = None
            writer.abort()
            self._complete(clip, self._salvage(writer.path))

    def _update_side_files(self, clip: _Clip, *, force: bool = False) -> None:
        """Write the snapshot once, and the sidecar when labels or detections changed."""
        writer = clip.writer
        if writer is None:
            return
        with self._lock:
            snapshot, clip.snapshot = clip.snapshot, None
            dirty, clip.dirty = clip.dirty, False
        try:
            if snapshot is not None and not clip.has_snapshot:
                snapshot_path(writer.path).write_bytes(snapshot)
                clip.has_snapshot = True
                dirty = True
            if dirty or force:
                with self._lock:
                    meta = self._metadata(clip, writer, None)
                write_sidecar(sidecar_path(writer.path), meta)
        except OSError as err:
            _LOGGER.warning("%s: could not write a clip's side files: %s", self.camera_id, err)

    def _metadata(self, clip: _Clip, writer: SegmentWriter, end: float | None) -> dict[str, Any]:
        """Return the sidecar of `clip` (lock held); `end` is None while it is written."""
        best_label, best = None, None
        for label, seen in clip.detections.items():
            confidence = seen["confidence"]
            if best is None or (
                confidence is not None
                and (best["confidence"] is None or confidence > best["confidence"])
            ):
                best_label, best = label, seen
        labels = list(clip.handle.labels)
        return {
            "version": SIDECAR_VERSION,
            "camera_id": self.camera_id,
            "label": labels[0],
            "labels": labels,
            "manual": clip.handle.manual,
            # The best detection while the clip ran (titles and thumbnails use it).
            "confidence": best["confidence"] if best is not None else None,
            "box": best["box"] if best is not None else None,
            "best_label": best_label,
            "detections": {label: dict(seen) for label, seen in clip.detections.items()},
            "trigger": clip.handle.triggered,
            "pre_roll": clip.pre_roll,
            "start": writer.start_wall,
            "end": end,
            "video": self._layout.final_path(writer.path).name,
            "snapshot": snapshot_path(writer.path).name if clip.has_snapshot else None,
        }

    def _finish_open(self, reason: str) -> None:
        """Finish every clip being written (the stream ended or changed)."""
        for clip in self._snapshot():
            if clip.writer is not None:
                _LOGGER.debug("%s: clip ends (%s)", self.camera_id, reason)
                self._finish(clip)

    def _finish_all(self) -> None:
        for clip in self._snapshot():
            self._finish(clip)

    def _finish(self, clip: _Clip) -> None:
        """Close a clip, make it final (sidecar, mtime = end, rename) and report it."""
        if clip.done:
            return
        self._claim(clip)  # from now on a trigger starts a new clip
        writer = clip.writer
        if writer is None:
            self._complete(clip, None)
            return
        try:
            self._update_side_files(clip)  # a snapshot given at the last moment
            clip.writer = None
            writer.close()
            writer.take_fragments()
            end = writer.start_wall + writer.duration
            # The name was reserved for all of the clip's files when it opened.
            final = self._layout.final_path(writer.path)
            with self._lock:
                meta = self._metadata(clip, writer, end)
            write_sidecar(sidecar_path(final), meta)  # before the video: never a clip without
            os.utime(writer.path, (end, end))  # the index reads the end back from the mtime
            os.rename(writer.path, final)
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("%s: could not finish a clip: %s", self.camera_id, err)
            clip.writer = None
            writer.abort()
            self._complete(clip, self._salvage(writer.path))
            return
        self._complete(clip, _clip_from_files(self._layout, self.camera_id, final, end=end))

    def _salvage(self, part: Path) -> EventClip | None:
        """Keep the complete fragments of a clip that could not be finished normally."""
        if not part.exists():
            return None
        return recover_clip_part(self._layout, self.camera_id, part)

    def _complete(self, clip: _Clip, result: EventClip | None) -> None:
        if clip.done:
            return
        clip.done = True
        self._claim(clip)
        if result is not None:
            self.clips_written += 1
            _LOGGER.debug(
                "%s: clip %s finished (%.1f s)",
                self.camera_id,
                self._layout.relative(result.path),
                result.duration,
            )
        clip.handle._resolve(result)
        if self._on_finished is not None:
            try:
                self._on_finished(clip.handle, result)
            except Exception:
                _LOGGER.exception("Error in the clip callback")


# ----- the manager -------------------------------------------------------------------------------


class ClipManager:
    """Event clips of every camera of one hub: buffers, triggers, index, retention, listeners.

    Every method runs in the event loop; blocking work runs in the clip threads or the executor.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        storage_root: Path,
        *,
        retention_days: float = DEFAULT_CLIP_RETENTION_DAYS,
        pre_roll: float = DEFAULT_PRE_ROLL,
        post_roll: float = DEFAULT_POST_ROLL,
        max_length: float = DEFAULT_MAX_LENGTH,
        buffer_seconds: float | None = None,
        retention_interval: timedelta = DEFAULT_CLIP_RETENTION_INTERVAL,
        tz: tzinfo | None = None,
    ) -> None:
        """Prepare the manager; nothing is touched on disk before `async_start`.

        Clips go to `storage_root`/events. `buffer_seconds` (default `pre_roll`) bounds the
        pre-roll of clips on demand; memory is about the camera's bitrate times that (plus a
        GOP) per camera. `tz` defaults to Home Assistant's time zone.
        """
        self._hass = hass
        self.layout = ClipLayout(storage_root, tz or dt_util.get_default_time_zone())
        self.index = ClipIndex()
        self.retention_days = retention_days
        self.pre_roll = pre_roll
        self.post_roll = post_roll
        self.max_length = max_length
        self.buffer_seconds = buffer_seconds
        self._retention_interval = retention_interval
        self._recorders: dict[str, ClipRecorder] = {}
        self._started = False
        self._cancel_timer: CALLBACK_TYPE | None = None
        self._retention_lock = asyncio.Lock()
        self._listeners: list[Callable[[EventClip], None]] = []
        self._saving: dict[str, int] = {}
        self.retention_peer = ClipRetentionPeer(self.layout, self.index)

    # ----- lifecycle --------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Recover clips left by a crash, index the folder, start retention and buffering."""
        recovered = await self._hass.async_add_executor_job(self._load)
        if recovered:
            _LOGGER.info("Recovered %d event clip(s) left unfinished", recovered)
        self._started = True
        await self.async_run_retention()
        self._cancel_timer = async_track_time_interval(
            self._hass,
            self._async_retention_tick,
            self._retention_interval,
            name="LightNVR event clip retention",
            cancel_on_shutdown=True,
        )
        for recorder in self._recorders.values():
            recorder.start()

    def _load(self) -> int:
        """Scan the events folder and recover leftover parts (blocking)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        found = scan_clips(self.layout)
        for clip in found.clips:
            self.index.add(clip)
        recovered = 0
        for camera_id, part in found.parts:
            saved = recover_clip_part(self.layout, camera_id, part)
            if saved is not None:
                self.index.add(saved)
                recovered += 1
        return recovered

    async def async_stop(self) -> None:
        """Finish every running clip and join every clip thread."""
        self._started = False
        if self._cancel_timer is not None:
            self._cancel_timer()
            self._cancel_timer = None
        recorders = list(self._recorders.values())
        self._recorders.clear()
        await asyncio.gather(
            *(self._hass.async_add_executor_job(recorder.stop) for recorder in recorders)
        )
        async with self._retention_lock:  # let a running retention pass end
            pass

    # ----- cameras ----------------------------------------------------------------------------

    async def async_add_camera(self, camera_id: str, hub: PacketSource) -> None:
        """Buffer a camera's stream (its main stream: clips are copied, never transcoded)."""
        if camera_id in self._recorders:
            await self.async_remove_camera(camera_id)
        recorder = ClipRecorder(
            camera_id,
            hub,
            self.layout,
            self._hass.loop,
            pre_roll=self.pre_roll,
            post_roll=self.post_roll,
            max_length=self.max_length,
            buffer_seconds=self.buffer_seconds,
            on_finished=self._on_finished,
        )
        self._recorders[camera_id] = recorder
        if self._started:
            recorder.start()

    async def async_remove_camera(self, camera_id: str) -> None:
        """Stop buffering a camera; its running clip is finished, its files stay."""
        recorder = self._recorders.pop(camera_id, None)
        if recorder is not None:
            await self._hass.async_add_executor_job(recorder.stop)

    @property
    def camera_ids(self) -> list[str]:
        """Return the cameras being buffered."""
        return list(self._recorders)

    def _recorder(self, camera_id: str) -> ClipRecorder:
        recorder = self._recorders.get(camera_id)
        if recorder is None:
            raise ClipError(f"no event clips for camera {camera_id}")
        return recorder

    # ----- clips ------------------------------------------------------------------------------

    @callback
    def async_trigger(
        self,
        camera_id: str,
        label: str,
        *,
        confidence: float | None = None,
        box: Box | Mapping[str, float] | Sequence[float] | None = None,
        snapshot: bytes | None = None,
    ) -> ClipHandle:
        """Start an event clip for `label` (with pre-roll), or extend the running one.

        Returns at once; `await handle.wait()` gives the finished clip. `snapshot` is JPEG
        bytes kept beside the clip (the first one given). Raises ClipError for an unknown camera.
        """
        return self._recorder(camera_id).trigger(
            label, confidence=confidence, box=box, snapshot=snapshot
        )

    @callback
    def async_release(self, camera_id: str, label: str) -> bool:
        """Tell that the detection of `label` ended; False if no running clip holds `label`.

        The clip ends `post_roll` seconds after the last of its labels is released.
        """
        recorder = self._recorders.get(camera_id)
        return recorder.release(label) if recorder is not None else False

    async def async_save_clip(
        self, camera_id: str, duration: float, pre_roll: float | None = None
    ) -> Path:
        """Save `duration` seconds of video, `pre_roll` (default: the manager's) before now.

        Waits until the clip is finished and returns its path. Raises ValueError for a bad
        duration/pre-roll and ClipError for an unknown camera or when no video came.
        """
        recorder = self._recorder(camera_id)
        if self._saving.get(camera_id, 0) >= MAX_SAVES_PER_CAMERA:
            raise ClipBusyError(
                f"{MAX_SAVES_PER_CAMERA} clips of this camera are being saved already"
            )
        if sum(self._saving.values()) >= MAX_SAVES:
            raise ClipBusyError(f"{MAX_SAVES} clips are being saved already")
        handle = recorder.save(duration, pre_roll)
        self._saving[camera_id] = self._saving.get(camera_id, 0) + 1
        try:
            clip = await handle.wait()
        finally:
            self._saving[camera_id] -= 1
        if clip is None:
            raise ClipError(f"no video from camera {camera_id} to save")
        return clip.path

    def active_clip(self, camera_id: str) -> ClipHandle | None:
        """Return the running event clip of a camera, if any."""
        recorder = self._recorders.get(camera_id)
        return recorder.active if recorder is not None else None

    def buffered_seconds(self, camera_id: str) -> float:
        """Return how much pre-roll a camera's buffer holds right now."""
        recorder = self._recorders.get(camera_id)
        return recorder.buffered_seconds if recorder is not None else 0.0

    # ----- the index --------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        """Return the cameras that have clips (also removed ones, until retention ends them)."""
        return self.index.cameras()

    def days(self, camera_id: str) -> list[date]:
        """Return a camera's days with clips, oldest first."""
        return self.index.days(camera_id)

    def clips(self, camera_id: str, day: date | None = None) -> list[EventClip]:
        """Return a camera's clips (of one local day, or all), oldest first."""
        return self.index.clips(camera_id, day)

    def get(self, path: Path) -> EventClip | None:
        """Return the clip at `path` (as `resolve` returns it), if indexed."""
        return self.index.get(path)

    def relative(self, path: Path) -> str:
        """Return a clip's path relative to the storage root (`events/<camera>/<day>/…`)."""
        return self.layout.relative(path)

    def resolve(self, relative: str) -> Path:
        """Return the real path of a relative one; UnsafePathError outside the storage root.

        Blocking (it resolves symlinks on disk): call it in the executor.
        """
        return resolve_inside(self.layout.storage_root, relative)

    @callback
    def add_listener(self, listener: Callable[[EventClip], None]) -> CALLBACK_TYPE:
        """Call `listener(clip)` in the event loop for every finished clip; return a remover."""
        self._listeners.append(listener)

        def _remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return _remove

    def _on_finished(self, _handle: ClipHandle, clip: EventClip | None) -> None:
        """Index a clip finished by a clip thread and tell the loop (clip thread)."""
        if clip is None:
            return
        self.index.add(clip)
        with contextlib.suppress(RuntimeError):  # loop closed: HA is gone, nobody listens
            self._hass.loop.call_soon_threadsafe(self._async_clip_finished, clip)

    @callback
    def _async_clip_finished(self, clip: EventClip) -> None:
        for listener in list(self._listeners):
            try:
                listener(clip)
            except Exception:
                _LOGGER.exception("Error in a clip listener")

    # ----- retention --------------------------------------------------------------------------

    async def _async_retention_tick(self, _now: datetime) -> None:
        await self.async_run_retention()

    async def async_run_retention(self, now: float | None = None) -> list[EventClip]:
        """Delete clips older than `retention_days` (off the loop); return what was deleted.

        `now` (epoch seconds) defaults to the current time.
        """
        if self._retention_lock.locked():
            return []
        async with self._retention_lock:
            moment = time.time() if now is None else now
            deleted = await self._hass.async_add_executor_job(
                apply_clip_retention, self.layout, self.index, self.retention_days, moment
            )
        if deleted:
            _LOGGER.debug("Clip retention deleted %d clip(s)", len(deleted))
        return deleted
