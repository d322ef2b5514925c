"""Small H.265 (HEVC) bitstream helpers: Annex B NAL units, parameter sets, profile/tier/level.

The H.265 sibling of `h264.py`. Pass-through only needs a little of the bitstream: where NAL
units start and which type they are, that every keyframe carries its VPS/SPS/PPS (a viewer that
joins has no other way to get them: WebRTC has no out-of-band parameter sets for H.265), and the
profile, tier and level a camera sends (the SDP `fmtp` of a WebRTC answer advertises them).
"""

from __future__ import annotations

from dataclasses import dataclass

START_CODE = b"\x00\x00\x00\x01"
_START_CODE_3 = b"\x00\x00\x01"

# NAL unit types (H.265 table 7-1).
NAL_IRAP_FIRST = 16  # BLA_W_LP
NAL_IRAP_LAST = 23  # RSV_IRAP_VCL23; 16..23 are the random access points (keyframes)
NAL_FIRST_NON_VCL = 32
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
PARAMETER_SET_TYPES = (NAL_VPS, NAL_SPS, NAL_PPS)

NAL_HEADER_SIZE = 2
# hvcC (ISO/IEC 14496-15 HEVCDecoderConfigurationRecord): 22 bytes of fixed fields, then
# the number of NAL unit arrays.
_HVCC_ARRAYS_OFFSET = 22


def nal_type(nal: bytes) -> int:
    """Return the type of a NAL unit from the first byte of its two-byte header."""
    return (nal[0] >> 1) & 0x3F


def nal_layer_id(nal: bytes) -> int:
    """Return nuh_layer_id (6 bits across both header bytes)."""
    return ((nal[0] & 0x01) << 5) | (nal[1] >> 3)


def nal_tid(nal: bytes) -> int:
    """Return nuh_temporal_id_plus1 (the header's TID field, never 0 in a valid stream)."""
    return nal[1] & 0x07


def is_irap(kind: int) -> bool:
    """Return True for the NAL unit types of random access (key) pictures."""
    return NAL_IRAP_FIRST <= kind <= NAL_IRAP_LAST


def is_vcl(kind: int) -> bool:
    """Return True for NAL unit types that carry picture data (slices)."""
    return kind < NAL_FIRST_NON_VCL


def is_annexb(data: bytes) -> bool:
    """Return True when `data` starts with an Annex B start code."""
    return data.startswith((_START_CODE_3, START_CODE))


def split_nal_units(data: bytes) -> list[bytes]:
    """Return the NAL units of an Annex B buffer, without their start codes.

    Zero bytes before a start code belong to the byte stream (a four-byte start code's first
    byte, or trailing_zero_8bits), never to the NAL unit: H.265 section 7.4.2.1 forbids a
    NAL unit whose last byte is 0x00, so stripping them gives back the exact NAL units.
    """
    units: list[bytes] = []
    start = data.find(_START_CODE_3)
    while start != -1:
        begin = start + len(_START_CODE_3)
        start = data.find(_START_CODE_3, begin)
        unit = data[begin : len(data) if start == -1 else start].rstrip(b"\x00")
        if len(unit) >= NAL_HEADER_SIZE:
            units.append(unit)
    return units


def join_nal_units(units: list[bytes]) -> bytes:
    """Return NAL units as an Annex B buffer (four-byte start codes)."""
    return b"".join(START_CODE + unit for unit in units)


def nal_types(data: bytes) -> list[int]:
    """Return the NAL unit types found in an Annex B buffer, in order."""
    return [nal_type(unit) for unit in split_nal_units(data)]


def is_keyframe(data: bytes) -> bool:
    """Return True when an Annex B access unit holds a random access (IRAP) picture."""
    return any(is_irap(kind) for kind in nal_types(data))


def has_parameter_sets(data: bytes) -> bool:
    """Return True when an Annex B access unit carries VPS, SPS and PPS."""
    types = set(nal_types(data))
    return all(kind in types for kind in PARAMETER_SET_TYPES)


def hvcc_nal_units(extradata: bytes) -> list[bytes]:
    """Return the NAL units of an hvcC record (MP4/MKV style extradata), in record order.

    Empty when the record is truncated or malformed.
    """
    if len(extradata) <= _HVCC_ARRAYS_OFFSET:
        return []
    units: list[bytes] = []
    pos = _HVCC_ARRAYS_OFFSET + 1
    try:
        for _ in range(extradata[_HVCC_ARRAYS_OFFSET]):
            # array_completeness(1) reserved(1) NAL_unit_type(6), then numNalus(16)
            count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                pos += 2
                unit = extradata[pos : pos + size]
                if size < NAL_HEADER_SIZE or len(unit) != size:
                    return []
                units.append(unit)
                pos += size
    except IndexError:
        return []
    return units


def hvcc_to_annexb(extradata: bytes) -> bytes:
    """Convert an hvcC record to Annex B (empty when it is not a usable record)."""
    return join_nal_units(hvcc_nal_units(extradata))


