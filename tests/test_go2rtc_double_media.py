"""The go2rtc double restreams what go2rtc restreams: H.265 video and camera audio.

Cameras of the matrix (tests/infra/cameras.py, real GStreamer RTSP behind auth) are registered
with a running double by PUT /api/streams. Its RTSP restream is read with PyAV (FFmpeg's RTSP
client) and decoded, GET /api/streams must report the camera's codecs, and WebRTC must hand
H.265 only to a viewer that offers it, failing like go2rtc otherwise. So the integration's
go2rtc mode can be tested with H.265 cameras and cameras with audio.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
import contextlib
from dataclasses import dataclass, field
from fractions import Fraction
import io
import re
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
import av
from homeassistant.core import HomeAssistant
from PIL import Image
import pytest

from .go2rtc_double import double
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures found by name
from .go2rtc_double.fixtures import ExternalDouble
from .infra.cameras import SHAPES, CameraMatrix
from .test_rtp_h265 import h265_registered, receive_h265  # noqa: F401 - a fixture
from .webrtc_client import negotiated_video_codec

# shape -> (PyAV video codec, PyAV audio codec, go2rtc's video media, go2rtc's audio media)
CASES = {
    "h265_aac": ("hevc", "aac", "H265", "MPEG4-GENERIC/16000"),
    "h264_high_pcma": ("h264", "pcm_alaw", "H264", "PCMA/8000"),
    "h265_pcma": ("hevc", "pcm_alaw", "H265", "PCMA/8000"),
}
GO2RTC_CODEC = {"hevc": "h265", "h264": "h264", "aac": "aac", "pcm_alaw": "pcma"}
VIDEO_FRAMES = 10
AUDIO_FRAMES = 20
OPEN_TIMEOUT_S = 15


@dataclass
class Restream:
    """What an RTSP client decoded from the double's restream."""

    video_codec: str = ""
    audio_codec: str | None = None
    sample_rate: int = 0
    channels: int = 0
    size: tuple[int, int] = (0, 0)
    video_frames: int = 0
    audio_pts: list[int] = field(default_factory=list)  # in audio_time_base
    audio_samples: list[int] = field(default_factory=list)
    audio_time_base: Fraction = Fraction(0)


def open_restream(url: str, **options: str) -> Any:
    """Open the restream like a camera client (blocking: run it in the executor)."""
    return av.open(url, options={"rtsp_transport": "tcp", **options}, timeout=(OPEN_TIMEOUT_S,) * 2)


def decode(container: Any, video_frames: int, audio_frames: int) -> Restream:
    """Decode until that many video and audio frames came (blocking)."""
    result = Restream()
    video = container.streams.video[0]
    result.video_codec = video.codec_context.name
    streams = [video]
    audio = container.streams.audio[0] if container.streams.audio else None
    if audio is not None:
        streams.append(audio)
        context = audio.codec_context
        result.audio_codec = context.name
        result.sample_rate = context.sample_rate
        result.channels = context.layout.nb_channels
        result.audio_time_base = audio.time_base
    for packet in container.demux(*streams):
        for frame in packet.decode():
            if packet.stream is video:
                result.video_frames += 1
                result.size = (frame.width, frame.height)
            else:
                result.audio_pts.append(frame.pts)
                result.audio_samples.append(frame.samples)
        enough_audio = audio is None or len(result.audio_pts) >= audio_frames
        if result.video_frames >= video_frames and enough_audio:
            break
    return result


async def describe(port: int, name: str) -> str:
    """The SDP of a raw RTSP DESCRIBE (loopback clients are never challenged)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        url = f"rtsp://127.0.0.1:{port}/{name}"
        writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).decode()
        assert head.startswith("RTSP/1.0 200 "), head
        length = re.search(r"Content-Length: (\d+)", head)
        assert length is not None, head
        return (await reader.readexactly(int(length[1]))).decode()
    finally:
        writer.close()
        await writer.wait_closed()


def fmtp(sdp: str, payload_type: int) -> dict[str, str]:
    line = next(x for x in sdp.splitlines() if x.startswith(f"a=fmtp:{payload_type} "))
    return dict(p.split("=", 1) for p in line.split(" ", 1)[1].split(";"))


def check_sdp(sdp: str, video_codec: str, audio_codec: str) -> None:
    """One m-line per track, each with its own control; the codecs' parameters in fmtp."""
    lines = sdp.splitlines()
    audio_pt = {"aac": 97, "pcm_alaw": 8}[audio_codec]
    assert [x for x in lines if x.startswith("m=")] == [
        "m=video 0 RTP/AVP 96",
        f"m=audio 0 RTP/AVP {audio_pt}",
    ]
    assert [x for x in lines if x.startswith("a=control:")] == [
        "a=control:trackID=0",
        "a=control:trackID=1",
    ]
    if video_codec == "hevc":
        assert "a=rtpmap:96 H265/90000" in lines
        params = fmtp(sdp, 96)
        # Each sprop is base64 of the parameter set of that NAL type (VPS 32, SPS 33, PPS 34).
        for name, nal_type in (("sprop-vps", 32), ("sprop-sps", 33), ("sprop-pps", 34)):
            nal = base64.b64decode(params[name])
            assert (nal[0] >> 1) & 0x3F == nal_type, name
    else:
        assert "a=rtpmap:96 H264/90000" in lines
        assert "sprop-parameter-sets" in fmtp(sdp, 96)
    if audio_codec == "aac":
        assert "a=rtpmap:97 MPEG4-GENERIC/16000/1" in lines
        params = fmtp(sdp, 97)
        assert params["mode"] == "AAC-hbr"
        assert (params["sizelength"], params["indexlength"]) == ("13", "3")
        # AudioSpecificConfig: AAC LC (2), 16 kHz (index 8), mono: 00010 1000 0001 000
        assert params["config"] == "1408"
    else:
        assert "a=rtpmap:8 PCMA/8000" in lines


