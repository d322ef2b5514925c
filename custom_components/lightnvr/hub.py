"""StreamHub: the one connection to a camera, fanned out to every consumer.

One reader thread per camera holds the only connection (PyAV demux). Each demuxed packet is
published to subscribers through bounded queues: the reader never waits for a consumer, a slow
live consumer loses its oldest packets (and the drop is counted), and the newest group of
pictures (keyframe onwards) is kept so that a new viewer can start on a keyframe at once instead
of waiting for the camera's next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
import logging
import threading
import time
from typing import Any, Literal

import av
import av.error

from .compat import audio_channels, fraction
from .const import HUB_BACKOFF_INITIAL, HUB_BACKOFF_MAX, HUB_OPEN_TIMEOUT, HUB_READ_TIMEOUT
from .h264 import is_annexb
from .reachability import RECOVERY_PROBE_SECONDS, wait_for_answer
from .source import REASON_NO_VIDEO, CameraSource, SourceError, classify_error, open_options

_LOGGER = logging.getLogger(__name__)

# Longest group of pictures kept for instant start; a camera with a longer GOP still works, the
# viewer then waits for the next keyframe.
MAX_GOP_PACKETS = 600
STATS_WINDOW_SECONDS = 5.0
# A connection that delivered video this long is considered healthy: back-off starts over.
HEALTHY_CONNECTION_SECONDS = 10.0
# After the camera answered again, retries stay this close (its RTSP server may need a moment
# more than its network stack) for this many attempts, before back-off resumes.
RECOVERY_RETRIES = 5


class HubState(StrEnum):
    """Connection state of a hub."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One demuxed packet, immutable so that many consumers can share it across threads.

    H.264 data is always Annex B (start codes), whatever the source's container uses.
    """

    kind: Literal["video", "audio"]
    data: bytes
    pts: int | None
    dts: int | None
    time_base: Fraction
    keyframe: bool
    received: float  # time.monotonic() when the reader got it
    generation: int = 0  # connection number (StreamInfo.generation): a change means a gap

    def to_av_packet(self, data: bytes | None = None) -> av.Packet:
        """Return a PyAV packet with this packet's timing, for a decoder (`data` replaces ours)."""
        packet = av.Packet(self.data if data is None else data)
        packet.time_base = self.time_base
        if self.dts is not None:
            packet.dts = self.dts
        if self.pts is not None:
            packet.pts = self.pts
        return packet


def video_decoder(info: StreamInfo | None, generation: int) -> Any:
    """Return a one-thread decoder for the camera's video, primed with its parameter sets.

    The parameter sets (SDP Annex B, or an avcC/hvcC record) only apply to packets of the
    connection they describe: a decoder for another generation starts without them.
    """
    decoder: Any = av.CodecContext.create(info.video_codec if info is not None else "h264", "r")
    if info is not None and info.generation == generation and info.extradata:
        decoder.extradata = info.extradata
    decoder.thread_count = 1  # one consumer thread per camera; no frame delay
    return decoder


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The video (and audio) of the current connection; replaced on every reconnect."""

    generation: int
    video_codec: str
    width: int
    height: int
    time_base: Fraction
    fps: float | None
    extradata: bytes | None
    audio_codec: str | None = None
    # What a muxer needs to copy the audio without decoding it (the recorder's MP4 headers).
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_extradata: bytes | None = None


@dataclass(frozen=True, slots=True)
class HubStats:
    """Counters readable from the event loop."""

    state: HubState
    last_error: str | None
    fps: float
    bitrate: float  # bits per second over the last few seconds
    last_packet_time: float | None  # wall clock (time.time()) of the newest packet
    reconnects: int
    packets: int
    subscribers: int
    dropped: int


class PacketQueue:
    """Bounded queue from the reader thread to one asyncio consumer.

    `put` never blocks: when full it drops the oldest packet and counts it. The event loop is only
    woken when the consumer is actually waiting, to keep call_soon_threadsafe traffic low.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxlen: int) -> None:
        self._loop = loop
        self._items: deque[MediaPacket] = deque()
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def put(self, packet: MediaPacket) -> None:
        """Add a packet (any thread)."""
        with self._lock:
            if self._closed:
                return
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(packet)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._wake(waiter)

    def close(self) -> None:
        """Close the queue; a waiting `get` raises EOFError (any thread)."""
        with self._lock:
            self._closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._wake(waiter)

    @property
    def closed(self) -> bool:
        """Return True once closed."""
        return self._closed

    def __len__(self) -> int:
        """Return the number of queued packets."""
        return len(self._items)

    async def get(self) -> MediaPacket:
        """Return the next packet; raise EOFError once closed and drained."""
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    raise EOFError
                waiter = self._loop.create_future()
                self._waiter = waiter
            await waiter

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        def _set() -> None:
            if not waiter.done():
                waiter.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is left to wake
            self._loop.call_soon_threadsafe(_set)