def extradata_nal_units(extradata: bytes | None) -> list[bytes]:
    """Return the NAL units of a stream's extradata, whether Annex B or hvcC.

    RTSP demuxing gives Annex B extradata (from the SDP's sprop-vps/sps/pps); MP4-style
    sources give an hvcC record, whose first byte is its configurationVersion (1, or 0 from
    some old muxers) and so never looks like a start code.
    """
    if not extradata:
        return []
    if is_annexb(extradata):
        return split_nal_units(extradata)
    return hvcc_nal_units(extradata)


def parameter_sets_annexb(extradata: bytes | None) -> bytes:
    """Return the VPS, SPS and PPS of a stream's extradata as Annex B (empty when none)."""
    return join_nal_units(
        [unit for unit in extradata_nal_units(extradata) if nal_type(unit) in PARAMETER_SET_TYPES]
    )


def with_parameter_sets(access_unit: bytes, extradata: bytes | None) -> bytes:
    """Return a keyframe with the VPS/SPS/PPS it lacks added from the stream's extradata.

    Non-keyframes, and keyframes that already carry all three, are returned unchanged. The
    parameter sets go first, after an access unit delimiter if there is one (it must stay the
    first NAL unit of the access unit, H.265 section 7.4.2.4.4).
    """
    units = split_nal_units(access_unit)
    types = {nal_type(unit) for unit in units}
    if not any(is_irap(kind) for kind in types):
        return access_unit
    missing = [
        unit
        for unit in extradata_nal_units(extradata)
        if nal_type(unit) in PARAMETER_SET_TYPES and nal_type(unit) not in types
    ]
    if not missing:
        return access_unit
    at = 1 if units and nal_type(units[0]) == NAL_AUD else 0
    return join_nal_units(units[:at] + missing + units[at:])


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 → 00 00, H.265 section 7.4.2)."""
    out = bytearray()
    pos = 0
    while True:
        found = data.find(b"\x00\x00\x03", pos)
        if found == -1:
            out += data[pos:]
            return bytes(out)
        out += data[pos : found + 2]
        pos = found + 3


@dataclass(frozen=True, slots=True)
class ProfileTierLevel:
    """The general profile, tier and level of an SPS (H.265 section 7.3.3)."""

    profile_space: int
    tier_flag: int
    profile_idc: int
    compatibility_flags: int  # general_profile_compatibility_flag[0..31], flag 0 the top bit
    level_idc: int  # level × 30, e.g. 93 for level 3.1: RFC 7798's level-id

    @property
    def profile_id(self) -> int:
        """Return RFC 7798's profile-id: general_profile_idc, or the first compatible profile.

        Some encoders leave general_profile_idc 0 and only set compatibility flags.
        """
        if self.profile_idc:
            return self.profile_idc
        return next((j for j in range(1, 32) if self.conforms_to(j)), 1)

    def conforms_to(self, profile_id: int) -> bool:
        """Return True when the stream conforms to `profile_id` (e.g. Main to Main 10)."""
        if profile_id == self.profile_idc:
            return True
        return 0 <= profile_id < 32 and bool(self.compatibility_flags >> (31 - profile_id) & 1)


def parse_profile_tier_level(sps: bytes) -> ProfileTierLevel:
    """Read the general profile_tier_level of an SPS NAL unit (with its two-byte header).

    The general part is byte aligned: sps_video_parameter_set_id(4) sps_max_sub_layers_minus1(3)
    sps_temporal_id_nesting_flag(1), then profile_space(2) tier_flag(1) profile_idc(5),
    32 compatibility flags, 48 bits of source/constraint flags and general_level_idc(8).
    """
    if len(sps) < NAL_HEADER_SIZE or nal_type(sps) != NAL_SPS:
        raise ValueError("not an H.265 SPS NAL unit")
    # Escaped bytes are common here: the constraint flags are mostly zero.
    rbsp = unescape_rbsp(sps[NAL_HEADER_SIZE : NAL_HEADER_SIZE + 20])
    if len(rbsp) < 13:
        raise ValueError("H.265 SPS too short for its profile_tier_level")
    return ProfileTierLevel(
        profile_space=rbsp[1] >> 6,
        tier_flag=(rbsp[1] >> 5) & 0x01,
        profile_idc=rbsp[1] & 0x1F,
        compatibility_flags=int.from_bytes(rbsp[2:6], "big"),
        level_idc=rbsp[12],
    )


def profile_tier_level(data: bytes | None) -> ProfileTierLevel | None:
    """Return the profile, tier and level of the first SPS in extradata or an access unit.

    `data` may be Annex B (extradata or a keyframe) or an hvcC record; None when it has no
    readable SPS.
    """
    for unit in extradata_nal_units(data):
        if nal_type(unit) == NAL_SPS:
            try:
                return parse_profile_tier_level(unit)
            except ValueError:
                return None
    return None
