"""Pure helpers: URLs and credentials, H.264 parameter sets, snapshot sizes, RTP timing, SDP."""

from __future__ import annotations

import asyncio
from fractions import Fraction
import itertools
import time

import pytest

from custom_components.lightnvr.engine.snapshot import target_size
from custom_components.lightnvr.engine.webrtc import RTP_CLOCK, HubVideoTrack, split_candidates
from custom_components.lightnvr.h264 import has_parameter_sets, nal_types, parameter_sets_annexb
from custom_components.lightnvr.hub import MediaPacket, StreamHub
from custom_components.lightnvr.source import (
    CameraSource,
    SourceError,
    normalized_url,
    redact_url,
    split_credentials,
    validate_url,
)

SPS = bytes.fromhex("6764001eacb4")
PPS = bytes.fromhex("68ef3cb0")


def test_connect_url_injects_quoted_credentials() -> None:
    source = CameraSource("rtsp://cam.local:554/live?ch=1", "ad min", "p@ss:w/rd")
    assert source.connect_url() == "rtsp://ad%20min:p%40ss%3Aw%2Frd@cam.local:554/live?ch=1"
    assert CameraSource("rtsp://cam/x").connect_url() == "rtsp://cam/x"
    assert "p@ss" not in source.redacted_url


def test_split_and_redact_credentials() -> None:
    assert split_credentials("rtsp://u%40x:p%3Aw@host:1/a") == ("rtsp://host:1/a", "u@x", "p:w")
    assert split_credentials("rtsp://host/a") == ("rtsp://host/a", None, None)
    text = "failed rtsp://admin:hunter2@10.0.0.5/s and http://a:b@h/x"
    assert redact_url(text) == "failed rtsp://***@10.0.0.5/s and http://***@h/x"


def test_normalized_url_ignores_case_login_and_fragment() -> None:
    assert normalized_url("RTSP://u:p@Cam.Local:554/s#x") == normalized_url(
        "rtsp://cam.local:554/s"
    )
    assert normalized_url("rtsp://cam/a") != normalized_url("rtsp://cam/b")


@pytest.mark.parametrize(
    "url", ["rtsp://h/x", " rtsps://h:322/x ", "http://h/a.mjpg", "rtmp://h/l"]
)
def test_validate_url_accepts_stream_urls(url: str) -> None:
    assert validate_url(url) == url.strip()


@pytest.mark.parametrize("url", ["", "h/x", "udp://h:1", "rtsp://h:0/x", "rtsp:///x", "a b"])
def test_validate_url_rejects(url: str) -> None:
    with pytest.raises(SourceError) as err:
        validate_url(url)
    assert err.value.reason == "invalid_url"


def test_parameter_sets_from_avcc_and_annexb() -> None:
    avcc = bytes([1, 0x64, 0, 0x1E, 0xFF, 0xE1]) + len(SPS).to_bytes(2, "big") + SPS
    avcc += bytes([1]) + len(PPS).to_bytes(2, "big") + PPS
    annexb = parameter_sets_annexb(avcc)
    assert annexb == b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS
    assert parameter_sets_annexb(annexb) == annexb
    assert nal_types(annexb) == [7, 8]
    assert has_parameter_sets(annexb + b"\x00\x00\x01\x65\x88")
    assert not has_parameter_sets(b"\x00\x00\x01\x65\x88")
    assert parameter_sets_annexb(None) == b""
    assert parameter_sets_annexb(b"\x01\x02") == b""  # truncated record


def test_snapshot_target_size_keeps_aspect_and_never_upscales() -> None:
    assert target_size((1920, 1080), None, None) == (1920, 1080)
    assert target_size((1920, 1080), 640, None) == (640, 360)
    assert target_size((1920, 1080), None, 270) == (480, 270)
    assert target_size((1920, 1080), 640, 100) == (176, 100)
    assert target_size((640, 360), 4000, 4000) == (640, 360)


def test_split_candidates_moves_candidates_out_of_the_sdp() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:0",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            "a=end-of-candidates",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
            "a=mid:1",
            "a=candidate:2 1 udp 2130706431 127.0.0.1 5002 typ host",
        ]
    )
    stripped, candidates = split_candidates(sdp)
    assert "candidate" not in stripped
    assert "end-of-candidates" not in stripped
    assert [(c.candidate, c.sdp_mid, c.sdp_m_line_index) for c in candidates] == [
        ("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "0", 0),
        ("candidate:2 1 udp 2130706431 127.0.0.1 5002 typ host", "1", 1),
    ]


async def test_track_timestamps_catch_up_then_follow_the_source() -> None:
    """Backlog packets get 1 ms steps; live packets keep the source's spacing; jumps re-anchor."""
    hub = StreamHub("t", CameraSource("rtsp://127.0.0.1/x"), asyncio.get_running_loop())
    track = HubVideoTrack(hub)
    tb = Fraction(1, 90000)
    old = time.monotonic() - 5

    def packet(pts: int, received: float) -> MediaPacket:
        return MediaPacket("video", b"", pts, pts, tb, False, received)

    backlog = [track._rtp_timestamp(packet(i * 3600, old)) for i in range(5)]
    assert backlog == [0, 90, 180, 270, 360]
    now = time.monotonic()
    live = [track._rtp_timestamp(packet((5 + i) * 3600, now)) for i in range(3)]
    assert live[0] == 360 + RTP_CLOCK // 25
    assert [b - a for a, b in itertools.pairwise(live)] == [3600, 3600]
    # The source's clock jumps back (reconnect): output keeps rising by one frame.
    after_jump = track._rtp_timestamp(packet(0, now))
    assert after_jump == live[-1] + RTP_CLOCK // 25
    track.stop()
