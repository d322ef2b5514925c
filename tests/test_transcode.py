"""Shared live-view transcoders: H.265 → H.264 and AAC/G.711 → Opus, one per camera.

Most tests feed the transcoders from `_FileHub`, which replays a file made by ffmpeg like a
StreamHub does (Annex B video, the camera's timestamps, packets paced in real time, a drop-oldest
queue per subscriber), so H.265 and camera audio are covered whatever RTSP cameras the test
infrastructure serves. The last test puts a real StreamHub reading the real RTSP camera in front.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
import itertools
from pathlib import Path
import random
import subprocess
import threading
import time
from typing import Any

import av
from av.bitstream import BitStreamFilterContext
import numpy as np
import pytest

from custom_components.lightnvr import h265
from custom_components.lightnvr.compat import audio_channels, fraction
from custom_components.lightnvr.engine.transcode import (
    OPUS_FRAME_SAMPLES,
    OPUS_TIME_BASE,
    AudioTranscoder,
    SharedTranscoders,
    VideoTranscoder,
)
from custom_components.lightnvr.h264 import (
    has_parameter_sets,
    nal_types,
    profile_class,
    profile_level_id,
)
from custom_components.lightnvr.hub import (
    HubState,
    MediaPacket,
    PacketQueue,
    StreamHub,
    StreamInfo,
    ThreadPacketQueue,
)
from custom_components.lightnvr.source import CameraSource

from .infra.media import ffmpeg_binary
from .infra.rtsp import RtspServer

FPS = 15
SECONDS = 4
TONE_HZ = 440
LINGER = 0.4
# libopus dates each packet by its look-ahead (6.5 ms at 48 kHz) before the input it completes.
OPUS_LOOKAHEAD = 312


# ----- media --------------------------------------------------------------------------------------


def _encode(path: Path, video_size: str, audio: list[str]) -> Path:
    subprocess.run(
        [
            ffmpeg_binary(), "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={video_size}:rate={FPS}",
            "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=16000",
            "-t", str(SECONDS),
            "-c:v", "libx265", "-preset", "ultrafast",
            "-x265-params", f"keyint={FPS}:min-keyint={FPS}:bframes=0:log-level=error",
            *audio, str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def hevc_aac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of H.265 1080p15 (keyframe every second) with AAC 16 kHz mono: a 4 MP-class camera."""
    path = tmp_path_factory.mktemp("transcode") / "hevc_aac.mp4"
    return _encode(path, "1920x1080", ["-c:a", "aac", "-b:a", "32k", "-ac", "1"])


