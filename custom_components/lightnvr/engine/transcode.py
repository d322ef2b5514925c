"""Shared live-view transcoders: one per camera and kind, never one per viewer.

Pass-through is the rule for live view; these are for viewers that cannot take the camera's own
codecs. `VideoTranscoder` turns any video PyAV decodes (H.265 above all) into H.264 a browser
decodes; `AudioTranscoder` turns any audio PyAV decodes (AAC above all) into Opus. Each runs in
one worker thread fed by the camera's StreamHub (`subscribe_thread`), and fans its output out
to its own subscribers with the hub's API (`subscribe`, `unsubscribe`, `info`,
`latest_keyframe`), so a WebRTC track takes a transcoder wherever it takes a hub.

Life cycle: a transcoder runs while anyone uses it — a subscriber, or a hold taken with
`acquire` (the engine holds it while it negotiates, before its track subscribes) — and stops
`linger` seconds after the last one left, so a viewer who reloads the page or a second viewer
shortly after the first finds it running. `SharedTranscoders` keeps the pair of one camera.

What the output looks like and why:
- H.264 Constrained Baseline from libx264 (`ultrafast`, `zerolatency`): every browser decodes
  it (also the OpenH264 decoder some browsers use), no B-frames, one frame in, one packet out.
- A keyframe every second (GOP = the camera's fps) with SPS/PPS in-band before each: a viewer
  joining starts at the cached keyframe and needs nothing out of band. `info.extradata` holds
  the same SPS/PPS (Annex B), for the answer's `profile-level-id`.
- Timestamps are the camera's own (video: its time base; audio: 1/48000 derived from its audio
  timestamps) and `received` is the source packet's, so the WebRTC tracks' lip sync and
  catch-up logic work on transcoded media exactly as on the camera's.
- Opus is mono, 48 kHz, 20 ms packets. RTP always declares opus/48000/2, but the decoder
  handles mono and stereo alike and browsers offer `stereo=0` (they prefer mono); camera
  microphones are mono.

The hub's reader is never slowed down: the worker reads a drop-oldest queue (drops counted).
A worker that falls behind decodes the backlog without encoding it (a viewer catches up at
once; the cached group of pictures of a new subscription is handled the same way), and one
that falls far behind or lost packets waits for the next keyframe.

Cost in % of one core of this project's 2-core test machine, PyAV 13 and 19 alike (test
pictures with sensor-like noise): H.265 1080p15 to H.264 720p ~21 %, H.265 720p15 to H.264
720p ~12 %, AAC 16 kHz mono to Opus ~2.5 % (most of it handing 50 packets a second over).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
import contextlib
from dataclasses import dataclass, replace
from fractions import Fraction
import logging
import threading
import time
from typing import Any, Literal, Protocol

import av
import av.error

from ..compat import fraction
from ..hub import MAX_GOP_PACKETS, MediaPacket, PacketQueue, StreamInfo, ThreadPacketQueue

_LOGGER = logging.getLogger(__name__)

# How long a transcoder keeps running after its last user left.
LINGER_SECONDS = 30.0
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

OPUS_SAMPLE_RATE = 48000
OPUS_TIME_BASE = Fraction(1, OPUS_SAMPLE_RATE)
OPUS_FRAME_SAMPLES = 960  # 20 ms
OPUS_BITRATE = 32000
OPUS_CHANNELS = 1
OPUS_APPLICATION = "voip"

# The hub's queue for a worker: a full cached GOP at least (the hub enforces it), plus room.
_INPUT_QUEUE_PACKETS = 1024
# The blocking get() wakes up this often to notice a stop even without packets.
_POLL_SECONDS = 0.5
_JOIN_SECONDS = 5.0
_FALLBACK_FPS = 15.0
# A decoded picture this old (since the hub received it) while more packets wait is backlog:
# decoded to keep the reference chain, not encoded, so the output catches up to live at once.
_ENCODE_STALE_SECONDS = 0.5
# Live packets this far behind: decoding cannot keep up; skip to the next keyframe.
_MAX_LAG_SECONDS = 1.5
# pts -> arrival time of recent packets, to date the pictures a decoder hands back.
_ARRIVALS_KEPT = 64
# Camera audio timestamps off the sample count by more than this start a new timeline (a gap,
# a reconnect or a drifting clock); smaller differences are jitter and ignored.
_AUDIO_RESYNC_SECONDS = 0.06

_H264_SPS = 7
_H264_PPS = 8


class TranscodeSource(Protocol):
    """What a transcoder needs from a StreamHub (tests feed it from a file the same way)."""

    @property
    def name(self) -> str:
        """Return a display name for logs (never the URL)."""

    @property
    def info(self) -> StreamInfo | None:
        """Describe the current connection's streams."""

    def subscribe_thread(
        self, maxlen: int = ..., *, from_keyframe: bool = ...
    ) -> ThreadPacketQueue:
        """Return a queue receiving every packet from now on."""

    def unsubscribe(self, queue: ThreadPacketQueue) -> None:
        """Stop delivering to `queue` and close it."""


