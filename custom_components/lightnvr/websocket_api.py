"""Websocket commands of the review card: a camera's timeline, and playback from an instant.

`lightnvr/timeline` — `entity_id` (a LightNVR camera), `start`, `end` (epoch seconds or ISO
8601; no zone: Home Assistant's), optional `limit` and `cursor`. Answers `spans` (recorded time:
files less than 2 s apart merged), `gaps` (with a `reason` where known: `not_kept`,
`recording_off`, `recording_paused` (+ `detail`), `camera_offline`, `camera_removed`,
`in_progress` (the file being written); see `review.timeline`) and `events` (event
clips: times, labels, confidence, media-source id, a signed thumbnail URL), ordered by start,
at most `limit` items in all, and `cursor` to send back for the rest (None when done).

`lightnvr/playback` — `entity_id`, `time`, optional `duration`. Answers a signed URL of a
recorded HLS playlist starting with the file that holds `time` (or the next recording, when
`time` falls in a gap), `offset` (seconds from the playlist's start to that instant: seek the
player there), the playlist's `start`/`end` and the `span` it belongs to. `not_found` when
nothing is recorded at or after `time`.

Both are for any user who may read the camera entity (like the camera's own stream), answered
from the in-memory day indexes in the executor (never a folder listing per request), and say
nothing about cameras the user may not see.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
import math
from pathlib import Path
import time
from typing import Any, Final

from homeassistant.auth.permissions.const import POLICY_READ
from homeassistant.components import websocket_api
from homeassistant.components.http.auth import async_sign_path
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import Unauthorized
from homeassistant.helpers import config_validation as cv, entity_registry as er
from homeassistant.util.hass_dict import HassKey
import voluptuous as vol

from .const import DOMAIN
from .hls import vod_playlist_path
from .hls.limits import VOD_MAX_FILES
from .hls.views import VOD_MAX_RANGE, parse_time
from .hls.vod import FragmentCache
from .recorder.clips import ClipManager, EventClip
from .review.journal import async_get_journal
from .review.timeline import (
    REASON_CAMERA_OFFLINE,
    REASON_CAMERA_REMOVED,
    REASON_RECORDING_OFF,
    REASON_RECORDING_PAUSED,
    BadCursorError,
    Cursor,
    Gap,
    GapHistory,
    Page,
    Playback,
    Span,
    TrailingState,
    build_timeline,
    find_playback,
    page,
    playlist_start,
)
from .review.views import SnapshotView, snapshot_path
from .runtime import LightNvrConfigEntry, LightNvrRuntime
from .views import loaded_entry

CAMERA_UNIQUE_ID_SUFFIX: Final = "_camera"
# Items (spans + gaps + events) in one timeline answer; more come with the cursor.
DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 2000
# The longest range one timeline request may cover (the card zooms out to 7 days; a month of
# history at once is the benchmark's case).
MAX_RANGE_SECONDS: Final = 32 * 86400
# A playback's playlist: an hour by default, at most what the VOD view accepts (2 days, minus
# the whole seconds its path rounds to) and at most `VOD_MAX_FILES` files.
DEFAULT_PLAYBACK_SECONDS: Final = 3600.0
MAX_PLAYBACK_SECONDS: Final = VOD_MAX_RANGE.total_seconds() - 2
MIN_PLAYBACK_SECONDS: Final = 10.0
# Long enough for a player to fetch the playlist (whose own URLs are signed for a day) and
# for the card to show thumbnails of an answer kept on screen a while.
PLAYBACK_SIGN_EXPIRY: Final = timedelta(hours=1)
THUMBNAIL_SIGN_EXPIRY: Final = timedelta(hours=1)
# Epoch seconds accepted as times: 1970 up to the year 2200 (datetime's range is wider).
_MAX_EPOCH: Final = 7258118400.0

ERR_NOT_LOADED: Final = "not_loaded"

# Thumbnail URLs kept per login: at most this many, reused while valid for half their life.
THUMBNAIL_CACHE_SIZE: Final = 20000

type Signer = Callable[[str, timedelta], str]


class ThumbnailUrls:
    """Signed thumbnail URLs per login, reused while they stay valid for half their life.

    The card asks for the same range every 30 s and at every pan, and signing (a JWT per
    thumbnail) is most of an answer's time on the event loop; a URL handed out again is one the
    client could have kept. Bounded: the oldest entries go first.
    """

    def __init__(self, limit: int = THUMBNAIL_CACHE_SIZE) -> None:
        """Keep at most `limit` URLs."""
        self._limit = limit
        self._urls: OrderedDict[tuple[str | None, Path], tuple[str, float]] = OrderedDict()

    def url(self, refresh_token_id: str | None, snapshot: Path, make: Callable[[], str]) -> str:
        """Return the signed URL of a snapshot for a login, signing it (`make`) if needed."""
        key = (refresh_token_id, snapshot)
        now = time.monotonic()
        found = self._urls.get(key)
        if found is not None and found[1] - now > THUMBNAIL_SIGN_EXPIRY.total_seconds() / 2:
            self._urls.move_to_end(key)
            return found[0]
        signed = make()
        self._urls[key] = (signed, now + THUMBNAIL_SIGN_EXPIRY.total_seconds())
        self._urls.move_to_end(key)
        while len(self._urls) > self._limit:
            self._urls.popitem(last=False)
        return signed


THUMBNAIL_URLS: HassKey[ThumbnailUrls] = HassKey(f"{DOMAIN}_thumbnail_urls")


def _epoch(value: Any) -> float:
    """Return epoch seconds from a number or a string (epoch or ISO 8601)."""
    if isinstance(value, bool):
        raise vol.Invalid("expected a time")
    if isinstance(value, int | float):
        moment = float(value)
    elif isinstance(value, str):
        try:
            moment = parse_time(value)
        except ValueError as err:
            raise vol.Invalid(f"not a time: {value!r}") from err
    else:
        raise vol.Invalid("expected epoch seconds or an ISO 8601 time")
    if not math.isfinite(moment) or not 0 <= moment <= _MAX_EPOCH:
        raise vol.Invalid("time out of range")
    return moment


@callback
def async_setup_websocket_api(hass: HomeAssistant) -> None:
    """Register the review commands and the snapshot view (once per HA run)."""
    async_get_journal(hass)  # before the hub is set up: its entities' first states count
    websocket_api.async_register_command(hass, ws_timeline)
    websocket_api.async_register_command(hass, ws_playback)
    hass.http.register_view(SnapshotView(hass))


class _CommandError(Exception):
    """An answer that is an error: code and message for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _camera(
    hass: HomeAssistant, connection: websocket_api.ActiveConnection, entity_id: str
) -> tuple[LightNvrConfigEntry, str]:
    """Return the loaded hub and the camera id behind a camera entity the user may read.

    Permission comes first: a user who may not read an entity learns nothing about it, not
    even whether it exists (Unauthorized either way).
    """
    if not connection.user.permissions.check_entity(entity_id, POLICY_READ):
        raise Unauthorized(entity_id=entity_id, permission=POLICY_READ)
    registered = er.async_get(hass).async_get(entity_id)
    unique_id = registered.unique_id if registered is not None else ""
    if (
        registered is None
        or registered.platform != DOMAIN
        or registered.domain != "camera"
        or not unique_id.endswith(CAMERA_UNIQUE_ID_SUFFIX)
    ):
        raise _CommandError(websocket_api.ERR_NOT_FOUND, f"{entity_id} is not a LightNVR camera")
    entry = loaded_entry(hass)
    if entry is None or registered.config_entry_id != entry.entry_id:
        raise _CommandError(ERR_NOT_LOADED, "LightNVR is not loaded")
    return entry, unique_id.removesuffix(CAMERA_UNIQUE_ID_SUFFIX)


