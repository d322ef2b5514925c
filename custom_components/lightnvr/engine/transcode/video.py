"""H.265 (or any video PyAV decodes) to H.264 a browser decodes, once per camera."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from fractions import Fraction
import logging
import time
from typing import Any, Literal

import av
import av.error

from ...hub import MediaPacket, StreamInfo, ThreadPacketQueue, video_decoder
from ...media.consumer import PacketSource
from .base import LINGER_SECONDS, Pipeline, Run, Transcoder

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_WIDTH = 1280
# `SharedTranscoders.acquire_video` waits this long for the first H.264 keyframe.
READY_TIMEOUT_SECONDS = 3.0
# H.264 encoder settings (see the module docstring).
X264_PRESET = "ultrafast"
X264_PROFILE = "baseline"  # x264's baseline is Constrained Baseline
# ~2 Mbit/s for 720p at 15 fps; the bounds keep tiny and huge pictures sensible.
_BITS_PER_PIXEL = 0.14
_MIN_BITRATE = 300_000
_MAX_BITRATE = 6_000_000
_FALLBACK_FPS = 15.0
# A decoded picture this old (since the hub received it) while more packets wait is backlog:
# decoded to keep the reference chain, not encoded, so the output catches up to live at once.
_ENCODE_STALE_SECONDS = 0.5
# Live packets this far behind: decoding cannot keep up; skip to the next keyframe.
_MAX_LAG_SECONDS = 1.5
# pts -> arrival time of recent packets, to date the pictures a decoder hands back.
_ARRIVALS_KEPT = 64
_H264_SPS = 7
_H264_PPS = 8


class VideoTranscoder(Transcoder):
    """One camera's video as H.264 for viewers that cannot decode the camera's codec."""

    kind: Literal["video", "audio"] = "video"
    codec_out = "h264"

    def __init__(
        self,
        hub: PacketSource,
        *,
        max_width: int | None = DEFAULT_MAX_WIDTH,
        linger: float = LINGER_SECONDS,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Prepare a transcoder of `hub`'s video; nothing runs before the first user.

        `max_width` bounds the output width (aspect kept, even sizes); None keeps the camera's
        size. `loop` defaults to the running loop (output queues wake consumers there).
        """
        super().__init__(hub, linger=linger, loop=loop, keep_gop=True)
        self.max_width = max_width
        self._info: StreamInfo | None = None
        self._source_size: tuple[int, int] | None = None

    @property
    def info(self) -> StreamInfo | None:
        """Describe the H.264 output (None before the first output keyframe)."""
        return self._info

    @property
    def path(self) -> str:
        """Describe the conversion, e.g. "hevc 1920x1080 -> h264 1280x720 (libx264)"."""
        source = self._hub.info
        src = f"{source.video_codec} " if source is not None else ""
        if self._source_size is not None:
            src += "{}x{} ".format(*self._source_size)
        out = f"{self._info.width}x{self._info.height} " if self._info is not None else ""
        return f"{src}-> h264 {out}(libx264)"

    async def async_wait_ready(self, seconds: float = READY_TIMEOUT_SECONDS) -> bool:
        """Wait up to `seconds` for an output keyframe (starting the transcoder if needed).

        Return False when none came (the camera sends nothing, or nothing decodable yet).
        """
        if self._out.latest_keyframe() is not None:
            return True
        queue = self.subscribe(1, from_keyframe=True)
        try:
            async with asyncio.timeout(seconds):
                while not (await queue.get()).keyframe:
                    pass
        except (TimeoutError, EOFError):
            return False
        finally:
            self.unsubscribe(queue)
        return True

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Return the output size for a source picture (at most `max_width`, even)."""
        if self.max_width and width > self.max_width:
            out_w = self.max_width
            out_h = round(height * out_w / width)
        else:
            out_w, out_h = width, height
        return max(2, out_w // 2 * 2), max(2, out_h // 2 * 2)

    def _new_pipeline(self, run: Run) -> Pipeline:
        return _VideoPipeline(self, run)

    def _codec_in(self) -> str | None:
        info = self._hub.info
        return info.video_codec if info is not None else None

    def _output_size(self) -> tuple[int | None, int | None]:
        info = self._info
        return (info.width, info.height) if info is not None else (None, None)


class _VideoPipeline(Pipeline):
    def __init__(self, owner: VideoTranscoder, run: Run) -> None:
        self._owner = owner
        self._hub = owner._hub
        self._run = run
        self._counters = owner._counters
        self._generation = -1
        self._decoder: Any = None
        self._encoder: Any = None
        self._encoder_key: tuple[int, int, Fraction] | None = None
        self._need_keyframe = True
        self._lost_seen = 0
        self._arrivals: OrderedDict[int, float] = OrderedDict()
        # Encoder timeline: source pts + offset, kept strictly rising for x264.
        self._offset = 0
        self._last_enc_pts: int | None = None
        self._last_src_pts: int | None = None
        self._pending: dict[int, tuple[int, float, int]] = {}  # enc pts -> src pts, received, gen
        self._info_published = False

    def handle(self, packet: MediaPacket, queue: ThreadPacketQueue) -> None:
        counters = self._counters
        counters.frames_in += 1
        now = time.monotonic()
        if packet.generation != self._generation:
            # A new connection: new stream parameters, timestamps start over. A new encoder
            # also makes the next output picture a keyframe with fresh SPS/PPS.
            self._generation = packet.generation
            self._decoder = None
            self._close_encoder()
            self._need_keyframe = True
        lost = queue.dropped
        if lost != self._lost_seen:
            counters.dropped += max(0, lost - self._lost_seen)
            self._lost_seen = lost
            self._need_keyframe = True  # the hub dropped packets: references are missing
        if (
            not packet.keyframe
            and packet.received >= self._run.started
            and now - packet.received > _MAX_LAG_SECONDS
        ):
            self._need_keyframe = True  # decoding cannot keep up: catch up at the next keyframe
        if packet.keyframe:
            self._need_keyframe = False
        elif self._need_keyframe:
            counters.skipped += 1
            return
        for picture in self._decode(packet):
            if now - packet.received > _ENCODE_STALE_SECONDS and len(queue):
                counters.skipped += 1  # backlog: keep decoding, encode only what is current
                continue
            self._encode(picture, packet)

    # ----- decoding -----------------------------------------------------------------------------

    def _decode(self, packet: MediaPacket) -> list[Any]:
        if self._decoder is None:
            self._decoder = video_decoder(self._hub.info, packet.generation)
        av_packet = packet.to_av_packet()
        if packet.pts is not None:
            self._arrivals[packet.pts] = packet.received
            while len(self._arrivals) > _ARRIVALS_KEPT:
                self._arrivals.popitem(last=False)
        try:
            return list(self._decoder.decode(av_packet))
        except av.error.FFmpegError as err:
            self._counters.decode_errors += 1
            _LOGGER.debug("%s: decode error, waiting for a keyframe: %s", self._hub.name, err)
            self._decoder = None
            self._need_keyframe = True
            self._arrivals.clear()
            return []

    # ----- encoding -----------------------------------------------------------------------------

    def _close_encoder(self) -> None:
        self._encoder = None
        self._encoder_key = None
        self._pending.clear()
        self._last_enc_pts = None
        self._offset = 0
        self._info_published = False

    def _open_encoder(self, width: int, height: int, time_base: Fraction) -> Any:
        info = self._hub.info
        fps = info.fps if info is not None and info.fps else _FALLBACK_FPS
        bitrate = int(min(_MAX_BITRATE, max(_MIN_BITRATE, width * height * fps * _BITS_PER_PIXEL)))
        encoder: Any = av.CodecContext.create("libx264", "w")
        encoder.width = width
        encoder.height = height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = time_base  # the camera's: output timestamps are the camera's
        encoder.framerate = Fraction(fps).limit_denominator(1001)
        encoder.gop_size = max(1, round(fps))  # a keyframe every second
        encoder.max_b_frames = 0
        encoder.bit_rate = bitrate
        encoder.thread_count = 1
        encoder.options = {
            "preset": X264_PRESET,
            "tune": "zerolatency",
            "profile": X264_PROFILE,
            # SPS/PPS before every keyframe (no global header is asked for either); no extra
            # keyframes on scene cuts, so the bitrate stays even; x264 reports errors only (its
            # statistics at every stop would fill Home Assistant's log).
            "x264-params": "repeat-headers=1:scenecut=0:log=0",
            # A one-second VBV keeps the bitrate within what the viewer's link was told.
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
        }
        _LOGGER.debug(
            "%s: H.264 encoder %dx%d %.3g fps %d bit/s", self._hub.name, width, height, fps, bitrate
        )
        return encoder

    def _encode(self, picture: Any, packet: MediaPacket) -> None:
        src_w, src_h = int(picture.width), int(picture.height)
        self._owner._source_size = (src_w, src_h)
        width, height = self._owner.output_size(src_w, src_h)
        time_base = packet.time_base
        key = (width, height, time_base)
        if self._encoder is None or key != self._encoder_key:
            self._close_encoder()
            self._encoder = self._open_encoder(width, height, time_base)
            self._encoder_key = key
        src_pts = self._source_pts(picture, packet)
        enc_pts = src_pts + self._offset
        if self._last_enc_pts is not None and enc_pts <= self._last_enc_pts:
            # The camera's clock went back (or stood still): x264 needs rising timestamps.
            enc_pts = self._last_enc_pts + 1
            self._offset = enc_pts - src_pts
        self._last_enc_pts = enc_pts
        received = self._arrivals.get(src_pts, packet.received)
        self._pending[enc_pts] = (src_pts, received, packet.generation)
        frame = picture.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
        frame.pts = enc_pts
        frame.time_base = time_base
        # The camera's own keyframes would otherwise force extra x264 keyframes.
        frame.pict_type = 0
        for out in self._encoder.encode(frame):
            self._publish(out, time_base)

    def _source_pts(self, picture: Any, packet: MediaPacket) -> int:
        pts = picture.pts
        if pts is None:
            # No timestamps from the camera: continue one frame after the last picture.
            info = self._hub.info
            fps = info.fps if info is not None and info.fps else _FALLBACK_FPS
            step = max(1, round(1 / (fps * packet.time_base)))
            pts = (self._last_src_pts + step) if self._last_src_pts is not None else 0
        self._last_src_pts = int(pts)
        return int(pts)

    def _publish(self, out: Any, time_base: Fraction) -> None:
        enc_pts = int(out.pts) if out.pts is not None else self._last_enc_pts or 0
        src_pts, received, generation = self._pending.pop(
            enc_pts, (enc_pts - self._offset, time.monotonic(), self._generation)
        )
        data = bytes(out)
        keyframe = bool(out.is_keyframe)
        if keyframe and not self._info_published:
            self._publish_info(data, generation, time_base)
        self._owner._publish(
            self._run,
            MediaPacket(
                kind="video",
                data=data,
                pts=src_pts,
                dts=src_pts,  # no B-frames: decode order is presentation order
                time_base=time_base,
                keyframe=keyframe,
                received=received,
                generation=generation,
            ),
        )

    def _publish_info(self, keyframe: bytes, generation: int, time_base: Fraction) -> None:
        assert self._encoder_key is not None
        if self._run.stop.is_set():
            return
        width, height, _ = self._encoder_key
        source = self._hub.info
        self._owner._info = StreamInfo(
            generation=generation,
            video_codec="h264",
            width=width,
            height=height,
            time_base=time_base,
            fps=source.fps if source is not None else None,
            extradata=_parameter_sets(keyframe) or None,
        )
        self._info_published = True


def _parameter_sets(access_unit: bytes) -> bytes:
    """Return the SPS and PPS NAL units of an Annex B H.264 access unit, as Annex B."""
    out = bytearray()
    starts: list[int] = []
    index = access_unit.find(b"\x00\x00\x01")
    while index != -1:
        starts.append(index + 3)
        index = access_unit.find(b"\x00\x00\x01", index + 3)
    for start, end in zip(starts, [*starts[1:], len(access_unit) + 3], strict=True):
        # A 4-byte start code leaves a zero on the previous unit; NAL units never end in one.
        unit = access_unit[start : end - 3].rstrip(b"\x00")
        if unit and unit[0] & 0x1F in (_H264_SPS, _H264_PPS):
            out += b"\x00\x00\x00\x01" + unit
    return bytes(out)
