"""G.711 (and other non-AAC) audio becomes AAC in recordings, event clips and live HLS.

Real parts: media made by Debian's ffmpeg, demuxed by PyAV into the MediaPackets a StreamHub
publishes (G.711 cut into 20 ms packets on an 8 kHz clock, as an RTP camera sends it), the
real segmenter, clip recorder and in-memory live muxer, and files judged by ffprobe and by
decoding the AAC back (a 440 Hz tone must come out at 440 Hz, at the right time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction
import itertools
from pathlib import Path
import time
from typing import Any

import av
from av.bitstream import BitStreamFilterContext
import numpy as np
import pytest

from custom_components.lightnvr.compat import audio_channels, fraction
from custom_components.lightnvr.hub import MediaPacket, StreamInfo, ThreadPacketQueue
from custom_components.lightnvr.media.aac import AacAudio, AudioToAac, needs_aac
from custom_components.lightnvr.recorder.segmenter import Segmenter
from custom_components.lightnvr.recorder.storage import StorageLayout

from .fragment_helpers import live_chunks, start_collecting
from .test_recorder_clips import ManagerFactory, make_manager  # noqa: F401
from .test_recorder_segmenter import (
    TZ,
    ClipFeed,
    Collector,
    encode,
    ffprobe,
    stop_segmenter,
    video_of,
    wait_until,
)

TONE_HZ = 440.0
ONSET_SECONDS = 2.5  # the A/V clip is silent until then, then the tone starts
RTP_SAMPLES = 160  # 20 ms of 8 kHz G.711 per RTP packet, as cameras send it


# ----- media ----------------------------------------------------------------------------------


def make_tone(folder: Path, codec: str) -> Path:
    """4 s of a 440 Hz tone, 8 kHz mono G.711 (`pcm_alaw` or `pcm_mulaw`)."""
    return encode(
        folder / f"tone_{codec}_8k_4s.mkv",
        [
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000", "-t", "4",
            "-c:a", codec, "-ac", "1",
        ],
    )  # fmt: skip


def make_av_g711(folder: Path) -> Path:
    """6 s of 320x180 H.264 (keyframe each second) with 8 kHz A-law: silence, tone at 2.5 s."""
    return encode(
        folder / "h264_pcma_320x180_6s.mkv",
        [
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=6",
            "-f", "lavfi", "-i",
            f"aevalsrc='if(gte(t,{ONSET_SECONDS}),0.5*sin(2*PI*{TONE_HZ:g}*t),0)':s=8000:d=6",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25",
            "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0",
            "-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1",
        ],
    )  # fmt: skip


def make_mp2(folder: Path) -> Path:
    """4 s of the tone as MPEG audio layer 2 (a codec that rejects garbage)."""
    return encode(
        folder / "tone_mp2_16k_4s.mkv",
        [
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "4",
            "-c:a", "mp2", "-b:a", "64k", "-ac", "1",
        ],
    )  # fmt: skip


def demux(path: Path, *, start: float | None = None) -> tuple[StreamInfo, list[MediaPacket]]:
    """Return what a StreamHub publishes for `path` (H.264 as Annex B, G.711 as RTP-sized).

    `received` follows the media clock from `start` (time.monotonic() by default).
    """
    base = time.monotonic() if start is None else start
    packets: list[MediaPacket] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0]
        actx: Any = audio.codec_context
        vctx: Any = video.codec_context if video is not None else None
        info = StreamInfo(
            generation=1,
            video_codec=vctx.name if vctx is not None else "h264",
            width=vctx.width if vctx is not None else 0,
            height=vctx.height if vctx is not None else 0,
            time_base=(fraction(video.time_base) if video else None) or Fraction(1, 90000),
            fps=float(video.average_rate) if video is not None and video.average_rate else None,
            extradata=bytes(vctx.extradata) if vctx is not None and vctx.extradata else None,
            audio_codec=actx.name,
            audio_sample_rate=actx.sample_rate,
            audio_channels=audio_channels(actx),
            audio_extradata=bytes(actx.extradata) if actx.extradata else None,
        )
        g711 = actx.name in ("pcm_alaw", "pcm_mulaw")
        g711_start: int | None = None
        g711_data = b""
        bsf = BitStreamFilterContext("h264_mp4toannexb", video) if video is not None else None
        streams = [audio] if video is None else [video, audio]
        for packet in container.demux(streams):
            if packet.size == 0 or packet.pts is None:
                continue
            time_base = fraction(packet.time_base)
            assert time_base is not None
            seconds = float(packet.pts * time_base)
            if packet.stream is video:
                assert bsf is not None
                keyframe = bool(packet.is_keyframe)
                pts, dts = packet.pts, packet.dts
                packets.extend(
                    MediaPacket(
                        "video", bytes(out), pts, dts, time_base, keyframe, base + seconds, 1
                    )
                    for out in bsf.filter(packet)
                )
            elif g711:
                if g711_start is None:
                    g711_start = round(seconds * 8000)
                g711_data += bytes(packet)
            else:
                packets.append(
                    MediaPacket(
                        "audio",
                        bytes(packet),
                        packet.pts,
                        packet.dts,
                        time_base,
                        False,
                        base + seconds,
                        1,
                    )
                )
    if g711_start is not None:
        # An RTP camera: 20 ms packets, timestamps on the 8 kHz sample clock.
        packets.extend(
            MediaPacket(
                "audio",
                g711_data[i : i + RTP_SAMPLES],
                g711_start + i,
                g711_start + i,
                Fraction(1, 8000),
                False,
                base + (g711_start + i + RTP_SAMPLES) / 8000,
                1,
            )
            for i in range(0, len(g711_data), RTP_SAMPLES)
        )
    packets.sort(key=lambda p: p.received)  # a live source delivers them as they happen
    return info, packets


# ----- judging the audio ----------------------------------------------------------------------


def decode_aac(extradata: bytes, packets: Iterable[MediaPacket]) -> np.ndarray:
    """Decode AAC packets with PyAV's AAC decoder; return mono float samples."""
    decoder: Any = av.CodecContext.create("aac", "r")
    decoder.extradata = extradata
    chunks = [
        frame.to_ndarray().reshape(-1)
        for packet in packets
        for frame in decoder.decode(av.Packet(packet.data))
    ]
    return np.concatenate(chunks)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """Return the strongest frequency of `samples`."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples)


def audio_of_file(path: Path) -> tuple[float, float, np.ndarray, int]:
    """Return (first video time, first audio time, decoded samples, rate) of a media file."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first_video = min(
            float(packet.pts * packet.time_base)
            for packet in container.demux(video)
            if packet.pts is not None
        )
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        rate = int(stream.codec_context.sample_rate)
    first_audio = float((frames[0].pts or 0) * (fraction(frames[0].time_base) or 0))
    samples = np.concatenate([frame.to_ndarray()[0] for frame in frames])
    return first_video, first_audio, samples, rate


