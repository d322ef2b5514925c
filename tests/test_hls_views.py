"""HLS views: auth (header, signed URLs, forged and expired signatures), 404s, headers, Range.

Also the fixtures the other HLS test modules share: a loaded hub recording the real RTSP camera
in 3-second segments, with the HLS views registered, and helpers to sign URLs and read
playlists.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
import io
import os
from pathlib import Path
import threading
import time

import av
from homeassistant.components.http.auth import async_sign_path
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.hls import (
    HLS_URL,
    async_register_hls_views,
    live_playlist_path,
    vod_playlist_path,
)
from custom_components.lightnvr.hls.views import parse_range

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer

SEGMENT_SECONDS = 3
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


# ----- shared fixtures and helpers (imported by the other test_hls_* modules) --------------------


def register_hls(hass: HomeAssistant) -> None:
    """Register the HLS views unless the integration already did (once per test hass)."""
    if not any(
        resource.canonical.startswith(HLS_URL) for resource in hass.http.app.router.resources()
    ):
        async_register_hls_views(hass)


@pytest.fixture(name="hls_entry")
async def hls_entry_fixture(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A hub recording the RTSP camera ("Porch") in 3 s segments, HLS views registered."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": SEGMENT_SECONDS},
        subentries_data=[camera_subentry("Porch", rtsp_camera.url("cam"))],
    )
    entry.add_to_hass(hass)
    # Views first, as the integration's async_setup does.
    assert await async_setup_component(hass, "http", {})
    register_hls(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert not camera_muxer_threads()  # the unload stopped every camera's muxer


def camera_id_of(entry: MockConfigEntry) -> str:
    """Return the one camera's id."""
    return next(iter(entry.subentries))


def camera_muxer_threads() -> list[threading.Thread]:
    """Return the running camera muxers (one per camera, shared by recorder, clips and HLS)."""
    return [t for t in threading.enumerate() if t.name.startswith("lightnvr-mux-")]


async def refresh_token_id(hass: HomeAssistant, access_token: str) -> str:
    """Return the refresh token behind an access token (what a signed URL is issued to)."""
    token = hass.auth.async_validate_access_token(access_token)
    assert token is not None
    return token.id


async def signed(
    hass: HomeAssistant,
    access_token: str,
    path: str,
    expiry: timedelta = timedelta(minutes=10),
) -> str:
    """Sign `path` as HA does for a media player."""
    return async_sign_path(
        hass, path, expiry, refresh_token_id=await refresh_token_id(hass, access_token)
    )


async def wait_segments(entry: MockConfigEntry, count: int, timeout: float = 60) -> None:
    """Wait until the recorder finished `count` segments of the camera."""
    index = entry.runtime_data.recorder.index
    async with asyncio.timeout(timeout):
        while len(index) < count:
            await asyncio.sleep(0.2)


