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
