"""Media panel: LightNVR → camera → day → recordings, played through the recordings view."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
import logging
import math

from homeassistant.components.media_player import BrowseError, MediaClass
from homeassistant.components.media_source import (
    BrowseMediaSource,
    MediaSource,
    MediaSourceItem,
    PlayMedia,
    Unresolvable,
)
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from .const import DOMAIN
from .exports import EXPORTS_DIR
from .hls import live_playlist_path, vod_playlist_path
from .hls.limits import VOD_MAX_FILES
from .recorder.clips import EventClip
from .recorder.storage import Segment
from .runtime import LightNvrConfigEntry
from .views import existing_recording, loaded_entry, recording_url

_LOGGER = logging.getLogger(__name__)

MIME_TYPE = "video/mp4"


async def async_get_media_source(hass: HomeAssistant) -> MediaSource:
    """Return LightNVR's media source."""
    return LightNvrMediaSource(hass)


EVENTS = "events"  # identifiers of event clips start with this folder name
LIVE = "live"  # `live/<camera>`: the camera's live HLS playlist
EXPORTS = EXPORTS_DIR  # `exports/<file>.mp4`: the exports, in one folder
VOD = "vod"  # `vod/<camera>/<start>-<end>` (epoch seconds): recordings as one HLS playlist
HLS_MIME_TYPE = "application/vnd.apple.mpegurl"


def _playable(identifier: str, title: str) -> BrowseMediaSource:
    return BrowseMediaSource(
        domain=DOMAIN,
        identifier=identifier,
        media_class=MediaClass.VIDEO,
        media_content_type=HLS_MIME_TYPE,
        title=title,
        can_play=True,
        can_expand=False,
    )


def _day_playlists(camera_id: str, segments: list[Segment]) -> list[BrowseMediaSource]:
    """Return a whole-day item, then one per hour with recordings (each one HLS playlist).

    The whole day is offered only when one playlist may list all its files (short files or
    many reconnects make more): the hours always remain.
    """
    items = []
    if len(segments) <= VOD_MAX_FILES:
        items.append(
            _playable(
                f"{VOD}/{camera_id}/{int(segments[0].start)}-{math.ceil(segments[-1].end)}",
                "▶ Whole day",
            )
        )
    hours: dict[datetime, list[Segment]] = {}
    for segment in segments:
        local = dt_util.as_local(segment.start_time).replace(minute=0, second=0, microsecond=0)
        hours.setdefault(local, []).append(segment)
    for hour, parts in sorted(hours.items(), reverse=True):
        start = max(parts[0].start, hour.timestamp())
        end = min(math.ceil(parts[-1].end), int((hour + timedelta(hours=1)).timestamp()))
        items.append(_playable(f"{VOD}/{camera_id}/{int(start)}-{end}", f"▶ {hour:%H}:00 hour"))
    return items


def _directory(identifier: str, title: str) -> BrowseMediaSource:
    return BrowseMediaSource(
        domain=DOMAIN,
        identifier=identifier,
        media_class=MediaClass.DIRECTORY,
        media_content_type="",
        title=title,
        can_play=False,
        can_expand=True,
    )


def _clip_title(clip: EventClip) -> str:
    start = dt_util.as_local(clip.start_time)
    labels = ", ".join(clip.labels) or ("saved clip" if clip.manual else "event")
    confidence = f" ({clip.confidence:.0%})" if clip.confidence else ""
    return f"{start:%H:%M:%S} {labels}{confidence} – {clip.duration:.0f} s"


def _segment_title(segment: Segment) -> str:
    start = dt_util.as_local(segment.start_time)
    end = dt_util.as_local(segment.end_time)
    return f"{start:%H:%M:%S} – {end:%H:%M:%S}"