@pytest.fixture(scope="module")
def hevc_alaw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of H.265 640x360 15 fps with G.711 A-law 8 kHz mono (MKV holds G.711)."""
    path = tmp_path_factory.mktemp("transcode") / "hevc_alaw.mkv"
    return _encode(path, "640x360", ["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"])


# ----- a hub replaying a file ---------------------------------------------------------------------


class _FileHub:
    """Replays a file like a StreamHub: Annex B video, real-time pace, a queue per subscriber.

    `loop` replays it forever with rising timestamps (one camera connection); `reconnect()`
    starts over like a new connection (next generation, timestamps from the file's start).
    `corrupt` (video packet numbers) replaces packets with garbage; `lose` (video packet
    numbers) leaves packets out and counts them as dropped, as a full hub queue does.
    """

    name = "file"

    def __init__(
        self,
        path: Path,
        *,
        loop: bool = False,
        corrupt: frozenset[int] = frozenset(),
        lose: frozenset[int] = frozenset(),
    ) -> None:
        self._loop_forever = loop
        self._corrupt = corrupt
        self._lose = lose
        self.items: list[tuple[float, MediaPacket]] = []
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            audio = container.streams.audio[0]
            vctx: Any = video.codec_context
            actx: Any = audio.codec_context
            video_tb = fraction(video.time_base) or Fraction(1, 90000)
            audio_tb = fraction(audio.time_base) or Fraction(1, 90000)
            self._info = StreamInfo(
                generation=1,
                video_codec=vctx.name,
                width=vctx.width,
                height=vctx.height,
                time_base=video_tb,
                fps=float(FPS),
                # Annex B packets go with Annex B parameter sets, like an RTSP camera's SDP.
                extradata=h265.parameter_sets_annexb(bytes(vctx.extradata)) or None,
                audio_codec=actx.name,
                audio_sample_rate=actx.sample_rate,
                audio_channels=audio_channels(actx),
                audio_extradata=bytes(actx.extradata) if actx.extradata else None,
            )
            bsf = BitStreamFilterContext(f"{vctx.name}_mp4toannexb", video)
            for packet in container.demux(video, audio):
                if packet.size == 0 or packet.dts is None:
                    continue
                # PyAV 14+ blanks a packet given to a bitstream filter: read it first.
                pts, dts, keyframe = packet.pts, packet.dts, packet.is_keyframe
                if packet.stream is video:
                    kind, time_base, datas = (
                        "video",
                        video_tb,
                        [bytes(o) for o in bsf.filter(packet)],
                    )
                else:
                    datas = [bytes(packet)]
                    kind, time_base = "audio", audio_tb
                for data in datas:
                    media = MediaPacket(
                        kind=kind,  # type: ignore[arg-type]
                        data=data,
                        pts=pts,
                        dts=dts,
                        time_base=time_base,
                        keyframe=keyframe and kind == "video",
                        received=0.0,
                        generation=1,
                    )
                    self.items.append((float(dts * time_base), media))
        self.items.sort(key=lambda item: item[0])
        self.duration = float(SECONDS)
        self.sent: list[MediaPacket] = []
        self._subscribers: list[ThreadPacketQueue] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    @property
    def info(self) -> StreamInfo:
        return self._info

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def video_items(self) -> list[MediaPacket]:
        return [packet for _, packet in self.items if packet.kind == "video"]

    def subscribe_thread(self, maxlen: int = 1024, *, from_keyframe: bool = True) -> Any:
        queue = ThreadPacketQueue(max(maxlen, 601))
        with self._lock:
            self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: Any) -> None:
        with self._lock:
            if queue in self._subscribers:
                self._subscribers.remove(queue)
        queue.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._play, name="file-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def reconnect(self) -> None:
        self._restart.set()

    def _play(self) -> None:
        start = time.monotonic()
        rounds = 0
        generation = 1
        while not self._stop.is_set():
            video_number = 0
            for offset, packet in self.items:
                due = start + rounds * self.duration + offset
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                if self._restart.is_set():
                    self._restart.clear()
                    generation += 1
                    self._info = replace(self._info, generation=generation)
                    start, rounds = time.monotonic(), -1
                    break
                if packet.kind == "video":
                    video_number += 1
                    if rounds == 0 and video_number - 1 in self._lose:
                        with self._lock:
                            for queue in self._subscribers:
                                queue.dropped += 1
                        continue
                self._deliver(packet, rounds, generation, video_number - 1)
            rounds += 1
            if not self._loop_forever and rounds:
                break
        self.done.set()

    def _deliver(self, packet: MediaPacket, rounds: int, generation: int, number: int) -> None:
        shift = round(rounds * self.duration / packet.time_base)
        data = packet.data
        if packet.kind == "video" and rounds == 0 and number in self._corrupt:
            data = b"\x00\x00\x00\x01\x02\x01" + random.Random(number).randbytes(len(data))
        media = replace(
            packet,
            data=data,
            pts=None if packet.pts is None else packet.pts + shift,
            dts=None if packet.dts is None else packet.dts + shift,
            received=time.monotonic(),
            generation=generation,
        )
        with self._lock:
            self.sent.append(media)
            for queue in self._subscribers:
                queue.put(media)


async def _collect(
    queue: PacketQueue, *, until: Callable[[], bool], idle: float = 1.0, limit: float = 30.0
) -> list[MediaPacket]:
    """Read `queue` until `until()` holds and nothing came for `idle` seconds."""
    packets: list[MediaPacket] = []
    async with asyncio.timeout(limit):
        while True:
            try:
                async with asyncio.timeout(idle):
                    packets.append(await queue.get())
            except TimeoutError:
                if until():
                    return packets


async def _drain(queue: PacketQueue) -> list[MediaPacket]:
    """Return what `queue` holds now, without waiting for more."""
    return [await queue.get() for _ in range(len(queue))]


async def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _transcode_threads(kind: str = "") -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(f"lightnvr-transcode-{kind}") and t.is_alive()
    ]


def _decode(codec: str, packets: list[MediaPacket], **options: Any) -> list[Any]:
    """Decode with a fresh decoder that knows nothing but the packets (as a viewer does)."""
    decoder: Any = av.CodecContext.create(codec, "r")
    for name, value in options.items():
        setattr(decoder, name, value)
    frames: list[Any] = []
    for packet in packets:
        av_packet = av.Packet(packet.data)
        av_packet.pts = packet.pts
        av_packet.time_base = packet.time_base
        frames += decoder.decode(av_packet)
    return frames


def _gray(frame: Any, width: int, height: int) -> np.ndarray:
    small = frame.reformat(width=width, height=height, format="gray")
    return small.to_ndarray().astype(np.float32)


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# ----- video --------------------------------------------------------------------------------------


async def test_h265_1080p_becomes_h264_720p_on_the_cameras_clock(hevc_aac: Path) -> None:
    """H.265 1080p in, H.264 ≤ 1280 wide out: decodable alone, every frame, same timestamps."""
    hub = _FileHub(hevc_aac)
    transcoder = VideoTranscoder(hub, linger=LINGER)
    queue = transcoder.subscribe(1000)
    hub.start()
    try:
        out = await _collect(queue, until=hub.done.is_set)
        latest = transcoder.latest_keyframe()
    finally:
        hub.stop()
        await transcoder.async_stop()

    source = [p for p in hub.sent if p.kind == "video"]
    assert len(source) == FPS * SECONDS
    # Every picture transcoded, none left out (the input came in real time).
    assert len(out) >= len(source) * 0.95
    assert all(p.kind == "video" and p.generation == 1 for p in out)

    info = transcoder.info
    assert info is not None
    assert (info.video_codec, info.width, info.height) == ("h264", 1280, 720)
    assert info.time_base == hub.info.time_base
    assert info.fps == FPS
    assert info.audio_codec is None
    assert info.extradata is not None
    assert {7, 8} <= set(nal_types(info.extradata))
    assert profile_class(profile_level_id(info.extradata) or "") == "constrained-baseline"

    # Starts on a keyframe; one every second, each with SPS/PPS in-band.
    keyframes = [i for i, p in enumerate(out) if p.keyframe]
    assert keyframes[0] == 0
    assert all(b - a == FPS for a, b in itertools.pairwise(keyframes))
    assert all(has_parameter_sets(out[i].data) for i in keyframes)
    assert latest is out[keyframes[-1]]

    # The camera's timestamps and arrival times, carried through.
    by_pts = {p.pts: p for p in source}
    assert all(
        a.pts is not None and b.pts is not None and a.pts < b.pts
        for a, b in itertools.pairwise(out)
    )
    for packet in out:
        assert packet.time_base == hub.info.time_base
        assert packet.dts == packet.pts
        assert packet.pts in by_pts
        assert packet.received == by_pts[packet.pts].received

    # A viewer's decoder needs nothing but the packets, from the first keyframe or a later one.
    pictures = _decode("h264", out)
    assert len(pictures) == len(out)
    assert {(p.width, p.height) for p in pictures} == {(1280, 720)}
    assert len(_decode("h264", out[keyframes[1] :])) == len(out) - keyframes[1]

    # And they show the camera's picture.
    originals = {f.pts: f for f in _decode("hevc", source, extradata=hub.info.extradata)}
    for picture in pictures[:: FPS // 2]:
        difference = np.abs(_gray(picture, 320, 180) - _gray(originals[picture.pts], 320, 180))
        assert float(difference.mean()) < 6.0

    stats = transcoder.stats()
    assert not stats.running
    assert (stats.codec_in, stats.codec_out, stats.width, stats.height) == (
        "hevc", "h264", 1280, 720,
    )  # fmt: skip
    assert stats.frames_in == len(source)
    assert stats.frames_out == len(out)
    assert stats.decode_errors == 0
    assert stats.dropped == 0
    assert stats.path == "hevc 1920x1080 -> h264 1280x720 (libx264)"


async def test_full_size_keeps_the_picture_and_odd_widths_become_even(hevc_alaw: Path) -> None:
    """`max_width=None` keeps the camera's size; sizes are always even, aspect kept."""
    hub = _FileHub(hevc_alaw)
    transcoder = VideoTranscoder(hub, max_width=None, linger=LINGER)
    assert transcoder.output_size(641, 361) == (640, 360)
    assert VideoTranscoder(hub, max_width=1280).output_size(2592, 1944) == (1280, 960)
    assert VideoTranscoder(hub, max_width=1280).output_size(1280, 720) == (1280, 720)
    queue = transcoder.subscribe(1000)
    hub.start()
    try:
        await _wait(lambda: transcoder.info is not None)
        first = await queue.get()
    finally:
        hub.stop()
        await transcoder.async_stop()
    assert first.keyframe
    assert transcoder.info is not None
    assert (transcoder.info.width, transcoder.info.height) == (640, 360)


async def test_viewers_share_one_transcoder_that_lingers_then_stops(hevc_alaw: Path) -> None:
    """Two viewers, one decoder thread; stopped `linger` after the last left; restarted later."""
    hub = _FileHub(hevc_alaw, loop=True)
    shared = SharedTranscoders(hub, asyncio.get_running_loop(), linger=LINGER)
    hub.start()
    try:
        video = await shared.acquire_video()
        assert video.info is not None  # ready: the answer can describe the H.264 we send
        assert video.latest_keyframe() is not None
        first_queue = video.subscribe(300)
        second_queue = video.subscribe(300)
        shared.release_video()  # the subscriptions keep it running now

        first = [await first_queue.get() for _ in range(20)]
        second = [await second_queue.get() for _ in range(20)]
        assert first[0].keyframe
        assert second[0].keyframe
        assert any(a is b for a in first for b in second)  # the very same packets
        assert len(_transcode_threads("video")) == 1
        assert hub.subscribers == 1
        stats = shared.stats()["video"]
        assert (stats.running, stats.viewers, stats.holds) == (True, 2, 0)

        # Audio: two holds, one thread as well.
        audio = await shared.acquire_audio()
        assert await shared.acquire_audio() is audio
        assert audio.info is not None
        assert (audio.info.audio_codec, audio.info.audio_sample_rate) == ("opus", 48000)
        audio_queue = audio.subscribe(300)
        assert (await audio_queue.get()).kind == "audio"
        assert len(_transcode_threads("audio")) == 1
        audio.unsubscribe(audio_queue)
        shared.release_audio()
        shared.release_audio()

        video.unsubscribe(first_queue)
        await asyncio.sleep(LINGER * 2)
        assert video.running  # one viewer is left
        (thread,) = _transcode_threads("video")

        video.unsubscribe(second_queue)
        assert video.running  # lingering
        again = video.subscribe(300)  # back within the linger time: the same worker goes on
        await asyncio.sleep(LINGER * 2)
        assert _transcode_threads("video") == [thread]
        assert (await again.get()).kind == "video"
        video.unsubscribe(again)

        await _wait(lambda: not video.running and not audio.running, timeout=LINGER + 5)
        await _wait(lambda: not _transcode_threads(), timeout=5)
        assert hub.subscribers == 0
        assert video.latest_keyframe() is None  # no stale pictures for the next start

        video = await shared.acquire_video()  # a new viewer: started again
        assert video.running
        (restarted,) = _transcode_threads("video")
        assert restarted is not thread
        queue = video.subscribe(300)
        assert (await queue.get()).keyframe
        video.unsubscribe(queue)
        shared.release_video()
        assert video.running
    finally:
        await shared.async_stop()
        hub.stop()
    assert not _transcode_threads()
    assert hub.subscribers == 0
    stats = shared.stats()["video"]
    assert (stats.running, stats.viewers, stats.holds) == (False, 0, 0)
    late = shared.video.subscribe(300)  # stopped for good: a late viewer is told at once
    with pytest.raises(EOFError):
        await late.get()
    assert not shared.video.running


async def test_a_camera_reconnect_starts_a_new_keyframe_and_timeline(hevc_alaw: Path) -> None:
    """New hub generation: output restarts on a keyframe with SPS/PPS, on the new timestamps."""
    hub = _FileHub(hevc_alaw, loop=True)
    video = VideoTranscoder(hub, linger=LINGER)
    audio = AudioTranscoder(hub, linger=LINGER)
    video_queue = video.subscribe(1000)
    audio_queue = audio.subscribe(1000)
    hub.start()
    try:
        await _wait(lambda: len(video_queue) > 20)
        hub.reconnect()
        await _wait(lambda: any(p.generation == 2 for p in hub.sent))
        await asyncio.sleep(1.5)
        hub.stop()
        out = await _collect(video_queue, until=lambda: True, idle=0.5)
        sound = await _collect(audio_queue, until=lambda: True, idle=0.5)
    finally:
        hub.stop()
        await asyncio.gather(video.async_stop(), audio.async_stop())

    assert [g for g, _ in itertools.groupby(p.generation for p in out)] == [1, 2]
    new = [p for p in out if p.generation == 2]
    assert new[0].keyframe
    assert has_parameter_sets(new[0].data)
    assert new[0].pts == 0  # the new connection's own timestamps
    sent = {(p.generation, p.pts) for p in hub.sent if p.kind == "video"}
    assert all((p.generation, p.pts) in sent for p in out)
    assert all(a.pts < b.pts for a, b in itertools.pairwise(new))  # type: ignore[operator]
    assert video.info is not None
    assert video.info.generation == 2
    assert len(_decode("h264", new)) == len(new)

    assert [g for g, _ in itertools.groupby(p.generation for p in sound)] == [1, 2]
    new_sound = [p for p in sound if p.generation == 2]
    assert new_sound[0].pts == -OPUS_LOOKAHEAD  # the new connection's audio starts at 0
    assert all(
        b.pts - a.pts == OPUS_FRAME_SAMPLES  # type: ignore[operator]
        for a, b in itertools.pairwise(new_sound)
    )


async def test_damaged_input_resumes_at_the_next_keyframe(hevc_alaw: Path) -> None:
    """Garbage or packets lost in the hub: nothing broken is sent, the next keyframe resumes."""
    corrupt, lost = 5, frozenset({20, 21, 22})
    hub = _FileHub(hevc_alaw, corrupt=frozenset({corrupt}), lose=lost)
    transcoder = VideoTranscoder(hub, linger=LINGER)
    queue = transcoder.subscribe(1000)
    hub.start()
    try:
        out = await _collect(queue, until=hub.done.is_set)
    finally:
        hub.stop()
        await transcoder.async_stop()

    numbers = {p.pts: i for i, p in enumerate(hub.video_items())}
    sent = sorted(numbers[p.pts] for p in out)
    # Nothing from the damaged groups of pictures after the damage; everything else.
    expected = [n for n in range(FPS * SECONDS) if not corrupt <= n < FPS and not 20 <= n < 30]
    assert sent == expected
    assert len(_decode("h264", out)) == len(out)
    stats = transcoder.stats()
    assert stats.dropped == len(lost)
    assert stats.skipped >= 30 - 20 - len(lost)
    assert stats.frames_out == len(out)


# ----- audio --------------------------------------------------------------------------------------


@pytest.mark.parametrize("media", ["hevc_aac", "hevc_alaw"])
async def test_camera_audio_becomes_opus(media: str, request: pytest.FixtureRequest) -> None:
    """AAC and G.711 → 48 kHz Opus: the same tone, the same length, the camera's timestamps."""
    hub = _FileHub(request.getfixturevalue(media))
    transcoder = AudioTranscoder(hub, linger=LINGER)
    queue = transcoder.subscribe(1000, from_keyframe=False)
    hub.start()
    try:
        out = await _collect(queue, until=hub.done.is_set)
    finally:
        hub.stop()
        await transcoder.async_stop()

    source = [p for p in hub.sent if p.kind == "audio"]
    info = hub.info
    originals = _decode(
        info.audio_codec or "",
        source,
        sample_rate=info.audio_sample_rate,
        layout="mono",
        **({"extradata": info.audio_extradata} if info.audio_extradata else {}),
    )
    source_seconds = sum(f.samples for f in originals) / (info.audio_sample_rate or 1)
    assert source_seconds == pytest.approx(SECONDS, rel=0.05)

    assert all(p.kind == "audio" and p.time_base == OPUS_TIME_BASE for p in out)
    decoded = _decode("libopus", out, sample_rate=48000, layout="mono")
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in decoded]).astype(np.float32)
    assert len(samples) / 48000 == pytest.approx(source_seconds, rel=0.05)
    assert _dominant_hz(samples[48000:], 48000) == pytest.approx(TONE_HZ, abs=5)
    assert float(np.sqrt(np.mean(samples[48000:] ** 2))) > 0.1 * float(np.abs(samples).max())

    # Timestamps: the camera's first audio timestamp at 48 kHz, then 20 ms after 20 ms.
    first = originals[0]
    start = round(first.pts * fraction(first.time_base) * 48000)
    assert out[0].pts == start - OPUS_LOOKAHEAD
    assert all(b.pts - a.pts == OPUS_FRAME_SAMPLES for a, b in itertools.pairwise(out))  # type: ignore[operator]
    arrivals = {p.received for p in source}
    assert all(p.received in arrivals for p in out)
    assert all(a.received <= b.received for a, b in itertools.pairwise(out))

    stats = transcoder.stats()
    assert (stats.codec_in, stats.codec_out) == (info.audio_codec, "opus")
    assert stats.frames_in == len(source)
    assert stats.frames_out == len(out)
    assert stats.path.endswith("-> opus 48000 Hz mono (libopus)")