def onset_after_video(path: Path) -> float:
    """Return when the tone starts, in seconds after the file's first video frame."""
    first_video, first_audio, samples, rate = audio_of_file(path)
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert loud.size, "no tone in the audio"
    return first_audio + loud[0] / rate - first_video


def check_av_file(path: Path) -> dict[str, Any]:
    """Judge a file by ffprobe: H.264 and mono AAC, their durations within 0.5 s."""
    probe = ffprobe(path)
    video = video_of(probe)
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    assert video["codec_name"] == "h264"
    assert (audio["codec_name"], int(audio["channels"])) == ("aac", 1)
    assert int(audio["sample_rate"]) == 16000
    assert int(audio["nb_read_frames"]) > 0
    assert abs(float(audio["duration"]) - float(video["duration"])) < 0.5
    return probe


# ----- the converter --------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["pcm_alaw", "pcm_mulaw"])
def test_g711_becomes_aac_with_the_same_tone_and_length(media_cache: Path, codec: str) -> None:
    """PCMA/PCMU packets come out as AAC that decodes back to the 440 Hz tone, as long."""
    info, packets = demux(make_tone(media_cache, codec))
    assert needs_aac(info)
    converter = AudioToAac(info)
    assert converter.info.audio_codec == "aac"
    assert (converter.info.audio_sample_rate, converter.info.audio_channels) == (16000, 1)
    assert converter.info.audio_extradata
    out = [aac for packet in packets for aac in converter.convert(packet)]

    assert converter.errors == 0
    assert converter.resyncs == 0
    assert all(p.time_base == Fraction(1, 16000) and p.kind == "audio" for p in out)
    assert all(p.generation == 1 and p.pts == p.dts for p in out)
    pts = [p.pts or 0 for p in out]
    assert all(later > earlier for earlier, later in itertools.pairwise(pts))
    # On the camera's clock: the first real frame starts where the input did (the one before
    # it is the encoder's priming, one frame earlier).
    assert pts[:2] == [-1024, 0]
    samples = decode_aac(converter.info.audio_extradata or b"", out)
    input_seconds = len(b"".join(p.data for p in packets)) / 8000
    assert len(samples) / 16000 == pytest.approx(input_seconds, rel=0.05)
    assert dominant_hz(samples, 16000) == pytest.approx(TONE_HZ, abs=5)


