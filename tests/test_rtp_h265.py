"""H.265 pass-through over RTP (RFC 7798) and its aiortc registration, on a real x265 clip."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
from fractions import Fraction
import hashlib
import itertools
from pathlib import Path
import subprocess
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    codecs as aiortc_codecs,
    rtcrtpreceiver,
    rtcrtpsender,
)
from aiortc.codecs.base import Decoder
from aiortc.codecs.h264 import PACKET_MAX, H264Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription
import av
import pytest

from custom_components.lightnvr import h265
from custom_components.lightnvr.compat import set_transceiver_codecs
from custom_components.lightnvr.engine import rtp_h265
from custom_components.lightnvr.engine.rtp_h265 import (
    H265EncodeError,
    H265Encoder,
    choose_h265,
    depacketize,
    depayload,
    h265_codec_preferences,
    packetize,
    register_h265,
)

from .infra.media import ffmpeg_binary
from .webrtc_client import negotiated_video_codec

FPS = 15
FRAMES = 30
TINY_MTU = 64
RTP_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class Clip:
    """A short camera-like H.265 clip, demuxed."""

    path: Path
    extradata: bytes
    access_units: list[bytes]
    keyframes: list[bool]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """2 s of 640x360 15 fps H.265 Main (x265), a keyframe every second, no B-frames."""
    path = tmp_path_factory.mktemp("h265") / "clip.h265"
    subprocess.run(
        [
            ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
            "-t", str(FRAMES / FPS), "-c:v", "libx265", "-preset", "ultrafast",
            "-x265-params", f"keyint={FPS}:bframes=0:log-level=error", "-f", "hevc", str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = [(bytes(p), bool(p.is_keyframe)) for p in container.demux(stream) if p.size]
    return Clip(path, extradata, [p for p, _ in packets], [k for _, k in packets])


@pytest.fixture
def h265_registered(monkeypatch: pytest.MonkeyPatch) -> RTCRtpCodecParameters:
    """H.265 registered with aiortc for this test only (aiortc's state is restored after)."""
    monkeypatch.setitem(aiortc_codecs.CODECS, "video", list(aiortc_codecs.CODECS["video"]))
    for module in (aiortc_codecs, rtcrtpsender):
        monkeypatch.setattr(module, "get_encoder", module.get_encoder)
    return register_h265()


def canonical(access_unit: bytes) -> bytes:
    """The access unit with four-byte start codes, as the depacketizer writes it."""
    return h265.join_nal_units(h265.split_nal_units(access_unit))


def frame_digests(access_units: list[bytes]) -> list[str]:
    """Decode with FFmpeg's HEVC decoder; one digest of the picture's planes per frame."""
    ctx: Any = av.CodecContext.create("hevc", "r")
    frames = []
    for au in access_units:
        frames += ctx.decode(av.Packet(au))
    frames += ctx.decode(None)
    return [hashlib.sha256(frame.to_ndarray().tobytes()).hexdigest() for frame in frames]


def check_payloads(payloads: list[bytes], units: list[bytes], mtu: int) -> dict[str, int]:
    """Check RFC 7798 payload invariants; return how many packets of each kind there were.

    Also checks that the payloads carry exactly `units`, in order.
    """
    counts: dict[str, int] = defaultdict(int)
    carried: list[bytes] = []
    fragment: bytearray | None = None
    fragment_type = -1
    for payload in payloads:
        assert len(payload) <= mtu
        kind = h265.nal_type(payload)
        assert payload[0] & 0x80 == 0  # F bit: the encoder never sets it
        if kind == rtp_h265.TYPE_AP:
            counts["ap"] += 1
            assert fragment is None
            pos, inner = 2, []
            while pos < len(payload):
                size = int.from_bytes(payload[pos : pos + 2], "big")
                inner.append(payload[pos + 2 : pos + 2 + size])
                pos += 2 + size
            assert pos == len(payload)
            assert len(inner) >= 2  # section 4.4.2: at least two aggregation units
            assert all(h265.nal_type(u) < rtp_h265.TYPE_AP for u in inner)
            assert h265.nal_layer_id(payload) == min(h265.nal_layer_id(u) for u in inner)
            assert h265.nal_tid(payload) == min(h265.nal_tid(u) for u in inner)
            carried += inner
        elif kind == rtp_h265.TYPE_FU:
            counts["fu"] += 1
            fu = payload[2]
            start, end = bool(fu & 0x80), bool(fu & 0x40)
            assert not (start and end)
            assert len(payload) > 3
            if start:
                assert fragment is None
                fragment_type = fu & 0x3F
                header = bytes([(payload[0] & 0x81) | (fragment_type << 1), payload[1]])
                fragment = bytearray(header)
            else:
                assert fragment is not None
                assert fu & 0x3F == fragment_type
            fragment += payload[3:]
            if end:
                assert fragment is not None
                assert len(fragment) > mtu  # only what does not fit is fragmented
                carried.append(bytes(fragment))
                fragment = None
        else:
            counts["single"] += 1
            assert fragment is None
            assert kind < rtp_h265.TYPE_AP
            carried.append(payload)
    assert fragment is None
    assert carried == units
    return counts


def test_default_payload_size_is_aiortcs() -> None:
    """H.265 payloads are sized like aiortc's H.264 ones."""
    assert rtp_h265.PAYLOAD_MAX == PACKET_MAX


def test_nal_units_parameter_sets_and_profile(clip: Clip) -> None:
    """NAL types, keyframes, parameter sets and the SPS's profile/tier/level of a real stream."""
    assert len(clip.access_units) == FRAMES
    first = h265.nal_types(clip.access_units[0])
    assert first[:3] == [h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS]
    assert [h265.is_keyframe(au) for au in clip.access_units] == clip.keyframes
    assert sum(clip.keyframes) == FRAMES // FPS
    assert h265.has_parameter_sets(clip.access_units[0])
    assert not h265.has_parameter_sets(clip.access_units[1])

    ptl = h265.profile_tier_level(clip.extradata)
    assert ptl is not None
    probe = subprocess.run(
        [
            ffmpeg_binary().replace("ffmpeg", "ffprobe"), "-v", "error", "-select_streams", "v",
            "-show_entries", "stream=profile,level", "-of", "default=nw=1", str(clip.path),
        ],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert f"level={ptl.level_idc}" in probe
    assert "profile=Main" in probe
    assert (ptl.profile_id, ptl.tier_flag, ptl.profile_space) == (1, 0, 0)
    assert ptl.conforms_to(2)  # x265 marks Main streams as valid Main 10
    assert not ptl.conforms_to(4)
    assert h265.profile_tier_level(clip.access_units[0]) == ptl
    assert h265.profile_tier_level(clip.access_units[1]) is None


def test_hvcc_extradata_gives_the_same_parameter_sets(clip: Clip, tmp_path: Path) -> None:
    """MP4-style (hvcC) extradata converts to the stream's own VPS/SPS/PPS in Annex B."""
    mp4 = tmp_path / "clip.mp4"
    subprocess.run(
        [
            ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(clip.path), "-c", "copy", "-tag:v", "hvc1", str(mp4),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with av.open(str(mp4)) as container:
        hvcc = bytes(container.streams.video[0].codec_context.extradata or b"")
    assert hvcc[0] == 1  # configurationVersion: not Annex B
    in_band = [
        u
        for u in h265.split_nal_units(clip.access_units[0])
        if h265.nal_type(u) in h265.PARAMETER_SET_TYPES
    ]
    assert h265.split_nal_units(h265.parameter_sets_annexb(hvcc)) == in_band
    assert h265.split_nal_units(h265.parameter_sets_annexb(clip.extradata)) == in_band
    assert h265.hvcc_nal_units(hvcc)[:3] == in_band
    assert h265.profile_tier_level(hvcc) == h265.profile_tier_level(clip.extradata)
    assert h265.hvcc_to_annexb(hvcc[:30]) == b""  # truncated record
    assert h265.parameter_sets_annexb(None) == b""


def test_keyframes_get_missing_parameter_sets(clip: Clip) -> None:
    """A keyframe without VPS/SPS/PPS gets them from extradata, after an AUD; others untouched."""
    second_key = clip.access_units[clip.keyframes.index(True, 1)]
    units = h265.split_nal_units(second_key)
    bare = h265.join_nal_units([u for u in units if h265.nal_type(u) not in (32, 33, 34)])
    assert not h265.has_parameter_sets(bare)
    fixed = h265.with_parameter_sets(bare, clip.extradata)
    assert h265.split_nal_units(fixed) == units
    assert h265.with_parameter_sets(second_key, clip.extradata) == second_key
    assert h265.with_parameter_sets(clip.access_units[1], clip.extradata) == (clip.access_units[1])
    aud = bytes([h265.NAL_AUD << 1, 1, 0x50])
    with_aud = h265.with_parameter_sets(h265.join_nal_units([aud, *units[3:]]), clip.extradata)
    assert h265.nal_types(with_aud)[:4] == [h265.NAL_AUD, 32, 33, 34]
    # Only the missing ones are added.
    no_pps = h265.join_nal_units([u for u in units if h265.nal_type(u) != h265.NAL_PPS])
    assert h265.nal_types(h265.with_parameter_sets(no_pps, clip.extradata)).count(33) == 1


def test_unescape_rbsp() -> None:
    assert (
        h265.unescape_rbsp(b"\x01\x00\x00\x03\x00\x00\x00\x03\x01")
        == b"\x01\x00\x00\x00\x00\x00\x01"
    )
    assert h265.unescape_rbsp(b"\x00\x00\x03") == b"\x00\x00"


@pytest.mark.parametrize("mtu", [rtp_h265.PAYLOAD_MAX, TINY_MTU])
def test_packetize_depacketize_decode(clip: Clip, mtu: int) -> None:
    """Every access unit survives packetizing and depacketizing bit-exact, and decodes."""
    counts: dict[str, int] = defaultdict(int)
    rebuilt = []
    for au in clip.access_units:
        payloads = packetize(au, mtu)
        for kind, count in check_payloads(payloads, h265.split_nal_units(au), mtu).items():
            counts[kind] += count
        rebuilt.append(depacketize(payloads))
        assert rebuilt[-1] == canonical(au)
        assert b"".join(depayload(p) for p in payloads) == rebuilt[-1]
    # Parameter sets travel aggregated; slices larger than a payload as fragments.
    assert counts["ap"] >= sum(clip.keyframes)
    assert counts["fu"] > 0
    if mtu == TINY_MTU:
        assert counts["fu"] > 20 * len(clip.access_units)
    source = frame_digests(clip.access_units)
    assert len(source) == FRAMES
    assert frame_digests(rebuilt) == source


def test_depacketize_rejects_broken_input(clip: Clip) -> None:
    payloads = packetize(clip.access_units[0], TINY_MTU)
    fu = [p for p in payloads if h265.nal_type(p) == rtp_h265.TYPE_FU]
    with pytest.raises(ValueError, match="not ended"):
        depacketize(fu[:2])
    with pytest.raises(ValueError, match="out of order"):
        depacketize(fu[1:3])
    with pytest.raises(ValueError, match="PACI"):
        depayload(bytes([rtp_h265.TYPE_PACI << 1, 1, 0, 0]))
    with pytest.raises(ValueError, match="aggregation"):
        depayload(bytes([rtp_h265.TYPE_AP << 1, 1, 0, 50, 2]))
    with pytest.raises(ValueError):
        packetize(clip.access_units[0], 3)


def test_encoder_packs_and_refuses_to_encode(clip: Clip) -> None:
    """`pack` gives payloads and the 90 kHz timestamp; `encode` is a clear error."""
    encoder = H265Encoder()
    packet = av.Packet(clip.access_units[0])
    packet.pts = 3
    packet.time_base = Fraction(1, FPS)
    payloads, timestamp = encoder.pack(packet)
    assert timestamp == 3 * 90000 // FPS
    assert payloads == packetize(clip.access_units[0])
    with pytest.raises(H265EncodeError, match="passed through only"):
        encoder.encode(av.VideoFrame(16, 16, "yuv420p"))
    with pytest.raises(ValueError, match="pts"):
        encoder.pack(av.Packet(clip.access_units[1]))


def test_register_h265_is_idempotent_and_delegates(
    h265_registered: RTCRtpCodecParameters,
) -> None:
    """One H.265 entry with a free payload type; aiortc's other encoders unchanged."""
    codec = h265_registered
    assert register_h265() is codec
    register_h265()
    video = aiortc_codecs.CODECS["video"]
    assert [c.mimeType for c in video].count("video/H265") == 1
    all_types = [c.payloadType for kind in aiortc_codecs.CODECS.values() for c in kind]
    assert len(all_types) == len(set(all_types))
    assert codec.payloadType is not None
    assert 96 <= codec.payloadType <= 127
    rtx = [c for c in video if c.mimeType == "video/rtx"]
    assert [c.parameters["apt"] for c in rtx].count(codec.payloadType) == 1
    h264 = next(c for c in video if c.mimeType == "video/H264")
    assert codec.rtcpFeedback == h264.rtcpFeedback
    assert codec.clockRate == 90000
    assert isinstance(rtcrtpsender.get_encoder(codec), H265Encoder)
    assert isinstance(aiortc_codecs.get_encoder(codec), H265Encoder)
    assert isinstance(rtcrtpsender.get_encoder(h264), H264Encoder)
    for side in (RTCRtpSender, RTCRtpReceiver):
        capabilities = side.getCapabilities("video")
        assert capabilities is not None
        assert any(c.mimeType == "video/H265" for c in capabilities.codecs)
    assert [c.mimeType for c in h265_codec_preferences()] == ["video/H265", "video/rtx"]


# A browser's offer (Chrome 136+ shape): audio first, VP8, two H.265 profiles (Main 10 listed
# first), H.264. Only the parts aiortc needs to accept it.
CHROME_OFFER = """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Hx3q
a=ice-pwd:3Lw9Yy1cS2ZcMpmBRT1mGgDq
a=ice-options:trickle
a=fingerprint:sha-256 {fingerprint}
a=setup:actpass
a=mid:0
a=recvonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
m=video 9 UDP/TLS/RTP/SAVPF 96 97 49 50 51 52 103 104
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Hx3q
a=ice-pwd:3Lw9Yy1cS2ZcMpmBRT1mGgDq
a=ice-options:trickle
a=fingerprint:sha-256 {fingerprint}
a=setup:actpass
a=mid:1
a=recvonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:49 H265/90000
a=rtcp-fb:49 goog-remb
a=rtcp-fb:49 transport-cc
a=rtcp-fb:49 ccm fir
a=rtcp-fb:49 nack
a=rtcp-fb:49 nack pli
a=fmtp:49 level-id=180;profile-id=2;tier-flag=0;tx-mode=SRST
a=rtpmap:50 rtx/90000
a=fmtp:50 apt=49
a=rtpmap:51 H265/90000
a=rtcp-fb:51 goog-remb
a=rtcp-fb:51 transport-cc
a=rtcp-fb:51 ccm fir
a=rtcp-fb:51 nack
a=rtcp-fb:51 nack pli
a=fmtp:51 level-id=180;profile-id=1;tier-flag=0;tx-mode=SRST
a=rtpmap:52 rtx/90000
a=fmtp:52 apt=51
a=rtpmap:103 H264/90000
a=rtcp-fb:103 goog-remb
a=rtcp-fb:103 nack
a=rtcp-fb:103 nack pli
a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:104 rtx/90000
a=fmtp:104 apt=103
""".format(fingerprint=":".join(["AB"] * 32)).replace("\n", "\r\n")


def offered_video(sdp: str) -> list[RTCRtpCodecParameters]:
    """The codecs of the offer's video section."""
    media = next(m for m in SessionDescription.parse(sdp).media if m.kind == "video")
    return list(media.rtp.codecs)


def only_profile(sdp: str, keep: int) -> str:
    """The Chrome offer with one H.265 profile removed (keep 1: Main, 2: Main 10)."""
    drop = "51" if keep == 2 else "49"
    rtx = str(int(drop) + 1)
    lines = [
        line
        for line in sdp.split("\r\n")
        if not any(
            line.startswith(f"a={a}:{pt} ")
            for a in ("rtpmap", "fmtp", "rtcp-fb")
            for pt in (drop, rtx)
        )
    ]
    return "\r\n".join(lines).replace(f" {drop} {rtx} ", " ")


def test_choose_prefers_the_cameras_profile(clip: Clip) -> None:
    """Main camera: Main's payload type even when Main 10 is listed first; fmtp from the SPS."""
    ptl = h265.profile_tier_level(clip.extradata)
    assert ptl is not None
    chosen = choose_h265(offered_video(CHROME_OFFER), ptl)
    assert [(c.mimeType, c.payloadType) for c in chosen] == [("video/H265", 51), ("video/rtx", 52)]
    assert chosen[0].parameters == {
        "level-id": str(ptl.level_idc),
        "profile-id": "1",
        "tier-flag": "0",
        "tx-mode": "SRST",
    }
    assert {(fb.type, fb.parameter) for fb in chosen[0].rtcpFeedback} == {
        ("nack", None),
        ("nack", "pli"),
        ("goog-remb", None),
    }
    assert chosen[1].parameters == {"apt": 51}
    # Main 10 only: a Main stream is a valid Main 10 stream, answered as such.
    main10 = choose_h265(offered_video(only_profile(CHROME_OFFER, 2)), ptl)
    assert (main10[0].payloadType, main10[0].parameters["profile-id"]) == (49, "2")
    # A high-tier camera, or no H.265 at all: nothing suits.
    high_tier = h265.ProfileTierLevel(0, 1, 1, ptl.compatibility_flags, 153)
    assert choose_h265(offered_video(CHROME_OFFER), high_tier) == []
    assert choose_h265(offered_video(CHROME_OFFER.replace("H265/", "H266/")), ptl) == []
    # A level above what the viewer offered is still answered, with the camera's level.
    big = h265.ProfileTierLevel(0, 0, 1, ptl.compatibility_flags, 183)
    assert choose_h265(offered_video(CHROME_OFFER), big)[0].parameters["level-id"] == "183"


@pytest.mark.usefixtures("webrtc_loopback")
async def test_answer_to_a_browser_offer(
    clip: Clip, h265_registered: RTCRtpCodecParameters
) -> None:
    """The answer is H.265 on the offered Main payload type, with the camera's fmtp.

    aiortc alone would answer the first offered H.265 (Main 10) under its own payload type:
    the browser's (49) is outside the range aiortc takes over (96-127).
    """
    ptl = h265.profile_tier_level(clip.extradata)
    assert ptl is not None
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(CHROME_OFFER, "offer"))
        transceiver = next(t for t in pc.getTransceivers() if t.kind == "video")
        transceiver.direction = "sendonly"
        chosen = choose_h265(offered_video(CHROME_OFFER), ptl)
        set_transceiver_codecs(transceiver, chosen)
        # The answer as made; not applied, so no connection attempt outlives the test.
        answer = (await pc.createAnswer()).sdp
    finally:
        await pc.close()
    video = answer[answer.index("m=video") :]
    assert video.split("\r\n")[0].endswith(" UDP/TLS/RTP/SAVPF 51 52")
    assert negotiated_video_codec(answer) == "H265"
    assert f"a=fmtp:51 level-id={ptl.level_idc};profile-id=1;tier-flag=0;tx-mode=SRST" in video
    assert "a=fmtp:52 apt=51" in video
    assert {line for line in video.split("\r\n") if line.startswith("a=rtcp-fb:51")} == {
        "a=rtcp-fb:51 nack",
        "a=rtcp-fb:51 nack pli",
        "a=rtcp-fb:51 goog-remb",
    }


class _H265Decoder(Decoder):
    """Receiving side for the test viewer: FFmpeg's HEVC decoder behind aiortc's interface."""

    def __init__(self) -> None:
        self.codec: Any = av.CodecContext.create("hevc", "r")

    def decode(self, encoded_frame: Any) -> list[Any]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = RTP_TIME_BASE
        return list(self.codec.decode(packet))


def receive_h265(monkeypatch: pytest.MonkeyPatch) -> list[RtpPacket]:
    """Let aiortc viewers in this test depacketize and decode H.265; return all RTP received."""
    received: list[RtpPacket] = []
    original_handle = RTCRtpReceiver._handle_rtp_packet
    original_depayload = rtcrtpreceiver.depayload
    original_decoder = rtcrtpreceiver.get_decoder

    async def handle(self: RTCRtpReceiver, packet: RtpPacket, arrival_time_ms: int) -> None:
        received.append(packet)
        await original_handle(self, packet, arrival_time_ms)

    def depayload_any(codec: RTCRtpCodecParameters, payload: bytes) -> bytes:
        if codec.mimeType.lower() == "video/h265":
            return depayload(payload)
        return original_depayload(codec, payload)

    def decoder_for(codec: RTCRtpCodecParameters) -> Decoder:
        if codec.mimeType.lower() == "video/h265":
            return _H265Decoder()
        return original_decoder(codec)

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", handle)
    monkeypatch.setattr(rtcrtpreceiver, "depayload", depayload_any)
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", decoder_for)
    return received


class ClipTrack(MediaStreamTrack):
    """Sends the clip's access units as `av.Packet`s, at twice the clip's frame rate."""

    kind = "video"

    def __init__(self, access_units: list[bytes], extradata: bytes) -> None:
        super().__init__()
        self.access_units = [h265.with_parameter_sets(au, extradata) for au in access_units]
        self.index = 0

    async def recv(self) -> av.Packet:
        if self.index >= len(self.access_units):
            raise MediaStreamError
        await asyncio.sleep(0.5 / FPS)
        packet = av.Packet(self.access_units[self.index])
        packet.pts = self.index * 90000 // FPS
        packet.time_base = RTP_TIME_BASE
        self.index += 1
        return packet


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.usefixtures("webrtc_loopback")
async def test_h265_between_aiortc_peers(
    clip: Clip, h265_registered: RTCRtpCodecParameters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer offering H.265 gets it: right fmtp, H.265 RTP, every picture decodes."""
    received = receive_h265(monkeypatch)
    ptl = h265.profile_tier_level(clip.extradata)
    assert ptl is not None
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    camera = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = ClipTrack(clip.access_units, clip.extradata)
    frames: list[Any] = []
    tasks: list[asyncio.Task[None]] = []

    async def consume(remote: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frames.append(await remote.recv())

    @viewer.on("track")
    def _on_track(remote: MediaStreamTrack) -> None:
        tasks.append(asyncio.create_task(consume(remote)))

    try:
        # The viewer offers like a browser: audio first, then video with H.265 preferred.
        viewer.addTransceiver("audio", direction="recvonly")
        viewer.addTransceiver("video", direction="recvonly").setCodecPreferences(
            h265_codec_preferences()
        )
        await viewer.setLocalDescription(await viewer.createOffer())
        offer = viewer.localDescription.sdp

        # The camera answers like the engine: apply the offer, then send the chosen codec.
        await camera.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        transceiver = next(t for t in camera.getTransceivers() if t.kind == "video")
        transceiver.sender.replaceTrack(track)
        transceiver.direction = "sendonly"
        chosen = choose_h265(offered_video(offer), ptl)
        assert chosen
        set_transceiver_codecs(transceiver, chosen)
        sent = chosen[0]
        await camera.setLocalDescription(await camera.createAnswer())
        answer = camera.localDescription.sdp
        await viewer.setRemoteDescription(RTCSessionDescription(answer, "answer"))

        assert negotiated_video_codec(answer) == "H265"
        assert (
            f"a=fmtp:{sent.payloadType} level-id={ptl.level_idc};profile-id=1;tier-flag=0;"
            "tx-mode=SRST"
        ) in answer

        # Every access unit ends with a marker packet; the viewer decodes all but the newest
        # (aiortc's jitter buffer hands a picture on when the next one starts).
        await wait_for(lambda: sum(p.marker for p in received) >= FRAMES)
        await wait_for(lambda: len(frames) >= FRAMES - 1)
    finally:
        await camera.close()
        await viewer.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert {p.payload_type for p in received} == {sent.payloadType}
    by_timestamp: dict[int, list[RtpPacket]] = defaultdict(list)
    for packet in received:
        by_timestamp[packet.timestamp].append(packet)
    assert len(by_timestamp) == FRAMES
    rebuilt = []
    for packets in by_timestamp.values():
        # Loopback keeps the order: the sequence numbers follow each other (mod 2^16).
        numbers = [p.sequence_number for p in packets]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(numbers))
        assert [p.marker for p in packets] == [0] * (len(packets) - 1) + [1]
        assert all(len(p.payload) <= rtp_h265.PAYLOAD_MAX for p in packets)
        rebuilt.append(depacketize([p.payload for p in packets]))
    assert rebuilt == [canonical(au) for au in track.access_units]
    assert frame_digests(rebuilt) == frame_digests(clip.access_units)
    assert all((f.width, f.height) == (640, 360) for f in frames)
