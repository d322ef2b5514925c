"""The archive tier: finished recordings moved from the main folder to a second one (a NAS).

The archive has the main folder's layout (`<camera_id>/<local day>/<HH-MM-SS>.mp4`), so a
recording keeps its relative path, and its Media panel id and playlist URLs, when it moves.

A move never risks the only copy: the file is copied under a temporary name
(`….mp4.moving`), flushed to the disk, checked (same size, a complete fragmented MP4 to the
last byte), given the original's modification time (its end time, which the index reads back)
and renamed; only then does the index point at the copy, and only then is the original
deleted. A move cut short (a stop, the archive going away) leaves at most a `.moving` file,
deleted when the archive is next used; a crash between the rename and the delete leaves two
equal copies, and the start-up scan deletes the main folder's one. Only indexed files move,
and the files being written are never indexed.

The archive may go away at any time (an unmounted share, a read-only remount, a full disk):
moves stop and say why (`ArchiveUnavailableError.reason`), recording goes on in the main
folder, and the next pass tries again. An unmounted share often leaves an empty folder behind
it; writing there would fill the main disk, so the archive carries a marker file whose id the
main folder remembers, and a folder without the right marker is "not mounted".

Everything here is blocking file work for the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
import contextlib
from dataclasses import dataclass
import errno
import json
import logging
import os
from pathlib import Path
import threading
import time
import uuid

from .copying import (
    FileNotMovedError,
    MoveStopped,
    RateLimit,
    copy_range,
    fsync_dir,
    is_complete_mp4,
)
from .files import VIDEO_SUFFIX
from .storage import (
    DiskUsageFn,
    RetentionPolicy,
    RetentionResult,
    Segment,
    SegmentIndex,
    StorageLayout,
    apply_retention,
    disk_usage,
    scan_storage,
)

_LOGGER = logging.getLogger(__name__)

MOVING_SUFFIX = ".moving"  # a copy on its way into the archive
ARCHIVE_MARKER = ".lightnvr-archive"  # in the archive: its id
ARCHIVE_ID_FILE = ".lightnvr-archive-id"  # in the main folder: the archive it uses
# Copies flushed together (see `ArchiveTier._finish_copy`): at most this many bytes or files.
BATCH_BYTES = 256 * 1024 * 1024
BATCH_FILES = 64
_MB = 1_000_000
_GB = 1_000_000_000
# Moves pause when the archive's disk has less free than this (beyond the file to copy).
ARCHIVE_MIN_FREE_BYTES = 256 * 1024 * 1024

# Why the archive cannot be used (the repair issue's `reason`).
REASON_MISSING = "missing"
REASON_NOT_MOUNTED = "not_mounted"
REASON_READ_ONLY = "read_only"
REASON_FULL = "full"
REASON_ERROR = "error"

_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_GONE_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.EIO, errno.ENOTCONN}


class ArchiveUnavailableError(OSError):
    """The archive cannot take files now; `reason` is one of the REASON_ constants."""

    def __init__(self, reason: str, detail: str) -> None:
        """Say why (`reason`) and what was seen (`detail`, for the log and the issue)."""
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def unavailable(err: OSError, what: str) -> ArchiveUnavailableError:
    """Classify an OS error met in the archive."""
    if isinstance(err, ArchiveUnavailableError):
        return err
    if err.errno in _READ_ONLY_ERRNOS:
        reason = REASON_READ_ONLY
    elif err.errno in _FULL_ERRNOS:
        reason = REASON_FULL
    elif err.errno in _GONE_ERRNOS:
        reason = REASON_MISSING
    else:
        reason = REASON_ERROR
    return ArchiveUnavailableError(reason, f"{what}: {err.strerror or err}")


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """When recordings move to the archive, how fast, and how long the archive keeps them."""

    root: Path
    after_days: float = 0.0  # move recordings older than this (0: not by age)
    at_percent: float = 0.0  # move the oldest while the main folder is past this % (0: off)
    max_bytes_per_second: float | None = None  # None: as fast as the disks go
    retention_days: float = 0.0  # 0: the recordings' own retention (hub or camera)
    max_size_bytes: int | None = None  # None: no cap on the archive

    @classmethod
    def from_options(
        cls,
        root: Path | None,
        *,
        after_days: float,
        at_percent: float,
        max_mbps: float,
        retention_days: float,
        max_gb: float,
    ) -> ArchiveSettings | None:
        """Build from the hub options; None when no archive is set or no rule moves files."""
        if root is None or (after_days <= 0 and at_percent <= 0):
            return None
        return cls(
            root=Path(root),
            after_days=max(0.0, after_days),
            at_percent=max(0.0, at_percent),
            max_bytes_per_second=max_mbps * _MB if max_mbps > 0 else None,
            retention_days=max(0.0, retention_days),
            max_size_bytes=int(max_gb * _GB) if max_gb > 0 else None,
        )


@dataclass(slots=True)
class ArchivePass:
    """What one pass of the mover did."""

    moved: list[Segment]
    moved_bytes: int = 0
    seconds: float = 0.0
    deleted: tuple[Segment, ...] = ()  # by the archive's retention
    problem: ArchiveUnavailableError | None = None
    scanned: int | None = None  # files found by a first scan of the archive, if one ran


@dataclass(slots=True)
class _Copy:
    """A file copied under its temporary name, still to be flushed, checked and renamed."""

    segment: Segment
    relative: str
    target: Path
    moving: Path
    fd: int  # the copy, still open: flushed by `ArchiveTier._finish_copy`
    stat: os.stat_result  # of the original


class ArchiveTier:
    """The archive folder: check it, find its files, move files into it, apply its retention."""

    def __init__(
        self,
        settings: ArchiveSettings,
        local: StorageLayout,
        *,
        usage_fn: DiskUsageFn = disk_usage,
    ) -> None:
        """Use `settings.root` as the archive of the main folder `local`."""
        self.settings = settings
        self.local = local
        self.layout = StorageLayout(settings.root, local.tz)
        self._usage_fn = usage_fn
        self.stop_event = threading.Event()
        self.scanned = False  # the archive's files are in the index
        # What `check` saw: the share's device and marker. A pass may run for hours (a slow
        # link); every move checks they are still the same (see `check_mounted`).
        self._mounted: tuple[int, str] | None = None
        # Files that could not be moved (their own fault, not the archive's): warned once.
        self._skipped: set[Path] = set()

    # ----- is it there? ---------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ArchiveUnavailableError unless the archive is there, ours, and writable."""
        root = self.layout.root
        try:
            if not root.is_dir():
                raise ArchiveUnavailableError(REASON_MISSING, f"{root} is not a folder")
            ident = self._check_marker(root)
            self._mounted = (root.stat().st_dev, ident)
            probe = root / f".lightnvr-write-test-{uuid.uuid4().hex}"
            try:
                with probe.open("wb") as file:
                    file.write(b"ok")
            finally:
                probe.unlink(missing_ok=True)
        except OSError as err:
            raise unavailable(err, str(root)) from None
        self.check_space(0)

    def check_space(self, needed_bytes: int) -> None:
        """Raise ArchiveUnavailableError unless the archive's disk can take `needed_bytes`."""
        root = self.layout.root
        try:
            free = self._usage_fn(root).free
        except OSError as err:
            raise unavailable(err, str(root)) from None
        if free < needed_bytes + ARCHIVE_MIN_FREE_BYTES:
            raise ArchiveUnavailableError(REASON_FULL, f"{root} has {free / _GB:.1f} GB free")

    def check_mounted(self) -> None:
        """Raise ArchiveUnavailableError unless the share `check` saw is still mounted there.

        Cheap (a stat and a small read): done before every move and before its rename, so a
        share unmounted between two files is never written through its empty mount point.
        """
        root = self.layout.root
        if self._mounted is None:
            raise ArchiveUnavailableError(REASON_MISSING, f"{root} was not checked")
        device, ident = self._mounted
        try:
            same = (
                root.stat().st_dev == device
                and (root / ARCHIVE_MARKER).read_text(encoding="utf-8").strip() == ident
            )
        except OSError:
            same = False
        if not same:
            self._mounted = None
            raise ArchiveUnavailableError(
                REASON_NOT_MOUNTED, f"{root} is no longer the archive (is the share mounted?)"
            )

    def _check_marker(self, root: Path) -> str:
        """Make sure this is the archive the main folder used before (or adopt it if new).

        Returns the archive's id.
        """
        remembered = self.local.root / ARCHIVE_ID_FILE
        marker = root / ARCHIVE_MARKER
        found = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        known: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(remembered.read_text(encoding="utf-8"))
        if known.get("path") == str(root) and known.get("id"):
            if found != known["id"]:
                raise ArchiveUnavailableError(
                    REASON_NOT_MOUNTED,
                    f"{root} is not the archive used before (is the share mounted?)",
                )
            return found
        # A folder never used as this hub's archive (or a new archive path): adopt it.
        ident = found or uuid.uuid4().hex
        if found is None:
            marker.write_text(ident + "\n", encoding="utf-8")
        self.local.root.mkdir(parents=True, exist_ok=True)
        remembered.write_text(json.dumps({"path": str(root), "id": ident}), encoding="utf-8")
        return ident

    # ----- start-up scan --------------------------------------------------------------------------

    def scan_into(self, index: SegmentIndex) -> int:
        """Index the archive's files (blocking); return how many were found.

        Copies cut short (`.moving`) are deleted. A file present in both tiers is a move
        interrupted between its rename and its delete: the main folder's copy goes when the
        two are the same size (the archive's was checked before its rename).
        """
        found = scan_storage(self.layout, archived=True)
        for folder in self.layout.scan():
            for leftover in folder.path.glob(f"*{VIDEO_SUFFIX}{MOVING_SUFFIX}"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        for segment in found.segments:
            local_path = self.local.root / self.layout.relative(segment.path)
            local = index.get(local_path)
            if local is not None and local.size == segment.size:
                index.remove(local)
                with contextlib.suppress(OSError):
                    self.local.delete(local.path)
                _LOGGER.info(
                    "Finished an interrupted move of %s", self.layout.relative(segment.path)
                )
            index.add(segment)
        self.scanned = True
        return len(found.segments)

    # ----- moving ---------------------------------------------------------------------------------

    def due(
        self,
        index: SegmentIndex,
        active: Collection[Path],
        *,
        size_cap: int,
        now: float,
    ) -> list[Segment]:
        """Return the main folder's files to move now, oldest first.

        By age: older than `after_days`. By fill: the oldest, until the main folder's
        recordings are back under `at_percent` of `size_cap` (the hub's size cap, or the disk).
        """
        protected = {Path(path) for path in active}
        settings = self.settings
        local = [s for s in index.local.oldest_first() if s.path not in protected]
        chosen: dict[Path, Segment] = {}
        if settings.after_days > 0:
            cutoff = now - settings.after_days * 86400
            for segment in local:
                if segment.end >= cutoff:
                    break
                chosen[segment.path] = segment
        if settings.at_percent > 0 and size_cap > 0:
            limit = size_cap * settings.at_percent / 100
            used = index.local.total_size()
            for segment in local:
                if used <= limit:
                    break
                chosen[segment.path] = segment
                used -= segment.size
        return sorted(chosen.values(), key=lambda s: s.start)

    def move(self, segment: Segment, limit: RateLimit) -> Segment:
        """Copy one file into the archive, check it, rename it (blocking); return its new entry.

        Raises ArchiveUnavailableError when the archive fails (the original is untouched),
        MoveStopped when asked to stop, FileNotMovedError for a problem with this file alone.
        """
        started = self._start_copy(segment, limit)
        if isinstance(started, tuple):
            return started[1]
        archived = self._finish_copy(started)
        fsync_dir(archived.path.parent)
        return archived

    def _start_copy(self, segment: Segment, limit: RateLimit) -> _Copy | tuple[Segment, Segment]:
        """Copy a file under its temporary name, not flushed yet (see `_finish_copy`).

        Returns (original, archived entry) at once when a crash left the finished copy behind.
        """
        relative = self.local.relative(segment.path)
        self.check_mounted()
        try:
            source = os.open(segment.path, os.O_RDONLY)
        except OSError as err:  # the original is gone (retention, by hand): nothing to move
            raise FileNotMovedError(f"{relative}: {err.strerror or err}") from None
        moving: Path | None = None
        target_fd: int | None = None
        try:
            stat = os.fstat(source)
            folder = self._day_folder(segment.path)
            target = folder / segment.path.name
            if target.exists():
                if target.stat().st_size == stat.st_size and is_complete_mp4(target, stat.st_size):
                    return segment, self._archived(segment, target)  # copied before a crash
                # Another recording of the same name (a clock set back): never overwrite.
                target = self._free_name(folder, segment.path)
            moving = target.with_name(target.name + MOVING_SUFFIX)
            # A copy cut short on a share that then went read-only or away may be left.
            moving.unlink(missing_ok=True)
            target_fd = os.open(moving, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            copy_range(source, target_fd, stat.st_size, limit, self.stop_event)
        except (OSError, MoveStopped) as err:
            self._abandon(target_fd, moving)
            if isinstance(err, MoveStopped | FileNotMovedError):
                raise
            raise unavailable(err, relative) from None
        finally:
            os.close(source)
        return _Copy(segment, relative, target, moving, target_fd, stat)

    def _finish_copy(self, copy: _Copy) -> Segment:
        """Flush a copy to the archive's disk, check it, give it its name; return its entry.

        Flushing a batch of copies one after the other lets the disk write them all at once,
        where a flush after each copy would wait for each in turn.
        """
        try:
            try:
                os.fsync(copy.fd)  # on the archive's disk before the original may go
            finally:
                os.close(copy.fd)
            size = copy.stat.st_size
            if copy.moving.stat().st_size != size or not is_complete_mp4(copy.moving, size):
                raise FileNotMovedError(f"the copy of {copy.relative} does not match the original")
            # mtime = the recording's end, which the index reads back at start-up
            os.utime(copy.moving, ns=(copy.stat.st_atime_ns, copy.stat.st_mtime_ns))
            self.check_mounted()  # still the share we copied to
            os.rename(copy.moving, copy.target)
        except OSError as err:
            self._abandon(None, copy.moving)
            if isinstance(err, FileNotMovedError):
                raise
            raise unavailable(err, copy.relative) from None
        return self._archived(copy.segment, copy.target)

    @staticmethod
    def _abandon(fd: int | None, moving: Path | None) -> None:
        """Drop a copy that will not be finished (its original stays where it is)."""
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if moving is not None:
            with contextlib.suppress(OSError):
                moving.unlink(missing_ok=True)

    def _day_folder(self, original: Path) -> Path:
        """Create (one level at a time, never the archive root itself) the file's day folder."""
        day = self.layout.root / self.local.relative(original.parent)
        camera = day.parent
        if not camera.is_dir():
            camera.mkdir()  # the root must exist: an unmounted share has no root to write in
        day.mkdir(exist_ok=True)
        return day

    @staticmethod
    def _free_name(folder: Path, original: Path) -> Path:
        stem = original.name.removesuffix(VIDEO_SUFFIX)
        for number in range(1, 1000):
            candidate = folder / f"{stem}_{number}{VIDEO_SUFFIX}"
            if not candidate.exists():
                return candidate
        raise FileNotMovedError(f"no free name for {original.name} in the archive")

    @staticmethod
    def _archived(segment: Segment, target: Path) -> Segment:
        return Segment(
            segment.camera_id, target, segment.start, segment.end, segment.size, archived=True
        )

    def run_pass(
        self,
        index: SegmentIndex,
        active: Callable[[], Collection[Path]],
        *,
        size_cap: int,
        retention: RetentionPolicy,
        now: float | None = None,
    ) -> ArchivePass:
        """Move what is due, then apply the archive's retention (blocking).

        Stops at the first archive failure (reported in `problem`; the rest waits for the next
        pass) and at `stop_event`.
        """
        started = time.monotonic()
        now = time.time() if now is None else now
        result = ArchivePass(moved=[])
        try:
            self.check()
            if not self.scanned:
                result.scanned = self.scan_into(index)
            limit = RateLimit(self.settings.max_bytes_per_second, self.stop_event)
            batch: list[_Copy | tuple[Segment, Segment]] = []
            try:
                for segment in self.due(index, active(), size_cap=size_cap, now=now):
                    if self.stop_event.is_set():
                        break
                    pending = sum(item.segment.size for item in batch if isinstance(item, _Copy))
                    self.check_space(pending + segment.size)
                    try:
                        batch.append(self._start_copy(segment, limit))
                    except FileNotMovedError as err:  # this file alone: the others go on
                        self._skip(segment, err)
                        continue
                    if pending + segment.size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                        self._finish_batch(index, batch, result)
                        batch = []
                if not self.stop_event.is_set():
                    self._finish_batch(index, batch, result)
                    batch = []
            finally:
                for item in batch:  # stopped, or the archive failed: these stay where they are
                    if isinstance(item, _Copy):
                        self._abandon(item.fd, item.moving)
            if not self.stop_event.is_set():
                kept: RetentionResult = apply_retention(
                    self.layout, index.archive, retention, usage_fn=self._usage_fn, now=now
                )
                result.deleted = kept.deleted
        except ArchiveUnavailableError as err:
            result.problem = err
        except MoveStopped:
            pass
        except OSError as err:  # scanning or retention in the archive (a stale share, EIO)
            result.problem = unavailable(err, str(self.layout.root))
        result.seconds = time.monotonic() - started
        return result

    def _finish_batch(
        self, index: SegmentIndex, batch: list[_Copy | tuple[Segment, Segment]], result: ArchivePass
    ) -> None:
        """Flush, check and name a batch of copies; then point the index at them."""
        finished: list[tuple[Segment, Segment]] = []
        for position, item in enumerate(batch):
            if isinstance(item, tuple):  # the copy a crash left is already final
                finished.append(item)
                continue
            try:
                finished.append((item.segment, self._finish_copy(item)))
            except FileNotMovedError as err:
                self._skip(item.segment, err)
            except ArchiveUnavailableError:
                for later in batch[position + 1 :]:
                    if isinstance(later, _Copy):
                        self._abandon(later.fd, later.moving)
                batch.clear()
                raise
        batch.clear()
        for folder in {archived.path.parent for _original, archived in finished}:
            fsync_dir(folder)  # the renames are durable before any original goes
        for original, archived in finished:
            self._swap(index, original, archived)
            result.moved.append(archived)
            result.moved_bytes += archived.size

    def _skip(self, segment: Segment, err: Exception) -> None:
        """Leave one file in place; say so once (it is tried again at every pass)."""
        log = _LOGGER.debug if segment.path in self._skipped else _LOGGER.warning
        log("Not moving %s to the archive: %s", segment.path.name, err)
        self._skipped.add(segment.path)

    def _swap(self, index: SegmentIndex, original: Segment, archived: Segment) -> None:
        """Point the index at the archived copy, then delete the original."""
        if not index.replace(original, archived):
            # Retention deleted the original while it was copied: the copy goes too.
            with contextlib.suppress(OSError):
                self.layout.delete(archived.path)
            return
        try:
            self.local.delete(original.path)
        except OSError as err:  # two copies until the next start-up scan settles it
            _LOGGER.warning("Could not delete %s after archiving it: %s", original.path.name, err)
