"""Answering browser-shaped offers: codec choice and the camera's own H.264 parameters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
import av
import pytest

from custom_components.lightnvr.compat import PeerConnection
from custom_components.lightnvr.engine.webrtc import choose_audio, choose_h264, offered_codecs
from custom_components.lightnvr.h264 import profile_class, profile_level_id

from .infra.media import make_h264


def _h264(pt: int, plid: str, mode: int = 1) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=pt,
        rtcpFeedback=[RTCRtcpFeedback("nack", "pli"), RTCRtcpFeedback("transport-cc")],
        parameters={"packetization-mode": mode, "profile-level-id": plid},
    )


def _rtx(pt: int, apt: int) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType="video/rtx", clockRate=90000, payloadType=pt, parameters={"apt": apt}
    )


# What Chromium offers for video (VP8 first, then H.264 in several profiles, each with RTX).
CHROME_VIDEO = [
    RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96),
    _rtx(97, 96),
    _h264(102, "42001f"),
    _rtx(103, 102),
    _h264(104, "42001f", mode=0),
    _h264(106, "42e01f"),
    _rtx(107, 106),
    _h264(112, "64001f"),
    _rtx(113, 112),
    _h264(116, "4d001f"),
    _rtx(117, 116),
]


def test_profile_level_id_is_read_from_the_sps(media_cache: Path) -> None:
    """The camera's SPS names its profile: what the answer must advertise."""
    clip = make_h264(media_cache / "plid.mp4", width=320, height=180, fps=10, seconds=1)
    with av.open(str(clip)) as container:
        extradata = bytes(container.streams.video[0].codec_context.extradata)
    plid = profile_level_id(extradata)  # avcC record from MP4: unpacked to Annex B first
    assert plid is not None
    assert profile_class(plid) == "high"  # the project's camera clips are High profile
    assert profile_level_id(b"") is None
    assert profile_class("42e01f") == "constrained-baseline"
    assert profile_class("42001f") == "baseline"
    assert profile_class("4d001f") == "main"
    assert profile_class("zz") is None


@pytest.mark.parametrize(
    ("camera", "payload_type", "answered"),
    [
        ("640028", 112, "640028"),  # High 4.0 camera → the offer's High PT, camera's level
        ("4d0029", 116, "4d0029"),  # Main
        ("42e01e", 106, "42e01e"),  # Constrained Baseline
        (None, 112, "64001f"),  # unknown camera profile: the most capable PT as offered
    ],
)
def test_h264_answer_follows_the_camera(
    camera: str | None, payload_type: int, answered: str
) -> None:
    """The payload type with the camera's profile is answered with the camera's parameters."""
    chosen, rtx = choose_h264(CHROME_VIDEO, camera)
    assert chosen.payloadType == payload_type
    assert chosen.parameters == {
        "level-asymmetry-allowed": 1,
        "packetization-mode": 1,
        "profile-level-id": answered,
    }
    assert [(f.type, f.parameter) for f in chosen.rtcpFeedback] == [("nack", "pli")]
    assert (rtx.mimeType, rtx.parameters["apt"]) == ("video/rtx", payload_type)


def test_h264_without_the_camera_profile_and_without_h264() -> None:
    """A viewer that lacks the camera's profile gets its best offer; one without H.264 none."""
    baseline_only = [_h264(102, "42001f"), _h264(106, "42e01f")]
    (chosen,) = choose_h264(baseline_only, "640028")
    assert chosen.payloadType == 106
    assert chosen.parameters["profile-level-id"] == "42e01f"
    with pytest.raises(ValueError, match=r"no H\.264"):
        choose_h264([CHROME_VIDEO[0], _h264(104, "42001f", mode=0)], "640028")


def test_audio_choice_uses_the_offered_payload_type() -> None:
    """G.711 goes out on the viewer's own payload type; a codec not offered is not sent."""
    offered = [
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111),
        RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0),
        RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, payloadType=8),
    ]
    (pcma,) = choose_audio(offered, "pcm_alaw") or []
    assert (pcma.mimeType, pcma.payloadType, pcma.clockRate) == ("audio/PCMA", 8, 8000)
    (opus,) = choose_audio(offered, "opus") or []
    assert (opus.payloadType, opus.channels) == (111, 2)
    assert choose_audio(offered[:1], "pcm_mulaw") is None


def test_offered_codecs_by_kind() -> None:
    """The offer's codec names per media kind, audio first like HA's frontend."""
    offer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 8\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
        "a=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
        "a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n"
    )
    assert offered_codecs(offer) == {"audio": {"opus", "pcma"}, "video": {"vp8", "h264"}}


async def _answer_then_close(delay: float | None) -> list[dict[str, Any]]:
    """Answer a frontend-shaped offer, close the answering side after `delay` s (None: at once).

    Returns what reached the event loop's exception handler meanwhile.
    """
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer.addTransceiver("audio", direction="recvonly")  # audio first, as HA's frontend
    viewer.addTransceiver("video", direction="recvonly")
    server = PeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await viewer.setLocalDescription(await viewer.createOffer())
        await server.setRemoteDescription(viewer.localDescription)
        for transceiver in server.getTransceivers():
            track = VideoStreamTrack() if transceiver.kind == "video" else AudioStreamTrack()
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly"
        await server.setLocalDescription(await server.createAnswer())
        if delay is not None:
            await viewer.setRemoteDescription(server.localDescription)
            await asyncio.sleep(delay)
        await server.close()
        assert server.connectionState == "closed"
    finally:
        await viewer.close()
        await server.close()
        await asyncio.sleep(0.1)  # both sides' ICE tasks see the close
        loop.set_exception_handler(previous)
    return seen


@pytest.mark.usefixtures("webrtc_loopback")
@pytest.mark.parametrize("delay", [None, 0.0, 0.01, 0.02, 0.05])
# The viewer side's ICE may still be checking when it is closed; aioice then starts its consent
# task after the close. That is the test peer's library, not the integration: reported, cancelled.
@pytest.mark.parametrize("expected_lingering_tasks", [True])
async def test_viewer_leaving_while_connecting_is_quiet(delay: float | None) -> None:
    """A viewer that leaves while its connection is being set up leaves no error behind.

    aiortc 1.10 fails its connecting task when the connection is closed before the task runs
    (the review card closing a live session it just opened) or between two transceivers;
    nobody awaits that task, so asyncio reported it as an error ("Task exception was never
    retrieved"), in Home Assistant's log and as a test failure.
    """
    seen = await _answer_then_close(delay)
    assert [context.get("exception") or context.get("message") for context in seen] == []
