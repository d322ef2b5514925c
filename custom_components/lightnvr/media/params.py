"""Codec parameters for stream copy into MP4: video parameter sets and ADTS-framed AAC.

MP4 keeps the decoder configuration in the init section, while cameras may send it only in-band
(H.264/HEVC parameter sets in keyframes, AAC config in ADTS headers): these helpers find it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..h264 import parameter_sets_annexb
from ..hub import StreamInfo

VIDEO_CODECS = frozenset({"h264", "hevc"})
# MP4 holds these by stream copy; other audio is transcoded to AAC first (`media.aac.AacAudio`).
AUDIO_CODECS = frozenset({"aac"})


def _nal_units(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units of an Annex B buffer (without start codes)."""
    starts: list[tuple[int, int]] = []
    index = data.find(b"\x00\x00\x01")
    while index != -1:
        begin = index + 3
        starts.append((index - 1 if index > 0 and data[index - 1] == 0 else index, begin))
        index = data.find(b"\x00\x00\x01", begin)
    for number, (_, begin) in enumerate(starts):
        end = starts[number + 1][0] if number + 1 < len(starts) else len(data)
        yield data[begin:end]


def parameter_sets_from_keyframe(codec: str, data: bytes) -> bytes:
    """Return the parameter sets found in an Annex B keyframe, as Annex B extradata."""
    wanted = {7, 8} if codec == "h264" else {32, 33, 34}  # SPS/PPS; VPS/SPS/PPS for HEVC
    out = bytearray()
    for unit in _nal_units(data):
        if not unit:
            continue
        kind = unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F
        if kind in wanted:
            out += b"\x00\x00\x00\x01" + unit
    return bytes(out)


def video_extradata(info: StreamInfo, keyframe: bytes) -> bytes | None:
    """Return the extradata the MP4 muxer needs for this connection's video.

    The hub hands out H.264 as Annex B even when the source's extradata is an `avcC` record,
    so that record is unpacked to Annex B too (the muxer then converts packets and extradata
    consistently). Cameras that send parameter sets only in-band get them from the keyframe.
    """
    extradata = info.extradata
    if info.video_codec == "h264":
        extradata = parameter_sets_annexb(extradata) or None
    if not extradata and keyframe.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        extradata = parameter_sets_from_keyframe(info.video_codec, keyframe) or None
    return extradata


def adts_header_length(data: bytes) -> int:
    """Return the length of an ADTS header at the start of `data`, 0 if there is none."""
    if len(data) < 7 or data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        return 0
    return 7 if data[1] & 0x01 else 9


def adts_to_asc(data: bytes) -> bytes:
    """Return the AudioSpecificConfig described by an ADTS header."""
    object_type = (data[2] >> 6) + 1
    rate_index = (data[2] >> 2) & 0x0F
    channels = ((data[2] & 0x01) << 2) | (data[3] >> 6)
    return ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")