class ThreadPacketQueue:
    """Bounded queue from the reader thread to a consumer running in its own thread.

    Same contract as PacketQueue (`put` never blocks, the oldest packet is dropped and counted
    when full) with a blocking `get` for worker threads such as the recorder or a decoder.
    """

    def __init__(self, maxlen: int) -> None:
        """Create an empty queue holding at most `maxlen` packets."""
        self._items: deque[MediaPacket] = deque()
        self._maxlen = maxlen
        self._ready = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, packet: MediaPacket) -> None:
        """Add a packet (any thread)."""
        with self._ready:
            if self._closed:
                return
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(packet)
            self._ready.notify()

    def close(self) -> None:
        """Close the queue; a blocked `get` raises EOFError once the queue is drained."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        """Return True once closed."""
        return self._closed

    def __len__(self) -> int:
        """Return the number of queued packets."""
        return len(self._items)

    def get(self, timeout: float | None = None) -> MediaPacket | None:
        """Return the next packet, None after `timeout` seconds, EOFError once closed."""
        with self._ready:
            if not self._items and not self._closed:
                self._ready.wait(timeout)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise EOFError
            return None


type PacketSink = PacketQueue | ThreadPacketQueue


class StreamHub:
    """Reads one camera in a thread and fans its packets out to subscribers."""

    def __init__(
        self,
        name: str,
        source: CameraSource,
        loop: asyncio.AbstractEventLoop,
        *,
        open_timeout: float = HUB_OPEN_TIMEOUT,
        read_timeout: float = HUB_READ_TIMEOUT,
        backoff_initial: float = HUB_BACKOFF_INITIAL,
        backoff_max: float = HUB_BACKOFF_MAX,
    ) -> None:
        """Prepare a hub; nothing connects before `start`."""
        self.name = name
        self._source = source
        self._loop = loop
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribers: list[PacketSink] = []
        self._gop: list[MediaPacket] = []
        self._listeners: list[Callable[[], None]] = []

        self._state = HubState.STOPPED
        self._last_error: str | None = None
        self._info: StreamInfo | None = None
        self._generation = 0
        self._time_bases: dict[str, Fraction] = {}
        self._reconnects = 0
        self._packets = 0
        self._dropped_closed = 0
        self._last_packet_wall: float | None = None
        self._window: deque[tuple[float, int]] = deque()

    # ----- lifecycle (event loop) -------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._set_state(HubState.CONNECTING)
        self._thread = threading.Thread(
            target=self._run, name=f"lightnvr-hub-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader and close every subscriber. Blocking: run it in an executor."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # The reader checks the stop flag between packets and PyAV's timeouts bound each
            # blocking call, so this join is bounded by the open timeout.
            thread.join(self._open_timeout + self._read_timeout + 1.0)
            if thread.is_alive():
                _LOGGER.warning("Reader of %s did not stop in time", self.name)
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
            self._gop = []
        for queue in subscribers:
            queue.close()
        self._set_state(HubState.STOPPED)

    async def async_stop(self) -> None:
        """Stop without blocking the event loop."""
        await self._loop.run_in_executor(None, self.stop)

    # ----- consumers (any thread) -------------------------------------------------------------

    def subscribe(self, maxlen: int = 256, *, from_keyframe: bool = True) -> PacketQueue:
        """Return a queue that receives every packet from now on.

        With `from_keyframe`, the queue starts with the newest keyframe and the packets after it,
        so a decoder can start at once. Cache and live packets are handed over under one lock:
        nothing is lost or repeated between them.
        """
        queue = PacketQueue(self._loop, self._queue_size(maxlen, from_keyframe))
        self._add_subscriber(queue, from_keyframe)
        return queue

    def subscribe_thread(
        self, maxlen: int = 1024, *, from_keyframe: bool = True
    ) -> ThreadPacketQueue:
        """Like `subscribe`, for a consumer that reads in its own thread (blocking `get`)."""
        queue = ThreadPacketQueue(self._queue_size(maxlen, from_keyframe))
        self._add_subscriber(queue, from_keyframe)
        return queue

    @staticmethod
    def _queue_size(maxlen: int, from_keyframe: bool) -> int:
        # A queue that starts with the cached GOP must hold all of it.
        return max(maxlen, MAX_GOP_PACKETS + 1 if from_keyframe else 1)

    def _add_subscriber(self, queue: PacketSink, from_keyframe: bool) -> None:
        with self._lock:
            if from_keyframe:
                for packet in self._gop:
                    queue.put(packet)
            self._subscribers.append(queue)

    def unsubscribe(self, queue: PacketSink) -> None:
        """Stop delivering to `queue` and close it."""
        with self._lock:
            if queue in self._subscribers:
                self._subscribers.remove(queue)
                self._dropped_closed += queue.dropped
        queue.close()

    def latest_keyframe(self) -> MediaPacket | None:
        """Return the newest video keyframe, if any."""
        with self._lock:
            return self._gop[0] if self._gop else None

    @property
    def info(self) -> StreamInfo | None:
        """Describe the current connection's streams (None before the first connection)."""
        return self._info

    @property
    def state(self) -> HubState:
        """Return the connection state."""
        return self._state

    @property
    def available(self) -> bool:
        """Return True while video flows (or while the very first connection is being made)."""
        return self._state is HubState.STREAMING or (
            self._state is HubState.CONNECTING and self._generation == 0
        )

    @property
    def last_error(self) -> str | None:
        """Return the reason of the last failure (a REASON_* key), if any."""
        return self._last_error

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` in the event loop on every state change; return a remover."""
        self._listeners.append(listener)

        def _remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return _remove

    def stats(self) -> HubStats:
        """Return a snapshot of the counters."""
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0][0] > STATS_WINDOW_SECONDS:
                self._window.popleft()
            frames = len(self._window)
            size = sum(item[1] for item in self._window)
            subscribers = len(self._subscribers)
            dropped = self._dropped_closed + sum(q.dropped for q in self._subscribers)
        span = min(STATS_WINDOW_SECONDS, max(now - self._window[0][0], 1e-3)) if frames else 0
        return HubStats(
            state=self._state,
            last_error=self._last_error,
            fps=frames / span if span else 0.0,
            bitrate=size * 8 / span if span else 0.0,
            last_packet_time=self._last_packet_wall,
            reconnects=self._reconnects,
            packets=self._packets,
            subscribers=subscribers,
            dropped=dropped,
        )

    # ----- reader thread ----------------------------------------------------------------------

    def _set_state(
        self, state: HubState, error: str | None = None, *, attempt: bool = False
    ) -> None:
        """Set the state; listeners hear of changes, and of every failed attempt (`attempt`)."""
        changed = attempt or state is not self._state or error != self._last_error
        self._state = state
        if error is not None or state is HubState.STREAMING:
            self._last_error = error
        if changed:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._notify_listeners)

    def _notify_listeners(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                _LOGGER.exception("Error in %s state listener", self.name)

    def _run(self) -> None:
        backoff = self._backoff_initial
        recovery_retries = 0
        while not self._stop.is_set():
            started = time.monotonic()
            error: str | None = None
            try:
                self._read_once()
            except Exception as err:  # noqa: BLE001 - any failure means: reconnect later
                error = classify_error(err)
                _LOGGER.debug("%s: %s (%s)", self.name, self._source.redact(str(err)), error)
            if self._stop.is_set():
                break
            if self._state is HubState.STREAMING or self._generation > 0:
                self._reconnects += 1
            with self._lock:
                self._gop = []
            if time.monotonic() - started >= HEALTHY_CONNECTION_SECONDS:
                backoff = self._backoff_initial
                recovery_retries = 0
            if self._state is HubState.STREAMING:
                _LOGGER.warning(
                    "Lost %s (%s); reconnecting in %.0f s", self.name, error or "end", backoff
                )
            # Every failed attempt is told: a listener may act on the same error seen repeatedly.
            self._set_state(HubState.RECONNECTING, error or "cannot_connect", attempt=True)
            if recovery_retries > 0:
                recovery_retries -= 1
                if self._stop.wait(RECOVERY_PROBE_SECONDS):
                    break
                continue
            stopped, answered = wait_for_answer(self._stop, self._source.url, backoff)
            if stopped:
                break
            if answered:
                _LOGGER.debug("%s answers again: reconnecting now", self.name)
                recovery_retries = RECOVERY_RETRIES
            backoff = min(backoff * 2, self._backoff_max)

    def _read_once(self) -> None:
        url = self._source.connect_url()
        # FFmpeg's own socket timeouts, not PyAV's `timeout=` (see open_options).
        container = av.open(url, options=open_options(url, io_timeout=self._read_timeout))
        try:
            if not container.streams.video:
                raise SourceError(REASON_NO_VIDEO, "the source has no video stream")
            video = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            bsf = self._annexb_filter(video)
            # The stream's time base, not the packet's: a bitstream filter hands back packets
            # without one (PyAV 13) and blanks the packet it was given (PyAV 14+).
            video_time_base = fraction(video.time_base) or Fraction(1, 90000)
            self._time_bases = {
                "video": video_time_base,
                "audio": (fraction(audio.time_base) if audio else None) or Fraction(1, 90000),
            }
            ctx: Any = video.codec_context
            rate = video.average_rate or video.guessed_rate
            actx: Any = audio.codec_context if audio is not None else None
            self._generation += 1
            self._info = StreamInfo(
                generation=self._generation,
                video_codec=ctx.name,
                width=int(ctx.width or 0),
                height=int(ctx.height or 0),
                time_base=video_time_base,
                fps=float(rate) if rate else None,
                extradata=bytes(ctx.extradata) if ctx.extradata else None,
                **self._audio_info(actx),
            )
            _LOGGER.debug(
                "%s: opened %s (%s %dx%d)",
                self.name,
                self._source.redacted_url,
                ctx.name,
                self._info.width,
                self._info.height,
            )
            streams = [video] if audio is None else [video, audio]
            for packet in container.demux(streams):
                if self._stop.is_set():
                    return
                if packet.size == 0 or packet.stream is None:
                    continue  # demuxer flush packet
                if packet.stream is video:
                    for out in bsf.filter(packet) if bsf is not None else (packet,):
                        self._publish_video(out)
                else:
                    self._publish(self._to_media_packet("audio", packet, keyframe=False))
        finally:
            container.close()

    @staticmethod
    def _audio_info(ctx: Any) -> dict[str, Any]:
        """Describe the audio stream (if any) for StreamInfo."""
        if ctx is None:
            return {}
        return {
            "audio_codec": ctx.name,
            "audio_sample_rate": int(ctx.sample_rate or 0) or None,
            "audio_channels": audio_channels(ctx),
            "audio_extradata": bytes(ctx.extradata) if ctx.extradata else None,
        }

    @staticmethod
    def _annexb_filter(video: Any) -> Any:
        """Return a bitstream filter turning length-prefixed H.264/H.265 into Annex B, if needed."""
        extradata = video.codec_context.extradata
        codec = video.codec_context.name
        if codec in ("h264", "hevc") and extradata and not is_annexb(bytes(extradata)):
            from av.bitstream import BitStreamFilterContext  # noqa: PLC0415

            return BitStreamFilterContext(f"{codec}_mp4toannexb", video)
        return None

    def _to_media_packet(
        self, kind: Literal["video", "audio"], packet: av.Packet, *, keyframe: bool
    ) -> MediaPacket:
        return MediaPacket(
            kind=kind,
            data=bytes(packet),
            pts=packet.pts,
            dts=packet.dts,
            time_base=self._time_bases[kind],
            keyframe=keyframe,
            received=time.monotonic(),
            generation=self._generation,
        )

    def _publish_video(self, packet: av.Packet) -> None:
        media = self._to_media_packet("video", packet, keyframe=packet.is_keyframe)
        now = media.received
        with self._lock:
            if media.keyframe:
                self._gop = [media]
            elif self._gop and len(self._gop) < MAX_GOP_PACKETS:
                self._gop.append(media)
            self._window.append((now, len(media.data)))
            while self._window and now - self._window[0][0] > STATS_WINDOW_SECONDS:
                self._window.popleft()
        self._last_packet_wall = time.time()
        if self._state is not HubState.STREAMING:
            if self._generation > 1 or self._last_error:
                _LOGGER.info("%s is streaming again", self.name)
            self._set_state(HubState.STREAMING)
        self._publish(media)

    def _publish(self, media: MediaPacket) -> None:
        self._packets += 1
        with self._lock:
            for queue in self._subscribers:
                queue.put(media)