def _seconds(value: float) -> float:
    """Return epoch seconds as sent: milliseconds are plenty for a timeline."""
    return round(value, 3)


def _trailing(runtime: LightNvrRuntime, camera_id: str) -> TrailingState:
    """Return what explains a gap lasting until now: the camera's present state."""
    if camera_id not in runtime.cameras:
        return TrailingState(REASON_CAMERA_REMOVED)
    state = runtime.recorder.camera_state(camera_id)
    if state is None or not state.enabled:
        return TrailingState(REASON_RECORDING_OFF)
    writing = state.current_start if state.recording else None
    if state.paused:
        return TrailingState(REASON_RECORDING_PAUSED, state.pause_reason, writing)
    try:
        available = runtime.engine.hub(camera_id).available
    except KeyError:
        available = False
    return TrailingState(None if available else REASON_CAMERA_OFFLINE, None, writing)


def _timeline_page(
    runtime: LightNvrRuntime,
    camera_id: str,
    start: float,
    end: float,
    *,
    trailing: TrailingState,
    history: GapHistory,
    limit: int,
    cursor: Cursor | None,
) -> Page:
    """Build the timeline and cut the page (CPU work, in the executor)."""
    timeline = build_timeline(
        runtime.recorder.index,
        runtime.clips.index,
        camera_id,
        start,
        end,
        now=time.time(),
        trailing=trailing,
        history=history,
    )
    return page(timeline, limit, cursor)


