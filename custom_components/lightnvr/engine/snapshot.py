"""Snapshots: decode one keyframe the hub already holds and encode it as JPEG.

Only the keyframe is decoded (never a running decoder per camera), so a snapshot costs one
picture's decode, off the event loop.
"""

from __future__ import annotations

import io
from typing import Any

import av

from ..h264 import has_parameter_sets, parameter_sets_annexb
from ..hub import MediaPacket, StreamInfo

JPEG_QUALITY = 85


class SnapshotError(Exception):
    """The keyframe could not be turned into a picture."""


def target_size(source: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """Fit the requested size while keeping the aspect ratio (never upscale, even numbers)."""
    src_w, src_h = source
    if not width and not height:
        return src_w, src_h
    scale = min(
        (width or src_w) / src_w if width else 1.0,
        (height or src_h) / src_h if height else 1.0,
        1.0,
    )
    return max(2, int(src_w * scale) // 2 * 2), max(2, int(src_h * scale) // 2 * 2)


def keyframe_to_jpeg(
    info: StreamInfo, keyframe: MediaPacket, width: int | None, height: int | None
) -> bytes:
    """Decode `keyframe` and return it as JPEG. Blocking: run it in an executor."""
    decoder: Any = av.CodecContext.create(info.video_codec, "r")
    data = keyframe.data
    if info.extradata:
        decoder.extradata = info.extradata
        if info.video_codec == "h264" and not has_parameter_sets(data):
            data = parameter_sets_annexb(info.extradata) + data
    try:
        frames = list(decoder.decode(av.Packet(data)))
        frames += decoder.decode(None)  # flush: a threaded decoder may hold the frame back
    except av.error.FFmpegError as err:
        raise SnapshotError(f"cannot decode keyframe: {err}") from err
    if not frames:
        raise SnapshotError("the keyframe decoded to no picture")
    frame = frames[0]
    size = target_size((frame.width, frame.height), width, height)
    image = frame.to_image(width=size[0], height=size[1])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