def test_timestamps_follow_the_camera_clock_across_a_gap(media_cache: Path) -> None:
    """Lost packets leave a gap on the camera's clock; the AAC after it is put back onto it."""
    info, packets = demux(make_tone(media_cache, "pcm_alaw"))
    offset = 8000 * 1000  # a camera clock that does not start at 0
    shifted = [replace(p, pts=(p.pts or 0) + offset, dts=(p.dts or 0) + offset) for p in packets]
    kept = shifted[:50] + shifted[100:]  # 1 s lost after the first second
    converter = AudioToAac(info)
    out = [aac for packet in kept for aac in converter.convert(packet)]

    assert converter.resyncs == 1
    pts = [p.pts or 0 for p in out]
    assert pts[1] == offset * 2  # 1/8000 → 1/16000
    steps = [later - earlier for earlier, later in itertools.pairwise(pts)]
    assert all(step > 0 for step in steps)
    assert max(steps) == pytest.approx(16000 + 1024, abs=64)  # the gap: one second
    assert sorted(steps)[len(steps) // 2] == 1024
    # The last packet ends where the input ends (less what the encoder still holds).
    end = (kept[-1].pts or 0) * 2 + RTP_SAMPLES * 2
    assert 0 <= end - (pts[-1] + 1024) <= 3 * 1024


def test_undecodable_packets_are_skipped_and_counted(media_cache: Path) -> None:
    """Any decodable codec is converted (MPEG audio here); bad packets are skipped, not fatal."""
    info, packets = demux(make_mp2(media_cache))
    assert info.audio_codec == "mp2"
    converter = AudioToAac(info)
    garbage = replace(packets[10], data=b"\x00\x01 not audio " * 20)
    untimed = replace(packets[0], pts=None, dts=None)  # like an RTSP connection's first packet
    empty = replace(packets[20], data=b"")
    fed = [untimed, *packets[:20], garbage, garbage, empty, *packets[20:]]
    out = [aac for packet in fed for aac in converter.convert(packet)]
    assert converter.errors >= 2
    samples = decode_aac(converter.info.audio_extradata or b"", out)
    assert len(samples) / 16000 == pytest.approx(4.0, rel=0.06)
    assert dominant_hz(samples, 16000) == pytest.approx(TONE_HZ, abs=5)


def test_consumer_audio_resets_on_reconnect(media_cache: Path) -> None:
    """A new connection gets a new converter; AAC and video pass; unknown codecs pass too."""
    info, packets = demux(make_tone(media_cache, "pcm_alaw"))
    audio = AacAudio("cam")
    described = audio.reset(info, 1)
    assert described is not None
    assert described == replace(
        info,
        audio_codec="aac",
        audio_sample_rate=16000,
        audio_channels=1,
        audio_extradata=described.audio_extradata,
    )
    assert described.audio_extradata
    assert audio.stream_info(info) is described
    first = audio.converter
    produced = [aac for packet in packets[:40] for aac in audio.convert(packet)]
    assert produced

    second = replace(info, generation=2, audio_codec="pcm_mulaw")
    described = audio.reset(second, 2)
    assert described is not None
    assert (described.generation, described.audio_codec) == (2, "aac")
    assert audio.converter is not first
    assert audio.stream_info(info) == info  # another connection's info is left alone
    assert audio.convert(packets[50]) == ()  # a packet of the old connection
    again = [replace(p, generation=2) for p in packets[:40]]
    assert [aac for packet in again for aac in audio.convert(packet)]

    video = replace(packets[0], kind="video")
    assert audio.convert(video) == (video,)
    aac_info = replace(info, generation=3, audio_codec="aac")
    assert audio.reset(aac_info, 3) is aac_info
    assert audio.converter is None
    assert audio.convert(packets[0]) == (packets[0],)
    unknown = replace(info, generation=4, audio_codec="no_such_codec")
    assert audio.reset(unknown, 4) is unknown
    assert audio.convert(packets[0]) == (packets[0],)
    assert audio.reset(None, 5) is None


def test_conversion_is_cheap(media_cache: Path) -> None:
    """10 s of 8 kHz G.711 convert in well under a second of CPU (a live camera: real time)."""
    info, packets = demux(make_tone(media_cache, "pcm_alaw"))
    converter = AudioToAac(info)
    step = (packets[-1].pts or 0) + RTP_SAMPLES
    started = time.process_time()
    for loop in range(3):  # 12 s of audio
        for packet in packets:
            pts = (packet.pts or 0) + loop * step
            converter.convert(replace(packet, pts=pts, dts=pts))
    assert time.process_time() - started < 2.0  # generous: measured ~0.1 s here


# ----- the three muxing paths -----------------------------------------------------------------


async def test_recording_of_a_g711_camera_has_aac_in_sync(
    media_cache: Path, tmp_path: Path
) -> None:
    """H.264 + A-law into the recorder: every segment has an AAC track, in sync with video."""
    info, packets = demux(make_av_g711(media_cache))
    feed = ClipFeed(info)
    got = Collector()
    segmenter = Segmenter(
        "cam1", feed, StorageLayout(tmp_path, TZ), segment_seconds=3.0, on_segment=got.on_segment
    )
    segmenter.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets)
    finally:
        await stop_segmenter(segmenter)
    assert len(got.segments) == 2
    for segment in got.segments:
        check_av_file(segment.path)
    assert segmenter.state().dropped_packets == 0
    first, second = (segment.path for segment in got.segments)
    # The tone starts 2.5 s into the camera's stream: in the first file, at 2.5 s.
    assert onset_after_video(first) == pytest.approx(ONSET_SECONDS, abs=0.05)
    _, _, samples, rate = audio_of_file(second)
    assert dominant_hz(samples, rate) == pytest.approx(TONE_HZ, abs=5)