class LightNvrMediaSource(MediaSource):
    """Browse and play recordings. Identifiers: `<camera>`, `<camera>/<day>`, `<relative path>`."""

    name = "LightNVR"

    def __init__(self, hass: HomeAssistant) -> None:
        """Create the source."""
        super().__init__(DOMAIN)
        self.hass = hass

    def _entry(self) -> LightNvrConfigEntry:
        entry = loaded_entry(self.hass)
        if entry is None:
            raise BrowseError("LightNVR is not loaded")
        return entry

    async def async_resolve_media(self, item: MediaSourceItem) -> PlayMedia:
        """Return the recording's URL, or an HLS playlist's (HA signs it for the player)."""
        entry = loaded_entry(self.hass)
        if entry is None or not item.identifier:
            raise Unresolvable("LightNVR is not loaded")
        kind, _, rest = item.identifier.partition("/")
        if kind == LIVE and rest in entry.runtime_data.cameras:
            return PlayMedia(live_playlist_path(rest), HLS_MIME_TYPE)
        if kind == VOD:
            camera_id, _, span = rest.partition("/")
            start, _, end = span.partition("-")
            if not (start.isdigit() and end.isdigit()) or int(start) >= int(end):
                raise Unresolvable(f"Bad time range: {item.identifier}")
            return PlayMedia(
                vod_playlist_path(
                    camera_id,
                    datetime.fromtimestamp(int(start), UTC),
                    datetime.fromtimestamp(int(end), UTC),
                ),
                HLS_MIME_TYPE,
            )
        if await existing_recording(self.hass, entry, item.identifier) is None:
            raise Unresolvable(f"No such recording: {item.identifier}")
        return PlayMedia(recording_url(item.identifier), MIME_TYPE)

    async def async_browse_media(self, item: MediaSourceItem) -> BrowseMediaSource:
        """Browse the tree."""
        entry = self._entry()
        identifier = item.identifier or ""
        parts = identifier.split("/") if identifier else []
        if not parts:
            return self._root(entry)
        if parts[0] == EVENTS:
            return self._events(entry, parts[1:])
        if parts == [EXPORTS]:
            return await self._exports(entry)
        if len(parts) == 1:
            return self._camera(entry, parts[0])
        if len(parts) == 2:
            try:
                day = date.fromisoformat(parts[1])
            except ValueError as err:
                raise BrowseError(f"Unknown day: {parts[1]}") from err
            return self._day(entry, parts[0], day)
        raise BrowseError(f"Unknown item: {identifier}")

    def _camera_title(self, entry: LightNvrConfigEntry, camera_id: str) -> str:
        camera = entry.runtime_data.cameras.get(camera_id)
        if camera is not None:
            return camera.name
        subentry = entry.subentries.get(camera_id)
        return subentry.title if subentry else f"Removed camera ({camera_id[-6:]})"

    def _root(self, entry: LightNvrConfigEntry) -> BrowseMediaSource:
        index = entry.runtime_data.recorder.index
        camera_ids = sorted(
            set(index.cameras()) | set(entry.runtime_data.cameras),
            key=lambda cid: self._camera_title(entry, cid).lower(),
        )
        return BrowseMediaSource(
            domain=DOMAIN,
            identifier=None,
            media_class=MediaClass.DIRECTORY,
            media_content_type="",
            title=self.name,
            can_play=False,
            can_expand=True,
            children_media_class=MediaClass.DIRECTORY,
            children=[
                _directory(EVENTS, "Events"),
                _directory(EXPORTS, "Exports"),
                *(_directory(cid, self._camera_title(entry, cid)) for cid in camera_ids),
            ],
        )

    def _camera(self, entry: LightNvrConfigEntry, camera_id: str) -> BrowseMediaSource:
        days = entry.runtime_data.recorder.index.days(camera_id)
        if not days and camera_id not in entry.runtime_data.cameras:
            raise BrowseError(f"Unknown camera: {camera_id}")
        children: list[BrowseMediaSource] = []
        if camera_id in entry.runtime_data.cameras:
            children.append(_playable(f"{LIVE}/{camera_id}", "● Live"))
        children += [  # newest day first
            _directory(f"{camera_id}/{day.isoformat()}", day.isoformat()) for day in reversed(days)
        ]
        node = _directory(camera_id, self._camera_title(entry, camera_id))
        node.children_media_class = MediaClass.DIRECTORY
        node.children = children
        return node

    def _day(self, entry: LightNvrConfigEntry, camera_id: str, day: date) -> BrowseMediaSource:
        recorder = entry.runtime_data.recorder
        segments = recorder.index.segments(camera_id, day)
        if not segments:
            raise BrowseError(f"No recordings of {camera_id} on {day}")
        files = [
            BrowseMediaSource(
                domain=DOMAIN,
                identifier=recorder.relative(segment),
                media_class=MediaClass.VIDEO,
                media_content_type=MIME_TYPE,
                title=_segment_title(segment),
                can_play=True,
                can_expand=False,
            )
            for segment in reversed(segments)  # newest first
        ]
        node = _directory(
            f"{camera_id}/{day.isoformat()}",
            f"{self._camera_title(entry, camera_id)} – {day.isoformat()}",
        )
        node.children_media_class = MediaClass.VIDEO
        node.children = [*_day_playlists(camera_id, segments), *files]
        return node

    async def _exports(self, entry: LightNvrConfigEntry) -> BrowseMediaSource:
        """List the exports (`lightnvr.export`), newest first."""
        exports = entry.runtime_data.exports
        files = await self.hass.async_add_executor_job(exports.list_exports) if exports else []
        node = _directory(EXPORTS, "Exports")
        node.children_media_class = MediaClass.VIDEO
        node.children = [
            BrowseMediaSource(
                domain=DOMAIN,
                identifier=f"{EXPORTS}/{path.name}",
                media_class=MediaClass.VIDEO,
                media_content_type=MIME_TYPE,
                title=path.stem,
                can_play=True,
                can_expand=False,
            )
            for path in files
        ]
        return node

    def _events(self, entry: LightNvrConfigEntry, parts: list[str]) -> BrowseMediaSource:
        """Events → camera → day → clips (newest first)."""
        clips = entry.runtime_data.clips
        if not parts:
            node = _directory(EVENTS, "Events")
            node.children_media_class = MediaClass.DIRECTORY
            node.children = [
                _directory(f"{EVENTS}/{camera_id}", self._camera_title(entry, camera_id))
                for camera_id in clips.cameras()
            ]
            return node
        camera_id = parts[0]
        title = f"Events – {self._camera_title(entry, camera_id)}"
        if len(parts) == 1:
            days = clips.days(camera_id)
            if not days:
                raise BrowseError(f"No events of {camera_id}")
            node = _directory(f"{EVENTS}/{camera_id}", title)
            node.children_media_class = MediaClass.DIRECTORY
            node.children = [
                _directory(f"{EVENTS}/{camera_id}/{day.isoformat()}", day.isoformat())
                for day in reversed(days)
            ]
            return node
        if len(parts) != 2:
            raise BrowseError(f"Unknown item: {'/'.join(parts)}")
        try:
            day = date.fromisoformat(parts[1])
        except ValueError as err:
            raise BrowseError(f"Unknown day: {parts[1]}") from err
        found = clips.clips(camera_id, day)
        if not found:
            raise BrowseError(f"No events of {camera_id} on {day}")
        node = _directory(f"{EVENTS}/{camera_id}/{day.isoformat()}", f"{title} – {day}")
        node.children_media_class = MediaClass.VIDEO
        node.children = [
            BrowseMediaSource(
                domain=DOMAIN,
                identifier=clips.relative(clip.path),
                media_class=MediaClass.VIDEO,
                media_content_type=MIME_TYPE,
                title=_clip_title(clip),
                can_play=True,
                can_expand=False,
            )
            for clip in reversed(found)
        ]
        return node