@dataclass(frozen=True, slots=True)
class TranscoderStats:
    """Counters of one transcoder, for diagnostics."""

    kind: Literal["video", "audio"]
    running: bool
    viewers: int  # subscribers of the output
    holds: int  # users that hold it running without a subscription (`acquire`)
    frames_in: int  # source packets of our kind received
    frames_out: int  # packets published
    decode_errors: int
    dropped: int  # source packets the hub dropped because we fell behind
    skipped: int  # source packets or pictures left out to catch up or wait for a keyframe
    codec_in: str | None
    codec_out: str
    width: int | None  # output size (video)
    height: int | None
    path: str  # e.g. "hevc 1920x1080 -> h264 1280x720 (libx264)"


@dataclass(slots=True)
class _Counters:
    frames_in: int = 0
    frames_out: int = 0
    decode_errors: int = 0
    dropped: int = 0
    skipped: int = 0


@dataclass(slots=True)
class _Run:
    """One start of a transcoder's worker; a restart makes a new one."""

    stop: threading.Event
    queue: ThreadPacketQueue
    started: float  # time.monotonic() of the subscription: older packets are the cached GOP
    thread: threading.Thread | None = None


class _FanOut:
    """The output side of a transcoder: the hub's fan-out, keyframe cache included.

    `put` never blocks (drop-oldest queues); with `keep_gop` the newest group of pictures is
    kept and handed to a new subscriber first, under the same lock as live packets, so nothing
    is lost or repeated in between.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, keep_gop: bool) -> None:
        self._loop = loop
        self._keep_gop = keep_gop
        self._lock = threading.Lock()
        self._subscribers: list[PacketQueue | ThreadPacketQueue] = []
        self._gop: list[MediaPacket] = []
        self.dropped_closed = 0

    def add(self, queue: PacketQueue | ThreadPacketQueue, from_keyframe: bool) -> None:
        with self._lock:
            if from_keyframe and self._keep_gop:
                for packet in self._gop:
                    queue.put(packet)
            self._subscribers.append(queue)

    def remove(self, queue: PacketQueue | ThreadPacketQueue) -> bool:
        with self._lock:
            known = queue in self._subscribers
            if known:
                self._subscribers.remove(queue)
                self.dropped_closed += queue.dropped
        queue.close()
        return known

    def publish(self, packet: MediaPacket) -> None:
        with self._lock:
            if self._keep_gop:
                if packet.keyframe:
                    self._gop = [packet]
                elif self._gop and len(self._gop) < MAX_GOP_PACKETS:
                    self._gop.append(packet)
            for queue in self._subscribers:
                queue.put(packet)

    def latest_keyframe(self) -> MediaPacket | None:
        with self._lock:
            return self._gop[0] if self._gop else None

    def clear_gop(self) -> None:
        with self._lock:
            self._gop = []

    def close_all(self) -> None:
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
            self._gop = []
        for queue in subscribers:
            queue.close()

    def __len__(self) -> int:
        return len(self._subscribers)


class _Pipeline:
    """The codec state of one run (decoder, encoder); used by the worker thread only."""

    def handle(self, packet: MediaPacket, queue: ThreadPacketQueue) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the codecs."""