@pytest.fixture
async def http(external_double: ExternalDouble) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on the double's API."""
    async with aiohttp.ClientSession(base_url=external_double.url) as session:
        yield session


async def register(http: aiohttp.ClientSession, name: str, src: str) -> None:
    async with http.put("/api/streams", params={"name": name, "src": src}) as response:
        assert response.status == 200, await response.text()


async def stream_info(http: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    async with http.get("/api/streams") as response:
        assert response.status == 200
        streams: dict[str, Any] = await response.json()
    return streams[name]


@pytest.mark.parametrize("shape_name", list(CASES))
async def test_rtsp_restream_carries_video_and_audio(
    hass: HomeAssistant,
    camera_matrix: CameraMatrix,
    external_double: ExternalDouble,
    http: aiohttp.ClientSession,
    shape_name: str,
) -> None:
    """An RTSP client gets the camera's video and audio, decodable, audio time advancing."""
    video_codec, audio_codec, video_media, audio_media = CASES[shape_name]
    shape = camera_matrix.shape(shape_name)
    await register(http, shape_name, camera_matrix.auth_url(shape))
    url = f"rtsp://127.0.0.1:{external_double.rtsp_port}/{shape_name}"

    container = await hass.async_add_executor_job(open_restream, url)
    try:
        got = await hass.async_add_executor_job(decode, container, VIDEO_FRAMES, AUDIO_FRAMES)
        # While the client plays, the API reports the camera's real codecs.
        info = await stream_info(http, shape_name)
        sdp = await describe(external_double.rtsp_port, shape_name)
    finally:
        await hass.async_add_executor_job(container.close)

    assert (got.video_codec, got.audio_codec) == (video_codec, audio_codec)
    assert got.size == (shape.width, shape.height)
    assert (got.sample_rate, got.channels) == (shape.sample_rate, 1)
    assert got.video_frames >= VIDEO_FRAMES
    check_sdp(sdp, video_codec, audio_codec)
    # Audio timestamps are in the audio clock: each frame starts where the previous ended
    # (a wrong clock, e.g. 90 kHz, would make the steps 5.6 or 11 times too long).
    steps = [b - a for a, b in zip(got.audio_pts, got.audio_pts[1:], strict=False)]
    durations = [Fraction(n, got.sample_rate) / got.audio_time_base for n in got.audio_samples]
    assert len(steps) >= AUDIO_FRAMES - 1
    assert all(step > 0 for step in steps), got.audio_pts
    assert sum(steps) == pytest.approx(float(sum(durations[:-1])), rel=0.05)

    (producer,) = info["producers"]
    assert producer["medias"] == [
        f"video, recvonly, {video_media}",
        f"audio, recvonly, {audio_media}",
    ]
    codecs = [(r["codec"]["codec_type"], r["codec"]["codec_name"]) for r in producer["receivers"]]
    assert codecs == [("video", GO2RTC_CODEC[video_codec]), ("audio", GO2RTC_CODEC[audio_codec])]
    assert all(r["bytes"] > 0 for r in producer["receivers"])
    (consumer,) = info["consumers"]
    assert consumer["medias"] == [
        f"video, sendonly, {video_media}",
        f"audio, sendonly, {audio_media}",
    ]

    # Snapshots decode the camera's codec too (go2rtc converts H.264 and H.265 keyframes).
    async with http.get("/api/frame.jpeg", params={"src": shape_name}) as response:
        assert response.status == 200
        image = Image.open(io.BytesIO(await response.read()))
    assert (image.format, image.size) == ("JPEG", (shape.width, shape.height))


@pytest.mark.parametrize(
    "how",
    [("?video", {}), ("", {"allowed_media_types": "video"})],
    ids=["query-video", "setup-video-only"],
)
async def test_rtsp_restream_video_only(
    hass: HomeAssistant,
    camera_matrix: CameraMatrix,
    external_double: ExternalDouble,
    http: aiohttp.ClientSession,
    how: tuple[str, dict[str, str]],
) -> None:
    """`?video` describes the video only; a client that sets up only the video gets only it."""
    query, options = how
    shape = SHAPES["h265_aac"]
    await register(http, shape.name, camera_matrix.auth_url(shape))
    url = f"rtsp://127.0.0.1:{external_double.rtsp_port}/{shape.name}{query}"

    container = await hass.async_add_executor_job(lambda: open_restream(url, **options))
    try:
        assert [s.type for s in container.streams] == ["video"]
        got = await hass.async_add_executor_job(decode, container, VIDEO_FRAMES, 0)
        info = await stream_info(http, shape.name)
    finally:
        await hass.async_add_executor_job(container.close)

    assert (got.video_codec, got.size) == ("hevc", (shape.width, shape.height))
    (consumer,) = info["consumers"]
    assert consumer["medias"] == ["video, sendonly, H265"]
    assert [s["codec"]["codec_name"] for s in consumer["senders"]] == ["h265"]
    # The camera connection still carries both tracks (go2rtc reads what the camera sends).
    (producer,) = info["producers"]
    assert len(producer["receivers"]) == 2


def test_hvcc_extradata_gives_the_same_parameter_sets(camera_matrix: CameraMatrix) -> None:
    """MP4-style (hvcC) extradata yields the parameter sets FFmpeg puts before a keyframe.

    RTSP sources give Annex B extradata (the restream tests above); this is the other form the
    double's DESCRIBE accepts, checked against FFmpeg's own hvcC -> Annex B conversion.
    """
    with av.open(str(camera_matrix.clips["h265_aac"].main)) as container:
        video = container.streams.video[0]
        extradata = video.codec_context.extradata
        assert extradata is not None
        hvcc = bytes(extradata)
        to_annexb = av.bitstream.BitStreamFilterContext("hevc_mp4toannexb", video)
        keyframe = next(p for p in container.demux(video) if p.is_keyframe)
        (annexb,) = to_annexb.filter(keyframe)
    assert hvcc[0] == 1  # configurationVersion: really hvcC, not Annex B

    def parameter_sets(nals: list[bytes]) -> list[bytes]:
        return [n for n in nals if double.h265_type(n) in (32, 33, 34)]

    expected = parameter_sets(double.split_nals(bytes(annexb)))
    assert [double.h265_type(n) for n in expected] == [32, 33, 34]
    assert parameter_sets(double.extradata_nals(hvcc)) == expected
    fmtp = double.sdp_fmtp_h265(hvcc)
    assert fmtp.split(";")[0] == "sprop-vps=" + base64.b64encode(expected[0]).decode()


class Viewer:
    """An aiortc WebRTC viewer offering the given video codecs (video only, recvonly)."""

    def __init__(self, codecs: tuple[str, ...]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.codecs = codecs
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def offer(self) -> str:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video")
        assert capabilities is not None
        transceiver.setCodecPreferences(
            [c for c in capabilities.codecs if c.mimeType.lower() in self.codecs]
        )

        @self.pc.on("track")
        def _on_track(track: Any) -> None:
            self._tasks.append(asyncio.create_task(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def _consume(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames += 1
                self.size = (frame.width, frame.height)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pc.close()


@pytest.mark.usefixtures("webrtc_loopback", "h265_registered")
async def test_webrtc_sends_h265_only_to_a_viewer_that_offers_it(
    camera_matrix: CameraMatrix,
    external_double: ExternalDouble,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """H.265 passes through to an H.265 viewer; an H.264-only viewer gets go2rtc's error."""
    received = receive_h265(monkeypatch)  # the test viewer depacketizes and decodes H.265
    shape = SHAPES["h265_aac"]
    await register(http, shape.name, camera_matrix.auth_url(shape))

    # An H.264-only viewer over the WebSocket API: go2rtc's error message, nothing sent.
    refused = Viewer(("video/h264", "video/rtx"))
    try:
        offer = await refused.offer()
        async with http.ws_connect("/api/ws", params={"src": shape.name}) as ws:
            await ws.send_json({"type": "webrtc", "value": {"type": "offer", "sdp": offer}})
            reply = await ws.receive_json(timeout=20)
    finally:
        await refused.close()
    assert reply == {
        "type": "error",
        "value": "webrtc: streams: codecs not matched: video:H265 => video:H264",
    }

    viewer = Viewer(("video/h265", "video/h264", "video/rtx"))
    try:
        offer = await viewer.offer()
        body = {"type": "offer", "sdp": offer}
        async with http.post("/api/webrtc", params={"src": shape.name}, json=body) as response:
            assert response.status == 200, await response.text()
            answer = (await response.json())["sdp"]
        assert negotiated_video_codec(answer) == "H265"
        await viewer.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        async with asyncio.timeout(30):
            while viewer.frames < VIDEO_FRAMES:
                await asyncio.sleep(0.05)
    finally:
        await viewer.close()
    assert viewer.size == (shape.width, shape.height)  # passed through, not transcoded
    assert received  # it came as H.265 RTP
