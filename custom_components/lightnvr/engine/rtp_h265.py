"""H.265 over RTP (RFC 7798) for the embedded WebRTC engine: pass-through, never re-encoded.

aiortc knows no H.265. This module adds what pass-through needs: a packetizer (access unit →
RTP payloads), an aiortc encoder that only packs (`H265Encoder`), `register_h265()` to make
aiortc negotiate and send `video/H265`, and `choose_h265()`, the answer's choice of the
offered H.265 payload type that suits the camera. A tiny depacketizer (payloads → Annex B) is
here for tests and test clients.

Packets are made the way browsers' WebRTC stacks read them: no DONL fields (we never signal
sprop-max-don-diff, so RFC 7798 section 4.4 leaves them out), no PACI packets, and the RTP
marker bit (set by aiortc on the last payload of each `pack()`) only on an access unit's last
packet, as section 4.1 requires.
"""

from __future__ import annotations

from collections.abc import Iterable
import copy
import math
from typing import Any

from aiortc import (
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpSender,
    codecs as aiortc_codecs,
    rtcrtpsender,
)
from aiortc.codecs.base import Encoder
from aiortc.rtcrtpparameters import RTCRtcpFeedback
import av

from ..compat import fraction
from ..h265 import (
    NAL_HEADER_SIZE,
    START_CODE,
    ProfileTierLevel,
    is_vcl,
    nal_layer_id,
    nal_tid,
    nal_type,
    split_nal_units,
)

H265_MIME = "video/H265"
RTX_MIME = "video/rtx"
CLOCK_RATE = 90000
# The largest RTP payload we make: the same as aiortc's H.264 packetizer (its PACKET_MAX), so
# H.265 packets fit the same paths (SRTP, TURN, VPN overheads) as H.264 ones.
PAYLOAD_MAX = 1300

# Payload header types (RFC 7798 section 4.4).
TYPE_AP = 48
TYPE_FU = 49
TYPE_PACI = 50
_PAYLOAD_HEADER_SIZE = 2
_FU_HEADER_SIZE = 1
_AP_LENGTH_SIZE = 2
_FU_START = 0x80
_FU_END = 0x40
_MIN_PAYLOAD_MAX = _PAYLOAD_HEADER_SIZE + _FU_HEADER_SIZE + 1

# What aiortc offers for H.265 itself (aiortc-to-aiortc, e.g. test viewers) and what stands in
# the capability list: Main profile, main tier, level 3.1 — the WebRTC baseline, also RFC
# 7798's defaults when the parameters are absent. Answers carry the camera's own values
# instead (see `choose_h265`). Strings, as aiortc's SDP parser gives them.
DEFAULT_PARAMETERS: dict[str, int | str | None] = {
    "level-id": "93",
    "profile-id": "1",
    "tier-flag": "0",
    "tx-mode": "SRST",
}
_FALLBACK_FEEDBACK = (("nack", None), ("nack", "pli"), ("goog-remb", None))


class H265EncodeError(RuntimeError):
    """Raised when aiortc asks us to encode pictures: H.265 is only ever passed through."""


def _payload_header(kind: int, forbidden: int, layer_id: int, tid: int) -> bytes:
    """Build the two-byte payload header, laid out like a NAL unit header (section 4.2)."""
    return bytes([(forbidden << 7) | (kind << 1) | (layer_id >> 5), ((layer_id & 0x1F) << 3) | tid])


def _aggregate(units: list[bytes]) -> bytes:
    """Build an Aggregation Packet (RFC 7798 section 4.4.2).

    The payload header's F bit is set when any aggregated unit has it, LayerId and TID are the
    lowest of the aggregated units; each unit follows its 16-bit size (no DONL, see module
    docstring).
    """
    header = _payload_header(
        TYPE_AP,
        int(any(unit[0] & 0x80 for unit in units)),
        min(nal_layer_id(unit) for unit in units),
        min(nal_tid(unit) for unit in units),
    )
    return header + b"".join(len(unit).to_bytes(_AP_LENGTH_SIZE, "big") + unit for unit in units)


def _fragment(unit: bytes, payload_max: int) -> list[bytes]:
    """Split one NAL unit into Fragmentation Units (RFC 7798 section 4.4.3).

    The payload header copies F, LayerId and TID of the unit with type 49; the FU header keeps
    the unit's own type; its two-byte NAL header is not sent (the receiver rebuilds it). Only
    called for units larger than one payload, so no FU has both S and E set, which section
    4.4.3 forbids. Fragments get near-equal sizes, like aiortc's H.264 FU-A.
    """
    header = bytes([(unit[0] & 0x81) | (TYPE_FU << 1), unit[1]])
    kind = nal_type(unit)
    data = memoryview(unit)[NAL_HEADER_SIZE:]
    available = payload_max - _PAYLOAD_HEADER_SIZE - _FU_HEADER_SIZE
    count = math.ceil(len(data) / available)
    size, larger = divmod(len(data), count)
    payloads: list[bytes] = []
    offset = 0
    for index in range(count):
        end = offset + size + (1 if index < larger else 0)
        flags = (_FU_START if index == 0 else 0) | (_FU_END if index == count - 1 else 0)
        payloads.append(header + bytes([flags | kind]) + data[offset:end])
        offset = end
    return payloads


