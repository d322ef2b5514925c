"""Recording storage: file layout, segment index, path safety, retention and crash recovery.

Layout::

    <storage>/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>.mp4        finished segment
    <storage>/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>.mp4.part   segment being written

Time zone: day folders and file names use the **local time of Home Assistant's configured time
zone** at the start of the segment (its first keyframe), because people look for footage by
their own calendar day ("yesterday evening"), in the Media panel and in the folder itself. Local
names alone are ambiguous once a year (the repeated hour when daylight saving time ends), so
the index never relies on names alone: every finished file's modification time is set to the
exact end of its media, and the index keeps absolute times (UTC epoch seconds). At start-up the
repeated hour is resolved with that end time, and two files that would get the same name (the
repeated hour, or a reconnect within the same second) are told apart by a ``_1``, ``_2`` suffix.

Nothing here runs on the event loop: scanning, deleting and recovering are blocking file work
that the manager runs in an executor; the index itself is thread-safe and cheap to read.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
import logging
import os
from pathlib import Path, PurePosixPath
import re
import shutil
import threading
import time
from typing import BinaryIO, NamedTuple, Protocol

import av

from ..media.bmff import iter_file_boxes

_LOGGER = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".mp4"
PART_SUFFIX = ".part"  # appended to SEGMENT_SUFFIX while a file is written

_DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})(?:_(\d{1,4}))?\.mp4(\.part)?$")
# Camera ids are subentry ids (ULIDs); anything else that could walk out of the folder or hide
# (a path separator, a leading dot) is refused.
_CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
# Beyond this a file's end time (its mtime) is not believed: it was touched by something else.
_MAX_SEGMENT_SECONDS = 6 * 3600
_MAX_NAME_SUFFIX = 1000


class UnsafePathError(ValueError):
    """A path given from outside (a URL, a media id) does not lead inside the storage root."""


# ----- disk usage: the one boundary tests replace --------------------------------------------


class DiskUsage(NamedTuple):
    """Bytes of the file system holding the storage root."""

    total: int
    used: int
    free: int


type DiskUsageFn = Callable[[Path], DiskUsage]


def disk_usage(path: Path) -> DiskUsage:
    """Return the usage of the file system holding `path` (blocking: statvfs)."""
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)


# ----- segments and layout --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One finished recording file."""

    camera_id: str
    path: Path
    start: float  # epoch seconds of the first frame
    end: float  # epoch seconds of the end of the last frame
    size: int  # bytes

    @property
    def duration(self) -> float:
        """Return the media duration in seconds."""
        return max(0.0, self.end - self.start)

    @property
    def day(self) -> date:
        """Return the local day the segment is filed under (its folder)."""
        parsed = _parse_day(self.path.parent.name)
        if parsed is None:  # not made by this module; fall back on the UTC day
            return datetime.fromtimestamp(self.start, UTC).date()
        return parsed

    @property
    def start_time(self) -> datetime:
        """Return the start as an aware UTC datetime."""
        return datetime.fromtimestamp(self.start, UTC)

    @property
    def end_time(self) -> datetime:
        """Return the end as an aware UTC datetime."""
        return datetime.fromtimestamp(self.end, UTC)


def local_start(
    day: date, clock: tuple[int, int, int], tz: tzinfo, end_hint: float | None = None
) -> float | None:
    """Return the epoch time of a local day and (hour, minute, second), as file names hold them.

    The hour repeated when daylight saving time ends has two answers; with `end_hint` (the
    file's end) the one just before that end is taken, else the first.
    """
    try:
        candidates = sorted(
            {
                datetime(day.year, day.month, day.day, *clock, tzinfo=tz, fold=fold).timestamp()
                for fold in (0, 1)
            }
        )
    except ValueError:
        return None
    if end_hint is not None:
        before = [c for c in candidates if c <= end_hint + 1.0]
        if before:
            return before[-1]
    return candidates[0]


def _parse_day(name: str) -> date | None:
    match = _DAY_RE.match(name)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def valid_camera_id(camera_id: str) -> bool:
    """Return True when `camera_id` can be used as a folder name safely."""
    return bool(_CAMERA_ID_RE.match(camera_id)) and camera_id not in {".", ".."}


