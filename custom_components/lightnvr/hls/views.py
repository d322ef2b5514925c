"""HLS over Home Assistant's web server: live and recorded playlists, behind HA auth.

URLs (every view `requires_auth`; a player that cannot send a header uses HA-signed URLs)::

    /api/lightnvr/hls/<camera>/live.m3u8                 live playlist (sliding window)
    /api/lightnvr/hls/<camera>/live/init/<id>.mp4         its init sections
    /api/lightnvr/hls/<camera>/live/<sequence>.m4s        its media segments
    /api/lightnvr/hls/<camera>/live/<sequence>.<part>.m4s its LL-HLS parts (see `live_views`)
    /api/lightnvr/hls/<camera>/vod.m3u8?start=…&end=…     recorded playlist (ISO 8601 or epoch)
    /api/lightnvr/hls/<camera>/vod/<start>-<end>.m3u8     the same, epoch seconds in the path
    /api/lightnvr/hls/<camera>/vod/<day>/<file>.mp4       a recording, byte ranges on the
                                                          playlists' shared timeline

Players send no auth header for the URLs inside a playlist, so each is signed with
`async_sign_path` for the user who asked for the playlist (live: minutes, as the playlist is
fetched again every few seconds; VOD: a day, long enough to scrub through). HA's auth
middleware turns a missing, bad or expired signature into 401 before any view runs; the views
answer 404 for an unknown camera or anything that does not resolve inside the storage root.
How many files a VOD playlist may list, and how many are built at once: see `limits`.

The per-entry state (live windows, muxer threads, the fragment index) is an `HlsService`,
created on the first request for a loaded hub entry and stopped when that entry unloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
import logging
import math
from pathlib import Path
import re
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from homeassistant.components.http import (
    KEY_HASS_REFRESH_TOKEN_ID,
    KEY_HASS_USER,
    HomeAssistantView,
)
from homeassistant.components.http.auth import async_sign_path
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.util import dt as dt_util
from homeassistant.util.hass_dict import HassKey

from ..const import DOMAIN
from ..recorder.storage import Segment, SegmentIndex, UnsafePathError, valid_camera_id
from .limits import (
    VOD_MAX_FILES,
    VOD_SIGN_BATCH,
    TooManyBuildsError,
    TooManyRecordingsError,
    VodBuildLimiter,
    run_to_end,
)
from .live import LiveCamera
from .live_hls import LiveHls
from .playlist import ByteRange, InitRef, PlaylistSegment, render_vod_playlist
from .vod import FileIndex, FragmentCache, NotFragmentedError, vod_chunks

if TYPE_CHECKING:
    from ..runtime import LightNvrConfigEntry, LightNvrRuntime

_LOGGER = logging.getLogger(__name__)

HLS_URL = "/api/lightnvr/hls"
CONTENT_TYPE_PLAYLIST = "application/vnd.apple.mpegurl"
CONTENT_TYPE_INIT = "video/mp4"
CONTENT_TYPE_SEGMENT = "video/iso.segment"
LIVE_SIGN_EXPIRY = timedelta(minutes=5)
VOD_SIGN_EXPIRY = timedelta(hours=24)
VOD_TARGET_SECONDS = 2.0
VOD_MAX_RANGE = timedelta(days=2)
_FILE_CHUNK = 1 << 20  # bytes read (and retimed) per executor job when serving a recording
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME_RE = re.compile(r"^[0-9_-]+\.mp4$")
_CAMERA = r"{camera_id:[A-Za-z0-9_.-]+}"


def live_playlist_path(camera_id: str) -> str:
    """Return the (unsigned) path of a camera's live playlist."""
    return f"{HLS_URL}/{camera_id}/live.m3u8"


def vod_playlist_path(camera_id: str, start: datetime, end: datetime) -> str:
    """Return the (unsigned) path of a camera's recorded playlist from `start` to `end`.

    The range is in the path, not the query: HA's media-source resolver signs only URLs
    without a query string.
    """
    first = math.floor(start.timestamp())
    last = math.ceil(end.timestamp())
    return f"{HLS_URL}/{camera_id}/vod/{first}-{last}.m3u8"


def _vod_file_path(camera_id: str, relative: str) -> str:
    """Return the path of a recording for the VOD views, from its path under the root."""
    day, name = relative.split("/")[-2:]
    return f"{HLS_URL}/{camera_id}/vod/{day}/{name}"


# ----- per-entry state --------------------------------------------------------------------------


class HlsService:
    """Everything HLS keeps for one loaded hub entry."""

    def __init__(self, hass: HomeAssistant, runtime: LightNvrRuntime) -> None:
        """Create the service (live HLS attaches to a camera's muxer when first asked)."""
        self.hass = hass
        self.runtime = runtime
        self.live = LiveHls(hass, runtime)
        self.fragments = FragmentCache()

    async def async_stop(self) -> None:
        """Stop every live stream and join every thread."""
        await self.live.async_stop()