def playlist_uris(text: str) -> list[str]:
    """Return the media URIs of a playlist."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def part_uris(text: str) -> list[tuple[str, bool, str]]:
    """Return the EXT-X-PART URIs of a playlist: (URI, INDEPENDENT, the EXT-X-MAP it is under)."""
    parts: list[tuple[str, bool, str]] = []
    init = ""
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            init = _quoted_uri(line)
        elif line.startswith("#EXT-X-PART:"):
            parts.append((_quoted_uri(line), "INDEPENDENT=YES" in line, init))
    return parts


def hint_uri(text: str) -> str:
    """Return the EXT-X-PRELOAD-HINT URI of a playlist."""
    return next(_quoted_uri(line) for line in text.splitlines() if "PRELOAD-HINT" in line)


def _quoted_uri(line: str) -> str:
    return line.split('URI="', 1)[1].split('"', 1)[0]


def map_uris(text: str) -> list[str]:
    """Return the EXT-X-MAP URIs of a playlist."""
    return [
        line.split('URI="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("#EXT-X-MAP:")
    ]


# ----- tests ---------------------------------------------------------------------------------


async def test_live_and_vod_refuse_unauthenticated_and_forged(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """No auth: 401 on every view. A forged, altered or expired signature: 401."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    now = time.time()
    vod = f"{HLS_URL}/{camera_id}/vod.m3u8?start={now - 600:.0f}&end={now + 60:.0f}"
    client = await hass_client()
    playlist = await client.get(live_playlist_path(camera_id))
    assert playlist.status == 200
    text = await playlist.text()
    segment_url = playlist_uris(text)[-1]
    init_url = map_uris(text)[-1]
    vod_text = await (await client.get(vod)).text()
    file_url = playlist_uris(vod_text)[0]

    anonymous = await hass_client_no_auth()
    unsigned = [
        live_playlist_path(camera_id),
        segment_url.split("?")[0],
        init_url.split("?")[0],
        vod,
        file_url.split("?")[0],
        f"{HLS_URL}/unknown-camera/live.m3u8",  # nothing about cameras before auth
    ]
    for url in unsigned:
        assert (await anonymous.get(url)).status == 401, url

    # The URLs inside the playlists are signed: they play without a header…
    for url in (segment_url, init_url, file_url):
        assert (await anonymous.get(url)).status in (200, 206), url
    # … but not once altered, forged, or used for another path.
    path, _, query = segment_url.partition("?")
    token = query.split("authSig=", 1)[1]
    other = f"{path.rsplit('/', 1)[0]}/999999.m4s?authSig={token}"
    tampered = f"{path}?authSig={token[:-4]}AAAA"
    forged = f"{path}?authSig=forged.token.value"
    for url in (other, tampered, forged):
        assert (await anonymous.get(url)).status == 401, url

    # An expired signature is refused too.
    expired = await signed(hass, hass_access_token, live_playlist_path(camera_id), timedelta(0))
    await asyncio.sleep(1.1)
    assert (await anonymous.get(expired)).status == 401
    fresh = await signed(hass, hass_access_token, live_playlist_path(camera_id))
    assert (await anonymous.get(fresh)).status == 200