def _span(span: Span) -> dict[str, Any]:
    return {"start": _seconds(span.start), "end": _seconds(span.end), "files": span.files}


def _gap(gap: Gap) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "start": _seconds(gap.start),
        "end": _seconds(gap.end),
        "reason": gap.reason,
    }
    if gap.detail is not None:
        answer["detail"] = gap.detail
    return answer


def _event(
    thumbnail_of: Callable[[Path], str], clips: ClipManager, clip: EventClip
) -> dict[str, Any]:
    # The best detection's label; a clip from before sidecars kept it: the one that started it.
    best = clip.best_label
    thumbnail = thumbnail_of(clip.snapshot) if clip.snapshot is not None else None
    return {
        "start": _seconds(clip.start),
        "end": _seconds(clip.end),
        "time": _seconds(clip.trigger if clip.trigger is not None else clip.start),
        "label": best if isinstance(best, str) and best else clip.label,
        "labels": list(clip.labels),
        "confidence": clip.confidence,
        "box": clip.box,
        "manual": clip.manual,
        "media_content_id": f"media-source://{DOMAIN}/{clips.relative(clip.path)}",
        "thumbnail": thumbnail,
    }


def _signer(hass: HomeAssistant, connection: websocket_api.ActiveConnection) -> Signer:
    """Return a function signing a path for this connection's login for a while."""

    def sign(path: str, expiry: timedelta) -> str:
        return async_sign_path(hass, path, expiry, refresh_token_id=connection.refresh_token_id)

    return sign


