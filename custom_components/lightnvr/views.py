"""HTTP views under /api/lightnvr/…: recordings served by HA's own web server, behind HA auth.

Every view requires authentication; media players that cannot send a header get a URL signed
with `async_sign_path`, which HA's auth middleware accepts for a limited time. Paths from the
URL are resolved strictly inside the storage root (no traversal, no symlink escape) off the
event loop; anything else is a 404 that says nothing about what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
import logging
from pathlib import Path

from aiohttp import web
from homeassistant.components.http import HomeAssistantView
from homeassistant.core import HomeAssistant, callback

from .const import DOMAIN
from .recorder.storage import UnsafePathError
from .runtime import LightNvrConfigEntry

_LOGGER = logging.getLogger(__name__)

RECORDINGS_URL = "/api/lightnvr/recordings"


@callback
def async_register_views(hass: HomeAssistant) -> None:
    """Register the views (once per HA run; they find the loaded hub per request)."""
    hass.http.register_view(RecordingView(hass))


@callback
def loaded_entry(hass: HomeAssistant) -> LightNvrConfigEntry | None:
    """Return the loaded LightNVR hub entry, if any."""
    entries: list[LightNvrConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
    return entries[0] if entries else None


def recording_url(relative: str) -> str:
    """Return the (unsigned) URL of a recording from its path relative to the storage root."""
    return f"{RECORDINGS_URL}/{relative}"


def _existing_file(resolve: Callable[[str], Path], relative: str) -> Path | None:
    """Resolve and check a recording path (blocking: file system calls)."""
    try:
        path = resolve(relative)
    except UnsafePathError:
        return None
    if path.suffix != ".mp4" or not path.is_file():
        return None
    return path


async def existing_recording(
    hass: HomeAssistant, entry: LightNvrConfigEntry, relative: str
) -> Path | None:
    """Return the file of a finished recording, or None for anything else (off the loop)."""
    return await hass.async_add_executor_job(
        _existing_file, entry.runtime_data.recorder.resolve, relative
    )


class StoredFileView(HomeAssistantView):
    """Serve one finished file of the storage root that `find` accepts (Range supported)."""

    requires_auth = True
    content_type: str
    kind: str  # for logs

    def __init__(self, hass: HomeAssistant) -> None:
        """Keep hass to find the hub per request."""
        self.hass = hass

    async def find(self, entry: LightNvrConfigEntry, relative: str) -> Path | None:
        """Return the file to serve, or None for anything else (off the event loop)."""
        raise NotImplementedError

    async def get(self, request: web.Request, relative: str) -> web.StreamResponse:
        """Return the file (aiohttp answers Range requests with 206 by itself)."""
        entry = loaded_entry(self.hass)
        if entry is None:
            raise web.HTTPNotFound
        path = await self.find(entry, relative)
        if path is None:
            _LOGGER.debug("Refused %s request for %r", self.kind, relative)
            return web.Response(status=HTTPStatus.NOT_FOUND)
        return web.FileResponse(
            path,
            headers={
                "Content-Type": self.content_type,
                # A finished file never changes; only this user's browser may keep it.
                "Cache-Control": "private, max-age=3600",
            },
        )


class RecordingView(StoredFileView):
    """Serve one finished recording file, with HTTP Range support for seeking."""

    url = RECORDINGS_URL + "/{relative:.+}"
    name = "api:lightnvr:recording"
    content_type = "video/mp4"
    kind = "recording"

    async def find(self, entry: LightNvrConfigEntry, relative: str) -> Path | None:
        """Return a finished recording."""
        return await existing_recording(self.hass, entry, relative)