def _may_join(group: list[bytes], unit: bytes) -> bool:
    """Return True when `unit` may share an Aggregation Packet with `group`.

    The AP's TID is the lowest of its units (section 4.4.2), and a node thinning temporal
    layers judges the whole AP by it: a picture (VCL) unit aggregated with a parameter set or
    SEI of a lower TID would be kept when its own layer is dropped. Such pairs go apart.
    """
    tid = nal_tid(unit)
    if is_vcl(nal_type(unit)):
        return all(is_vcl(nal_type(other)) or nal_tid(other) >= tid for other in group)
    return all(not is_vcl(nal_type(other)) or nal_tid(other) <= tid for other in group)


def packetize_nal_units(units: Iterable[bytes], payload_max: int = PAYLOAD_MAX) -> list[bytes]:
    """Turn one access unit's NAL units into RTP payloads of at most `payload_max` bytes.

    A unit that fits goes alone (single NAL unit packet, section 4.4.1) or, with the small
    units next to it (typically VPS, SPS, PPS and SEI before a keyframe), into one Aggregation
    Packet; a unit too large for a payload is sent as Fragmentation Units.
    """
    if payload_max < _MIN_PAYLOAD_MAX:
        raise ValueError(f"payload_max must be at least {_MIN_PAYLOAD_MAX} bytes")
    payloads: list[bytes] = []
    group: list[bytes] = []
    group_size = _PAYLOAD_HEADER_SIZE

    def flush() -> None:
        if len(group) == 1:
            payloads.append(group[0])
        elif group:
            payloads.append(_aggregate(group))
        group.clear()

    for unit in units:
        if len(unit) < NAL_HEADER_SIZE:
            continue
        if len(unit) > payload_max:
            flush()
            payloads.extend(_fragment(unit, payload_max))
            continue
        added = _AP_LENGTH_SIZE + len(unit)
        if group and (group_size + added > payload_max or not _may_join(group, unit)):
            flush()
        if not group:
            group_size = _PAYLOAD_HEADER_SIZE
        group.append(unit)
        group_size += added
    flush()
    return payloads


def packetize(access_unit: bytes, payload_max: int = PAYLOAD_MAX) -> list[bytes]:
    """Turn one Annex B access unit into RTP payloads (see `packetize_nal_units`)."""
    return packetize_nal_units(split_nal_units(access_unit), payload_max)


def depayload(payload: bytes) -> bytes:
    """Return one RTP payload as Annex B bytes; an access unit is its payloads' concatenation.

    Like aiortc's `h264_depayload`, a Fragmentation Unit's first fragment starts the NAL unit
    (start code and rebuilt header) and later fragments are bare data. Raises ValueError for
    payloads that are malformed or use what we never send (PACI).
    """
    if len(payload) < _PAYLOAD_HEADER_SIZE + 1:
        raise ValueError("H.265 RTP payload too short")
    kind = nal_type(payload)
    if kind == TYPE_AP:
        out = bytearray()
        pos = _PAYLOAD_HEADER_SIZE
        while pos < len(payload):
            size = int.from_bytes(payload[pos : pos + _AP_LENGTH_SIZE], "big")
            pos += _AP_LENGTH_SIZE
            if size < NAL_HEADER_SIZE or pos + size > len(payload):
                raise ValueError("malformed H.265 aggregation packet")
            out += START_CODE + payload[pos : pos + size]
            pos += size
        return bytes(out)
    if kind == TYPE_FU:
        if len(payload) <= _PAYLOAD_HEADER_SIZE + _FU_HEADER_SIZE:
            raise ValueError("H.265 fragmentation unit without data")
        fu_header = payload[_PAYLOAD_HEADER_SIZE]
        data = payload[_PAYLOAD_HEADER_SIZE + _FU_HEADER_SIZE :]
        if not fu_header & _FU_START:
            return data
        header = bytes([(payload[0] & 0x81) | ((fu_header & 0x3F) << 1), payload[1]])
        return START_CODE + header + data
    if kind == TYPE_PACI:
        raise ValueError("H.265 PACI packets are not supported")
    return START_CODE + payload


