"""Exports through Home Assistant: the `lightnvr.export` and `lightnvr.cancel_export` services.

An admin asks for a camera's time range; the export is written in a worker thread (one at a
time, the others wait their turn) into `<storage>/exports/` and the service answers at once
with its id and the media-source id the file will have. Progress comes as `lightnvr_export`
events (`status`: `progress` every 10 %, then `finished`, `cancelled` or `failed`). Exports are
listed under *Exports* in the Media panel, count toward the hub's size cap (they are never
deleted to make room: the recordings are) and are kept `EXPORT_RETENTION_DAYS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
import logging
from pathlib import Path
import re
import threading
import time
from typing import Any, Final

from homeassistant.auth.permissions.const import POLICY_CONTROL
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError, Unauthorized, UnknownUser
from homeassistant.helpers import config_validation as cv, entity_registry as er
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.util import dt as dt_util, slugify
from homeassistant.util.ulid import ulid_now
import voluptuous as vol

from .const import DOMAIN
from .recorder.export import (
    ExportCancelledError,
    ExportError,
    ExportResult,
    write_export,
    write_sidecar,
)
from .recorder.storage import Segment, SegmentIndex
from .views import loaded_entry

_LOGGER = logging.getLogger(__name__)

EXPORTS_DIR: Final = "exports"
SERVICE_EXPORT: Final = "export"
SERVICE_CANCEL_EXPORT: Final = "cancel_export"
EVENT_EXPORT: Final = "lightnvr_export"
# The longest range one export may cover, and the most source bytes it may copy: the file
# stays below 4 GiB, which FAT32 USB sticks and most upload forms take.
MAX_EXPORT_SECONDS: Final = 24 * 3600
MAX_EXPORT_BYTES: Final = 4 * 1024**3 - 64 * 1024**2
EXPORT_RETENTION_DAYS: Final = 30
PROGRESS_STEP: Final = 0.1
_NAME_MAX: Final = 80
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")

ATTR_START: Final = "start"
ATTR_END: Final = "end"
ATTR_NAME: Final = "name"
ATTR_EXPORT_ID: Final = "export_id"

EXPORT_SCHEMA: Final = vol.Schema(
    {
        vol.Required(ATTR_ENTITY_ID): cv.entity_id,
        vol.Required(ATTR_START): cv.datetime,
        vol.Required(ATTR_END): cv.datetime,
        vol.Optional(ATTR_NAME): vol.All(cv.string, vol.Length(min=1, max=_NAME_MAX)),
    }
)
CANCEL_SCHEMA: Final = vol.Schema({vol.Required(ATTR_EXPORT_ID): cv.string})


def export_file_name(name: str) -> str:
    """Return a safe file name (no folders, no dots) for an export called `name`."""
    if not any(char.isalnum() for char in name):
        return "export.mp4"
    safe = _SAFE_NAME.sub("-", slugify(name, separator="-")).strip("-")
    return (safe or "export")[:_NAME_MAX] + ".mp4"


@dataclass(slots=True)
class ExportJob:
    """One export asked for: where it goes and how far it got."""

    export_id: str
    camera_id: str
    entity_id: str
    start: float
    end: float
    target: Path
    stop: threading.Event = field(default_factory=threading.Event)
    reported: float = 0.0  # the last progress step announced


class ExportManager:
    """The hub's exports: the queue, the worker, the folder, retention."""

    def __init__(self, hass: HomeAssistant, storage_root: Path, index: SegmentIndex) -> None:
        """Keep exports under `storage_root`/exports; read recordings from `index`."""
        self._hass = hass
        self.root = storage_root / EXPORTS_DIR
        self._index = index
        self._jobs: dict[str, ExportJob] = {}
        self._turn = asyncio.Lock()  # one export at a time: each reads whole files
        self._bytes = 0

    def relative(self, path: Path) -> str:
        """Return an export's path relative to the storage root (its media-source id's)."""
        return f"{EXPORTS_DIR}/{path.name}"

    def total_size(self) -> int:
        """Return the bytes the exports hold (as of the last scan), for the size cap."""
        return self._bytes

    def list_exports(self) -> list[Path]:
        """Return the finished exports, newest first (blocking); refresh their total size."""
        try:
            files = [
                path
                for path in self.root.iterdir()
                if path.suffix == ".mp4" and path.is_file() and not path.is_symlink()
            ]
        except FileNotFoundError:
            files = []
        stats = {path: path.stat() for path in files}
        self._bytes = sum(stat.st_size for stat in stats.values())
        return sorted(files, key=lambda path: stats[path].st_mtime, reverse=True)

    def apply_retention(self, now: float) -> list[Path]:
        """Delete exports (and their sidecars) older than the retention (blocking)."""
        cutoff = now - EXPORT_RETENTION_DAYS * 86400
        deleted = []
        for path in self.list_exports():
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
                deleted.append(path)
        if deleted:
            self.list_exports()
        return deleted

    @callback
    def async_start(  # noqa: PLR0917 - the service's fields
        self,
        camera_id: str,
        entity_id: str,
        camera_name: str,
        start: float,
        end: float,
        name: str | None,
    ) -> ExportJob:
        """Check the request, queue the export and return its job (ServiceValidationError)."""
        if end <= start:
            raise _invalid("export_bad_range", "the end must come after the start")
        if end - start > MAX_EXPORT_SECONDS:
            raise _invalid(
                "export_too_long", f"at most {MAX_EXPORT_SECONDS // 3600} hours in one export"
            )
        segments = [s for s in self._index.segments(camera_id) if s.end > start and s.start < end]
        if not segments:
            raise _invalid("export_nothing", "nothing is recorded in this range")
        size = sum(segment.size for segment in segments)
        if size > MAX_EXPORT_BYTES:
            raise _invalid(
                "export_too_big",
                f"the range holds {size / 1024**3:.1f} GB, more than one export may "
                f"({MAX_EXPORT_BYTES / 1024**3:.1f} GB): export a shorter range",
            )
        local = dt_util.as_local(dt_util.utc_from_timestamp(segments[0].start))
        default = f"{camera_name} {local:%Y-%m-%d %H-%M-%S} {round((end - start) / 60)} min"
        job = ExportJob(
            export_id=ulid_now(),
            camera_id=camera_id,
            entity_id=entity_id,
            start=start,
            end=end,
            target=self.root / export_file_name(name or default),
        )
        self._jobs[job.export_id] = job
        self._hass.async_create_background_task(
            self._async_run(job), f"lightnvr export {job.export_id}"
        )
        return job

    @callback
    def async_cancel(self, export_id: str) -> bool:
        """Stop an export that is queued or running; False if there is none by that id."""
        job = self._jobs.get(export_id)
        if job is None:
            return False
        job.stop.set()
        return True

    @callback
    def async_cancel_all(self) -> None:
        """Stop every export (the hub is unloading)."""
        for job in self._jobs.values():
            job.stop.set()

    async def _async_run(self, job: ExportJob) -> None:
        try:
            async with self._turn:
                if job.stop.is_set():
                    raise ExportCancelledError
                segments = [
                    s
                    for s in self._index.segments(job.camera_id)
                    if s.end > job.start and s.start < job.end
                ]
                result = await self._hass.async_add_executor_job(self._write, job, segments)
        except ExportCancelledError:
            self._fire(job, "cancelled")
        except (ExportError, OSError, ValueError) as err:
            # PyAV raises OSError subclasses for unreadable files; ValueError for bad packets.
            _LOGGER.warning("Export of %s failed: %s", job.entity_id, err)
            self._fire(job, "failed", error=str(err))
        else:
            self._fire(
                job,
                "finished",
                media_content_id=f"media-source://{DOMAIN}/{self.relative(result.path)}",
                duration=result.duration,
                size=result.size,
                cuts=len(result.cuts),
                stopped_early=result.stopped_early,
                exported_start=dt_util.utc_from_timestamp(result.start).isoformat(),
                exported_end=dt_util.utc_from_timestamp(result.end).isoformat(),
            )
        finally:
            self._jobs.pop(job.export_id, None)

    def _current_path(self, segment: Segment) -> Path | None:
        """Return where a recording is now (the mover may have archived it meanwhile)."""
        for indexed in self._index.items(segment.camera_id, segment.day):
            if indexed.start == segment.start:
                return indexed.path
        return None

    def _write(self, job: ExportJob, segments: list[Any]) -> ExportResult:
        """Write the export and its sidecar (worker thread)."""
        self.root.mkdir(parents=True, exist_ok=True)
        result = write_export(
            segments,
            job.start,
            job.end,
            job.target,
            should_stop=job.stop.is_set,
            on_progress=lambda fraction: self._progress(job, fraction),
            locate=self._current_path,
        )
        write_sidecar(result, job.entity_id, (job.start, job.end))
        self.list_exports()
        return result

    def _progress(self, job: ExportJob, fraction: float) -> None:
        """Announce each 10 % reached (worker thread → event loop)."""
        step = int(fraction / PROGRESS_STEP + 1e-9) * PROGRESS_STEP
        if step > job.reported and step < 1.0:
            job.reported = step
            self._hass.loop.call_soon_threadsafe(
                self._fire, job, "progress", {"percent": round(step * 100)}
            )

    @callback
    def _fire(
        self, job: ExportJob, status: str, extra: dict[str, Any] | None = None, **data: Any
    ) -> None:
        self._hass.bus.async_fire(
            EVENT_EXPORT,
            {
                ATTR_EXPORT_ID: job.export_id,
                ATTR_ENTITY_ID: job.entity_id,
                "status": status,
                **(extra or {}),
                **data,
            },
        )


