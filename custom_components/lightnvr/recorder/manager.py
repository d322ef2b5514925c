"""RecorderManager: every camera's segmenter, the segment index, retention and their state.

The integration owns one manager per hub entry. It never opens a camera: each segmenter is a
sink of the camera's one muxer (`media.fragments`). Blocking work (scans, recovery, deletes,
joins) runs in the executor; the muxer threads report back through `call_soon_threadsafe`, so
every listener registered here is called in the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
import logging
from pathlib import Path

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import dt as dt_util

from ..const import DOMAIN
from ..media.consumer import PacketSource
from ..media.fragments import CameraFragments
from ..models import CameraConfig, HubOptions
from .archive import ArchivePass, ArchiveSettings, ArchiveTier, ArchiveUnavailableError
from .lifecycle import async_open_store
from .segmenter import (
    DEFAULT_FRAGMENT_SECONDS,
    DEFAULT_SEGMENT_SECONDS,
    PAUSE_STORAGE_FULL,
    PAUSE_WRITE_ERROR,
    Segmenter,
    SegmenterState,
)
from .storage import (
    DiskUsage,
    DiskUsageFn,
    RetentionPeer,
    RetentionPolicy,
    RetentionResult,
    Segment,
    SegmentIndex,
    StorageLayout,
    apply_retention,
    disk_usage,
    recover_parts,
    resolve_inside,
    scan_storage,
)

_LOGGER = logging.getLogger(__name__)

ISSUE_STORAGE_FULL = "storage_full"
ISSUE_ARCHIVE_UNAVAILABLE = "archive_unavailable"
ARCHIVE_STOP_WAIT = 15.0  # seconds
DEFAULT_RETENTION_INTERVAL = timedelta(minutes=1)
_GB = 1_000_000_000  # the options speak of GB, as disks are sold
# Recording resumes only once the free space is this much above the floor, so that a disk at
# the edge does not flip between paused and recording at every retention run.
_RESUME_MARGIN_MAX = 256 * 1024 * 1024
_RESUME_MARGIN_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """What the hub's storage sensors show."""

    path: Path
    used_bytes: int  # by recordings in the main folder: finished plus being written
    free_bytes: int | None  # on the file system (None before the first check)
    total_bytes: int | None
    min_free_bytes: int
    oldest_recording: datetime | None
    segments: int
    storage_full: bool  # recording is paused for lack of space
    last_check: datetime | None  # when retention last ran
    archive_path: Path | None = None  # the archive tier's folder, if one is set
    archive_used_bytes: int = 0  # by archived recordings
    archive_problem: str | None = None  # why the archive cannot take files now (a reason)


def _format_gb(size: int) -> str:
    return f"{size / _GB:.1f} GB"


