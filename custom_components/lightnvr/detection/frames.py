"""Frames for detection: a camera's video decoded at a low rate, small and grayscale.

One worker thread per camera consumes the hub's packets (`StreamHub.subscribe_thread`), decodes
them with PyAV and keeps one frame per `1/fps` seconds of the *source's* timeline (packet pts),
scaled to ~320 px wide 8-bit grayscale for numpy. The newest kept frame sits in a one-frame slot:
a consumer that falls behind gets the newest frame and the ones it missed are dropped (counted),
never queued up.

How much is decoded — measured with PyAV 13 on this project's camera-like test streams (H.264
High, no B-frames, keyframe every second), CPU of one core per second of 25 fps video:

    stream                      decode all   skip_frame=NONREF   keyframes only   scale 1 frame
    640x360  (substream)        1.4-2.1 %    1.7 %               0.1 %            <0.1 ms
    1920x1080 (main stream)     7.0-8.0 %    7.5 %               0.5 %            ~0.7 ms

End to end (hub queue, decode, scale, motion; `python -m bench.detection`): ~3 % of a core per
camera for a 640x360 substream at 5 fps, ~10 % for a 1080p main stream, ~1 % for a 1080p main
stream with `keyframes_only`. Configure a substream for detection where the camera has one.

- H.264 P-frames are predicted from earlier frames, so a decoder cannot skip frames and still
  produce correct later pictures: **every packet is decoded, but only the frames the rate keeps
  are converted** (scaling + grayscale is the part that scales with the number of frames we use).
- `skip_frame="NONREF"` is set because it is free and exact: it skips only frames no other frame
  refers to. Camera encoders (and x264) mark every P-frame as a reference, so it saved nothing
  on our streams; it does pay off on cameras with temporal-scalable "smart" codecs.
- When the requested rate is no higher than the keyframe rate (e.g. 1 fps with a 1 s GOP), only
  keyframes are decoded: 15x cheaper, with the same result. Set `keyframes_only=True` to force
  it for a large main stream on a weak machine (detection then runs at the keyframe rate).
- One decoder thread (`thread_count=1`): FFmpeg's automatic threading gave no gain on these
  single-slice streams and would add threads (and frame-threading delay) per camera.
- Loss and lag: a decoder that falls behind the camera (backlog of more than ~1 s of packets) or
  misses packets (the hub's queue dropped the oldest) skips ahead to the next keyframe. Frames
  that old are useless to detection, and decoding across the gap would only produce garbage.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
import io
import logging
import threading
import time
from typing import Any

import av
import av.error
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
import numpy as np
import numpy.typing as npt

from ..h264 import has_parameter_sets, parameter_sets_annexb
from ..hub import MediaPacket, StreamHub, video_decoder
from ..media.consumer import PacketConsumer

_LOGGER = logging.getLogger(__name__)

DEFAULT_FPS = 5.0
DEFAULT_WIDTH = 320
JPEG_QUALITY = 80
# The hub's queue for this consumer: a full GOP at least (the hub enforces that), plus room.
_QUEUE_PACKETS = 1024
# Decoding more than this much video behind the camera: skip ahead to the next keyframe.
_MAX_BACKLOG_SECONDS = 1.0
_FALLBACK_FPS = 25.0
_JOIN_SECONDS = 5.0
# pts -> arrival time of recent packets, to date the frames a decoder hands back.
_ARRIVALS_KEPT = 32

type GrayFrame = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class JpegImage:
    """A JPEG picture and its size in pixels."""

    data: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True, eq=False)
class DetectionFrame:
    """One frame kept for detection. Immutable; safe to hand to other threads."""

    seq: int  # rises by one per kept frame (never reused, also across reconnects)
    gray: GrayFrame  # downscaled 8-bit grayscale, shape (rows, columns)
    time: float  # seconds on the source's timeline (pts); arrival time when there is no pts
    received: float  # time.monotonic() when the hub received the frame's packet
    generation: int  # the hub's connection number
    source_width: int
    source_height: int
    picture: VideoFrame = field(repr=False)  # the decoded picture, for JPEG snapshots

    def to_jpeg(self, width: int | None = 640, quality: int = JPEG_QUALITY) -> JpegImage:
        """Encode the frame as JPEG, at most `width` pixels wide. Blocking: use an executor."""
        src_w, src_h = self.source_width, self.source_height
        if width and width < src_w:
            out_w = max(2, width // 2 * 2)
            out_h = max(2, round(src_h * out_w / src_w / 2) * 2)
        else:
            out_w, out_h = src_w, src_h
        image = self.picture.to_image(width=out_w, height=out_h)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return JpegImage(buffer.getvalue(), out_w, out_h)


@dataclass(frozen=True, slots=True)
class FrameStats:
    """Counters of a frame source, for diagnostics and the benchmark."""

    packets: int  # video packets received
    decoded: int  # pictures the decoder produced
    kept: int  # pictures kept at the detection rate
    dropped: int  # kept pictures replaced before the consumer took them
    skipped: int  # packets skipped to catch up (backlog, loss, waiting for a keyframe)
    decode_errors: int
    keyframes_only: bool
    thread_id: int | None  # native id of the worker thread (the benchmark reads its CPU time)


class FrameSource(PacketConsumer):
    """Decodes one hub's video in a worker thread and keeps the newest frame for detection.

    The worker is the shared consumer skeleton (`media.consumer`): packets one by one as they
    come (no batching, detection wants the newest frame), a new subscription after the hub was
    stopped and started again, nothing drained on stop.
    """

    def __init__(
        self,
        hub: StreamHub,
        *,
        name: str,
        fps: float = DEFAULT_FPS,
        width: int = DEFAULT_WIDTH,
        keyframes_only: bool = False,
    ) -> None:
        """Prepare a source; nothing runs before `start`."""
        if fps <= 0:
            raise ValueError("fps must be positive")
        super().__init__(
            hub,
            label=f"Detection decoder of {name}",
            thread_name=f"lightnvr-frames-{name}",
            queue_packets=_QUEUE_PACKETS,
            batch_seconds=None,
            drain_on_stop=False,
            join_seconds=_JOIN_SECONDS,
        )
        self._hub = hub
        self.name = name
        self.fps = fps
        self._interval = 1.0 / fps
        self._width = max(16, int(width) // 2 * 2)
        self._force_keyframes = keyframes_only

        self._slot = threading.Condition()
        self._latest: DetectionFrame | None = None
        self._taken = 0  # highest seq handed to the consumer

        # Worker-thread state.
        self._decoder: Any = None
        self._reformatter = VideoReformatter()
        self._generation = -1
        self._need_keyframe = True
        self._next_due: float | None = None
        self._last_keyframe_time: float | None = None
        self._gop_seconds: float | None = None
        self._keyframes_only = keyframes_only
        self._arrivals: OrderedDict[int, float] = OrderedDict()
        self._seq = 0

        self._packets = 0
        self._decoded = 0
        self._kept = 0
        self._dropped_frames = 0
        self._skipped = 0
        self._decode_errors = 0

    # ----- lifecycle ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the worker to end and wake a waiting consumer (does not wait)."""
        super().request_stop()
        with self._slot:
            self._slot.notify_all()

    @property
    def running(self) -> bool:
        """Return True while the worker runs."""
        return self._thread is not None and not self._stopping.is_set()

    # ----- consumer (any thread) ----------------------------------------------------------------

    def wait_frame(self, after: int, timeout: float) -> DetectionFrame | None:
        """Return the newest frame with a seq above `after`; None on timeout or stop.

        Frames kept while the consumer was busy are not returned: they were dropped (counted) in
        favour of the newest one.
        """
        deadline = time.monotonic() + timeout
        with self._slot:
            while True:
                frame = self._latest
                if frame is not None and frame.seq > after:
                    self._taken = max(self._taken, frame.seq)
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return None
                self._slot.wait(remaining)

    @property
    def latest(self) -> DetectionFrame | None:
        """Return the newest kept frame, if any."""
        return self._latest

    def stats(self) -> FrameStats:
        """Return the counters."""
        return FrameStats(
            packets=self._packets,
            decoded=self._decoded,
            kept=self._kept,
            dropped=self._dropped_frames,
            skipped=self._skipped,
            decode_errors=self._decode_errors,
            keyframes_only=self._keyframes_only,
            thread_id=self._thread_id,
        )

    # ----- worker thread ------------------------------------------------------------------------

    def _on_subscribed(self) -> None:
        self._need_keyframe = True  # a new subscription starts at the hub's cached keyframe

    def _on_drops(self, count: int) -> None:
        self._need_keyframe = True  # the hub dropped packets: references are missing

    def _on_exit(self) -> None:
        self._decoder = None

    def _handle_packet(self, packet: MediaPacket) -> None:
        if packet.kind != "video":
            return
        try:
            self._handle(packet)
        except Exception:
            # Never let one bad packet kill detection for the camera.
            _LOGGER.exception("Detection decoder of %s failed on a packet", self.name)
            self._reset_decoder()

    def _handle(self, packet: MediaPacket) -> None:
        self._packets += 1
        if packet.generation != self._generation:
            # A new connection: new stream parameters, timestamps start over.
            self._generation = packet.generation
            self._reset_decoder()
            self._next_due = None
            self._last_keyframe_time = None
        queue = self._queue
        backlog = len(queue) if queue is not None else 0
        if not packet.keyframe and backlog > self._backlog_limit():
            self._need_keyframe = True  # far behind the camera: catch up at the next keyframe
        if packet.keyframe:
            self._on_keyframe(packet)
            self._need_keyframe = False
        elif self._need_keyframe or self._keyframes_only:
            self._skipped += 1
            return
        self._decode(packet)

    def _backlog_limit(self) -> int:
        info = self._hub.info
        source_fps = info.fps if info is not None and info.fps else _FALLBACK_FPS
        return max(25, int(source_fps * _MAX_BACKLOG_SECONDS))

    def _on_keyframe(self, packet: MediaPacket) -> None:
        """Track the keyframe interval; decide (at a keyframe only) whether to decode P-frames."""
        now = _packet_time(packet)
        if self._last_keyframe_time is not None and now > self._last_keyframe_time:
            self._gop_seconds = now - self._last_keyframe_time
        self._last_keyframe_time = now
        keyframes_only = self._force_keyframes or (
            self._gop_seconds is not None and self._gop_seconds <= self._interval * 1.05
        )
        if keyframes_only != self._keyframes_only:
            _LOGGER.debug(
                "%s: decoding %s for detection",
                self.name,
                "keyframes only" if keyframes_only else "every frame",
            )
            self._keyframes_only = keyframes_only

    def _reset_decoder(self) -> None:
        self._decoder = None
        self._need_keyframe = True
        self._arrivals.clear()

    def _new_decoder(self) -> Any:
        decoder = video_decoder(self._hub.info, self._generation)
        decoder.skip_frame = "NONREF"
        return decoder

    def _decode(self, packet: MediaPacket) -> None:
        if self._decoder is None:
            self._decoder = self._new_decoder()
        data = packet.data
        info = self._hub.info
        if (
            packet.keyframe
            and info is not None
            and info.video_codec == "h264"
            and info.extradata
            and not has_parameter_sets(data)
        ):
            # Cameras that send SPS/PPS only in the SDP: make the keyframe decodable alone.
            data = parameter_sets_annexb(info.extradata) + data
        av_packet = packet.to_av_packet(data)
        if packet.pts is not None:
            self._arrivals[packet.pts] = packet.received
            while len(self._arrivals) > _ARRIVALS_KEPT:
                self._arrivals.popitem(last=False)
        try:
            pictures = self._decoder.decode(av_packet)
        except av.error.FFmpegError as err:
            self._decode_errors += 1
            _LOGGER.debug("%s: decode error, waiting for a keyframe: %s", self.name, err)
            self._reset_decoder()
            return
        for picture in pictures:
            self._decoded += 1
            self._consider(picture, packet)

    def _consider(self, picture: VideoFrame, packet: MediaPacket) -> None:
        """Keep the picture if the rate wants one now (source timeline, not arrival time)."""
        received = packet.received
        if picture.pts is not None:
            received = self._arrivals.get(picture.pts, packet.received)
        if picture.pts is not None and picture.time_base:  # PyAV 14+: unset is 0/1, not None
            when = float(picture.pts * picture.time_base)
        else:
            when = packet.received
        due = self._next_due
        if due is None or when < due - 5 * self._interval or when > due + 5 * self._interval:
            due = when  # first picture, or the timeline jumped: start over
        # Half a source frame of tolerance, so 25 fps sampled at 5 fps keeps exactly 1 in 5.
        if when + self._tolerance() < due:
            return
        self._next_due = max(due + self._interval, when + self._interval / 2)
        self._publish(picture, when, received)

    def _tolerance(self) -> float:
        info = self._hub.info
        source_fps = info.fps if info is not None and info.fps else _FALLBACK_FPS
        return 0.5 / source_fps

    def _publish(self, picture: VideoFrame, when: float, received: float) -> None:
        src_w, src_h = int(picture.width), int(picture.height)
        width = min(self._width, src_w)
        height = max(2, round(src_h * width / src_w / 2) * 2)
        small = self._reformatter.reformat(
            picture, width=width, height=height, format="gray", interpolation="AREA"
        )
        gray: GrayFrame = np.ascontiguousarray(small.to_ndarray(), dtype=np.uint8)
        self._seq += 1
        self._kept += 1
        frame = DetectionFrame(
            seq=self._seq,
            gray=gray,
            time=when,
            received=received,
            generation=self._generation,
            source_width=src_w,
            source_height=src_h,
            picture=picture,
        )
        with self._slot:
            previous = self._latest
            if previous is not None and previous.seq > self._taken:
                self._dropped_frames += 1  # the consumer never saw it: dropped, not queued
            self._latest = frame
            self._slot.notify_all()


def _packet_time(packet: MediaPacket) -> float:
    if packet.pts is not None:
        return float(packet.pts * packet.time_base)
    return packet.received
