"""Live HLS with real parts: PyAV plays the live playlist over HTTP from HA's test server.

Recording on: the fragments the recorder writes, from the camera's one muxer, kept in memory.
Recording off: the same muxer runs for live HLS, which lets go of it after the idle timeout.
Switching recording while a player plays: the stream goes on, no break, timestamps keep rising.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from fractions import Fraction
import itertools
import json
from pathlib import Path
import subprocess
import threading
import time
from types import SimpleNamespace
from typing import Any

import av
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.lightnvr.hls import live as live_module, live_playlist_path
from custom_components.lightnvr.hls.live import LIVE_IDLE_TIMEOUT, LIVE_WINDOW_SEGMENTS, LiveCamera
from custom_components.lightnvr.hls.live_sink import LiveSink
from custom_components.lightnvr.hls.live_types import LiveChunk, LiveSource
from custom_components.lightnvr.hub import HubState, MediaPacket, StreamInfo, ThreadPacketQueue
from custom_components.lightnvr.media.muxer import Fragment, MuxerInit

from .fragment_helpers import live_chunks, start_collecting
from .infra.media import ffmpeg_binary
from .infra.rtsp import RtspServer
from .test_hls_views import (  # noqa: F401 - pytest finds the fixture by name
    camera_id_of,
    camera_muxer_threads,
    hls_entry_fixture,
    map_uris,
    part_uris,
    playlist_uris,
    signed,
    wait_segments,
)


class Player:
    """PyAV reading an HLS URL in a worker thread; counts frames, keeps their timestamps."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0
        self.times: list[float] = []  # seconds
        self.size: tuple[int, int] | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()

    def play(self, frames: int) -> None:
        """Decode `frames` frames (blocking: run it in the executor)."""
        try:
            with av.open(self.url, timeout=(20, 20)) as container:
                # Every video stream: FFmpeg 8+ opens a new stream at each new init section
                # (EXT-X-MAP) of an HLS playlist, where older versions kept one.
                for packet in container.demux():
                    if packet.stream is None or packet.stream.type != "video":
                        continue
                    for frame in packet.decode():
                        self.frames += 1
                        self.size = (frame.width, frame.height)
                        if frame.pts is not None and frame.time_base:
                            self.times.append(float(frame.pts * frame.time_base))
                        if self.frames >= frames or self._stop.is_set():
                            return
        except BaseException as err:
            self.error = err

    def stop(self) -> None:
        self._stop.set()


async def _wait_until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)


async def _live_url(
    hass: HomeAssistant, client: Any, access_token: str, camera_id: str
) -> tuple[str, str]:
    """Return the signed path of the live playlist, and its absolute URL (for a player)."""
    path = await signed(hass, access_token, live_playlist_path(camera_id))
    return path, str(client.make_url(path))


def _rising(times: list[float]) -> bool:
    return all(later > earlier for earlier, later in itertools.pairwise(times))


def live_sinks(entry: MockConfigEntry, camera_id: str) -> list[LiveSink]:
    """Return the live HLS sinks attached to a camera's muxer."""
    fragments = entry.runtime_data.fragments[camera_id]
    return [sink for sink in fragments._sinks if isinstance(sink, LiveSink)]