class StorageLayout:
    """Where segments live: names from start times (local), and back."""

    def __init__(self, root: Path, tz: tzinfo) -> None:
        """Use `root` as the storage folder and `tz` for day folders and file names."""
        self.root = Path(root)
        self.tz = tz

    def camera_dir(self, camera_id: str) -> Path:
        """Return a camera's folder."""
        if not valid_camera_id(camera_id):
            raise UnsafePathError(f"invalid camera id {camera_id!r}")
        return self.root / camera_id

    def new_part_path(self, camera_id: str, start: float) -> Path:
        """Create the day folder and return an unused `.mp4.part` path for a segment (blocking).

        The name must not collide with a finished segment nor with another part file, so the
        final rename can never overwrite a recording.
        """
        local = datetime.fromtimestamp(start, self.tz)
        folder = self.camera_dir(camera_id) / local.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        stem = local.strftime("%H-%M-%S")
        for number in range(_MAX_NAME_SUFFIX):
            name = stem if number == 0 else f"{stem}_{number}"
            final = folder / f"{name}{SEGMENT_SUFFIX}"
            part = folder / f"{name}{SEGMENT_SUFFIX}{PART_SUFFIX}"
            if not final.exists() and not part.exists():
                return part
        raise FileExistsError(f"no free segment name for {stem} in {folder}")

    @staticmethod
    def final_path(part: Path) -> Path:
        """Return the finished name of a part file."""
        return part.with_name(part.name.removesuffix(PART_SUFFIX))

    def relative(self, path: Path) -> str:
        """Return `path` relative to the root, with forward slashes (for URLs and media ids)."""
        return Path(path).relative_to(self.root).as_posix()

    def start_from_name(self, path: Path, end_hint: float | None = None) -> float | None:
        """Return the epoch start encoded in a segment's day folder and name.

        With `end_hint` (the file's end), the repeated local hour when daylight saving time ends
        is resolved to the start that lies just before that end.
        """
        day = _parse_day(path.parent.name)
        match = _NAME_RE.match(path.name)
        if day is None or match is None:
            return None
        clock = (int(match[1]), int(match[2]), int(match[3]))
        return local_start(day, clock, self.tz, end_hint)


# ----- path safety (for the HTTP views and media_source) ---------------------------------------


def resolve_inside(root: Path, relative: str) -> Path:
    """Return the real path of `relative` strictly inside `root`, or raise UnsafePathError.

    `relative` comes from outside (a URL or a media id): absolute paths, `..`, empty parts,
    backslashes and NUL are refused outright, and the result is checked after resolving every
    symlink, so a link pointing out of the storage root can never be followed. The path need
    not exist; callers check that themselves (and answer 404 either way).
    """
    if not relative or "\x00" in relative or "\\" in relative:
        raise UnsafePathError("invalid path")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("/"):
        raise UnsafePathError("absolute path")
    parts = relative.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise UnsafePathError("path traversal")
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root.joinpath(*parts)))
    if candidate == real_root or not candidate.is_relative_to(real_root):
        raise UnsafePathError("outside the storage root")
    return candidate


# ----- the index --------------------------------------------------------------------------------


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


def _start_key(item: Indexed) -> float:
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
            insort(camera.days.setdefault(item.day, []), item, key=_start_key)
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
        everything.sort(key=_start_key)
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
        return min(firsts, key=_start_key, default=None)

    def newest(self, camera_id: str) -> T | None:
        """Return a camera's newest item."""
        with self._lock:
            camera = self._cameras.get(camera_id)
            if camera is None:
                return None
            return max(camera.days[max(camera.days)], key=_start_key)

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


class SegmentIndex(DayIndex[Segment]):
    """Finished recording segments per camera and day."""

    def segments(self, camera_id: str, day: date | None = None) -> list[Segment]:
        """Return a camera's segments (of one day, or all), oldest first."""
        return self.items(camera_id, day)


# ----- scanning and recovery (blocking) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a start-up scan found."""

    segments: list[Segment]
    parts: list[Path]  # files left behind by a crash (or a kill) while being written


def scan_storage(layout: StorageLayout) -> ScanResult:
    """Walk the storage root for segments and leftover parts (blocking).

    Symlinked folders are not followed and foreign files are ignored, so retention can only ever
    delete files this module wrote, inside the root.
    """
    segments: list[Segment] = []
    parts: list[Path] = []
    for camera_dir in _subdirs(layout.root):
        if not valid_camera_id(camera_dir.name):
            continue
        for day_dir in _subdirs(Path(camera_dir.path)):
            if _parse_day(day_dir.name) is None:
                continue
            for entry in _entries(Path(day_dir.path)):
                if not entry.is_file(follow_symlinks=False) or not _NAME_RE.match(entry.name):
                    continue
                path = Path(entry.path)
                if entry.name.endswith(PART_SUFFIX):
                    parts.append(path)
                    continue
                segment = _segment_from_file(layout, camera_dir.name, path, entry.stat())
                if segment is not None:
                    segments.append(segment)
    return ScanResult(segments, parts)


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    return [entry for entry in _entries(path) if entry.is_dir(follow_symlinks=False)]


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _segment_from_file(
    layout: StorageLayout, camera_id: str, path: Path, stat: os.stat_result
) -> Segment | None:
    end = stat.st_mtime
    start = layout.start_from_name(path, end_hint=end)
    if start is None:
        return None
    if not 0 <= end - start <= _MAX_SEGMENT_SECONDS:
        # The mtime was changed by something else (a copy, a backup restore): the start from
        # the name is still right; the length is unknown, so it is shown as a moment.
        _LOGGER.debug("Implausible end time of %s; using its start", path.name)
        end = start
    return Segment(camera_id, path, start, end, stat.st_size)


