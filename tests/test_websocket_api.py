"""The review card's websocket API through Home Assistant: `lightnvr/timeline`, `lightnvr/playback`.

A real RTSP camera recorded in 3 s files, with a gap (recording switched off for a few seconds)
and two event clips (a detection with a snapshot, and `lightnvr.save_clip`): the timeline shows
the spans, the gap and the events, pages through them, and signs the thumbnails; a playback URL
plays in PyAV from the asked instant; permissions and bad arguments get clear errors. The
synthetic month of one-minute files is the benchmark's (`bench/timeline.py`) and the pure
tests at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
import math
from pathlib import Path
import time
from typing import Any

import av
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.recorder.clips import ClipIndex, EventClip
from custom_components.lightnvr.recorder.storage import Segment, SegmentIndex
from custom_components.lightnvr.review.timeline import (
    REASON_CAMERA_OFFLINE,
    REASON_NOT_KEPT,
    REASON_RECORDING_OFF,
    Cursor,
    GapHistory,
    TrailingState,
    build_timeline,
    find_playback,
    page,
)
from custom_components.lightnvr.websocket_api import THUMBNAIL_SIGN_EXPIRY, ThumbnailUrls

from .test_hls_views import (
    camera_id_of,
    hls_entry_fixture,  # noqa: F401 - pytest finds the fixture by name
    playlist_uris,
    wait_segments,
)

ENTITY_ID = "camera.porch"


async def _ask(ws: Any, **message: Any) -> dict[str, Any]:
    await ws.send_json_auto_id(message)
    reply: dict[str, Any] = await ws.receive_json()
    return reply


async def _result(ws: Any, **message: Any) -> Any:
    reply = await _ask(ws, **message)
    assert reply["success"], reply
    return reply["result"]


async def _error(ws: Any, **message: Any) -> str:
    reply = await _ask(ws, **message)
    assert not reply["success"], reply
    assert reply["error"]["message"]
    return str(reply["error"]["code"])


async def _wait_until_not_recording(entry: MockConfigEntry, camera_id: str) -> None:
    """Wait until the camera's last file is finished and indexed (clips live elsewhere)."""
    recorder = entry.runtime_data.recorder
    folder = recorder.layout.root / camera_id
    async with asyncio.timeout(30):
        while recorder.camera_state(camera_id).recording or any(folder.rglob("*.part")):
            await asyncio.sleep(0.1)
        while len(recorder.index.segments(camera_id)) < len(list(folder.rglob("*.mp4"))):
            await asyncio.sleep(0.1)