def test_live_chunks_of_g711_carry_aac(media_cache: Path, tmp_path: Path) -> None:
    """Live HLS's fragments (recording off) carry AAC for an A-law camera, in sync."""
    info, packets = demux(make_av_g711(media_cache))
    queue = ThreadPacketQueue(100_000)
    for packet in packets:
        queue.put(packet)
    queue.close()  # the muxer ends at the end of the file

    class Source:
        name = "file"

        @property
        def info(self) -> StreamInfo:
            return info

        def subscribe_thread(self, maxlen: int = 0, *, from_keyframe: bool = True) -> Any:
            return queue

        def unsubscribe(self, queue: Any) -> None:
            queue.close()

    chunks = live_chunks(*start_collecting("file", Source()), timeout=30)
    assert sum(chunk.duration for chunk in chunks) == pytest.approx(6.0, abs=0.1)
    assert chunks[0].init_data is not None
    out = tmp_path / "live.mp4"
    out.write_bytes(chunks[0].init_data + b"".join(chunk.data or b"" for chunk in chunks))
    probe = check_av_file(out)
    assert int(video_of(probe)["nb_read_frames"]) == 150
    assert onset_after_video(out) == pytest.approx(ONSET_SECONDS, abs=0.05)


async def test_event_clip_of_a_g711_camera_has_aac(
    media_cache: Path,
    make_manager: ManagerFactory,  # noqa: F811 - the fixture imported above
) -> None:
    """A clip saved from the muxer's ring (pre-roll) of an A-law camera has an AAC track."""
    info, packets = demux(make_av_g711(media_cache), start=0.0)
    shift = time.monotonic() - packets[-1].received  # as if it streamed until now
    timed = [replace(p, received=p.received + shift) for p in packets]

    class Source:
        name = "feed"

        def __init__(self) -> None:
            self.info = info

        def subscribe_thread(
            self, maxlen: int = 1024, *, from_keyframe: bool = True
        ) -> ThreadPacketQueue:
            queue = ThreadPacketQueue(len(timed) + 1)
            for packet in timed:
                queue.put(packet)
            return queue

        def unsubscribe(self, queue: ThreadPacketQueue) -> None:
            queue.close()

    manager = await make_manager(pre_roll=5.0)
    await manager.async_add_camera("cam1", Source())
    await wait_until(lambda: manager.buffered_seconds("cam1") >= 4.5)
    path = await manager.async_save_clip("cam1", 5.0, 5.0)  # all of it from the buffer
    probe = check_av_file(path)
    assert 4.0 <= float(probe["format"]["duration"]) <= 6.1
    # The clip starts on a keyframe 0 or 1 s into the stream: the tone follows at 2.5 s.
    onset = onset_after_video(path)
    assert min(abs(onset - ONSET_SECONDS), abs(onset - (ONSET_SECONDS - 1.0))) < 0.05