def complete_fragments_end(file: BinaryIO, size: int) -> int:
    """Return the length of the playable prefix of a fragmented MP4, 0 if there is none.

    The prefix ends after the last complete `moof`+`mdat` pair that follows the `moov`; a
    fragment cut short by a crash (a partial `moof`, or an `mdat` shorter than its header says)
    is left out.
    """
    end = 0
    seen_moov = False
    moof_open = False
    for box_type, offset, _, box_size in iter_file_boxes(file, size):
        if box_type == b"moov":
            seen_moov = True
        elif box_type == b"moof":
            moof_open = True
        elif box_type == b"mdat" and moof_open and seen_moov:
            moof_open = False
            end = offset + box_size
    return end


def probe_duration(path: Path) -> float:
    """Return the video duration of a recording by reading its packets (no decoding)."""
    first: int | None = None
    last_end: int | None = None
    with av.open(str(path), format="mp4") as container:
        if not container.streams.video:
            return 0.0
        stream = container.streams.video[0]
        time_base = stream.time_base
        try:
            for packet in container.demux(stream):
                if packet.dts is None:
                    continue
                if first is None:
                    first = packet.dts
                last_end = packet.dts + (packet.duration or 0)
        except av.error.FFmpegError:
            pass  # a damaged tail: what was read so far counts
    if first is None or last_end is None or time_base is None:
        return 0.0
    return float((last_end - first) * time_base)


def recover_part(layout: StorageLayout, camera_id: str, part: Path) -> Segment | None:
    """Make a leftover `.mp4.part` playable and rename it to `.mp4` (blocking).

    The file is cut after its last complete fragment, its end time is written into its mtime
    like for any finished segment, and it is renamed. A file without a single complete fragment
    holds nothing playable and is deleted. Returns the recovered segment, or None.
    """
    try:
        size = part.stat().st_size
        with part.open("rb") as file:
            end = complete_fragments_end(file, size)
        if end == 0:
            _LOGGER.info("Deleting %s: nothing playable was written", part.name)
            part.unlink(missing_ok=True)
            return None
        if end < size:
            os.truncate(part, end)
        duration = probe_duration(part)
        if duration <= 0:
            _LOGGER.info("Deleting %s: no video in it", part.name)
            part.unlink(missing_ok=True)
            return None
        start = layout.start_from_name(part, end_hint=part.stat().st_mtime)
        if start is None:
            return None
        final = _free_final_name(layout.final_path(part))
        os.utime(part, (start + duration, start + duration))
        os.rename(part, final)
    except (OSError, av.error.FFmpegError) as err:
        _LOGGER.warning("Could not recover %s: %s", part.name, err)
        return None
    _LOGGER.info("Recovered %s (%.1f s, %d bytes cut)", final.name, duration, size - end)
    return Segment(camera_id, final, start, start + duration, end)