def depacketize(payloads: Iterable[bytes]) -> bytes:
    """Return the Annex B access unit carried by one access unit's RTP payloads, in order.

    Also checks that fragmentation units start, continue and end in order (section 4.4.3).
    """
    out = bytearray()
    in_fragment = False
    for payload in payloads:
        is_fu = len(payload) > _PAYLOAD_HEADER_SIZE and nal_type(payload) == TYPE_FU
        flags = payload[_PAYLOAD_HEADER_SIZE] if is_fu else 0
        if is_fu and bool(flags & _FU_START) == in_fragment:
            raise ValueError("H.265 fragmentation units out of order")
        if not is_fu and in_fragment:
            raise ValueError("H.265 fragmented NAL unit not ended")
        out += depayload(payload)
        in_fragment = is_fu and not flags & _FU_END
    if in_fragment:
        raise ValueError("H.265 fragmented NAL unit not ended")
    return bytes(out)


class H265Encoder(Encoder):
    """aiortc's encoder interface for H.265: packs Annex B packets, never encodes."""

    def __init__(self, payload_max: int = PAYLOAD_MAX) -> None:
        """Make RTP payloads of at most `payload_max` bytes."""
        self.payload_max = payload_max

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        """Refuse: a track sending H.265 must return `av.Packet`s, not decoded frames."""
        raise H265EncodeError(
            "H.265 is passed through only: the video track must return encoded av.Packet "
            "access units, not frames"
        )

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        """Return the RTP payloads of one Annex B access unit and its 90 kHz timestamp.

        The timestamp is the packet's pts in RTP clock units, as aiortc's H.264 `pack` does.
        """
        base = fraction(packet.time_base)
        if packet.pts is None or base is None:
            raise ValueError("an H.265 packet to send needs a pts and a time_base")
        timestamp = int(packet.pts * base * CLOCK_RATE)
        return packetize(bytes(packet), self.payload_max), timestamp


# aiortc's encoder factory; `rtcrtpsender` imported it by name, so it is replaced there too.
_ENCODER_LOOKUP = "get_encoder"


