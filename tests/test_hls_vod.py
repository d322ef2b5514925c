"""Recorded HLS with real parts: the recorder's files, a gap made by stopping the camera, PyAV.

The VOD playlist over a recorded range decodes end to end through HA's web server, lists as
many seconds as the files hold, marks the gap (and every new file) with EXT-X-DISCONTINUITY,
and its timestamps rise across files and across the gap.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
import itertools
import json
from pathlib import Path
import subprocess

import av
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.lightnvr.compat import add_stream_like
from custom_components.lightnvr.hls import HLS_URL, vod_playlist_path
from custom_components.lightnvr.hls.vod import FragmentCache, index_file, vod_chunks
from custom_components.lightnvr.media.bmff import parse_tracks
from custom_components.lightnvr.recorder.storage import Segment

from .infra.rtsp import RtspServer
from .test_hls_live import Player
from .test_hls_views import (  # noqa: F401 - pytest finds the fixture by name
    camera_id_of,
    hls_entry_fixture,
    map_uris,
    playlist_uris,
    signed,
    wait_segments,
)


def _probe(path: Path) -> tuple[int, float]:
    """Return (decoded frames, seconds of video) of a file, by ffprobe."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
            "-show_entries", "stream=nb_read_frames,duration", "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stream = json.loads(out.stdout)["streams"][0]
    return int(stream["nb_read_frames"]), float(stream["duration"])


def _tags(text: str) -> list[tuple[str, str]]:
    """Return (tag, value) for each line of a playlist (URIs as ("URI", line))."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            tag, _, value = line.partition(":")
            out.append((tag, value))
        elif line:
            out.append(("URI", line))
    return out


def _segments(text: str) -> list[dict[str, object]]:
    """Return each media segment's PDT (epoch), duration and whether a discontinuity preceded."""
    segments: list[dict[str, object]] = []
    current: dict[str, object] = {"discontinuity": False}
    for tag, value in _tags(text):
        if tag == "#EXT-X-DISCONTINUITY":
            current["discontinuity"] = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            current["start"] = datetime.fromisoformat(value).timestamp()
        elif tag == "#EXTINF":
            current["duration"] = float(value.rstrip(","))
        elif tag == "URI":
            segments.append(current)
            current = {"discontinuity": False}
    return segments


async def _wait_new_file(entry: MockConfigEntry, known: int, timeout: float = 60) -> None:
    index = entry.runtime_data.recorder.index
    async with asyncio.timeout(timeout):
        while len(index) <= known:
            await asyncio.sleep(0.2)