class _Transcoder:
    """Life cycle shared by both transcoders: users, linger, worker thread, fan-out."""

    kind: Literal["video", "audio"]
    codec_out: str

    def __init__(
        self,
        hub: TranscodeSource,
        *,
        linger: float,
        loop: asyncio.AbstractEventLoop | None,
        keep_gop: bool,
    ) -> None:
        self._hub = hub
        self.linger = linger
        self._loop = loop or asyncio.get_running_loop()
        self._out = _FanOut(self._loop, keep_gop=keep_gop)
        self._lock = threading.Lock()
        self._holds = 0
        self._run_state: _Run | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._joins: set[asyncio.Future[None]] = set()
        self._counters = _Counters()
        self._stopped = False

    # ----- users (event loop, unless noted) ------------------------------------------------------

    def acquire(self) -> None:
        """Hold the transcoder running (starting it if needed) until `release`."""
        with self._lock:
            self._holds += 1
        self._activate()

    def release(self) -> None:
        """Give back a hold; the last user leaving starts the linger time."""
        with self._lock:
            self._holds = max(0, self._holds - 1)
        self._maybe_idle()

    def subscribe(self, maxlen: int = 256, *, from_keyframe: bool = True) -> PacketQueue:
        """Return a queue of output packets for an asyncio consumer; start if needed.

        With `from_keyframe` (video) the queue starts with the newest output keyframe and the
        packets after it, like `StreamHub.subscribe`.
        """
        queue = PacketQueue(self._loop, self._queue_size(maxlen, from_keyframe))
        self._add(queue, from_keyframe)
        return queue

    def subscribe_thread(
        self, maxlen: int = 1024, *, from_keyframe: bool = True
    ) -> ThreadPacketQueue:
        """Like `subscribe`, for a consumer reading in its own thread (any thread)."""
        queue = ThreadPacketQueue(self._queue_size(maxlen, from_keyframe))
        self._add(queue, from_keyframe)
        return queue

    def unsubscribe(self, queue: PacketQueue | ThreadPacketQueue) -> None:
        """Stop delivering to `queue` and close it (any thread)."""
        if self._out.remove(queue):
            self._maybe_idle()

    def latest_keyframe(self) -> MediaPacket | None:
        """Return the newest output keyframe, if any."""
        return self._out.latest_keyframe()

    @property
    def running(self) -> bool:
        """Return True while the worker runs."""
        return self._run_state is not None

    @property
    def users(self) -> int:
        """Return the number of subscribers and holds."""
        return len(self._out) + self._holds

    async def async_stop(self) -> None:
        """Stop for good: the worker is joined off the event loop, subscribers are closed."""
        self._stopped = True
        self._cancel_linger()
        self._stop_worker()
        if self._joins:
            await asyncio.gather(*self._joins, return_exceptions=True)
        self._out.close_all()
        with self._lock:
            self._holds = 0

    def stats(self) -> TranscoderStats:
        """Return a snapshot of the counters."""
        counters = self._counters
        width, height = self._output_size()
        return TranscoderStats(
            kind=self.kind,
            running=self.running,
            viewers=len(self._out),
            holds=self._holds,
            frames_in=counters.frames_in,
            frames_out=counters.frames_out,
            decode_errors=counters.decode_errors,
            dropped=counters.dropped,
            skipped=counters.skipped,
            codec_in=self._codec_in(),
            codec_out=self.codec_out,
            width=width,
            height=height,
            path=self.path,
        )

    @property
    def path(self) -> str:
        """Describe what is transcoded into what (diagnostics)."""
        raise NotImplementedError

    # ----- life cycle ---------------------------------------------------------------------------

    @staticmethod
    def _queue_size(maxlen: int, from_keyframe: bool) -> int:
        # A queue that starts with the cached GOP must hold all of it.
        return max(maxlen, MAX_GOP_PACKETS + 1 if from_keyframe else 1)

    def _add(self, queue: PacketQueue | ThreadPacketQueue, from_keyframe: bool) -> None:
        if self._stopped:
            queue.close()  # stopped for good: the consumer gets EOFError, never a silent wait
            return
        self._out.add(queue, from_keyframe)
        self._activate()

    def _activate(self) -> None:
        """Start the worker if it is not running, and cancel a pending stop (any thread)."""
        with self._lock:
            if self._run_state is None and not self._stopped:
                self._start_worker()
        self._in_loop(self._cancel_linger)

    def _maybe_idle(self) -> None:
        """Arm the linger timer once nobody uses the transcoder (any thread)."""
        if self.users == 0:
            self._in_loop(self._arm_linger)

    def _in_loop(self, callback: Callable[[], None]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            callback()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to schedule
            self._loop.call_soon_threadsafe(callback)

    def _cancel_linger(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _arm_linger(self) -> None:
        if self.users or self._run_state is None or self._stopped:
            return
        self._cancel_linger()
        self._linger_timer = self._loop.call_later(self.linger, self._on_linger)

    def _on_linger(self) -> None:
        self._linger_timer = None
        if self.users == 0:
            _LOGGER.debug("%s: stopping the %s transcoder (no viewers)", self._hub.name, self.kind)
            self._stop_worker()

    def _start_worker(self) -> None:
        """Subscribe to the hub and start a worker thread (called with the lock held)."""
        queue = self._subscribe_hub()
        run = _Run(stop=threading.Event(), queue=queue, started=time.monotonic())
        run.thread = threading.Thread(
            target=self._run,
            args=(run,),
            name=f"lightnvr-transcode-{self.kind}-{self._hub.name}",
            daemon=True,
        )
        self._run_state = run
        _LOGGER.debug("%s: starting the %s transcoder", self._hub.name, self.kind)
        run.thread.start()

    def _subscribe_hub(self) -> ThreadPacketQueue:
        # Video starts at the hub's cached keyframe; the cache holds no audio.
        return self._hub.subscribe_thread(_INPUT_QUEUE_PACKETS, from_keyframe=self.kind == "video")

    def _stop_worker(self) -> None:
        """Tell the worker to stop and join it in an executor (event loop)."""
        with self._lock:
            run, self._run_state = self._run_state, None
        if run is None:
            return
        run.stop.set()
        self._hub.unsubscribe(run.queue)  # closes it: a blocked get() returns at once
        self._out.clear_gop()  # a later start must not hand out stale pictures
        if run.thread is not None:
            join = self._loop.run_in_executor(None, run.thread.join, _JOIN_SECONDS)
            self._joins.add(join)
            join.add_done_callback(self._joins.discard)

    # ----- worker thread ------------------------------------------------------------------------

    def _new_pipeline(self, run: _Run) -> _Pipeline:
        raise NotImplementedError

    def _run(self, run: _Run) -> None:
        pipeline = self._new_pipeline(run)
        queue = run.queue
        try:
            while not run.stop.is_set():
                try:
                    packet = queue.get(timeout=_POLL_SECONDS)
                except EOFError:
                    if run.stop.is_set():
                        break
                    # The hub was stopped under us (and may be started again): subscribe anew.
                    if run.stop.wait(_POLL_SECONDS):
                        break
                    queue = run.queue = self._subscribe_hub()
                    pipeline.close()
                    pipeline = self._new_pipeline(run)
                    continue
                if packet is None or packet.kind != self.kind:
                    continue
                try:
                    pipeline.handle(packet, queue)
                except Exception:
                    # One bad packet must not end live view for the camera: start over.
                    _LOGGER.exception("%s: %s transcoder failed", self._hub.name, self.kind)
                    with contextlib.suppress(Exception):
                        pipeline.close()
                    pipeline = self._new_pipeline(run)
        finally:
            self._hub.unsubscribe(queue)  # idempotent; covers a queue made during a stop
            pipeline.close()

    def _publish(self, run: _Run, packet: MediaPacket) -> None:
        if run.stop.is_set():
            return  # a stopped run's last packet would follow a newer run's
        self._counters.frames_out += 1
        self._out.publish(packet)

    def _codec_in(self) -> str | None:
        raise NotImplementedError

    def _output_size(self) -> tuple[int | None, int | None]:
        return None, None


# ----- video ------------------------------------------------------------------------------------


class VideoTranscoder(_Transcoder):
    """One camera's video as H.264 for viewers that cannot decode the camera's codec."""

    kind: Literal["video", "audio"] = "video"
    codec_out = "h264"

    def __init__(
        self,
        hub: TranscodeSource,
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

    def _new_pipeline(self, run: _Run) -> _Pipeline:
        return _VideoPipeline(self, run)

    def _codec_in(self) -> str | None:
        info = self._hub.info
        return info.video_codec if info is not None else None

    def _output_size(self) -> tuple[int | None, int | None]:
        info = self._info
        return (info.width, info.height) if info is not None else (None, None)


class _VideoPipeline(_Pipeline):
    def __init__(self, owner: VideoTranscoder, run: _Run) -> None:
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

    def _new_decoder(self, packet: MediaPacket) -> Any:
        info = self._hub.info
        codec = info.video_codec if info is not None else "h264"
        decoder: Any = av.CodecContext.create(codec, "r")
        if info is not None and info.generation == packet.generation and info.extradata:
            # Parameter sets from the SDP (Annex B) or an avcC/hvcC record: FFmpeg's decoders
            # take both (H.264 also with the Annex B packets the hub makes of avcC sources).
            decoder.extradata = info.extradata
        decoder.thread_count = 1  # one transcoder thread per camera, and no frame delay
        return decoder

    def _decode(self, packet: MediaPacket) -> list[Any]:
        if self._decoder is None:
            self._decoder = self._new_decoder(packet)
        av_packet = av.Packet(packet.data)
        av_packet.time_base = packet.time_base
        if packet.dts is not None:
            av_packet.dts = packet.dts
        if packet.pts is not None:
            av_packet.pts = packet.pts
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


# ----- audio ------------------------------------------------------------------------------------


class AudioTranscoder(_Transcoder):
    """One camera's audio as Opus (48 kHz mono, 20 ms) for WebRTC viewers."""

    kind: Literal["video", "audio"] = "audio"
    codec_out = "opus"

    def __init__(
        self,
        hub: TranscodeSource,
        *,
        linger: float = LINGER_SECONDS,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Prepare a transcoder of `hub`'s audio; nothing runs before the first user."""
        super().__init__(hub, linger=linger, loop=loop, keep_gop=False)

    @property
    def info(self) -> StreamInfo | None:
        """The hub's streams, with the audio described as the Opus we send."""
        source = self._hub.info
        if source is None or source.audio_codec is None:
            return None
        return replace(
            source,
            audio_codec="opus",
            audio_sample_rate=OPUS_SAMPLE_RATE,
            audio_channels=OPUS_CHANNELS,
            audio_extradata=None,
        )

    @property
    def path(self) -> str:
        """Describe the conversion, e.g. "aac 16000 Hz -> opus 48000 Hz mono (libopus)"."""
        source = self._hub.info
        src = ""
        if source is not None and source.audio_codec:
            src = f"{source.audio_codec} {source.audio_sample_rate or '?'} Hz "
        return f"{src}-> opus {OPUS_SAMPLE_RATE} Hz mono (libopus)"

    def _new_pipeline(self, run: _Run) -> _Pipeline:
        return _AudioPipeline(self, run)

    def _codec_in(self) -> str | None:
        info = self._hub.info
        return info.audio_codec if info is not None else None


class _AudioPipeline(_Pipeline):
    def __init__(self, owner: AudioTranscoder, run: _Run) -> None:
        self._owner = owner
        self._hub = owner._hub
        self._run = run
        self._counters = owner._counters
        self._generation = -1
        self._lost_seen = 0
        self._decoder: Any = None
        self._encoder: Any = None
        self._resampler: Any = None
        self._fifo: Any = None
        # Positions on the 48 kHz timeline: where the next decoded input sample belongs, and
        # the pts of the next 20 ms frame handed to the encoder.
        self._in_next: float | None = None
        self._out_next = 0

    def handle(self, packet: MediaPacket, queue: ThreadPacketQueue) -> None:
        counters = self._counters
        counters.frames_in += 1
        if packet.generation != self._generation:
            # A new connection: the codec may differ, timestamps start over.
            self._generation = packet.generation
            self._decoder = None
            self._drop_encoder()
            self._in_next = None
        lost = queue.dropped
        if lost != self._lost_seen:
            counters.dropped += max(0, lost - self._lost_seen)
            self._lost_seen = lost  # the timestamps show the gap; the timeline resyncs on it
        for frame in self._decode(packet):
            self._push(frame, packet)

    def _new_decoder(self, packet: MediaPacket) -> Any:
        info = self._hub.info
        if info is None or info.audio_codec is None:
            raise ValueError("audio packets without audio stream information")
        decoder: Any = av.CodecContext.create(info.audio_codec, "r")
        if info.audio_sample_rate:
            decoder.sample_rate = info.audio_sample_rate
        # PCM decoders need the layout given; AAC finds it in its config (extradata) too.
        decoder.layout = "stereo" if (info.audio_channels or 1) >= 2 else "mono"
        if info.generation == packet.generation and info.audio_extradata:
            decoder.extradata = info.audio_extradata
        decoder.thread_count = 1
        return decoder

    def _decode(self, packet: MediaPacket) -> list[Any]:
        if self._decoder is None:
            self._decoder = self._new_decoder(packet)
        av_packet = av.Packet(packet.data)
        av_packet.time_base = packet.time_base
        if packet.pts is not None:
            av_packet.pts = packet.pts
        if packet.dts is not None:
            av_packet.dts = packet.dts
        try:
            return list(self._decoder.decode(av_packet))
        except av.error.FFmpegError as err:
            self._counters.decode_errors += 1
            _LOGGER.debug("%s: audio decode error: %s", self._hub.name, err)
            self._decoder = None
            return []

    def _push(self, frame: Any, packet: MediaPacket) -> None:
        """Resample a decoded frame to 48 kHz and encode every whole 20 ms it completes."""
        rate = int(frame.sample_rate or 0)
        if rate <= 0 or frame.samples <= 0:
            return
        time_base = fraction(frame.time_base) or packet.time_base
        source = round(frame.pts * time_base * OPUS_SAMPLE_RATE) if frame.pts is not None else None
        if self._in_next is None or (
            source is not None
            and abs(source - self._in_next) > _AUDIO_RESYNC_SECONDS * OPUS_SAMPLE_RATE
        ):
            # First frame, a gap or a jump of the camera's clock: a new timeline from the
            # camera's timestamp. Up to 20 ms still buffered from before is let go.
            start = source if source is not None else self._out_next
            if self._in_next is not None and start < self._out_next:
                # Back in time: libopus queues its input by timestamp, so a new encoder.
                self._drop_encoder()
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_SAMPLE_RATE)
            self._fifo = av.AudioFifo()
            self._in_next = float(start)
            self._out_next = start
        self._in_next += frame.samples * OPUS_SAMPLE_RATE / rate
        for resampled in self._resampler.resample(frame):
            resampled.pts = None  # the timeline is ours; the FIFO would check theirs
            self._fifo.write(resampled)
        while self._fifo.samples >= OPUS_FRAME_SAMPLES:
            chunk = self._fifo.read(OPUS_FRAME_SAMPLES)
            chunk.pts = self._out_next
            chunk.time_base = OPUS_TIME_BASE
            self._out_next += OPUS_FRAME_SAMPLES
            for out in self._encoder_for().encode(chunk):
                self._publish(out, packet)

    def close(self) -> None:
        """Let go of the codecs."""
        self._decoder = None
        self._drop_encoder()

    def _drop_encoder(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            # Drained first: libopus warns about every frame still queued when it is freed.
            with contextlib.suppress(av.error.FFmpegError, ValueError):
                encoder.encode(None)

    def _encoder_for(self) -> Any:
        if self._encoder is None:
            encoder: Any = av.CodecContext.create("libopus", "w")
            encoder.sample_rate = OPUS_SAMPLE_RATE
            encoder.layout = "mono"
            encoder.format = "s16"
            encoder.bit_rate = OPUS_BITRATE
            encoder.time_base = OPUS_TIME_BASE
            encoder.thread_count = 1
            encoder.options = {"application": OPUS_APPLICATION, "frame_duration": "20"}
            self._encoder = encoder
        return self._encoder

    def _publish(self, out: Any, packet: MediaPacket) -> None:
        # libopus dates a packet 6.5 ms (its look-ahead) before the input frame it completes:
        # that is where its sound belongs, so the pts is kept as FFmpeg gives it.
        pts = int(out.pts) if out.pts is not None else self._out_next
        self._owner._publish(
            self._run,
            MediaPacket(
                kind="audio",
                data=bytes(out),
                pts=pts,
                dts=pts,
                time_base=OPUS_TIME_BASE,
                keyframe=False,
                received=packet.received,
                generation=packet.generation,
            ),
        )


# ----- per camera -------------------------------------------------------------------------------


class SharedTranscoders:
    """The video and audio transcoders of one camera, shared by all of its viewers."""

    def __init__(
        self,
        hub: TranscodeSource,
        loop: asyncio.AbstractEventLoop,
        *,
        max_width: int | None = DEFAULT_MAX_WIDTH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        """Prepare both transcoders; nothing runs before the first acquire or subscription."""
        self.video = VideoTranscoder(hub, max_width=max_width, linger=linger, loop=loop)
        self.audio = AudioTranscoder(hub, linger=linger, loop=loop)

    async def acquire_video(self, wait: float = READY_TIMEOUT_SECONDS) -> VideoTranscoder:
        """Hold the video transcoder (starting it); wait up to `wait` s for its first keyframe.

        It is returned also when no keyframe came in time (the camera sends nothing yet): its
        `info` is then None. Every acquire needs one `release_video`.
        """
        self.video.acquire()
        try:
            await self.video.async_wait_ready(wait)
        except BaseException:
            self.video.release()  # cancelled: the caller never got its hold
            raise
        return self.video

    def release_video(self) -> None:
        """Give back a hold of the video transcoder."""
        self.video.release()

    async def acquire_audio(self) -> AudioTranscoder:
        """Hold the audio transcoder (starting it). Every acquire needs one `release_audio`."""
        self.audio.acquire()
        return self.audio

    def release_audio(self) -> None:
        """Give back a hold of the audio transcoder."""
        self.audio.release()

    async def async_stop(self) -> None:
        """Stop both for good (threads joined off the event loop)."""
        await asyncio.gather(self.video.async_stop(), self.audio.async_stop())

    def stats(self) -> dict[str, TranscoderStats]:
        """Return the counters of both transcoders."""
        return {"video": self.video.stats(), "audio": self.audio.stats()}
