"""The one fragmented-MP4 writer: a camera's packets in, `ftyp`+`moov` then `moof`+`mdat` out.

Recordings (a `.mp4.part` file), event clips (the same) and the in-memory live HLS muxer (a
growing buffer) all write through `Fmp4Writer`; they differ only in the sink and in what they
do with the bytes. Streams are copied, never re-encoded:

- **Fragmented MP4** (`empty_moov`, a `moof`+`mdat` per fragment, `default_base_moof`): a
  fragment starts at every keyframe and at least every `fragment_seconds`, and is handed to the
  sink as soon as it is complete (`flush_packets`). A file cut short by a crash is playable up
  to its last complete fragment.
- **H.265** is tagged `hvc1` (parameter sets in the sample entry): what Apple's players require.
- **Audio** timestamps are the connection's own: `write_audio` takes them with their time base
  and shifts them by `origin_seconds` (the connection time of the first video frame), so sound
  keeps its place relative to the picture; audio from before the first frame is dropped.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
import logging
from typing import Any, Protocol

import av

from ..compat import add_copy_stream, fraction
from ..hub import StreamInfo

_LOGGER = logging.getLogger(__name__)

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


class Sink(Protocol):
    """Where the muxer writes: a file-like object PyAV can write to (no seeking needed)."""

    def write(self, data: bytes) -> int:
        """Take the next bytes of the file."""


class Fmp4Writer:
    """One fMP4 container on `sink`, set up from the camera's StreamInfo."""

    def __init__(
        self,
        sink: Sink,
        info: StreamInfo,
        video_extradata: bytes | None,
        audio_extradata: bytes | None,
        *,
        origin_seconds: float,
        fragment_seconds: float,
    ) -> None:
        """Open the container and write its header. On failure nothing is left open."""
        self.origin_seconds = origin_seconds  # connection time of the first video frame
        self.video_time_base = info.time_base
        self.video_end = 0  # end of the last video frame, in the video time base (from 0)
        self._audio_origin: dict[Fraction, int] = {}
        self._container: Any = None
        try:
            self._container = av.open(
                sink,
                mode="w",
                format="mp4",
                options={
                    "movflags": MOVFLAGS,
                    "frag_duration": str(int(fragment_seconds * 1_000_000)),
                    # Hand every finished fragment over at once (no 32 KiB buffering).
                    "flush_packets": "1",
                    # Never hold video back for long waiting for audio (or the other way).
                    "max_interleave_delta": "1000000",
                },
            )
            self.video: Any = self._add_video(info, video_extradata)
            self.audio: Any = (
                self._add_audio(info, audio_extradata)
                if audio_extradata is not None and info.audio_codec
                else None
            )
            self._container.start_encoding()
        except BaseException:
            self.abort()
            raise
        # The muxer picks the track time scales when writing the header.
        self.video_time_scale: Fraction = fraction(self.video.time_base) or info.time_base

    def _add_video(self, info: StreamInfo, extradata: bytes | None) -> Any:
        stream = add_copy_stream(self._container, info.video_codec)
        ctx = stream.codec_context
        ctx.width = info.width
        ctx.height = info.height
        if extradata:
            ctx.extradata = extradata
        if info.video_codec == "hevc":
            ctx.codec_tag = "hvc1"  # what Apple players (and the HA iOS app) require
        return stream

    def _add_audio(self, info: StreamInfo, extradata: bytes) -> Any:
        assert info.audio_codec is not None
        stream = add_copy_stream(self._container, info.audio_codec)
        ctx = stream.codec_context
        ctx.sample_rate = info.audio_sample_rate
        ctx.extradata = extradata
        if info.audio_channels:
            # The AudioSpecificConfig carries the channels anyway: a layout is only a hint.
            with contextlib.suppress(ValueError):
                ctx.layout = {1: "mono", 2: "stereo"}.get(info.audio_channels, "stereo")
        return stream

    @property
    def duration(self) -> float:
        """Return the seconds of video written."""
        return float(self.video_end * self.video_time_base)

    def write_video(self, data: bytes, dts: int, pts: int, keyframe: bool, duration: int) -> None:
        """Mux one video packet; `dts`/`pts` are relative to the first frame (video time base)."""
        packet = av.Packet(data)
        packet.stream = self.video
        packet.time_base = self.video_time_base
        packet.dts = dts
        packet.pts = pts
        packet.duration = duration
        packet.is_keyframe = keyframe
        self._container.mux_one(packet)
        self.video_end = max(self.video_end, dts + duration)

    def write_audio(
        self, data: bytes, dts: int, pts: int, time_base: Fraction, duration: int
    ) -> bool:
        """Mux one audio packet (connection timestamps); False if it precedes the first frame."""
        origin = self._audio_origin.get(time_base)
        if origin is None:
            origin = self._audio_origin[time_base] = round(self.origin_seconds / time_base)
        if dts < origin or self.audio is None:
            return False
        packet = av.Packet(data)
        packet.stream = self.audio
        packet.time_base = time_base
        packet.dts = dts - origin
        packet.pts = max(pts, dts) - origin
        packet.duration = duration
        self._container.mux_one(packet)
        return True

    def close(self) -> None:
        """Write the last fragment and the trailer; raises what the muxer raises."""
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def abort(self) -> None:
        """Close after a failure, ignoring further errors."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:
                _LOGGER.debug("Error closing a failed fMP4 writer", exc_info=True)