def _free_final_name(final: Path) -> Path:
    """Return `final`, or a `_N` variant of it if a finished file already has that name."""
    if not final.exists():
        return final
    match = _NAME_RE.match(final.name)
    stem = final.name[:8] if match else final.stem
    for number in range(1, _MAX_NAME_SUFFIX):
        candidate = final.with_name(f"{stem}_{number}{SEGMENT_SUFFIX}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(final)


def recover_parts(
    layout: StorageLayout, parts: Collection[Path], index: SegmentIndex | None = None
) -> list[Segment]:
    """Recover every leftover part file (blocking); add what was saved to `index`."""
    recovered: list[Segment] = []
    for part in parts:
        camera_id = part.parent.parent.name
        segment = recover_part(layout, camera_id, part)
        if segment is not None:
            recovered.append(segment)
            if index is not None:
                index.add(segment)
    return recovered


# ----- retention (blocking) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What to keep. Days <= 0 mean "no age limit"."""

    retention_days: float
    min_free_bytes: int
    max_size_bytes: int | None = None
    camera_days: Mapping[str, float] = field(default_factory=dict)

    def days_for(self, camera_id: str) -> float:
        """Return the retention in days for one camera (its override, or the hub's)."""
        return self.camera_days.get(camera_id, self.retention_days)


class RetentionPeer(Protocol):
    """Other files under the storage root weighed with the recordings: the event clips.

    When space must be freed (size cap, free-space floor) both kinds go oldest first, except
    that while the peer holds more than `share` of the stored bytes its own oldest files go
    first: a storm of saved clips can never take the room of the continuous recordings.
    """

    share: float

    def oldest_first(self) -> Sequence[Indexed]:
        """Return the finished files, oldest first."""

    def total_size(self) -> int:
        """Return their bytes."""

    def delete(self, item: Indexed) -> bool:
        """Delete one (blocking) and forget it; False if it could not be deleted."""


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one retention run did and saw."""

    deleted: tuple[Segment, ...]
    usage: DiskUsage
    storage_full: bool  # free space below the floor, and nothing left to delete
    deleted_peers: tuple[Indexed, ...] = ()  # event clips deleted to make room

    @property
    def freed_bytes(self) -> int:
        """Return the bytes of the deleted segments."""
        return sum(segment.size for segment in self.deleted)


def apply_retention(
    layout: StorageLayout,
    index: SegmentIndex,
    policy: RetentionPolicy,
    *,
    active: Collection[Path] = (),
    usage_fn: DiskUsageFn = disk_usage,
    now: float | None = None,
    peer: RetentionPeer | None = None,
) -> RetentionResult:
    """Delete what the policy no longer keeps, oldest first (blocking).

    Order: per-camera age, then the total size cap, then the free-space floor. `active` are
    the files being written; they are never deleted (they are not in the index either, this is
    a second guard). The size cap and the floor count `peer`'s files (event clips) too.
    """
    now = time.time() if now is None else now
    protected = {Path(path) for path in active}
    deleted: list[Segment] = []
    deleted_peers: list[Indexed] = []

    def delete(segment: Segment) -> bool:
        if segment.path in protected:
            return False
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass  # already gone (deleted by hand): forget it all the same
        except OSError as err:
            _LOGGER.warning("Could not delete %s: %s", layout.relative(segment.path), err)
            return False
        index.remove(segment)
        deleted.append(segment)
        _remove_empty_dirs(layout, segment.path.parent)
        return True

    for camera_id in index.cameras():
        days = policy.days_for(camera_id)
        if days <= 0:
            continue
        cutoff = now - days * 86400
        for segment in index.segments(camera_id):
            if segment.end >= cutoff:
                break
            delete(segment)

    def make_room(enough: Callable[[int], bool]) -> int:
        """Delete oldest first (see RetentionPeer) until `enough(bytes freed)`."""
        segments = index.oldest_first()
        others = list(peer.oldest_first()) if peer is not None else []
        segment_bytes = sum(segment.size for segment in segments)
        other_bytes = sum(item.size for item in others)
        freed = i = j = 0
        while not enough(freed) and (i < len(segments) or j < len(others)):
            over_share = peer is not None and other_bytes > peer.share * (
                segment_bytes + other_bytes
            )
            if j < len(others) and (
                i == len(segments) or over_share or others[j].start < segments[i].start
            ):
                item = others[j]
                j += 1
                assert peer is not None
                if peer.delete(item):
                    deleted_peers.append(item)
                    other_bytes -= item.size
                    freed += item.size
            else:
                segment = segments[i]
                i += 1
                if delete(segment):
                    segment_bytes -= segment.size
                    freed += segment.size
        return freed

    if policy.max_size_bytes is not None:
        limit = policy.max_size_bytes
        total = index.total_size() + (peer.total_size() if peer is not None else 0)
        if total > limit:
            make_room(lambda freed: total - freed <= limit)

    usage = usage_fn(layout.root)
    free = usage.free
    nothing_left = False
    if free < policy.min_free_bytes:
        # Count what each deletion frees instead of asking the disk again after each one:
        # fewer statvfs calls, and a test's injected usage stays meaningful.
        free += make_room(lambda freed: free + freed >= policy.min_free_bytes)
        nothing_left = free < policy.min_free_bytes
        usage = usage_fn(layout.root)
    if deleted:
        _LOGGER.debug(
            "Retention deleted %d segment(s), %d bytes",
            len(deleted),
            sum(segment.size for segment in deleted),
        )
    return RetentionResult(
        tuple(deleted),
        usage,
        nothing_left and usage.free < policy.min_free_bytes,
        tuple(deleted_peers),
    )


def _remove_empty_dirs(layout: StorageLayout, folder: Path) -> None:
    """Remove an emptied day folder (and camera folder), never the root itself."""
    root = layout.root
    for path in (folder, folder.parent):
        if path == root or not path.is_relative_to(root):
            return
        try:
            path.rmdir()
        except OSError:
            return  # not empty (or already gone): stop climbing