class HlsRegistry:
    """What the views share for the whole HA run: how to reach the loaded hub's HLS service.

    The service itself belongs to the hub entry's runtime (created, started and stopped with
    it, like the recorder); the views only look it up on each request.
    """

    def __init__(self, hass: HomeAssistant) -> None:
        """Create the views' shared state."""
        self.hass = hass
        # Shared by every entry (and reload) of the run: the limits are on this process's work.
        self.vod_builds = VodBuildLimiter()

    @callback
    def service(self) -> HlsService | None:
        """Return the HLS service of the loaded hub entry, or None when none is loaded."""
        entries: list[LightNvrConfigEntry] = self.hass.config_entries.async_loaded_entries(DOMAIN)
        if not entries or entries[0].state is not ConfigEntryState.LOADED:
            return None
        hls = entries[0].runtime_data.hls
        return hls if isinstance(hls, HlsService) else None


# The views live for the whole HA run (they cannot be removed), so does their shared state.
DATA_HLS_REGISTRY: HassKey[HlsRegistry] = HassKey(f"{DOMAIN}_hls_registry")


@callback
def async_register_hls_views(hass: HomeAssistant) -> HlsRegistry:
    """Register the HLS views once per HA run (idempotent); return their registry."""
    if (existing := hass.data.get(DATA_HLS_REGISTRY)) is not None:
        return existing
    # Imported here: the live views build on this module's base view and helpers.
    from .live_views import LiveInitView, LivePartView, LivePlaylistView, LiveSegmentView  # noqa: PLC0415

    registry = hass.data[DATA_HLS_REGISTRY] = HlsRegistry(hass)
    for view in (
        LivePlaylistView,
        LiveInitView,
        LiveSegmentView,
        LivePartView,
        VodPlaylistView,
        VodFileView,
    ):
        hass.http.register_view(view(registry))
    return registry


# ----- helpers ----------------------------------------------------------------------------------


def _signer(hass: HomeAssistant, request: web.Request, expiry: timedelta) -> Callable[[str], str]:
    """Return a function signing paths for the user behind `request` (memoised per path)."""
    token_id: str | None = request.get(KEY_HASS_REFRESH_TOKEN_ID)
    signed: dict[str, str] = {}

    def sign(path: str) -> str:
        if path not in signed:
            signed[path] = async_sign_path(hass, path, expiry, refresh_token_id=token_id)
        return signed[path]

    return sign


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return [start, end) of a single `bytes=` range; None to send the whole body.

    Other units, several ranges and malformed headers are ignored (the whole body is a valid
    answer to them). Raises ValueError when the range cannot be satisfied (answered with 416).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise ValueError("range not satisfiable")
        return max(0, size - suffix), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if start >= size:
        raise ValueError("range not satisfiable")
    end = int(last) + 1 if last else size
    if end <= start:
        return None
    return start, min(end, size)


def _bytes_response(
    request: web.Request, data: bytes, content_type: str, cache: str
) -> web.Response:
    """Answer with `data`, or the part of it a Range header asks for."""
    headers = {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CACHE_CONTROL: cache,
        hdrs.ACCEPT_RANGES: "bytes",
    }
    try:
        wanted = parse_range(request.headers.get(hdrs.RANGE), len(data))
    except ValueError:
        headers[hdrs.CONTENT_RANGE] = f"bytes */{len(data)}"
        return web.Response(status=HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers=headers)
    if wanted is None:
        return web.Response(body=data, headers=headers)
    start, end = wanted
    headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{len(data)}"
    return web.Response(status=HTTPStatus.PARTIAL_CONTENT, body=data[start:end], headers=headers)