def _invalid(key: str, error: str) -> ServiceValidationError:
    return ServiceValidationError(
        error,
        translation_domain=DOMAIN,
        translation_key="export_refused",
        translation_placeholders={"error": error, "reason": key},
    )


def _epoch(moment: datetime) -> float:
    """Return epoch seconds of a service's datetime (no zone: Home Assistant's)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt_util.get_default_time_zone())
    return moment.timestamp()


@callback
def async_register_export_services(hass: HomeAssistant) -> None:
    """Register the admin-only export services (once per HA run)."""

    def manager_and_camera(call: ServiceCall) -> tuple[ExportManager, str, str]:
        entry = loaded_entry(hass)
        if entry is None or entry.runtime_data.exports is None:
            raise ServiceValidationError(
                "LightNVR is not loaded",
                translation_domain=DOMAIN,
                translation_key="export_refused",
                translation_placeholders={"error": "LightNVR is not loaded", "reason": ""},
            )
        entity_id: str = call.data[ATTR_ENTITY_ID]
        registered = er.async_get(hass).async_get(entity_id)
        camera_id = (registered.unique_id or "").removesuffix("_camera") if registered else ""
        if (
            registered is None
            or registered.platform != DOMAIN
            or registered.domain != "camera"
            or camera_id not in entry.runtime_data.cameras
        ):
            raise _invalid("export_not_camera", f"{entity_id} is not a LightNVR camera")
        return entry.runtime_data.exports, camera_id, entity_id

    async def export(call: ServiceCall) -> ServiceResponse:
        manager, camera_id, entity_id = manager_and_camera(call)
        state = hass.states.get(entity_id)
        name = state.name if state is not None else entity_id
        job = manager.async_start(
            camera_id,
            entity_id,
            name,
            _epoch(call.data[ATTR_START]),
            _epoch(call.data[ATTR_END]),
            call.data.get(ATTR_NAME),
        )
        return {
            ATTR_EXPORT_ID: job.export_id,
            "media_content_id": f"media-source://{DOMAIN}/{manager.relative(job.target)}",
        }

    async def cancel(call: ServiceCall) -> ServiceResponse:
        entry = loaded_entry(hass)
        exports = entry.runtime_data.exports if entry is not None else None
        if exports is None or not exports.async_cancel(call.data[ATTR_EXPORT_ID]):
            raise _invalid("export_unknown", "no export is running with this id")
        return None

    hass.services.async_register(
        DOMAIN,
        SERVICE_EXPORT,
        _admin_only(hass, export),
        EXPORT_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN, SERVICE_CANCEL_EXPORT, _admin_only(hass, cancel), CANCEL_SCHEMA
    )


def _admin_only(
    hass: HomeAssistant, handler: Callable[[ServiceCall], Awaitable[ServiceResponse]]
) -> Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]:
    """Refuse a call by a user who is not an admin (automations and scripts run as the system).

    HA's admin-service helper cannot answer with a response; this does the same check.
    """

    async def checked(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id:
            user = await hass.auth.async_get_user(call.context.user_id)
            if user is None:
                raise UnknownUser(context=call.context, permission=POLICY_CONTROL)
            if not user.is_admin:
                raise Unauthorized(context=call.context, permission=POLICY_CONTROL)
        return await handler(call)

    return checked


async def async_track_export_retention(
    hass: HomeAssistant, manager: ExportManager
) -> Callable[[], None]:
    """Apply export retention now and hourly; return the function stopping the timer."""

    async def run(_now: Any = None) -> None:
        deleted = await hass.async_add_executor_job(manager.apply_retention, time.time())
        if deleted:
            _LOGGER.debug("Export retention deleted %d export(s)", len(deleted))

    await run()
    return async_track_time_interval(hass, run, timedelta(hours=1))