class RecorderManager:
    """Records the cameras of one LightNVR hub and keeps their storage in bounds."""

    def __init__(
        self,
        hass: HomeAssistant,
        options: HubOptions,
        *,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
        max_size_gb: float | None = None,
        retention_interval: timedelta = DEFAULT_RETENTION_INTERVAL,
        usage_fn: DiskUsageFn = disk_usage,
        tz: tzinfo | None = None,
    ) -> None:
        """Prepare a manager; nothing is touched on disk before `async_start`.

        `usage_fn` is the one place free space is measured (tests inject a full disk there);
        `tz` defaults to Home Assistant's time zone (day folders and file names are local).
        """
        self._hass = hass
        self._options = options
        self._segment_seconds = segment_seconds
        self._fragment_seconds = fragment_seconds
        self._max_size_bytes = int(max_size_gb * _GB) if max_size_gb else None
        self._retention_interval = retention_interval
        self._usage_fn = usage_fn
        self.layout = StorageLayout(options.storage_path, tz or dt_util.get_default_time_zone())
        self.index = SegmentIndex()
        # Event clips, weighed with the recordings by the size cap and the free-space floor.
        self.retention_peer: RetentionPeer | None = None
        # Bytes of the exports, counted by the size cap (never deleted by it).
        self.reserved_bytes: Callable[[], int] | None = None

        self._segmenters: dict[str, Segmenter] = {}
        self._camera_days: dict[str, float] = {}
        self._started = False
        self._cancel_timer: CALLBACK_TYPE | None = None
        self._retention_lock = asyncio.Lock()
        self._retention_tasks: set[asyncio.Task[RetentionResult | None]] = set()
        self._notify_pending = False

        self._listeners: list[Callable[[], None]] = []
        self._segment_listeners: list[Callable[[Segment], None]] = []

        self._usage: DiskUsage | None = None
        self._last_check: datetime | None = None
        self._storage_full = False

        # The archive tier (a second folder, typically a NAS), when the options set one.
        settings = ArchiveSettings.from_options(
            options.archive_path,
            after_days=options.archive_after_days,
            at_percent=options.archive_at_percent,
            max_mbps=options.archive_max_mbps,
            retention_days=options.archive_retention_days,
            max_gb=options.archive_max_gb,
        )
        self.archive = (
            ArchiveTier(settings, self.layout, usage_fn=usage_fn) if settings is not None else None
        )
        self._archive_task: asyncio.Task[None] | None = None
        self._archive_problem: ArchiveUnavailableError | None = None
        self.last_archive_pass: ArchivePass | None = None

    # ----- lifecycle ------------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Recover files left by a crash, index the storage, start retention and recording."""
        self._cancel_timer = await async_open_store(
            self._hass,
            what="recording(s)",
            load=self._load,
            opened=self._opened,
            retention=self._async_housekeeping,
            interval=self._retention_interval,
        )
        for segmenter in self._segmenters.values():
            segmenter.start()

    def _opened(self) -> None:
        self._started = True

    def _load(self) -> int:
        """Scan the storage root and recover leftover part files (blocking)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        found = scan_storage(self.layout)
        for segment in found.segments:
            self.index.add(segment)
        # The archive is scanned by the mover's first pass, in the background: a share that
        # hangs (a dead NFS server) must not hold up Home Assistant's start.
        return len(recover_parts(self.layout, found.parts, self.index))

    async def _async_housekeeping(self) -> None:
        """Retention in the main folder, then (in the background) the archive's moves."""
        await self.async_run_retention()
        if self._started:
            self.async_start_archive_pass()

    async def async_stop(self) -> None:
        """Finish every segment being written and join every thread."""
        self._started = False
        if self._cancel_timer is not None:
            self._cancel_timer()
            self._cancel_timer = None
        if self.archive is not None:
            self.archive.stop_event.set()  # a copy in progress stops; its original stays
        if self._archive_task is not None:
            # A copy stops within a chunk; a share that hangs must not hold up the stop.
            _done, pending = await asyncio.wait({self._archive_task}, timeout=ARCHIVE_STOP_WAIT)
            if pending:
                _LOGGER.warning("The archive mover did not stop in time (is the share hanging?)")
        segmenters = list(self._segmenters.values())
        self._segmenters.clear()
        await asyncio.gather(
            *(self._hass.async_add_executor_job(segmenter.stop) for segmenter in segmenters)
        )
        if self._retention_tasks:  # started after a write error: let them end
            await asyncio.gather(*self._retention_tasks, return_exceptions=True)
        async with self._retention_lock:  # let a running retention pass end
            pass
        ir.async_delete_issue(self._hass, DOMAIN, ISSUE_STORAGE_FULL)
        ir.async_delete_issue(self._hass, DOMAIN, ISSUE_ARCHIVE_UNAVAILABLE)

    # ----- cameras --------------------------------------------------------------------------------

    async def async_add_camera(
        self,
        camera: CameraConfig,
        hub: CameraFragments | PacketSource,
        *,
        retention_days: float | None = None,
    ) -> None:
        """Record a camera from its muxer (recording starts if `camera.record` is set).

        `retention_days` overrides the hub's retention for this camera.
        """
        camera_id = camera.camera_id
        if camera_id in self._segmenters:
            await self.async_remove_camera(camera_id)
        self.layout.camera_dir(camera_id)  # refuses an id that is no safe folder name
        if retention_days is not None:
            self._camera_days[camera_id] = retention_days
        segmenter = Segmenter(
            camera_id,
            hub,
            self.layout,
            segment_seconds=self._segment_seconds,
            fragment_seconds=self._fragment_seconds,
            enabled=camera.record,
            on_segment=self._on_segment,
            on_state=self._on_state,
        )
        if self._storage_full:
            segmenter.pause(PAUSE_STORAGE_FULL)
        self._segmenters[camera_id] = segmenter
        if self._started:
            segmenter.start()
        self._async_notify()

    async def async_remove_camera(self, camera_id: str) -> None:
        """Stop recording a camera (its files stay, and retention keeps applying to them)."""
        segmenter = self._segmenters.pop(camera_id, None)
        if segmenter is not None:
            await self._hass.async_add_executor_job(segmenter.stop)
            self._async_notify()

    @callback
    def set_recording(self, camera_id: str, on: bool) -> None:
        """Turn a camera's recording on or off (its `switch.<camera>_recording`)."""
        segmenter = self._segmenters.get(camera_id)
        if segmenter is None:
            raise KeyError(camera_id)
        segmenter.set_enabled(on)

    @callback
    def set_retention_days(self, camera_id: str, days: float | None) -> None:
        """Override (or with None, stop overriding) a camera's retention in days."""
        if days is None:
            self._camera_days.pop(camera_id, None)
        else:
            self._camera_days[camera_id] = days

    @property
    def camera_ids(self) -> list[str]:
        """Return the cameras being recorded (or ready to be)."""
        return list(self._segmenters)

    # ----- state for entities ---------------------------------------------------------------------

    def camera_state(self, camera_id: str) -> SegmenterState | None:
        """Return a camera's recorder state (recording, paused and why, counters)."""
        segmenter = self._segmenters.get(camera_id)
        return segmenter.state() if segmenter is not None else None

    def is_recording_enabled(self, camera_id: str) -> bool:
        """Return the switch state of a camera."""
        segmenter = self._segmenters.get(camera_id)
        return segmenter is not None and segmenter.enabled

    def last_segment_time(self, camera_id: str) -> datetime | None:
        """Return when the newest finished segment of a camera ends."""
        segmenter = self._segmenters.get(camera_id)
        end = segmenter.state().last_segment_end if segmenter is not None else None
        if end is None:
            newest = self.index.newest(camera_id)
            end = newest.end if newest is not None else None
        return datetime.fromtimestamp(end, UTC) if end is not None else None

    def oldest_recording(self) -> datetime | None:
        """Return the start of the oldest recording kept."""
        oldest = self.index.oldest()
        return oldest.start_time if oldest is not None else None

    @property
    def storage_full(self) -> bool:
        """Return True while recording is paused for lack of space."""
        return self._storage_full

    def storage_status(self) -> StorageStatus:
        """Return the numbers behind the hub's storage sensors."""
        writing = sum(segmenter.state().bytes_written for segmenter in self._segmenters.values())
        usage = self._usage
        return StorageStatus(
            path=self.layout.root,
            used_bytes=self.index.local.total_size() + writing,
            free_bytes=usage.free if usage is not None else None,
            total_bytes=usage.total if usage is not None else None,
            min_free_bytes=self._min_free_bytes,
            oldest_recording=self.oldest_recording(),
            segments=len(self.index),
            storage_full=self._storage_full,
            last_check=self._last_check,
            archive_path=self.archive.layout.root if self.archive is not None else None,
            archive_used_bytes=self.index.archive.total_size(),
            archive_problem=problem.reason if (problem := self._archive_problem) else None,
        )

    def resolve(self, relative: str) -> Path:
        """Return the real path of a recording from a relative path (raises UnsafePathError).

        Both tiers share one layout, so a recording keeps its relative path when it moves to
        the archive: the main folder's file if it is there, else the archive's.
        Blocking (it resolves symlinks on disk): call it in an executor.
        """
        local = resolve_inside(self.layout.root, relative)
        if self.archive is None or self.index.get(local) is not None or local.exists():
            return local
        archived = resolve_inside(self.archive.layout.root, relative)
        return archived if self.index.get(archived) is not None else local

    def relative(self, segment: Segment) -> str:
        """Return a recording's relative path (its Media panel id and URL part), either tier."""
        if segment.archived and self.archive is not None:
            return self.archive.layout.relative(segment.path)
        return self.layout.relative(segment.path)

    # ----- listeners ------------------------------------------------------------------------------

    @callback
    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` in the event loop on any state change; return a remover."""
        return _add(self._listeners, listener)

    @callback
    def add_segment_listener(self, listener: Callable[[Segment], None]) -> Callable[[], None]:
        """Call `listener(segment)` in the event loop for every finished segment."""
        return _add(self._segment_listeners, listener)

    def _on_segment(self, segment: Segment) -> None:
        """Handle a finished segment (recorder thread): index it, tell the loop."""
        self.index.add(segment)
        self._call_in_loop(self._async_segment_finished, segment)

    def _on_state(self) -> None:
        """Handle a segmenter state change (any thread)."""
        if self._notify_pending:
            return
        self._notify_pending = True
        self._call_in_loop(self._async_state_changed)

    def _call_in_loop(self, func: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: HA is gone, nobody listens
            self._hass.loop.call_soon_threadsafe(func, *args)

    @callback
    def _async_segment_finished(self, segment: Segment) -> None:
        for listener in list(self._segment_listeners):
            try:
                listener(segment)
            except Exception:
                _LOGGER.exception("Error in a segment listener")
        self._async_notify()

    @callback
    def _async_state_changed(self) -> None:
        self._notify_pending = False
        if self._started and any(
            segmenter.state().pause_reason == PAUSE_WRITE_ERROR
            for segmenter in self._segmenters.values()
        ):
            # A write failed (most likely the disk filled up between two runs): make room now.
            task = self._hass.async_create_task(self.async_run_retention(), eager_start=False)
            self._retention_tasks.add(task)
            task.add_done_callback(self._retention_tasks.discard)
        self._async_notify()

    @callback
    def _async_notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                _LOGGER.exception("Error in a recorder listener")

    # ----- retention ------------------------------------------------------------------------------

    @property
    def _min_free_bytes(self) -> int:
        return int(self._options.min_free_gb * _GB)

    def _policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            retention_days=self._options.retention_days,
            min_free_bytes=self._min_free_bytes,
            max_size_bytes=self._max_size_bytes,
            camera_days=dict(self._camera_days),
            reserved_bytes=self.reserved_bytes() if self.reserved_bytes is not None else 0,
        )

    async def async_run_retention(self) -> RetentionResult | None:
        """Apply retention now (off the loop); None if one is running or the manager is not."""
        if self._retention_lock.locked() or not self._started:
            return None
        async with self._retention_lock:
            policy = self._policy()
            segmenters = list(self._segmenters.values())
            peer = self.retention_peer

            def active() -> list[Path]:
                return [path for s in segmenters if (path := s.active_path) is not None]

            def run() -> RetentionResult:
                return apply_retention(
                    self.layout,
                    self.index.local,
                    policy,
                    active=active(),
                    usage_fn=self._usage_fn,
                    peer=peer,
                )

            result = await self._hass.async_add_executor_job(run)
        self._usage = result.usage
        self._last_check = dt_util.utcnow()
        if result.deleted or result.deleted_peers:
            _LOGGER.debug(
                "Retention deleted %d segment(s) (%s) and %d event clip(s)",
                len(result.deleted),
                _format_gb(result.freed_bytes),
                len(result.deleted_peers),
            )
        self._apply_storage_state(result, policy.min_free_bytes)
        self._async_notify()
        return result

    # ----- archive tier ---------------------------------------------------------------------------

    @callback
    def async_start_archive_pass(self) -> asyncio.Task[None] | None:
        """Start a pass of the mover in the background, unless one runs; return its task."""
        if self.archive is None or not self._started:
            return None
        if self._archive_task is None or self._archive_task.done():
            self._archive_task = self._hass.async_create_background_task(
                self._async_archive_pass(), "LightNVR archive mover"
            )
        return self._archive_task

    async def _async_archive_pass(self) -> None:
        archive = self.archive
        assert archive is not None
        segmenters = list(self._segmenters.values())
        size_cap = self._max_size_bytes or (self._usage.total if self._usage is not None else 0)
        settings = archive.settings
        retention = RetentionPolicy(
            retention_days=settings.retention_days or self._options.retention_days,
            min_free_bytes=0,  # the archive's disk is watched by the mover, which pauses
            max_size_bytes=settings.max_size_bytes,
            # The archive's own retention replaces the cameras' when it is set.
            camera_days={} if settings.retention_days else dict(self._camera_days),
        )

        def active() -> list[Path]:
            return [path for s in segmenters if (path := s.active_path) is not None]

        result = await self._hass.async_add_executor_job(
            partial(archive.run_pass, self.index, active, size_cap=size_cap, retention=retention)
        )
        if not self._started:  # stopped meanwhile (an unload): no issue may outlive the hub
            return
        self.last_archive_pass = result
        if result.moved:
            _LOGGER.debug(
                "Archived %d recording(s), %s in %.1f s",
                len(result.moved),
                _format_gb(result.moved_bytes),
                result.seconds,
            )
        self._apply_archive_state(result.problem)
        if result.moved or result.deleted or result.scanned:
            self._async_notify()

    @callback
    def _apply_archive_state(self, problem: ArchiveUnavailableError | None) -> None:
        """Raise, update or clear the repair issue of an archive that cannot take files."""
        assert self.archive is not None
        previous, self._archive_problem = self._archive_problem, problem
        root = str(self.archive.layout.root)
        if problem is None:
            if previous is not None:
                _LOGGER.info("The archive %s is usable again: moving recordings resumes", root)
                ir.async_delete_issue(self._hass, DOMAIN, ISSUE_ARCHIVE_UNAVAILABLE)
            return
        if previous is None or previous.reason != problem.reason:
            _LOGGER.warning(
                "Recordings stay in %s for now: the archive cannot take them (%s)",
                self.layout.root,
                problem.detail,
            )
            ir.async_create_issue(
                self._hass,
                DOMAIN,
                ISSUE_ARCHIVE_UNAVAILABLE,
                is_fixable=False,
                is_persistent=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key=f"{ISSUE_ARCHIVE_UNAVAILABLE}_{problem.reason}",
                translation_placeholders={"path": root, "detail": problem.detail},
            )

    @property
    def archive_problem(self) -> ArchiveUnavailableError | None:
        """Return why the archive cannot take files now (None: it can, or there is none)."""
        return self._archive_problem

    @callback
    def _apply_storage_state(self, result: RetentionResult, min_free: int) -> None:
        free = result.usage.free
        margin = min(_RESUME_MARGIN_MAX, int(min_free * _RESUME_MARGIN_SHARE))
        if result.storage_full and not self._storage_full:
            self._storage_full = True
            _LOGGER.warning(
                "Recording paused: %s free on the disk of %s, less than the %s to keep free, "
                "and no recording left to delete",
                _format_gb(free),
                self.layout.root,
                _format_gb(min_free),
            )
            for segmenter in self._segmenters.values():
                segmenter.pause(PAUSE_STORAGE_FULL)
            ir.async_create_issue(
                self._hass,
                DOMAIN,
                ISSUE_STORAGE_FULL,
                is_fixable=False,
                is_persistent=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key=ISSUE_STORAGE_FULL,
                translation_placeholders={
                    "path": str(self.layout.root),
                    "free": _format_gb(free),
                    "minimum": _format_gb(min_free),
                },
            )
        elif self._storage_full and free >= min_free + margin:
            self._storage_full = False
            _LOGGER.info("Recording resumed: %s free on the disk", _format_gb(free))
            for segmenter in self._segmenters.values():
                segmenter.resume(PAUSE_STORAGE_FULL)
            ir.async_delete_issue(self._hass, DOMAIN, ISSUE_STORAGE_FULL)


def _add[T](listeners: list[T], listener: T) -> Callable[[], None]:
    listeners.append(listener)

    def _remove() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return _remove