async def test_live_from_the_cameras_one_muxer(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """Recording on: live HLS lists the fragments the recorder writes; PyAV plays it."""
    camera_id = camera_id_of(hls_entry)
    await wait_segments(hls_entry, 1)  # the recorder writes
    fragments = hls_entry.runtime_data.fragments[camera_id]
    client = await hass_client_no_auth()
    url, absolute = await _live_url(hass, client, hass_access_token, camera_id)

    first = await (await client.get(url)).text()
    assert first.startswith("#EXTM3U")
    assert "#EXT-X-TARGETDURATION:2" in first
    assert "#EXT-X-MAP:" in first
    assert "#EXT-X-PROGRAM-DATE-TIME:" in first
    assert "#EXT-X-ENDLIST" not in first
    assert "#EXT-X-PART:" in first  # LL-HLS parts: a player without LL-HLS skips them
    # Several segments at once: the muxer's newest fragments were kept in memory.
    assert len(playlist_uris(first)) >= 2
    # One muxer for the camera, shared by the recorder and live HLS.
    assert len(camera_muxer_threads()) == 1
    assert len(live_sinks(hls_entry, camera_id)) == 1
    muxed_before = fragments.fragments

    player = Player(absolute)
    # 5 s of video: crosses at least one 3 s recording file.
    await hass.async_add_executor_job(player.play, 125)
    assert player.error is None, player.error
    assert player.frames == 125
    assert player.size == (640, 360)
    assert _rising(player.times)  # one timeline across the recording files
    later = await (await client.get(url)).text()
    # A new recording file is no break for live HLS: one init section per camera connection.
    assert "#EXT-X-DISCONTINUITY" not in later.splitlines()
    assert len(set(map_uris(later))) == 1
    # Each fragment was muxed once: the live sink got exactly what the muxer made.
    sink = live_sinks(hls_entry, camera_id)[0]
    assert fragments.fragments > muxed_before
    assert sink.fragments == pytest.approx(fragments.fragments - muxed_before, abs=2)


async def test_live_without_recording(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """Recording off: the camera's muxer serves live, nothing is written, idle lets go."""
    camera_id = camera_id_of(hls_entry)
    recorder = hls_entry.runtime_data.recorder
    recorder.set_recording(camera_id, False)
    await _wait_until(lambda: not recorder.camera_state(camera_id).recording)
    hub = hls_entry.runtime_data.engine.hub(camera_id)
    await _wait_until(lambda: hub.latest_keyframe() is not None)
    files_before = sorted(recorder.layout.root.rglob("*.mp4*"))

    client = await hass_client_no_auth()
    url, absolute = await _live_url(hass, client, hass_access_token, camera_id)
    response = await client.get(url)
    assert response.status == 200  # the first request waited for the first segment
    text = await response.text()
    assert playlist_uris(text)
    assert len(live_sinks(hls_entry, camera_id)) == 1
    assert len(camera_muxer_threads()) == 1

    player = Player(absolute)
    await hass.async_add_executor_job(player.play, 75)
    assert player.error is None, player.error
    assert player.frames == 75
    assert player.size == (640, 360)
    assert _rising(player.times)
    text = await (await client.get(url)).text()
    init = await client.get(map_uris(text)[-1])
    assert (await init.read())[4:8] == b"ftyp"
    part = await client.get(part_uris(text)[-1][0])  # an LL-HLS part, from memory
    assert (await part.read())[4:8] == b"moof"
    assert sorted(recorder.layout.root.rglob("*.mp4*")) == files_before  # no disk used

    # Nobody asks for a while: live HLS lets go of the muxer; the next request attaches again.
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=LIVE_IDLE_TIMEOUT + 1))
    await hass.async_block_till_done()
    assert not live_sinks(hls_entry, camera_id)
    assert hls_entry.runtime_data.hls.live.source(camera_id) is None
    again = await client.get(url)
    assert again.status == 200
    assert len(live_sinks(hls_entry, camera_id)) == 1