def _unsigned(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return answer items with their thumbnails' signatures left out (they carry a time)."""
    return [
        {**item, "thumbnail": item["thumbnail"].split("?")[0]} if item.get("thumbnail") else item
        for item in items
    ]


async def _wait_new_segments(entry: MockConfigEntry, more: int) -> None:
    await wait_segments(entry, len(entry.runtime_data.recorder.index) + more)


def _frame_times(url: str, seconds: float) -> list[float]:
    """Decode from the start of a playlist for `seconds` of media; return the frame times."""
    times: list[float] = []
    with av.open(url, timeout=(20, 20)) as container:
        for packet in container.demux():
            if packet.stream is None or packet.stream.type != "video":
                continue
            for frame in packet.decode():
                if frame.pts is None or not frame.time_base:
                    continue
                times.append(float(frame.pts * frame.time_base))
                if times[-1] - times[0] >= seconds:
                    return times
    return times


def _first_frame_after_seek(url: str, offset: float) -> float:
    """Seek a player `offset` seconds into a playlist (as a browser would); return the frame time.

    FFmpeg's HLS demuxer seeks on its own timeline (the first packet's time plus seconds into
    the playlist) to a keyframe at or before the target (how far before depends on the FFmpeg
    version: up to a segment); like a browser's player, frames before the target are decoded
    but not shown, so the first frame shown is the first at or after it.
    """
    with av.open(url, timeout=(20, 20)) as container:
        first = container.start_time or 0  # microseconds
        target = first / 1_000_000 + offset
        container.seek(first + round(offset * 1_000_000))
        for packet in container.demux():
            if packet.stream is None or packet.stream.type != "video":
                continue
            for frame in packet.decode():
                if frame.pts is None or not frame.time_base:
                    continue
                shown = float(frame.pts * frame.time_base)
                if shown >= target - 0.02:
                    return shown
    raise AssertionError("no frame after seeking")


async def _record_with_gap_and_clips(
    hass: HomeAssistant, entry: MockConfigEntry
) -> tuple[str, float]:
    """Record, detect a person, pause recording 5 s, record, save a clip, stop; return the id."""
    camera_id = camera_id_of(entry)
    runtime = entry.runtime_data
    recorder = runtime.recorder
    await wait_segments(entry, 2)
    # A detection with its snapshot (the camera's own JPEG), as the detection hook makes it.
    jpeg = await runtime.engine.async_snapshot(camera_id, None, None)
    assert jpeg
    handle = runtime.clips.async_trigger(
        camera_id, "person", confidence=0.87, box=(0.1, 0.2, 0.3, 0.4), snapshot=jpeg
    )
    runtime.clips.async_release(camera_id, "person")
    assert await handle.wait() is not None  # after the 5 s post-roll

    # The user switches recording off for 5 s (the journal sees the switch's states).
    switch = {"entity_id": "switch.porch_recording"}
    await hass.services.async_call("switch", "turn_off", switch, blocking=True)
    await _wait_until_not_recording(entry, camera_id)
    paused_at = time.time()
    await asyncio.sleep(5)
    await hass.services.async_call("switch", "turn_on", switch, blocking=True)
    assert recorder.is_recording_enabled(camera_id)
    await _wait_new_segments(entry, 2)
    await hass.services.async_call(
        DOMAIN,
        "save_clip",
        {"entity_id": ENTITY_ID, "duration": 2, "pre_roll": 1},
        blocking=True,
        return_response=True,
    )
    recorder.set_recording(camera_id, False)
    await _wait_until_not_recording(entry, camera_id)
    return camera_id, paused_at


async def test_timeline_and_playback(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    hass_client_no_auth: ClientSessionGenerator,
) -> None:
    """Spans around the gap, events with thumbnails, paging; playback from an instant."""
    camera_id, paused_at = await _record_with_gap_and_clips(hass, hls_entry)
    segments = hls_entry.runtime_data.recorder.index.segments(camera_id)
    clips = hls_entry.runtime_data.clips.clips(camera_id)
    assert len(clips) == 2
    ws = await hass_ws_client(hass)
    start, end = segments[0].start - 30, time.time() + 60
    # ISO 8601 and epoch seconds both work.
    iso_start = datetime.fromtimestamp(start, UTC).isoformat()
    answer = await _result(
        ws, type="lightnvr/timeline", entity_id=ENTITY_ID, start=iso_start, end=end
    )
    assert answer["cursor"] is None
    spans, gaps, events = answer["spans"], answer["gaps"], answer["events"]
    assert len(spans) >= 2
    assert spans[0]["start"] == pytest.approx(segments[0].start, abs=0.01)
    assert spans[-1]["end"] == pytest.approx(segments[-1].end, abs=0.01)
    assert sum(span["files"] for span in spans) == len(segments)
    # The pause is a gap between two spans, 5 s or more, starting when recording stopped.
    between = [
        gap
        for gap in gaps
        if any(gap["start"] == span["end"] for span in spans)
        and any(gap["end"] == span["start"] for span in spans)
    ]
    assert between
    pause = max(between, key=lambda gap: gap["end"] - gap["start"])
    assert pause["end"] - pause["start"] >= 4.5
    assert pause["start"] == pytest.approx(paused_at, abs=3)
    assert pause["reason"] == REASON_RECORDING_OFF
    # Before the first recording: nothing kept. Until now: recording is switched off.
    assert gaps[0]["start"] == pytest.approx(start, abs=0.01)
    assert gaps[0]["reason"] == REASON_NOT_KEPT
    await asyncio.sleep(2.5)
    answer = await _result(ws, type="lightnvr/timeline", entity_id=ENTITY_ID, start=start, end=end)
    assert answer["gaps"][-1]["reason"] == REASON_RECORDING_OFF
    assert answer["gaps"][-1]["end"] <= time.time()

    # The two clips as events: the detection with its thumbnail, the saved clip without.
    assert [event["manual"] for event in events] == [False, True]
    person, saved = events
    assert person["label"] == "person"
    assert person["labels"] == ["person"]
    assert person["confidence"] == pytest.approx(0.87)
    assert person["start"] <= person["time"] <= person["end"]
    relative = hls_entry.runtime_data.clips.relative(clips[0].path)
    assert person["media_content_id"] == f"media-source://{DOMAIN}/{relative}"
    assert saved["thumbnail"] is None
    anonymous = await hass_client_no_auth()
    thumbnail = await anonymous.get(person["thumbnail"])
    assert thumbnail.status == 200
    assert thumbnail.headers["Content-Type"] == "image/jpeg"
    assert (await thumbnail.read())[:2] == b"\xff\xd8"
    assert (await anonymous.get(person["thumbnail"].split("?")[0])).status == 401
    assert "authSig" in person["thumbnail"]

    # Paging: two items at a time gives the same items, in the same order, once each (over a
    # range that ends in the past: a gap until now would grow from page to page).
    end = time.time()
    whole = await _result(ws, type="lightnvr/timeline", entity_id=ENTITY_ID, start=start, end=end)
    paged: dict[str, list[Any]] = {"spans": [], "gaps": [], "events": []}
    cursor = None
    pages = 0
    while True:
        part = await _result(
            ws,
            type="lightnvr/timeline",
            entity_id=ENTITY_ID,
            start=start,
            end=end,
            limit=2,
            cursor=cursor,
        )
        assert len(part["spans"]) + len(part["gaps"]) + len(part["events"]) <= 2
        for kind in paged:
            paged[kind] += part[kind]
        pages += 1
        cursor = part["cursor"]
        if cursor is None:
            break
    assert pages > 2
    for kind, items in paged.items():
        assert _unsigned(items) == _unsigned(whole[kind]), kind

    # Playback from inside the second file: a signed playlist HA serves without a header,
    # that PyAV plays, starting with the file that holds the instant.
    asked = segments[1].start + 1.3
    playback = await _result(ws, type="lightnvr/playback", entity_id=ENTITY_ID, time=asked)
    assert playback["time"] == pytest.approx(asked)
    assert playback["start"] <= asked <= playback["end"]
    assert playback["offset"] == pytest.approx(asked - playback["start"], abs=0.01)
    assert playback["span"]["start"] == pytest.approx(spans[0]["start"], abs=0.01)
    assert playback["span"]["end"] == pytest.approx(spans[0]["end"], abs=0.01)
    response = await anonymous.get(playback["url"])
    assert response.status == 200
    text = await response.text()
    assert text.startswith("#EXTM3U")
    assert "#EXT-X-ENDLIST" in text
    assert playlist_uris(text)
    assert (await anonymous.get(playback["url"].split("?")[0])).status == 401
    url = str(anonymous.make_url(playback["url"]))
    times = await hass.async_add_executor_job(_frame_times, url, playback["offset"] + 0.5)
    # Decode time is wall-clock time: the playlist starts where the answer says, and the
    # frame `offset` seconds into it is the asked instant.
    assert times[0] == pytest.approx(playback["start"], abs=0.05)
    at_offset = next(t for t in times if t - times[0] >= playback["offset"] - 0.02)
    assert at_offset == pytest.approx(asked, abs=1.0)
    assert playback["start"] == pytest.approx(segments[1].start, abs=0.1)
    # A player told to seek to `offset` shows the asked instant (within a keyframe interval).
    seeked = await hass.async_add_executor_job(_first_frame_after_seek, url, playback["offset"])
    assert seeked == pytest.approx(asked, abs=1.0)

    # An instant in the gap plays the next span from its start; after the end: not found.
    in_gap = (pause["start"] + pause["end"]) / 2
    following = await _result(ws, type="lightnvr/playback", entity_id=ENTITY_ID, time=in_gap)
    assert following["time"] == pytest.approx(pause["end"], abs=0.01)
    assert following["offset"] == pytest.approx(0, abs=0.1)
    assert following["span"]["start"] == pytest.approx(pause["end"], abs=0.01)
    assert (await anonymous.get(following["url"])).status == 200
    code = await _error(
        ws, type="lightnvr/playback", entity_id=ENTITY_ID, time=segments[-1].end + 10
    )
    assert code == "not_found"


async def test_access_and_arguments(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    hass_read_only_access_token: str,
    hass_admin_user: MockUser,
) -> None:
    """Users who may read the camera get answers; others, unknown cameras, bad args: errors."""
    await wait_segments(hls_entry, 1)
    segment = hls_entry.runtime_data.recorder.index.oldest_first()[0]
    now = time.time()
    timeline = {"type": "lightnvr/timeline", "entity_id": ENTITY_ID, "start": now - 600}
    playback = {"type": "lightnvr/playback", "entity_id": ENTITY_ID, "time": segment.start}

    # A non-admin user who may read every entity.
    reader = await hass_ws_client(hass, access_token=hass_read_only_access_token)
    answer = await _result(reader, **timeline, end=now + 60)
    assert answer["spans"]
    assert (await _result(reader, **playback))["url"]

    # Bad arguments.
    ws = await hass_ws_client(hass)
    for bad in (
        {**timeline, "end": now - 700},  # end before start
        {**timeline, "end": now - 600},  # empty range
        {**timeline, "start": now - 40 * 86400, "end": now},  # too long
        {**timeline, "end": "yesterday"},
        {**timeline, "end": "inf"},
        {**timeline, "end": True},
        {**timeline, "end": now, "limit": 0},
        {**timeline, "end": now, "limit": 100_000},
        {**timeline, "end": now, "cursor": "not-a-cursor"},
        {**timeline, "end": now, "entity_id": "not an entity"},
        {**playback, "time": "soon"},
        {**playback, "duration": 10 * 86400},
        {"type": "lightnvr/playback", "entity_id": ENTITY_ID},
    ):
        assert await _error(ws, **bad) == "invalid_format", bad

    # Unknown entities and other integrations' cameras are not LightNVR cameras.
    er.async_get(hass).async_get_or_create("camera", "demo", "other")
    for entity_id in ("camera.nope", "camera.demo_other", "switch.porch_recording"):
        for message in ({**timeline, "end": now}, playback):
            code = await _error(ws, **{**message, "entity_id": entity_id})
            assert code == "not_found", entity_id

    # A user who may read other entities only learns nothing about this camera.
    hass_admin_user.groups = []
    hass_admin_user.mock_policy({"entities": {"entity_ids": {"camera.demo_other": True}}})
    assert await _error(ws, **timeline, end=now) == "unauthorized"
    assert await _error(ws, **playback) == "unauthorized"
    assert await _error(ws, **{**playback, "entity_id": "camera.nope"}) == "unauthorized"


# ----- the queries without Home Assistant ---------------------------------------------------------


def _month(days: int = 30, missing_day: int = 10) -> tuple[SegmentIndex, ClipIndex, float]:
    """Index `days` days of one-minute files (an hour missing on one day) and 300 clips."""
    segments, clips = SegmentIndex(), ClipIndex()
    origin = 1_700_000_000.0 - 1_700_000_000 % 86400
    for minute in range(days * 1440):
        if missing_day * 1440 + 600 <= minute < missing_day * 1440 + 660:
            continue
        start = origin + minute * 60 + 0.01
        name = datetime.fromtimestamp(start, UTC)
        path = Path(f"/nowhere/cam/{name:%Y-%m-%d}/{name:%H-%M-%S}.mp4")
        segments.add(Segment("cam", path, start, start + 59.995, 1000))
    for number in range(300):
        start = origin + number * 8640 + 5
        name = datetime.fromtimestamp(start, UTC)
        path = Path(f"/nowhere/events/cam/{name:%Y-%m-%d}/{name:%H-%M-%S}_person.mp4")
        clips.add(EventClip("cam", path, start, start + 20, ("person",), 10))
    return segments, clips, origin


def test_month_of_files_spans_gaps_pages_and_playback() -> None:
    """A month of one-minute files: two spans, the missing hour, exact paging, playback."""
    segments, clips, origin = _month()
    end = origin + 30 * 86400
    timeline = build_timeline(
        segments,
        clips,
        "cam",
        origin - 3600,
        end + 3600,
        now=end + 7200,
        trailing=TrailingState(REASON_RECORDING_OFF),
    )
    first_files = 10 * 1440 + 600
    assert [(span.start - origin, span.files) for span in timeline.spans] == [
        (pytest.approx(0.01), first_files),
        (pytest.approx(10 * 86400 + 660 * 60 + 0.01), 30 * 1440 - 60 - first_files),
    ]
    assert [(gap.start - origin, gap.end - origin, gap.reason) for gap in timeline.gaps] == [
        (-3600, pytest.approx(0.01), REASON_NOT_KEPT),
        (
            pytest.approx(10 * 86400 + 600 * 60 + 0.005),
            pytest.approx(10 * 86400 + 660 * 60 + 0.01),
            None,
        ),
        (pytest.approx(30 * 86400 + 0.005), 30 * 86400 + 3600, REASON_RECORDING_OFF),
    ]
    assert len(timeline.events) == 300
    # One item at a time, through a cursor that travels as text.
    items: list[Any] = []
    cursor = None
    while True:
        part = page(timeline, 7, cursor)
        items += [*part.spans, *part.gaps, *part.events]
        if part.next_cursor is None:
            break
        cursor = Cursor.decode(part.next_cursor.encode())
    assert len(items) == len({id(item) for item in items}) == 2 + 3 + 300

    # In the missing hour: the next span from its start; inside a file: that file first.
    playback = find_playback(segments, "cam", origin + 10 * 86400 + 630 * 60, 3600, 2000)
    assert playback is not None
    assert playback.time == pytest.approx(origin + 10 * 86400 + 660 * 60 + 0.01)
    assert len(playback.segments) == 60
    assert playback.segments[0].start == playback.time
    inside = find_playback(segments, "cam", origin + 5 * 86400 + 100.5, 7200, 2000)
    assert inside is not None
    assert inside.time == origin + 5 * 86400 + 100.5
    assert inside.segments[0].start <= inside.time < inside.segments[0].end
    # The previous file ends within the first whole second: the range starts after it (else
    # the playlist would begin with that file's last chunk), still inside the first file's.
    previous_end = inside.segments[0].start - 0.005
    assert previous_end < inside.range_start < inside.segments[0].start + 1
    assert inside.range_end - inside.range_start <= 7200 + 2
    assert find_playback(segments, "cam", end + 1, 3600, 2000) is None


def test_gap_reasons_from_history() -> None:
    """Known intervals name a gap's reason: the switch first, then the camera being away."""
    history = GapHistory(recording_off=((100.0, 200.0),), camera_away=((150.0, 400.0),))
    assert history.reason(90, 110) == REASON_RECORDING_OFF
    assert history.reason(210, 300) == REASON_CAMERA_OFFLINE
    assert history.reason(400, 500) is None
    assert GapHistory(camera_away=((10.0, math.inf),)).reason(20, 30) == REASON_CAMERA_OFFLINE
    segments, clips, origin = _month(days=2, missing_day=1)
    timeline = build_timeline(
        segments,
        clips,
        "cam",
        origin,
        origin + 2 * 86400,
        now=origin + 3 * 86400,
        history=GapHistory(camera_away=((origin + 86400 + 36600.0, origin + 86400 + 36700.0),)),
    )
    assert [gap.reason for gap in timeline.gaps] == [REASON_CAMERA_OFFLINE]


def test_thumbnail_urls_are_reused_per_login_while_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """One signature per login and snapshot while it has half its life left; bounded."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    signed: list[str] = []

    def sign(name: str) -> Callable[[], str]:
        def make() -> str:
            signed.append(name)
            return f"{name}?authSig={len(signed)}"

        return make

    urls = ThumbnailUrls(limit=2)
    first = urls.url("login-a", Path("a.jpg"), sign("a"))
    assert urls.url("login-a", Path("a.jpg"), sign("a")) == first  # reused
    assert urls.url("login-b", Path("a.jpg"), sign("a")) != first  # another login: its own
    clock[0] += THUMBNAIL_SIGN_EXPIRY.total_seconds() / 2 + 1  # less than half its life left
    assert urls.url("login-a", Path("a.jpg"), sign("a")) != first
    assert len(signed) == 3
    urls.url("login-c", Path("c.jpg"), sign("c"))  # the oldest entry (login-b) goes
    urls.url("login-b", Path("a.jpg"), sign("a"))
    assert len(signed) == 5