async def test_vod_plays_a_recorded_range_with_a_gap(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    rtsp_camera: RtspServer,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """Record, lose the camera for a few seconds, record again; play it all as one VOD."""
    camera_id = camera_id_of(hls_entry)
    recorder = hls_entry.runtime_data.recorder
    await wait_segments(hls_entry, 2)
    # The camera goes away for a few seconds: the recorder finishes the file; a new
    # connection starts a new one after the gap.
    rtsp_camera.stop()
    before_gap = len(recorder.index)
    await asyncio.sleep(3)
    await hass.async_add_executor_job(rtsp_camera.start)
    await _wait_new_file(hls_entry, before_gap + 1)  # one full file after the gap
    recorder.set_recording(camera_id, False)  # finish the file being written
    await _wait_until_not_recording(hls_entry, camera_id)

    segments = recorder.index.segments(camera_id)
    assert len(segments) >= 3
    gaps = [
        later.start - earlier.end
        for earlier, later in itertools.pairwise(segments)
        if later.start - earlier.end > 1.0
    ]
    assert gaps  # the camera really was gone
    start = datetime.fromtimestamp(segments[0].start - 10, UTC)
    end = datetime.fromtimestamp(segments[-1].end + 10, UTC)

    client = await hass_client_no_auth()
    # The path form, signed as HA's media source signs a play URL.
    path = await signed(hass, hass_access_token, vod_playlist_path(camera_id, start, end))
    response = await client.get(path)
    assert response.status == 200
    text = await response.text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    listed = _segments(text)

    # ~2 s byte ranges, not whole files.
    files = [await hass.async_add_executor_job(_probe, s.path) for s in segments]
    assert len(listed) > len(segments)
    assert all(float(str(s["duration"])) <= 2.6 for s in listed)
    assert text.count("#EXT-X-BYTERANGE:") == len(listed)
    assert len(set(map_uris(text))) == len(segments)  # one init section per file

    # The playlist is as long as the files, and the gap is not counted.
    total = sum(float(str(s["duration"])) for s in listed)
    assert total == pytest.approx(sum(seconds for _, seconds in files), abs=0.05 * len(files))
    # EXT-X-DISCONTINUITY before every new file, and so at the gap, where PDT jumps ahead.
    flagged = [s for s in listed if s["discontinuity"]]
    assert len(flagged) == len(segments) - 1
    jumps = [
        float(str(later["start"])) - float(str(earlier["start"])) - float(str(earlier["duration"]))
        for earlier, later in itertools.pairwise(listed)
    ]
    for jump, later in zip(jumps, listed[1:], strict=False):
        if jump > 1.0:
            assert later["discontinuity"]
    assert max(jumps) == pytest.approx(max(gaps), abs=0.1)
    assert float(str(listed[0]["start"])) == pytest.approx(segments[0].start, abs=0.05)

    # It decodes end to end: every frame of every file, on one rising timeline.
    decoded, player = await decoded_frames(hass, str(client.make_url(path)))
    assert decoded == sum(frames for frames, _ in files)
    if player is None:  # counted by ffprobe: no frame times to check
        return
    assert all(b > a for a, b in zip(player.times, player.times[1:], strict=False))
    # Decode time is wall-clock time: the first frame is at the first recording's start.
    assert player.times[0] == pytest.approx(segments[0].start, abs=0.05)

    # A sub-range lists only what overlaps it (whole ~2 s chunks); the query form takes
    # fractional epoch seconds (the path form is whole seconds).
    middle = segments[1]
    sub = await client.get(
        await signed(
            hass,
            hass_access_token,
            f"{HLS_URL}/{camera_id}/vod.m3u8?start={middle.start + 0.5}&end={middle.start + 1}",
        )
    )
    sub_listed = _segments(await sub.text())
    assert 1 <= len(sub_listed) <= 2
    assert float(str(sub_listed[0]["start"])) <= middle.start + 0.5
    assert len(set(playlist_uris(await sub.text()))) == 1  # only the middle file


async def _wait_until_not_recording(entry: MockConfigEntry, camera_id: str) -> None:
    """Wait until the last file is finished: no part file left, and indexed."""
    recorder = entry.runtime_data.recorder
    async with asyncio.timeout(30):
        while recorder.camera_state(camera_id).recording or any(
            recorder.layout.root.rglob("*.part")
        ):
            await asyncio.sleep(0.1)
        files = len(list(recorder.layout.root.rglob("*.mp4")))
        while len(recorder.index) < files:
            await asyncio.sleep(0.1)


# ----- the fragment index, without Home Assistant -------------------------------------------


def _fragmented(path: Path, source: Path, first: float, seconds: float) -> Path:
    """Write [first, first + seconds) of `source` as a fragmented MP4 starting at 0."""
    with (
        av.open(str(source)) as inp,
        av.open(
            str(path),
            mode="w",
            format="mp4",
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
        ) as out,
    ):
        video = inp.streams.video[0]
        stream = add_stream_like(out, video)
        origin = None
        for packet in inp.demux(video):
            if packet.dts is None:
                continue
            at = float(packet.dts * video.time_base)
            if not first <= at < first + seconds:
                continue
            origin = packet.dts if origin is None else origin
            packet.dts -= origin
            packet.pts -= origin
            packet.stream = stream
            out.mux(packet)
    return path


async def decoded_frames(hass: HomeAssistant, url: str) -> tuple[int, Player | None]:
    """Count the video frames a VOD playlist decodes to; return the PyAV player too.

    FFmpeg 8+ (PyAV 19's) stops such a playlist after its first segment (a known difference of
    its HLS demuxer, followed up separately): there Debian's FFmpeg counts them, and there is
    no player to return.
    """
    if av.library_versions["libavformat"][0] >= 62:
        return await hass.async_add_executor_job(_ffprobe_frames, url), None
    player = Player(url)
    await hass.async_add_executor_job(player.play, 1_000_000)
    assert player.error is None, player.error
    return player.frames, player


def _ffprobe_frames(url: str) -> int:
    """Count the video frames Debian's FFmpeg decodes from a playlist."""
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    return int(output.split()[0])  # one line per program and stream: the same stream


def test_fragment_index_and_shared_timeline(camera_clip: Path, tmp_path: Path) -> None:
    """The index finds every fragment; served bytes carry epoch decode times."""
    path = _fragmented(tmp_path / "a.mp4", camera_clip, 0, 4)
    index = index_file(path)
    assert len(index.fragments) == 4  # one per 1 s GOP
    assert all(fragment.keyframe for fragment in index.fragments)
    assert index.duration == pytest.approx(4.0, abs=0.01)
    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    assert parse_tracks(data[: index.init_length])[index.video_track_id].handler == "vide"
    last = index.fragments[-1]
    assert last.offset + last.length <= len(data)

    zero = 1_750_000_000.25
    segment = Segment("cam", path, zero, zero + index.duration, len(data))
    assert index.zero(segment) == pytest.approx(zero)
    served = tmp_path / "served.mp4"
    served.write_bytes(
        index.read_range(0, index.init_length, zero)
        + index.read_range(index.fragments[1].offset, len(data), zero)
    )
    with av.open(str(served)) as container:
        times = [float(p.dts * p.time_base) for p in container.demux(video=0) if p.dts is not None]
    assert times[0] == pytest.approx(zero + 1.0, abs=0.001)  # the second GOP, on the clock
    assert len(times) == 75
    # Any byte range gets the same bytes as the whole, even one cutting a tfdt in half.
    whole = index.read_range(0, len(data), zero)
    tfdt = index.tfdts[2].position
    assert index.read_range(tfdt + 3, tfdt + 100, zero) == whole[tfdt + 3 : tfdt + 100]

    chunks = vod_chunks([segment], {path: index}, zero, zero + 10, 2.0)
    assert [round(c.duration, 2) for c in chunks] == [2.0, 2.0]
    assert chunks[1].start == pytest.approx(zero + 2.0)
    assert chunks[0].offset == index.fragments[0].offset
    assert chunks[0].length == index.fragments[2].offset - index.fragments[0].offset


def test_fragment_cache_reindexes_changed_files(camera_clip: Path, tmp_path: Path) -> None:
    """A cached index is reused until the file changes; unreadable files are left out."""
    path = _fragmented(tmp_path / "a.mp4", camera_clip, 0, 2)
    cache = FragmentCache(max_files=1)
    first = cache.get(path)
    assert cache.get(path) is first
    _fragmented(tmp_path / "b.mp4", camera_clip, 0, 3).replace(path)
    assert len(cache.get(path).fragments) == 3
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    found = cache.get_many([path, tmp_path / "junk.mp4", tmp_path / "missing.mp4"])
    assert list(found) == [path]
    assert len(cache) == 1
