"""Recorded (VOD) playlists within limits, through HA's real web server and auth.

At most `VOD_MAX_FILES` recording files per playlist (a range over more is refused with a
message saying the limit, before anything is signed or read), their URLs signed on the event
loop a batch at a time, and at most a few playlists built at once (per user and in all), also
when the clients that asked for them go away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from datetime import datetime
import math
import os
from pathlib import Path
import threading
from typing import Any

from homeassistant.components.http.auth import async_sign_path
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.lightnvr.hls import HLS_URL, views
from custom_components.lightnvr.hls.limits import (
    VOD_BUILDS_PER_USER,
    VOD_BUILDS_TOTAL,
    VOD_MAX_FILES,
    VOD_SIGN_BATCH,
)
from custom_components.lightnvr.recorder.storage import Segment, StorageLayout

from .test_hls_views import (  # noqa: F401 - pytest finds the fixture by name
    camera_id_of,
    hls_entry_fixture,
    map_uris,
    playlist_uris,
    vod_playlist_path_for,
    wait_segments,
)

TWO_DAYS = 2 * 86400.0


def _vod_query(camera_id: str, start: float, end: float) -> str:
    return f"{HLS_URL}/{camera_id}/vod.m3u8?start={start}&end={end}"


def _link_recordings(
    entry: MockConfigEntry, source: Segment, first: float, count: int, step: float
) -> list[Segment]:
    """File `count` copies (hard links) of a real recording every `step` s from `first`.

    Blocking. Returns them as the recorder's index would hold them (not added yet).
    """
    layout = entry.runtime_data.recorder.layout
    made: list[Segment] = []
    for number in range(count):
        start = first + number * step
        path = _recording_path(entry, source.camera_id, start)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source.path, path)
        made.append(Segment(source.camera_id, path, start, start + source.duration, source.size))
        assert layout.relative(path)  # inside the storage root
    return made


def _recording_path(entry: MockConfigEntry, camera_id: str, start: float) -> Path:
    layout: StorageLayout = entry.runtime_data.recorder.layout
    local = datetime.fromtimestamp(start, layout.tz)
    return layout.camera_dir(camera_id) / f"{local:%Y-%m-%d}" / f"{local:%H-%M-%S}.mp4"


class _SignWatch:
    """Counts the signatures made, and the most made in one stretch of the event loop."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ticks = 0
        self.count = 0
        self.longest_run = 0
        self._run = 0
        self._run_tick = -1
        self._heartbeat: asyncio.Task[None] | None = None
        original = async_sign_path

        def sign(*args: Any, **kwargs: Any) -> str:
            self.count += 1
            if self.ticks == self._run_tick:
                self._run += 1
            else:
                self._run, self._run_tick = 1, self.ticks
            self.longest_run = max(self.longest_run, self._run)
            return original(*args, **kwargs)

        monkeypatch.setattr(views, "async_sign_path", sign)

    def start(self) -> None:
        """Start counting the turns of the event loop."""
        self._heartbeat = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        """Stop counting."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def _beat(self) -> None:
        # Each turn of the loop runs every ready callback once: this one among them.
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


@pytest.fixture(name="sign_watch")
async def sign_watch_fixture(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[_SignWatch]:
    """Watch the signatures of the HLS views (stopped at the end whatever happens)."""
    watch = _SignWatch(monkeypatch)
    yield watch
    await watch.stop()


async def test_vod_playlist_lists_at_most_the_file_limit(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    sign_watch: _SignWatch,
) -> None:
    """Up to the limit the playlist lists every file; past it, and over 2 days of 2 s files, 400.

    The signatures of a playlist at the limit are made a batch per turn of the event loop; a
    refused range signs nothing.
    """
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    recorder = hls_entry.runtime_data.recorder
    real = recorder.index.segments(camera_id)[0]
    client = await hass_client()
    watch = sign_watch
    watch.start()

    # Exactly the limit of (real, hard-linked) recordings, 3 days ago (retention keeps 7): all
    # listed, each file with its own signed init section.
    step = float(math.ceil(real.duration) + 1)
    first = math.floor(real.start) - 3 * 86400.0
    linked = await hass.async_add_executor_job(
        _link_recordings, hls_entry, real, first, VOD_MAX_FILES + 1, step
    )
    for segment in linked[:VOD_MAX_FILES]:
        recorder.index.add(segment)
    at_limit = vod_playlist_path_for(camera_id, first, linked[VOD_MAX_FILES - 1].end)
    response = await client.get(at_limit)
    assert response.status == 200, await response.text()
    text = await response.text()
    assert len(set(map_uris(text))) == VOD_MAX_FILES
    assert len(playlist_uris(text)) >= VOD_MAX_FILES
    assert watch.count == VOD_MAX_FILES
    # Never more than a batch of signatures without letting the loop run something else.
    assert watch.longest_run <= VOD_SIGN_BATCH

    # One file more over the same time: refused, saying the limit, nothing signed.
    recorder.index.add(linked[VOD_MAX_FILES])
    signed_before = watch.count
    over = vod_playlist_path_for(camera_id, first, linked[-1].end)
    response = await client.get(over)
    assert response.status == 400
    message = await response.text()
    assert f"{VOD_MAX_FILES + 1} recordings" in message
    assert f"at most {VOD_MAX_FILES}" in message
    assert watch.count == signed_before

    # Two days of 2 s files (a camera reconnecting all the time): 86 400 files in the time
    # limit of a range. Refused at once; nothing signed, no file read.
    tiny_first = first - TWO_DAYS - 3600
    for number in range(int(TWO_DAYS / 2)):
        start = tiny_first + number * 2
        path = _recording_path(hls_entry, camera_id, start)
        recorder.index.add(Segment(camera_id, path, start, start + 2.0, 100))
    two_days = _vod_query(camera_id, tiny_first, tiny_first + TWO_DAYS)
    response = await client.get(two_days)
    assert response.status == 400
    message = await response.text()
    assert "86400 recordings" in message
    assert f"at most {VOD_MAX_FILES}" in message
    assert watch.count == signed_before
    await watch.stop()

    # Still no answer at all without auth.
    anonymous = await hass_client_no_auth()
    for url in (two_days, at_limit, over):
        assert (await anonymous.get(url)).status == 401, url

    # The range being recorded still plays, and its files are served.
    response = await client.get(_vod_query(camera_id, real.start - 1, real.end))
    assert response.status == 200
    media = await client.get(playlist_uris(await response.text())[0])
    assert media.status == 200
    assert (await media.read())[4:8] == b"ftyp"


class _BlockedRender:
    """Holds every VOD render in the executor until released; counts them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.inside = 0
        self.peak = 0
        self._lock = threading.Lock()
        original: Callable[..., bytes | None] = views._render_vod

        def render(*args: Any) -> bytes | None:
            with self._lock:
                self.inside += 1
                self.peak = max(self.peak, self.inside)
            try:
                self.gate.wait(60)
                return original(*args)
            finally:
                with self._lock:
                    self.inside -= 1

        monkeypatch.setattr(views, "_render_vod", render)

    async def wait_inside(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.inside < count:
                await asyncio.sleep(0.02)


@pytest.fixture(name="blocked_render")
def blocked_render_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[_BlockedRender]:
    """Hold VOD renders until the test releases them (released at the end whatever happens)."""
    blocked = _BlockedRender(monkeypatch)
    yield blocked
    blocked.gate.set()


async def test_vod_builds_are_limited_per_user_and_in_all(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_read_only_access_token: str,
    blocked_render: _BlockedRender,
) -> None:
    """A user past their builds gets 429 at once; another user waits for a free slot."""
    assert VOD_BUILDS_PER_USER == VOD_BUILDS_TOTAL == 2  # what the steps below assume
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    real = hls_entry.runtime_data.recorder.index.segments(camera_id)[0]
    url = _vod_query(camera_id, real.start - 1, real.end)
    blocked = blocked_render
    admin = await hass_client()
    reader = await hass_client(hass_read_only_access_token)

    first = [asyncio.create_task(admin.get(url)) for _ in range(VOD_BUILDS_PER_USER)]
    await blocked.wait_inside(VOD_BUILDS_TOTAL)
    async with asyncio.timeout(5):
        refused = await admin.get(url)
    assert refused.status == 429
    assert refused.headers["Retry-After"]

    # Another user is not refused: they wait until a build ends.
    waiting = asyncio.create_task(reader.get(url))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    assert blocked.inside == VOD_BUILDS_TOTAL

    blocked.gate.set()
    for response in (*await asyncio.gather(*first), await waiting):
        assert response.status == 200
        assert playlist_uris(await response.text())
    assert blocked.peak == VOD_BUILDS_TOTAL


async def test_vod_builds_of_clients_gone_keep_their_slots(  # noqa: PLR0917 - pytest fixtures
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    hass_admin_user: MockUser,
    hass_read_only_access_token: str,
    blocked_render: _BlockedRender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests dropped while their playlist is built free nothing until the build ends."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)
    real = hls_entry.runtime_data.recorder.index.segments(camera_id)[0]
    url = _vod_query(camera_id, real.start - 1, real.end)
    blocked = blocked_render
    cancelled: list[BaseException] = []
    original_run = getattr(views, "run_to_end", None)

    async def watched(*args: Any) -> Any:
        assert original_run is not None
        try:
            return await original_run(*args)
        except asyncio.CancelledError as err:
            cancelled.append(err)
            raise

    monkeypatch.setattr(views, "run_to_end", watched, raising=False)
    admin = await hass_client()
    reader = await hass_client(hass_read_only_access_token)

    # A client that drops its requests as soon as they are being built.
    dropped = [asyncio.create_task(admin.get(url)) for _ in range(VOD_BUILDS_TOTAL)]
    await blocked.wait_inside(VOD_BUILDS_TOTAL)
    for task in dropped:
        task.cancel()
    await asyncio.gather(*dropped, return_exceptions=True)
    await asyncio.sleep(0.2)  # the server sees the connections close

    # The builds still run, so they still count: against the user, and in all.
    async with asyncio.timeout(5):
        assert (await admin.get(url)).status == 429
    waiting = asyncio.create_task(reader.get(url))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    assert blocked.inside == VOD_BUILDS_TOTAL

    blocked.gate.set()
    assert (await waiting).status == 200
    assert (await admin.get(url)).status == 200
    # The dropped requests' handlers were cancelled, and ended once their threads had.
    async with asyncio.timeout(5):
        while len(cancelled) < VOD_BUILDS_TOTAL:
            await asyncio.sleep(0.02)
    assert blocked.peak == VOD_BUILDS_TOTAL
    builds = views.async_register_hls_views(hass).vod_builds
    assert builds.running == 0
    assert builds.pending(hass_admin_user.id) == 0