async def test_live_goes_on_while_recording_is_switched(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """A player keeps playing, on one timeline, while recording goes off and on again."""
    camera_id = camera_id_of(hls_entry)
    recorder = hls_entry.runtime_data.recorder
    await wait_segments(hls_entry, 1)
    client = await hass_client_no_auth()
    url, absolute = await _live_url(hass, client, hass_access_token, camera_id)
    assert (await client.get(url)).status == 200

    player = Player(absolute)
    playing = hass.async_add_executor_job(player.play, 100_000)
    try:
        await _wait_until(lambda: player.frames >= 25 or player.error is not None)
        recorder.set_recording(camera_id, False)
        await _wait_until(lambda: not recorder.camera_state(camera_id).recording)
        switched_off = player.frames
        await _wait_until(lambda: player.frames >= switched_off + 75 or player.error is not None)
        recorder.set_recording(camera_id, True)
        await _wait_until(lambda: recorder.camera_state(camera_id).recording)
        switched_on = player.frames
        await _wait_until(lambda: player.frames >= switched_on + 75 or player.error is not None)
    finally:
        player.stop()
        await playing
    assert player.error is None, player.error
    assert _rising(player.times)  # one timeline whatever the recorder does
    text = await (await client.get(url)).text()
    # The camera's one muxer goes on: the switches are no break for live HLS.
    assert "#EXT-X-DISCONTINUITY" not in text.splitlines()
    assert len(live_sinks(hls_entry, camera_id)) == 1


# ----- the camera muxer on its own, with audio --------------------------------------------


class _FileSource:
    """A PacketSource replaying a local MP4 (H.264 + AAC) like a hub (Annex B video)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.queue = ThreadPacketQueue(100_000)
        received = time.monotonic()
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            audio = container.streams.audio[0]
            vctx: Any = video.codec_context
            actx: Any = audio.codec_context
            self._info = StreamInfo(
                generation=1,
                video_codec="h264",
                width=vctx.width,
                height=vctx.height,
                time_base=video.time_base or Fraction(1, 90000),
                fps=25.0,
                extradata=bytes(vctx.extradata),
                audio_codec="aac",
                audio_sample_rate=actx.sample_rate,
                audio_channels=actx.channels,
                audio_extradata=bytes(actx.extradata),
            )
            from av.bitstream import BitStreamFilterContext

            bsf = BitStreamFilterContext("h264_mp4toannexb", video)
            for packet in container.demux(video, audio):
                if packet.size == 0 or packet.dts is None:
                    continue
                time_base = Fraction(packet.time_base)  # PyAV 14+ blanks a filtered packet
                outs = bsf.filter(packet) if packet.stream is video else [packet]
                for out in outs:
                    seconds = float(out.dts * time_base)
                    self.queue.put(
                        MediaPacket(
                            kind="video" if packet.stream is video else "audio",
                            data=bytes(out),
                            pts=out.pts,
                            dts=out.dts,
                            time_base=time_base,
                            keyframe=out.is_keyframe,
                            received=received + seconds,
                            generation=1,
                        )
                    )
        self.queue.close()  # the muxer ends at the end of the file

    @property
    def info(self) -> StreamInfo:
        return self._info

    def subscribe_thread(self, maxlen: int = 0, *, from_keyframe: bool = True) -> Any:
        return self.queue

    def unsubscribe(self, queue: Any) -> None:
        queue.close()


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 320x180 H.264 (GOP 1 s) with AAC audio."""
    path = tmp_path_factory.mktemp("hls") / "av.mp4"
    subprocess.run(
        [
            ffmpeg_binary(), "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
            "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-keyint_min", "25",
            "-sc_threshold", "0", "-bf", "0", "-c:a", "aac", "-b:a", "64k", "-shortest",
            str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def test_live_chunks_carry_audio_on_the_wall_clock(av_clip: Path, tmp_path: Path) -> None:
    """Video and AAC audio are copied into fragments whose timestamps are epoch seconds."""
    source = _FileSource(av_clip)
    started = time.time()
    chunks = live_chunks(*start_collecting("file", source), timeout=30)
    assert len(chunks) >= 8  # 0.5 s parts
    assert sum(chunk.keyframe for chunk in chunks) == 4  # one per GOP
    assert chunks[0].keyframe
    assert abs(chunks[0].start - started) < 5
    assert sum(chunk.duration for chunk in chunks) == pytest.approx(4.0, abs=0.1)
    assert all(
        later.start == pytest.approx(earlier.end, abs=0.001)
        for earlier, later in itertools.pairwise(chunks)
    )
    assert chunks[0].init_data is not None
    out = tmp_path / "live.mp4"
    out.write_bytes(chunks[0].init_data + b"".join(chunk.data or b"" for chunk in chunks))
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe", "-v", "error", "-show_entries",
                "stream=codec_name,start_time,nb_read_frames", "-count_frames",
                "-of", "json", str(out),
            ],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    streams = {stream["codec_name"]: stream for stream in probe["streams"]}
    assert set(streams) == {"h264", "aac"}
    assert int(streams["h264"]["nb_read_frames"]) == 100
    # Decode time 0 is the first frame's arrival: the media clock is the wall clock.
    assert float(streams["h264"]["start_time"]) == pytest.approx(chunks[0].start, abs=0.05)
    assert float(streams["aac"]["start_time"]) == pytest.approx(chunks[0].start, abs=0.2)


async def test_live_answers_503_while_the_camera_sends_nothing(
    hass: HomeAssistant,
    hls_entry: MockConfigEntry,
    rtsp_camera: RtspServer,
    hass_client: ClientSessionGenerator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No video yet: the first request waits a little, then says "try again" (not 404)."""
    camera_id = camera_id_of(hls_entry)
    hub = hls_entry.runtime_data.engine.hub(camera_id)
    hls_entry.runtime_data.recorder.set_recording(camera_id, False)
    rtsp_camera.stop()
    await _wait_until(lambda: hub.state is not HubState.STREAMING)
    monkeypatch.setattr(live_module, "LIVE_FIRST_SEGMENT_TIMEOUT", 1.0)
    client = await hass_client()
    response = await client.get(live_playlist_path(camera_id))
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"


# ----- the live window, fed fragment by fragment ----------------------------------------------

T0 = 1_750_000_000.0


_INITS: dict[str, MuxerInit] = {}


def _fragment(
    container: str, number: int, start: float, *, duration: float = 1.0, keyframe: bool = True
) -> Fragment:
    """A camera muxer's fragment of `container` (one init section per name: a connection)."""
    init = _INITS.setdefault(container, MuxerInit(b"init " + container.encode(), T0, 1))
    return Fragment(
        init=init,
        data=b"%d" % number,
        bases={},
        video_base=round((start - T0) * init.video_scale),
        start=start,
        duration=duration,
        keyframe=keyframe,
        arrived=None,
    )


def _live_window(hass: HomeAssistant) -> LiveCamera:
    owner = SimpleNamespace(hass=hass)
    camera = LiveCamera(owner, "cam")  # type: ignore[arg-type]
    camera.source = LiveSource.MUXER
    camera._sink = LiveSink(hass.loop, camera._on_fragment)
    return camera


def _feed(camera: LiveCamera, fragment: Fragment) -> None:
    """Hand a fragment to the window as the camera's muxer does (on the loop)."""
    assert camera._sink is not None
    camera._on_fragment(camera._sink, fragment)


def _parts(
    camera: LiveCamera, container: str, start: float, end: float, *, gop: float = 1.0
) -> None:
    """Feed the muxer's 0.5 s parts from `start` to `end` (included), a keyframe every `gop`."""
    at = start
    while at <= end + 1e-9:
        number = round((at - T0) * 2)
        keyframe = abs((at - T0) / gop - round((at - T0) / gop)) < 1e-9
        _feed(camera, _fragment(container, number, at, duration=0.5, keyframe=keyframe))
        at += 0.5


async def test_live_window_cuts_two_second_segments_and_marks_breaks(
    hass: HomeAssistant,
) -> None:
    """0.5 s parts make 2 s segments cut on keyframes; a new connection is a discontinuity."""
    camera = _live_window(hass)
    _parts(camera, "a", T0, T0 + 4.5)
    window = camera.window()
    # A segment is closed by the keyframe part after 2 s, which starts the next one.
    assert [s.sequence for s in window.segments] == [0, 1]
    assert [s.duration for s in window.segments] == [2.0, 2.0]
    first = window.segments[0]
    assert [part.fragment.data for part in first.parts if part.fragment] == [
        b"0",
        b"1",
        b"2",
        b"3",
    ]
    assert not any(s.discontinuity for s in window.segments)
    assert window.target == 2
    assert window.part_target == 0.5

    # A new connection: the 1 s left of the first one is listed, the new one is a break that
    # starts on a keyframe (the part before it is skipped).
    _feed(camera, _fragment("b", 11, T0 + 5.5, duration=0.5, keyframe=False))
    _parts(camera, "b", T0 + 6, T0 + 8)
    window = camera.window()
    assert [(s.sequence, s.duration, s.discontinuity) for s in window.segments] == [
        (0, 2.0, False),
        (1, 2.0, False),
        (2, 1.0, False),
        (3, 2.0, True),
    ]
    assert window.segments[3].init is not window.segments[2].init
    assert window.segments[3].start == T0 + 6

    # A part overlapping what is listed (another source's) does not start a segment twice.
    camera._close_pending()  # what a switch of source does
    listed = len(camera.window().segments)
    _feed(camera, _fragment("b", 16, T0 + 8, duration=0.5))
    assert len(camera.window().segments) == listed
    partial = camera.window().partial
    assert partial is None or not partial.parts

    # The window slides; the discontinuity sequence counts the breaks that left it.
    _parts(camera, "b", T0 + 8.5, T0 + 24)
    window = camera.window()
    assert len(window.segments) == LIVE_WINDOW_SEGMENTS
    assert window.media_sequence == window.segments[0].sequence > 3
    assert window.discontinuity_sequence == 1
    assert camera.segment(0) is None  # long gone
    assert camera.init(window.segments[0].init.init_id) is window.segments[0].init


async def test_live_window_with_a_long_gop(hass: HomeAssistant) -> None:
    """A 5 s GOP: segments are cut at 4 s anyway, those without a keyframe marked dependent."""
    camera = _live_window(hass)
    _parts(camera, "a", T0, T0 + 10, gop=5.0)
    window = camera.window()
    # 0-4 s, then its last second (closed by the keyframe at 5 s), 5-9 s, 9-10 s.
    assert [s.independent for s in window.segments] == [True, False, True, False]
    assert [s.duration for s in window.segments] == [4.0, 1.0, 4.0, 1.0]
    assert window.segments[1].start == T0 + 4
    # The longest segment sets the target duration; it never shrinks.
    assert window.target == 4
    _parts(camera, "a", T0 + 10.5, T0 + 14, gop=1.0)
    assert camera.window().target == 4


async def test_live_window_parts_and_blocking(hass: HomeAssistant) -> None:
    """Every chunk is a part at once; a wait for a part ends when it is added, not before."""
    camera = _live_window(hass)
    _feed(camera, _fragment("a", 0, T0, duration=0.5))
    window = camera.window()
    assert not window.segments  # the segment is not complete …
    assert window.partial is not None  # … but its first part is listed
    assert (window.partial.sequence, len(window.partial.parts)) == (0, 1)
    assert window.part_target == 0.5
    assert camera.reached(0, 0)
    assert not camera.reached(0, 1)
    assert not camera.reached(0, None)  # the whole segment

    waiting = asyncio.create_task(camera.async_wait_until(lambda: camera.reached(0, 1), 5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    _feed(camera, _fragment("a", 1, T0 + 0.5, duration=0.5, keyframe=False))
    assert await asyncio.wait_for(waiting, 1)
    assert camera.segment(0) is None
    _parts(camera, "a", T0 + 1, T0 + 2)  # the keyframe part at 2 s closes the segment
    segment = camera.segment(0)
    assert segment is not None
    assert [part.fragment.data for part in segment.parts if part.fragment] == [
        b"0",
        b"1",
        b"2",
        b"3",
    ]
    found = camera.part(0, 1)
    assert found is not None
    assert found[0] is segment.parts[1]
    assert found[1] is segment.init
    assert camera.reached(0, None)
    # A part past the last of a complete segment is part 0 of the next one (RFC 8216bis):
    # the keyframe part that closed it.
    assert camera.reached(0, 4)
    assert camera.part(1, 0) is not None
    assert not camera.reached(1, 1)
    # Bounded: gives up (False) when nothing comes.
    assert not await camera.async_wait_until(lambda: camera.reached(5, 0), 0.05)


async def test_live_window_sub_gop_parts(hass: HomeAssistant) -> None:
    """The muxer's 0.5 s parts: segments still start on keyframes, each part is listed."""
    camera = _live_window(hass)
    key = object()
    for number in range(6):  # GOP 1 s, split in two parts
        camera._add_chunk(
            LiveChunk(
                LiveSource.MUXER, key, T0, T0 + 0.5 * number, 0.5, number % 2 == 0, b"x", b"i"
            )
        )
    window = camera.window()
    assert [(s.duration, s.independent, len(s.parts)) for s in window.segments] == [
        (2.0, True, 4)  # closed when the keyframe after 2 s came, not at 2 s mid-GOP
    ]
    assert window.partial is not None
    assert [part.keyframe for part in window.partial.parts] == [True, False]
    assert window.part_target == 0.5
    # A part shorter than the muxer's cut ends its GOP: the segment is listed with it.
    camera._add_chunk(LiveChunk(LiveSource.MUXER, key, T0, T0 + 3.0, 0.52, True, b"x", b"i"))
    camera._add_chunk(LiveChunk(LiveSource.MUXER, key, T0, T0 + 3.52, 0.48, False, b"x", b"i"))
    assert [s.duration for s in camera.window().segments] == [2.0, 2.0]