def parse_time(value: str) -> float:
    """Return epoch seconds from epoch seconds or ISO 8601 (no zone: HA's time zone)."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parsed = dt_util.parse_datetime(value)
    if parsed is None:
        raise ValueError(f"not a time: {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt_util.get_default_time_zone())
    return parsed.timestamp()


class _HlsView(HomeAssistantView):
    requires_auth = True

    def __init__(self, registry: HlsRegistry) -> None:
        self.registry = registry
        self.hass = registry.hass

    def _service(self, camera_id: str) -> HlsService:
        service = self.registry.service()
        if service is None or not valid_camera_id(camera_id):
            raise web.HTTPNotFound
        return service

    def _live_camera(self, camera_id: str) -> tuple[HlsService, LiveCamera]:
        service = self._service(camera_id)
        if not service.live.known(camera_id):
            raise web.HTTPNotFound
        camera = service.live.camera(camera_id)
        camera.touch()
        return service, camera


# ----- recordings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _VodRequest:
    start: float
    end: float


class VodPlaylistView(_HlsView):
    """A recorded (VOD) playlist over any time range of a camera's recordings."""

    url = f"{HLS_URL}/{_CAMERA}/vod.m3u8"
    extra_urls = [f"{HLS_URL}/{_CAMERA}/vod/{{start:[0-9]+}}-{{end:[0-9]+}}.m3u8"]  # noqa: RUF012
    name = "api:lightnvr:hls:vod"

    def __init__(self, registry: HlsRegistry) -> None:
        """Create the view; it remembers which cameras were warned about a refused range."""
        super().__init__(registry)
        self._warned: set[str] = set()

    def _range(self, request: web.Request, start: str | None, end: str | None) -> _VodRequest:
        first = start if start is not None else request.query.get("start")
        last = end if end is not None else request.query.get("end")
        if not first or not last:
            raise web.HTTPBadRequest(text="start and end are required")
        try:
            wanted = _VodRequest(parse_time(first), parse_time(last))
        except ValueError as err:
            raise web.HTTPBadRequest(text=str(err)) from err
        if wanted.end <= wanted.start:
            raise web.HTTPBadRequest(text="end must be after start")
        if wanted.end - wanted.start > VOD_MAX_RANGE.total_seconds():
            raise web.HTTPBadRequest(text="range too long")
        return wanted

    async def get(
        self,
        request: web.Request,
        camera_id: str,
        start: str | None = None,
        end: str | None = None,
    ) -> web.Response:
        """List ~2 s byte ranges of the recordings between start and end."""
        service = self._service(camera_id)
        wanted = self._range(request, start, end)
        recorder = service.runtime.recorder
        if not service.live.known(camera_id) and not recorder.index.days(camera_id):
            raise web.HTTPNotFound
        try:
            async with self.registry.vod_builds.slot(_user_key(request)):
                body = await self._build(request, service, camera_id, wanted)
        except TooManyBuildsError:
            return web.Response(
                status=HTTPStatus.TOO_MANY_REQUESTS,
                text="Too many recorded playlists being prepared for this user; try again",
                headers={hdrs.RETRY_AFTER: "5", hdrs.CACHE_CONTROL: "no-cache"},
            )
        except TooManyRecordingsError as err:
            self._log_too_many(camera_id, err)
            # 400 like a range over the time limit: the same mistake (a range too large for one
            # playlist), answered before any file is read or any URL signed.
            raise web.HTTPBadRequest(
                text=(
                    f"Range too large: it holds {err.count} recordings, and one playlist lists "
                    f"at most {err.limit}. Ask for a shorter range."
                )
            ) from err
        if body is None:
            return web.Response(status=HTTPStatus.NOT_FOUND, text="No recordings in this range")
        response = web.Response(
            body=body,
            headers={
                hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAYLIST,
                hdrs.CACHE_CONTROL: "private, max-age=60",
            },
            # A day is ~20 MB of text, mostly the same URLs (~0.4 MB gzipped): compress it
            # in the executor, not on the event loop.
            zlib_executor_size=64 * 1024,
        )
        response.enable_compression()
        return response

    async def _build(
        self, request: web.Request, service: HlsService, camera_id: str, wanted: _VodRequest
    ) -> bytes | None:
        """Select, sign and render (holding a build slot); None when nothing is recorded."""
        recorder = service.runtime.recorder
        # Going through every file of the camera (months of them) and counting the range's
        # is executor work; a range over too many files is refused there, before any signing.
        selected = await run_to_end(
            self.hass,
            _select_recordings,
            recorder.index,
            recorder.relative,
            camera_id,
            wanted,
            VOD_MAX_FILES,
        )
        # async_sign_path must run on the event loop (~25 µs a file): a batch at a time, then
        # the loop runs whatever else waits, so even the largest playlist never blocks it.
        sign = _signer(self.hass, request, VOD_SIGN_EXPIRY)
        uris: dict[Path, str] = {}
        for number, (segment, path) in enumerate(selected):
            if number and not number % VOD_SIGN_BATCH:
                await asyncio.sleep(0)
            uris[segment.path] = sign(path)
        # Indexing the files and rendering ~40 000 segments of a whole day runs in the executor.
        return await run_to_end(
            self.hass,
            _render_vod,
            service.fragments,
            [segment for segment, _ in selected],
            uris,
            wanted,
        )

    def _log_too_many(self, camera_id: str, err: TooManyRecordingsError) -> None:
        """Log a refused range: a warning the first time per camera, then at debug level."""
        level = logging.DEBUG if camera_id in self._warned else logging.WARNING
        self._warned.add(camera_id)
        _LOGGER.log(
            level,
            "Refused a recorded playlist of camera %s: its range holds %s recordings, at most "
            "%s fit in one playlist",
            camera_id,
            err.count,
            err.limit,
        )


