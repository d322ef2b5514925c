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

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, tzinfo
import logging
import os
from pathlib import Path, PurePosixPath
import shutil
import threading
import time
from typing import NamedTuple, Protocol

from .day_index import DayIndex, DayItems, Indexed, start_key
from .files import (
    PART_SUFFIX,
    VIDEO_SUFFIX,
    DayTree,
    TimedFile,
    UnsafePathError,
    complete_fragments_end,
    local_start,
    plausible_end,
    probe_duration,
    valid_camera_id,
)

_LOGGER = logging.getLogger(__name__)

SEGMENT_SUFFIX = VIDEO_SUFFIX

# The shared store's names that importers of this module have always found here.
__all__ = [
    "PART_SUFFIX",
    "SEGMENT_SUFFIX",
    "DayIndex",
    "DayItems",
    "DiskUsage",
    "DiskUsageFn",
    "Indexed",
    "RetentionPeer",
    "RetentionPolicy",
    "RetentionResult",
    "ScanResult",
    "Segment",
    "SegmentIndex",
    "StorageLayout",
    "UnsafePathError",
    "apply_retention",
    "complete_fragments_end",
    "disk_usage",
    "local_start",
    "probe_duration",
    "recover_part",
    "recover_parts",
    "resolve_inside",
    "scan_storage",
    "valid_camera_id",
]


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
class Segment(TimedFile):
    """One finished recording file."""

    camera_id: str
    path: Path
    start: float  # epoch seconds of the first frame
    end: float  # epoch seconds of the end of the last frame
    size: int  # bytes
    archived: bool = False  # in the archive tier (`archive.py`), not the main folder


class StorageLayout(DayTree):
    """Where segments live: `<root>/<camera_id>/<local day>/<HH-MM-SS>[_n].mp4`, and back.

    The naming rule (no label) and everything else is the shared day tree's (`files.py`).
    """

    def __init__(self, root: Path, tz: tzinfo) -> None:
        """Use `root` as the storage folder and `tz` for day folders and file names."""
        super().__init__(root, tz, labelled=False)


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


# ----- the index of recordings (the generic day index: day_index.py) ----------------------


class SegmentIndex:
    """Finished recordings per camera and day, oldest first, over both storage tiers.

    The main folder's files and the archive's are kept apart (`local`, `archive`: retention
    works per tier), and read together: the Media panel, playlists, the timeline and exports
    do not care where a file lies. A file moved to the archive is swapped in one step
    (`replace`), so a reader sees it in one tier or the other, never in both or neither.
    Thread-safe.
    """

    def __init__(self) -> None:
        """Create an empty index."""
        self._lock = threading.RLock()
        self.local: DayIndex[Segment] = DayIndex()
        self.archive: DayIndex[Segment] = DayIndex()

    def tier(self, archived: bool) -> DayIndex[Segment]:
        """Return the index of one tier."""
        return self.archive if archived else self.local

    def add(self, segment: Segment) -> None:
        """Add (or replace) a segment in its tier."""
        with self._lock:
            self.tier(segment.archived).add(segment)

    def remove(self, segment: Segment) -> bool:
        """Forget a segment; return False if it was not indexed."""
        with self._lock:
            return self.tier(segment.archived).remove(segment)

    def replace(self, old: Segment, new: Segment) -> bool:
        """Swap `old` for `new` (a move between tiers); False, and nothing added, if `old` is gone.

        `old` gone means retention deleted it meanwhile: its copy must not bring it back.
        """
        with self._lock:
            if not self.tier(old.archived).remove(old):
                return False
            self.tier(new.archived).add(new)
            return True

    def get(self, path: Path) -> Segment | None:
        """Return the segment stored at `path`, if indexed."""
        with self._lock:
            return self.local.get(path) or self.archive.get(path)

    def cameras(self) -> list[str]:
        """Return the cameras that have segments."""
        with self._lock:
            return sorted({*self.local.cameras(), *self.archive.cameras()})

    def days(self, camera_id: str) -> list[date]:
        """Return a camera's days with segments, oldest first."""
        with self._lock:
            return sorted({*self.local.days(camera_id), *self.archive.days(camera_id)})

    def items(self, camera_id: str, day: date | None = None) -> list[Segment]:
        """Return a camera's segments (of one day, or all), oldest first."""
        with self._lock:
            local = self.local.items(camera_id, day)
            archived = self.archive.items(camera_id, day)
        if not archived:
            return local
        # Archived files are mostly the older ones: two sorted runs, merged in linear time.
        return sorted(archived + local, key=start_key)

    segments = items

    def oldest_first(self) -> list[Segment]:
        """Return every segment of every camera, oldest first."""
        with self._lock:
            everything = self.archive.oldest_first() + self.local.oldest_first()
        everything.sort(key=start_key)
        return everything

    def oldest(self, camera_id: str | None = None) -> Segment | None:
        """Return the oldest segment (of one camera, or of all)."""
        with self._lock:
            firsts = [self.archive.oldest(camera_id), self.local.oldest(camera_id)]
        return min((s for s in firsts if s is not None), key=start_key, default=None)

    def newest(self, camera_id: str) -> Segment | None:
        """Return a camera's newest segment."""
        with self._lock:
            lasts = [self.archive.newest(camera_id), self.local.newest(camera_id)]
        return max((s for s in lasts if s is not None), key=start_key, default=None)

    def total_size(self, camera_id: str | None = None) -> int:
        """Return the bytes held by segments of both tiers (of one camera, or of all)."""
        with self._lock:
            return self.local.total_size(camera_id) + self.archive.total_size(camera_id)

    def __len__(self) -> int:
        """Return the number of segments."""
        with self._lock:
            return len(self.local) + len(self.archive)