async def test_unknown_camera_and_traversal_are_404(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    tmp_path: Path,
) -> None:
    """Unknown cameras, made-up segments and every traversal spelling: 404 (or HA's 400)."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    recorder = hls_entry.runtime_data.recorder
    segment = recorder.index.oldest_first()[0]
    day, name = recorder.layout.relative(segment.path).split("/")[1:]
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(segment.path.read_bytes())  # a valid recording, outside the root
    os.symlink(secret, segment.path.parent / "00-00-01.mp4")
    (segment.path.parent / "00-00-02.mp4").write_bytes(b"not indexed, not ours")

    client = await hass_client()
    now = time.time()
    assert (await client.get(f"{HLS_URL}/{camera_id}/vod/{day}/{name}")).status == 200
    for url in (
        f"{HLS_URL}/nope/live.m3u8",
        f"{HLS_URL}/nope/live/0.m4s",
        f"{HLS_URL}/nope/live/init/0.mp4",
        f"{HLS_URL}/nope/vod.m3u8?start={now - 600:.0f}&end={now:.0f}",
        f"{HLS_URL}/nope/vod/{day}/{name}",
        f"{HLS_URL}/{camera_id}/live/123456.m4s",  # never listed
        f"{HLS_URL}/{camera_id}/live/init/99.mp4",
        f"{HLS_URL}/{camera_id}/vod/{day}/00-00-01.mp4",  # symlink out of the root
        f"{HLS_URL}/{camera_id}/vod/{day}/00-00-02.mp4",  # not a recording of the index
        f"{HLS_URL}/{camera_id}/vod/{day}/..%2F..%2F..%2Fsecret.mp4",
        f"{HLS_URL}/{camera_id}/vod/..%2F..%2F{day}/{name}",
        f"{HLS_URL}/..%2F{camera_id}/vod/{day}/{name}",
        f"{HLS_URL}/{camera_id}/vod/%2E%2E/%2E%2E/secret.mp4",
        f"{HLS_URL}/{camera_id}/vod/{day}/{name}%00",
        f"{HLS_URL}/{camera_id}/vod/1000-2000.m3u8",  # no recordings then
    ):
        response = await client.get(url)
        # HA's security filter answers 400 to some traversal spellings before any view.
        assert response.status in (400, 404), url
        assert b"secret" not in await response.read()


async def test_content_types_cache_headers_and_ranges(
    hass: HomeAssistant, hls_entry: MockConfigEntry, hass_client: ClientSessionGenerator
) -> None:
    """Playlists: mpegurl, live not cached. Media: video types, cacheable, Range answered."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    client = await hass_client()
    live = await client.get(live_playlist_path(camera_id))
    assert live.headers["Content-Type"].startswith(PLAYLIST_TYPE)
    assert live.headers["Cache-Control"] == "no-cache"
    text = await live.text()
    segment = await client.get(playlist_uris(text)[-1])
    assert segment.status == 200
    assert segment.headers["Content-Type"] in ("video/iso.segment", "video/mp4")
    assert "max-age" in segment.headers["Cache-Control"]
    body = await segment.read()
    assert body[4:8] == b"moof"
    init = await client.get(map_uris(text)[-1])
    assert init.headers["Content-Type"] == "video/mp4"
    assert (await init.read())[4:8] == b"ftyp"

    ranged = await client.get(playlist_uris(text)[-1], headers={"Range": "bytes=8-15"})
    assert ranged.status == 206
    assert ranged.headers["Content-Range"] == f"bytes 8-15/{len(body)}"
    assert await ranged.read() == body[8:16]
    too_far = await client.get(playlist_uris(text)[-1], headers={"Range": "bytes=99999999-"})
    assert too_far.status == 416

    segment_start = hls_entry.runtime_data.recorder.index.oldest_first()[0].start
    vod = await client.get(vod_playlist_path_for(camera_id, segment_start - 5, time.time()))
    assert vod.status == 200
    assert vod.headers["Content-Type"].startswith(PLAYLIST_TYPE)
    vod_text = await vod.text()
    file_url = playlist_uris(vod_text)[0]
    whole = await client.get(file_url)
    assert whole.status == 200
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes"
    data = await whole.read()
    part = await client.get(file_url, headers={"Range": "bytes=100-"})
    assert part.status == 206
    assert await part.read() == data[100:]
    tail = await client.get(file_url, headers={"Range": "bytes=-50"})
    assert await tail.read() == data[-50:]


def vod_playlist_path_for(camera_id: str, start: float, end: float) -> str:
    """Return the path-form VOD playlist for epoch seconds."""
    from datetime import UTC, datetime

    return vod_playlist_path(
        camera_id, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    )


