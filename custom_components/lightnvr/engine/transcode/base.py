"""What every shared transcoder has: a worker thread on the hub, fan-out, life cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import logging
import threading
import time
from typing import Literal

from ...hub import MAX_GOP_PACKETS, MediaPacket, PacketQueue, ThreadPacketQueue
from ...media.consumer import PacketSource

_LOGGER = logging.getLogger(__name__)

# How long a transcoder keeps running after its last user left.
LINGER_SECONDS = 30.0
# The hub's queue for a worker: a full cached GOP at least (the hub enforces it), plus room.
_INPUT_QUEUE_PACKETS = 1024
# The blocking get() wakes up this often to notice a stop even without packets.
_POLL_SECONDS = 0.5
_JOIN_SECONDS = 5.0


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
class Counters:
    """Running counts of one transcoder (read by `stats`)."""

    frames_in: int = 0
    frames_out: int = 0
    decode_errors: int = 0
    dropped: int = 0
    skipped: int = 0


@dataclass(slots=True)
class Run:
    """One start of a transcoder's worker; a restart makes a new one."""

    stop: threading.Event
    queue: ThreadPacketQueue
    started: float  # time.monotonic() of the subscription: older packets are the cached GOP
    thread: threading.Thread | None = None


class FanOut:
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
        """Add a subscriber, first giving it the cached group of pictures if asked."""
        with self._lock:
            if from_keyframe and self._keep_gop:
                for packet in self._gop:
                    queue.put(packet)
            self._subscribers.append(queue)

    def remove(self, queue: PacketQueue | ThreadPacketQueue) -> bool:
        """Remove and close a subscriber; return whether it was one."""
        with self._lock:
            known = queue in self._subscribers
            if known:
                self._subscribers.remove(queue)
                self.dropped_closed += queue.dropped
        queue.close()
        return known

    def publish(self, packet: MediaPacket) -> None:
        """Hand an output packet to every subscriber (and the cache)."""
        with self._lock:
            if self._keep_gop:
                if packet.keyframe:
                    self._gop = [packet]
                elif self._gop and len(self._gop) < MAX_GOP_PACKETS:
                    self._gop.append(packet)
            for queue in self._subscribers:
                queue.put(packet)

    def latest_keyframe(self) -> MediaPacket | None:
        """Return the newest output keyframe, if any."""
        with self._lock:
            return self._gop[0] if self._gop else None

    def clear_gop(self) -> None:
        """Forget the cached group of pictures (a new run starts)."""
        with self._lock:
            self._gop = []

    def close_all(self) -> None:
        """Close every subscriber."""
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
            self._gop = []
        for queue in subscribers:
            queue.close()

    def __len__(self) -> int:
        """Return the number of subscribers."""
        return len(self._subscribers)


class Pipeline:
    """The codec state of one run (decoder, encoder); used by the worker thread only."""

    def handle(self, packet: MediaPacket, queue: ThreadPacketQueue) -> None:
        """Turn one input packet into output packets (published by the run)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the codecs."""


class Transcoder:
    """Life cycle shared by both transcoders: users, linger, worker thread, fan-out."""

    kind: Literal["video", "audio"]
    codec_out: str

    def __init__(
        self,
        hub: PacketSource,
        *,
        linger: float,
        loop: asyncio.AbstractEventLoop | None,
        keep_gop: bool,
    ) -> None:
        self._hub = hub
        self.linger = linger
        self._loop = loop or asyncio.get_running_loop()
        self._out = FanOut(self._loop, keep_gop=keep_gop)
        self._lock = threading.Lock()
        self._holds = 0
        self._run_state: Run | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._joins: set[asyncio.Future[None]] = set()
        self._counters = Counters()
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
        run = Run(stop=threading.Event(), queue=queue, started=time.monotonic())
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

    def _new_pipeline(self, run: Run) -> Pipeline:
        raise NotImplementedError

    def _run(self, run: Run) -> None:
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

    def _publish(self, run: Run, packet: MediaPacket) -> None:
        if run.stop.is_set():
            return  # a stopped run's last packet would follow a newer run's
        self._counters.frames_out += 1
        self._out.publish(packet)

    def _codec_in(self) -> str | None:
        raise NotImplementedError

    def _output_size(self) -> tuple[int | None, int | None]:
        return None, None