class _EncoderLookup:
    """aiortc's `get_encoder` with H.265 added; every other codec goes to aiortc's own."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, codec: RTCRtpCodecParameters) -> Any:
        if codec.mimeType.lower() == H265_MIME.lower():
            return H265Encoder()
        return self.original(codec)


def _is_h265(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> bool:
    return codec.mimeType.lower() == H265_MIME.lower() and codec.clockRate == CLOCK_RATE


def _is_rtx(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> bool:
    return codec.mimeType.lower() == RTX_MIME


def _local_feedback() -> list[RTCRtcpFeedback]:
    """Return the RTCP feedback aiortc handles for video: what it lists for H.264."""
    video = aiortc_codecs.CODECS["video"]
    known = next((c for c in video if _is_h265(c)), None) or next(
        (c for c in video if c.mimeType.lower() == "video/h264"), None
    )
    if known is not None:
        return copy.deepcopy(known.rtcpFeedback)
    return [RTCRtcpFeedback(type=kind, parameter=param) for kind, param in _FALLBACK_FEEDBACK]


def register_h265() -> RTCRtpCodecParameters:
    """Teach aiortc (1.10 to 1.16) to negotiate and send H.265; return the registered codec.

    Idempotent. aiortc internals touched, all module-level and present in every version:

    - `aiortc.codecs.CODECS["video"]`: a `video/H265` entry (clock 90000, the H.264 entries'
      RTCP feedback, `DEFAULT_PARAMETERS`) and a `video/rtx` entry for it are appended, with
      the lowest dynamic payload types no aiortc codec of either kind uses. That one list is
      what `RTCRtpSender/RTCRtpReceiver.getCapabilities` (hence `setCodecPreferences`) and
      `RTCPeerConnection`'s offers and `find_common_codecs` read. Its matching compares only
      mimeType and clock rate for codecs other than H.264, so any offered H.265 matches; the
      answer would carry this entry's parameters, and even its payload type when the offered
      one lies outside 96-127 (`rtp.DYNAMIC_PAYLOAD_TYPES`), where browsers put H.265: the
      engine therefore replaces the transceiver's negotiated codecs with `choose_h265()`'s
      after applying the offer.
    - `get_encoder`, as bound in `aiortc.rtcrtpsender` (which imported it by name) and in
      `aiortc.codecs`: wrapped to return `H265Encoder` for H.265 and aiortc's own encoder
      for everything else.

    The receiving side (`depayload`, `get_decoder` in `aiortc.rtcrtpreceiver`) is left alone:
    the engine only sends.
    """
    video: list[RTCRtpCodecParameters] = aiortc_codecs.CODECS["video"]
    codec = next((c for c in video if _is_h265(c)), None)
    if codec is None:
        used = {c.payloadType for kind in aiortc_codecs.CODECS.values() for c in kind}
        free = iter(pt for pt in range(96, 128) if pt not in used)
        h264 = next((c for c in video if c.mimeType.lower() == "video/h264"), None)
        codec = RTCRtpCodecParameters(
            mimeType=H265_MIME,
            clockRate=CLOCK_RATE,
            payloadType=next(free),
            rtcpFeedback=_local_feedback(),
            parameters=dict(DEFAULT_PARAMETERS),
        )
        video.append(codec)
        if h264 is None or any(
            _is_rtx(c) and c.parameters.get("apt") == h264.payloadType for c in video
        ):
            video.append(
                RTCRtpCodecParameters(
                    mimeType=RTX_MIME,
                    clockRate=CLOCK_RATE,
                    payloadType=next(free),
                    parameters={"apt": codec.payloadType},
                )
            )
    for module in (aiortc_codecs, rtcrtpsender):
        original = getattr(module, _ENCODER_LOOKUP)
        if not isinstance(original, _EncoderLookup):
            setattr(module, _ENCODER_LOOKUP, _EncoderLookup(original))
    return codec


def h265_codec_preferences() -> list[RTCRtpCodecCapability]:
    """Return the capabilities for `setCodecPreferences` that negotiate H.265 (and its RTX).

    Registers H.265 first if needed.
    """
    register_h265()
    codecs = RTCRtpSender.getCapabilities("video").codecs  # type: ignore[no-untyped-call]
    return [c for c in codecs if _is_h265(c)] + [c for c in codecs if _is_rtx(c)]


def _param(params: dict[str, Any], name: str, default: int) -> int | None:
    """Read an integer fmtp parameter (RFC 7798 default when absent, None when unreadable)."""
    value = params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def choose_h265(
    offered: list[RTCRtpCodecParameters], ptl: ProfileTierLevel
) -> list[RTCRtpCodecParameters]:
    """Pick the offered H.265 payload type that can take the camera's stream; describe it.

    `offered` are the codecs of the offer's video section, `ptl` the camera's SPS values.
    Returns the codecs to answer and send — the H.265 payload type and, if offered, its RTX —
    or an empty list when no offered H.265 suits (then the viewer cannot have this camera
    without transcoding).

    An offered format suits when profile space and tier are the camera's, tx-mode is SRST
    (absent means SRST) and the camera's stream conforms to the offered profile: the same
    profile, or one its SPS declares compatibility with (a Main stream is a valid Main 10
    stream). Those are the media format configuration parameters RFC 7798 section 7.2.2 has
    an answer keep, and what browsers compare; levels may differ. Exact profiles come first,
    then formats whose level covers the camera's, then the viewer's order.

    The answer describes what we send: the offered payload type and profile, the camera's
    tier and level, tx-mode only if offered, RTCP feedback both sides know.
    """
    feedback = _local_feedback()
    best: tuple[tuple[int, int, int], list[RTCRtpCodecParameters]] | None = None
    for index, codec in enumerate(offered):
        if not _is_h265(codec) or codec.payloadType is None:
            continue
        params = codec.parameters
        profile = _param(params, "profile-id", 1)
        level = _param(params, "level-id", 93)
        tx_mode = params.get("tx-mode")
        if (
            profile is None
            or _param(params, "profile-space", 0) != ptl.profile_space
            or _param(params, "tier-flag", 0) != ptl.tier_flag
            or (tx_mode is not None and str(tx_mode).upper() != "SRST")
            or not ptl.conforms_to(profile)
        ):
            continue
        answer: dict[str, int | str | None] = {
            "level-id": str(ptl.level_idc),
            "profile-id": str(profile),
            "tier-flag": str(ptl.tier_flag),
        }
        if ptl.profile_space:
            answer["profile-space"] = str(ptl.profile_space)
        if tx_mode is not None:
            answer["tx-mode"] = "SRST"
        chosen = [
            RTCRtpCodecParameters(
                mimeType=H265_MIME,
                clockRate=CLOCK_RATE,
                payloadType=codec.payloadType,
                rtcpFeedback=[fb for fb in feedback if fb in codec.rtcpFeedback],
                parameters=answer,
            )
        ]
        chosen += [
            copy.deepcopy(c)
            for c in offered
            if _is_rtx(c) and str(c.parameters.get("apt")) == str(codec.payloadType)
        ][:1]
        rank = (int(profile != ptl.profile_id), int(level is None or level < ptl.level_idc), index)
        if best is None or rank < best[0]:
            best = (rank, chosen)
    return best[1] if best else []
