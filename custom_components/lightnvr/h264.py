"""Small H.264 bitstream helpers (Annex B start codes and parameter sets).

Only what pass-through needs: we never decode here, we only make sure every keyframe a viewer gets
can be decoded on its own.
"""

from __future__ import annotations

_START_CODE = b"\x00\x00\x00\x01"
NAL_SPS = 7
NAL_PPS = 8
NAL_IDR = 5


def is_annexb(data: bytes) -> bool:
    """Return True when `data` starts with an Annex B start code."""
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def nal_types(data: bytes) -> list[int]:
    """Return the NAL unit types found in an Annex B buffer, in order."""
    types: list[int] = []
    index = data.find(b"\x00\x00\x01")
    while index != -1 and index + 3 < len(data):
        types.append(data[index + 3] & 0x1F)
        index = data.find(b"\x00\x00\x01", index + 3)
    return types


def has_parameter_sets(data: bytes) -> bool:
    """Return True when an Annex B access unit carries both SPS and PPS."""
    types = nal_types(data)
    return NAL_SPS in types and NAL_PPS in types


def parameter_sets_annexb(extradata: bytes | None) -> bytes:
    """Return SPS/PPS from a stream's extradata as Annex B (empty when there are none).

    RTSP demuxing gives Annex B extradata already; MP4/FLV style sources give an `avcC` record
    (first byte 1), whose length-prefixed SPS and PPS lists we unpack.
    """
    if not extradata:
        return b""
    if is_annexb(extradata):
        return extradata
    if extradata[0] != 1 or len(extradata) < 7:
        return b""
    out = bytearray()
    pos = 5
    try:
        for count_mask in (0x1F, 0xFF):  # SPS count uses 5 bits, PPS count all 8
            count = extradata[pos] & count_mask
            pos += 1
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                pos += 2
                out += _START_CODE + extradata[pos : pos + size]
                pos += size
    except IndexError:
        return b""
    return bytes(out)


def _nal_units(data: bytes) -> list[bytes]:
    """Split an Annex B buffer into NAL units (without start codes)."""
    starts: list[int] = []
    index = data.find(b"\x00\x00\x01")
    while index != -1:
        starts.append(index + 3)
        index = data.find(b"\x00\x00\x01", index + 3)
    if not starts:
        return []
    ends = [start - 3 for start in starts[1:]] + [len(data)]
    # A 4-byte start code leaves its leading zero on the previous unit; NAL units never end
    # in a zero byte, so trailing zeros are start-code (or padding) bytes.
    return [data[start:end].rstrip(b"\x00") for start, end in zip(starts, ends, strict=True)]


def profile_level_id(extradata: bytes | None) -> str | None:
    """Return the SDP `profile-level-id` (6 hex digits) of the stream's SPS, if it has one.

    The three bytes after the SPS's NAL header are profile_idc, the constraint flags and
    level_idc (H.264 7.3.2.1.1): exactly what RFC 6184 puts in `profile-level-id`.
    """
    for unit in _nal_units(parameter_sets_annexb(extradata)):
        if unit and unit[0] & 0x1F == NAL_SPS and len(unit) >= 4:
            return unit[1:4].hex()
    return None


def profile_class(profile_level: str) -> str | None:
    """Return the RFC 6184 profile a `profile-level-id` names (level ignored).

    WebRTC peers only accept an answer for a payload type whose profile equals the offered
    one; constrained baseline is told apart from baseline by the constraint_set1 flag.
    """
    try:
        value = bytes.fromhex(profile_level)
    except ValueError:
        return None
    if len(value) != 3:
        return None
    profile_idc, constraints = value[0], value[1]
    if profile_idc == 66:
        return "constrained-baseline" if constraints & 0x40 else "baseline"
    if profile_idc == 77 and constraints & 0x80 and constraints & 0x40:
        return "constrained-baseline"  # a main-profile id with the baseline constraints set
    return {77: "main", 88: "extended", 100: "high"}.get(profile_idc, f"idc-{profile_idc}")