async def test_vod_playlist_arguments(
    hass: HomeAssistant, hls_entry: MockConfigEntry, hass_client: ClientSessionGenerator
) -> None:
    """ISO or epoch times; missing, reversed, unreadable or too long ranges are 400."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    client = await hass_client()
    start = hls_entry.runtime_data.recorder.index.oldest_first()[0].start - 5
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    iso_end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    base = f"{HLS_URL}/{camera_id}/vod.m3u8"
    by_iso = await client.get(f"{base}?start={iso}&end={iso_end}")
    assert by_iso.status == 200
    by_epoch = await client.get(f"{base}?start={start:.0f}&end={time.time() + 5:.0f}")
    assert by_epoch.status == 200
    assert playlist_uris(await by_iso.text())
    assert playlist_uris(await by_epoch.text())
    for query in (
        "",
        f"?start={start:.0f}",
        f"?start={start + 100:.0f}&end={start:.0f}",
        "?start=yesterday&end=today",
        f"?start={start - 30 * 86400:.0f}&end={start:.0f}",
    ):
        assert (await client.get(base + query)).status == 400, query


def test_parse_range() -> None:
    """Single byte ranges are honoured; others ignored; impossible ones refused."""
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 100)
    assert parse_range("bytes=90-500", 100) == (90, 100)
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=-500", 100) == (0, 100)
    assert parse_range("bytes=0-1,5-6", 100) is None
    assert parse_range("items=0-1", 100) is None
    assert parse_range("bytes=x-y", 100) is None
    assert parse_range("bytes=5-1", 100) is None
    with pytest.raises(ValueError):
        parse_range("bytes=100-", 100)
    with pytest.raises(ValueError):
        parse_range("bytes=-0", 100)


async def test_paths_for_media_source(hass: HomeAssistant) -> None:
    """The helpers give query-free paths (HA's media source signs only those)."""
    from datetime import UTC, datetime

    start = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    end = datetime(2025, 1, 2, 4, 4, 5, 100000, tzinfo=UTC)
    path = vod_playlist_path("cam1", start, end)
    assert path == f"{HLS_URL}/cam1/vod/{int(start.timestamp())}-{int(end.timestamp()) + 1}.m3u8"
    assert "?" not in path
    assert live_playlist_path("cam1") == f"{HLS_URL}/cam1/live.m3u8"


def _part_numbers(uri: str) -> tuple[int, int]:
    name = uri.partition("?")[0].rsplit("/", 1)[1]
    msn, part = name.removesuffix(".m4s").split(".")
    return int(msn), int(part)


async def test_live_ll_hls_parts_and_blocking_reload(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """LL-HLS: parts listed, blocking reloads, part bytes that decode, signed part URIs."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    client = await hass_client()
    anonymous = await hass_client_no_auth()
    path = live_playlist_path(camera_id)
    text = await (await client.get(path)).text()
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=" in text
    assert "#EXT-X-PART-INF:PART-TARGET=" in text
    assert part_uris(text)
    camera = hls_entry.runtime_data.hls.live.camera(camera_id)
    msn, part = _part_numbers(hint_uri(text))
    assert camera.part(msn, part) is None  # hinted: not there yet

    # Malformed or far-future blocking requests are refused at once.
    assert (await client.get(f"{path}?_HLS_part=0")).status == 400
    assert (await client.get(f"{path}?_HLS_msn=x")).status == 400
    assert (await client.get(f"{path}?_HLS_msn={msn + 3}")).status == 400
    # Blocking reload for the hinted part: answered once it exists (a new recording file
    # starts a new segment instead: then its part 0 is what was waited for).
    blocked = await client.get(f"{path}?_HLS_msn={msn}&_HLS_part={part}")
    assert blocked.status == 200
    after = await blocked.text()
    listed = [_part_numbers(uri) for uri, _, _ in part_uris(after)]
    assert (msn, part) in listed or (msn + 1, 0) in listed
    whole = await client.get(f"{path}?_HLS_msn={msn}")  # the whole segment
    assert f"/{msn}.m4s" in await whole.text()

    # A part is a moof+mdat that decodes after its init section; its URI is signed.
    uri, _, init_uri = next(item for item in reversed(part_uris(after)) if item[1])
    body = await (await anonymous.get(uri)).read()
    assert body[4:8] == b"moof"
    assert b"mdat" in body
    init = await (await anonymous.get(init_uri)).read()
    with av.open(io.BytesIO(init + body)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 1
    for unsigned in (uri.split("?")[0], hint_uri(after).split("?")[0]):
        assert (await anonymous.get(unsigned)).status == 401

    # A signed playlist URL cannot take _HLS_msn (the signature covers the query): parts are
    # listed, blocking reload is not offered; the hinted part is held until it exists.
    signed_text = await (await anonymous.get(await signed(hass, hass_access_token, path))).text()
    assert "#EXT-X-PART:" in signed_text
    assert "CAN-BLOCK-RELOAD" not in signed_text
    hinted = await anonymous.get(hint_uri(signed_text))
    if hinted.status == 200:  # 404 when a new recording file started a new segment first
        assert (await hinted.read())[4:8] == b"moof"
    else:
        assert hinted.status == 404