@websocket_api.websocket_command(
    {
        vol.Required("type"): "lightnvr/timeline",
        vol.Required("entity_id"): cv.entity_id,
        vol.Required("start"): _epoch,
        vol.Required("end"): _epoch,
        vol.Optional("limit", default=DEFAULT_LIMIT): vol.All(
            vol.Coerce(int), vol.Range(min=1, max=MAX_LIMIT)
        ),
        vol.Optional("cursor"): vol.Any(None, str),
    }
)
@websocket_api.async_response
async def ws_timeline(
    hass: HomeAssistant, connection: websocket_api.ActiveConnection, msg: dict[str, Any]
) -> None:
    """Answer a camera's recorded spans, gaps and event clips over a range, one page."""
    try:
        entry, camera_id = _camera(hass, connection, msg["entity_id"])
        start: float = msg["start"]
        end: float = msg["end"]
        if end <= start:
            raise _CommandError(websocket_api.ERR_INVALID_FORMAT, "end must be after start")
        if end - start > MAX_RANGE_SECONDS:
            raise _CommandError(
                websocket_api.ERR_INVALID_FORMAT,
                f"range too long: at most {MAX_RANGE_SECONDS // 86400} days",
            )
        cursor = Cursor.decode(msg["cursor"]) if msg.get("cursor") else None
    except BadCursorError:
        connection.send_error(msg["id"], websocket_api.ERR_INVALID_FORMAT, "bad cursor")
        return
    except _CommandError as err:
        connection.send_error(msg["id"], err.code, err.message)
        return
    runtime = entry.runtime_data
    result = await hass.async_add_executor_job(
        partial(
            _timeline_page,
            runtime,
            camera_id,
            start,
            end,
            trailing=_trailing(runtime, camera_id),
            history=async_get_journal(hass).history(camera_id),
            limit=msg["limit"],
            cursor=cursor,
        )
    )
    sign = _signer(hass, connection)
    urls = hass.data.setdefault(THUMBNAIL_URLS, ThumbnailUrls())
    clips = runtime.clips

    def thumbnail_of(snapshot: Path) -> str:
        return urls.url(
            connection.refresh_token_id,
            snapshot,
            lambda: sign(snapshot_path(clips.relative(snapshot)), THUMBNAIL_SIGN_EXPIRY),
        )

    connection.send_result(
        msg["id"],
        {
            "start": _seconds(start),
            "end": _seconds(end),
            "spans": [_span(span) for span in result.spans],
            "gaps": [_gap(gap) for gap in result.gaps],
            "events": [_event(thumbnail_of, clips, clip) for clip in result.events],
            "cursor": result.next_cursor.encode() if result.next_cursor is not None else None,
        },
    )


def _playback(
    runtime: LightNvrRuntime, camera_id: str, moment: float, seconds: float
) -> tuple[Playback, float] | None:
    """Find the playback and where its playlist starts (executor: may read one file's boxes)."""
    playback = find_playback(runtime.recorder.index, camera_id, moment, seconds, VOD_MAX_FILES)
    if playback is None:
        return None
    fragments = getattr(runtime.hls, "fragments", None)
    cache = fragments if isinstance(fragments, FragmentCache) else None
    return playback, playlist_start(playback, cache)


@websocket_api.websocket_command(
    {
        vol.Required("type"): "lightnvr/playback",
        vol.Required("entity_id"): cv.entity_id,
        vol.Required("time"): _epoch,
        vol.Optional("duration", default=DEFAULT_PLAYBACK_SECONDS): vol.All(
            vol.Coerce(float), vol.Range(min=MIN_PLAYBACK_SECONDS, max=MAX_PLAYBACK_SECONDS)
        ),
    }
)
@websocket_api.async_response
async def ws_playback(
    hass: HomeAssistant, connection: websocket_api.ActiveConnection, msg: dict[str, Any]
) -> None:
    """Answer a signed recorded playlist playing from an instant, and the offset to seek to."""
    try:
        entry, camera_id = _camera(hass, connection, msg["entity_id"])
    except _CommandError as err:
        connection.send_error(msg["id"], err.code, err.message)
        return
    found = await hass.async_add_executor_job(
        _playback, entry.runtime_data, camera_id, msg["time"], msg["duration"]
    )
    if found is None:
        connection.send_error(
            msg["id"], websocket_api.ERR_NOT_FOUND, "nothing recorded at or after this time"
        )
        return
    playback, first = found
    path = vod_playlist_path_for(camera_id, playback.range_start, playback.range_end)
    connection.send_result(
        msg["id"],
        {
            "url": _signer(hass, connection)(path, PLAYBACK_SIGN_EXPIRY),
            "time": _seconds(playback.time),
            "offset": round(max(0.0, playback.time - first), 3),
            "start": _seconds(first),
            "end": _seconds(playback.end),
            "span": _span(playback.span),
        },
    )


def vod_playlist_path_for(camera_id: str, start: int, end: int) -> str:
    """Return the recorded playlist's path over whole epoch seconds."""
    return vod_playlist_path(
        camera_id, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    )