# ----- a real camera ------------------------------------------------------------------------------


async def test_real_camera_through_the_hub(rtsp_camera: RtspServer) -> None:
    """A StreamHub reading the RTSP camera: a fast first keyframe, reconnects followed."""
    loop = asyncio.get_running_loop()
    hub = StreamHub("rtsp", CameraSource(rtsp_camera.url("cam")), loop, backoff_initial=0.2)
    shared = SharedTranscoders(hub, loop, max_width=320, linger=LINGER)
    hub.start()
    try:
        await _wait(lambda: hub.latest_keyframe() is not None, timeout=15)
        await asyncio.sleep(0.5)  # mid-GOP: the cached GOP is decoded to catch up
        reference = hub.subscribe(1000, from_keyframe=True)  # what the transcoder gets too
        started = time.monotonic()
        video = await shared.acquire_video()
        assert time.monotonic() - started < 2.0
        queue = video.subscribe(300)
        shared.release_video()
        out = [await queue.get() for _ in range(50)]
        assert out[0].keyframe
        assert video.info is not None
        assert (video.info.width, video.info.height) == (320, 180)
        assert len(_decode("h264", out)) == len(out)
        assert all(a.pts < b.pts for a, b in itertools.pairwise(out))  # type: ignore[operator]
        camera = {p.pts for p in await _drain(reference) if p.kind == "video"}
        assert {p.pts for p in out} <= camera

        rtsp_camera.stop()
        await _wait(lambda: hub.state is not HubState.STREAMING, timeout=15)
        rtsp_camera.start()
        async with asyncio.timeout(30):
            while (packet := await queue.get()).generation < 2:
                pass
        assert packet.keyframe
        assert has_parameter_sets(packet.data)
        video.unsubscribe(queue)
        hub.unsubscribe(reference)
        await _wait(lambda: not video.running, timeout=LINGER + 5)
    finally:
        await shared.async_stop()
        await hub.async_stop()
    assert not _transcode_threads()
