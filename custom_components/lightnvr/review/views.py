"""The snapshot of an event clip over HTTP: the timeline's thumbnails.

`/api/lightnvr/snapshot/events/<camera>/<day>/<name>.jpg`, behind HA auth like the recordings
(the timeline hands out URLs signed with `async_sign_path`, so an `<img>` needs no header).
Only the snapshot of an indexed clip is served: the path is resolved strictly inside the
storage root off the event loop, and anything else is a 404 that says nothing about what
exists.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from ..recorder.clips import CLIP_SUFFIX, SNAPSHOT_SUFFIX, ClipManager
from ..recorder.storage import UnsafePathError
from ..runtime import LightNvrConfigEntry
from ..views import StoredFileView

_LOGGER = logging.getLogger(__name__)

SNAPSHOT_URL: Final = "/api/lightnvr/snapshot"


def snapshot_path(relative: str) -> str:
    """Return the (unsigned) URL path of a snapshot from its path under the storage root."""
    return f"{SNAPSHOT_URL}/{relative}"


def _existing_snapshot(clips: ClipManager, relative: str) -> Path | None:
    """Return the snapshot file of an indexed clip, or None for anything else (blocking)."""
    if not relative.endswith(SNAPSHOT_SUFFIX):
        return None
    try:
        path = clips.resolve(relative)
    except UnsafePathError:
        return None
    clip = clips.get(path.with_name(path.name.removesuffix(SNAPSHOT_SUFFIX) + CLIP_SUFFIX))
    if clip is None or clip.snapshot is None or Path(clip.snapshot) != path:
        return None
    return path if path.is_file() else None


class SnapshotView(StoredFileView):
    """Serve the snapshot (JPEG) of an event clip."""

    url = SNAPSHOT_URL + "/{relative:.+}"
    name = "api:lightnvr:snapshot"
    content_type = "image/jpeg"
    kind = "snapshot"

    async def find(self, entry: LightNvrConfigEntry, relative: str) -> Path | None:
        """Return the snapshot of an indexed clip."""
        return await self.hass.async_add_executor_job(
            _existing_snapshot, entry.runtime_data.clips, relative
        )