def _user_key(request: web.Request) -> str:
    """Return whom a request counts against for the VOD build limits (its HA user)."""
    user = request.get(KEY_HASS_USER)
    if user is not None:
        return str(user.id)
    return str(request.get(KEY_HASS_REFRESH_TOKEN_ID, ""))


def _select_recordings(
    index: SegmentIndex,
    relative: Callable[[Segment], str],
    camera_id: str,
    wanted: _VodRequest,
    limit: int,
) -> list[tuple[Segment, str]]:
    """Return the recordings overlapping the range with their (unsigned) URL paths (blocking).

    Raises TooManyRecordingsError when there are more than `limit`.
    """
    segments = [
        segment
        for segment in index.segments(camera_id)
        if segment.end > wanted.start and segment.start < wanted.end
    ]
    if len(segments) > limit:
        raise TooManyRecordingsError(len(segments), limit)
    return [(segment, _vod_file_path(camera_id, relative(segment))) for segment in segments]


def _render_vod(
    fragments: FragmentCache,
    segments: list[Segment],
    uris: dict[Path, str],
    wanted: _VodRequest,
) -> bytes | None:
    """Index the recordings, cut them into ~2 s chunks and render the playlist (blocking)."""
    indexes = fragments.get_many([segment.path for segment in segments])
    chunks = vod_chunks(segments, indexes, wanted.start, wanted.end, VOD_TARGET_SECONDS)
    if not chunks:
        return None
    playlist: list[PlaylistSegment] = []
    for chunk in chunks:
        uri = uris[chunk.segment.path]
        playlist.append(
            PlaylistSegment(
                uri=uri,
                duration=chunk.duration,
                start=chunk.start,
                init=InitRef(
                    uri=uri,
                    byterange=ByteRange(chunk.index.init_length, 0),
                    key=str(chunk.segment.path),
                ),
                byterange=ByteRange(chunk.length, chunk.offset),
                independent=chunk.independent,
            )
        )
    return render_vod_playlist(playlist).encode()


def _recording(service: HlsService, relative: str) -> tuple[Segment, FileIndex] | None:
    """Resolve a recording and index it (blocking); None for anything else."""
    recorder = service.runtime.recorder
    try:
        path = recorder.resolve(relative)
    except UnsafePathError:
        return None
    if path.suffix != ".mp4" or not path.is_file():
        return None
    segment = recorder.index.get(path)
    if segment is None:
        return None  # only finished recordings of the index
    try:
        return segment, service.fragments.get(path)
    except (OSError, NotFragmentedError, ValueError):
        return None


class VodFileView(_HlsView):
    """A recording, in byte ranges, with its fragments on the playlists' shared timeline."""

    url = f"{HLS_URL}/{_CAMERA}/vod/{{day}}/{{name}}"
    name = "api:lightnvr:hls:vod:file"

    async def get(
        self, request: web.Request, camera_id: str, day: str, name: str
    ) -> web.StreamResponse:
        """Return the requested bytes of the recording."""
        service = self._service(camera_id)
        if not _DAY_RE.match(day) or not _NAME_RE.match(name):
            raise web.HTTPNotFound
        found = await self.hass.async_add_executor_job(
            _recording, service, f"{camera_id}/{day}/{name}"
        )
        if found is None:
            _LOGGER.debug("Refused HLS recording request for %s/%s", day, name)
            raise web.HTTPNotFound
        segment, index = found
        zero = index.zero(segment)
        size = index.size
        headers = {
            hdrs.CONTENT_TYPE: "video/mp4",
            hdrs.CACHE_CONTROL: "private, max-age=3600",
            hdrs.ACCEPT_RANGES: "bytes",
        }
        try:
            wanted = parse_range(request.headers.get(hdrs.RANGE), size)
        except ValueError:
            headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            return web.Response(status=HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers=headers)
        status = HTTPStatus.OK
        start, end = 0, size
        if wanted is not None:
            start, end = wanted
            status = HTTPStatus.PARTIAL_CONTENT
            headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        try:
            await response.prepare(request)
            position = start
            while position < end:
                stop = min(end, position + _FILE_CHUNK)
                try:
                    data = await self.hass.async_add_executor_job(
                        index.read_range, position, stop, zero
                    )
                except OSError:
                    break  # deleted by retention meanwhile: the player sees a short body
                if not data:
                    break
                await response.write(data)
                position += len(data)
            await response.write_eof()
        except ConnectionResetError:
            # A player that seeks or is closed drops its request midway: nothing went wrong.
            _LOGGER.debug("HLS recording request for %s/%s ended by the client", day, name)
        return response


__all__ = [
    "HLS_URL",
    "HlsRegistry",
    "HlsService",
    "async_register_hls_views",
    "live_playlist_path",
    "vod_playlist_path",
]