# ----- scanning and recovery (blocking) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a start-up scan found."""

    segments: list[Segment]
    parts: list[Path]  # files left behind by a crash (or a kill) while being written


def scan_storage(layout: StorageLayout, *, archived: bool = False) -> ScanResult:
    """Walk the storage root (or the archive's) for segments and leftover parts (blocking).

    Symlinks are not followed and foreign files are ignored (see `DayTree.scan`), so retention
    can only ever delete files this module wrote, inside the root.
    """
    segments: list[Segment] = []
    parts: list[Path] = []
    for folder in layout.scan():
        parts.extend(folder.parts)
        for entry in folder.finished:
            path, stat = Path(entry.path), entry.stat()
            start = layout.start_from_name(path, end_hint=stat.st_mtime)  # mtime = end
            if start is not None:
                end = plausible_end(path, start, stat.st_mtime)
                segments.append(Segment(folder.camera_id, path, start, end, stat.st_size, archived))
    return ScanResult(segments, parts)


def recover_part(layout: StorageLayout, camera_id: str, part: Path) -> Segment | None:
    """Make a leftover `.mp4.part` playable and rename it to `.mp4` (blocking).

    See `DayTree.recover`: cut after the last complete fragment, mtime = end, renamed without
    overwriting; a file with nothing playable is deleted. Returns the recovered segment, or None.
    """
    saved = layout.recover(part)
    if saved is None:
        return None
    return Segment(camera_id, saved.path, saved.start, saved.end, saved.size)


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
    # Bytes under the root that count toward the size cap but are never deleted to make room
    # (exports: the user asked for them; the recordings give way instead).
    reserved_bytes: int = 0

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
    index: DayIndex[Segment],
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
        # Out of the index first: whoever sees the file gone (another thread) sees it forgotten.
        index.remove(segment)
        try:
            layout.delete(segment.path)  # already gone (deleted by hand): forgotten all the same
        except OSError as err:
            index.add(segment)
            _LOGGER.warning("Could not delete %s: %s", layout.relative(segment.path), err)
            return False
        deleted.append(segment)
        return True

    for camera_id in index.cameras():
        days = policy.days_for(camera_id)
        if days <= 0:
            continue
        cutoff = now - days * 86400
        for segment in index.items(camera_id):
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
        total = (
            index.total_size()
            + (peer.total_size() if peer is not None else 0)
            + policy.reserved_bytes
        )
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
