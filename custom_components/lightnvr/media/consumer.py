"""PacketConsumer: the one thread skeleton that reads a camera's StreamHub.

A camera's muxer (`media.fragments.CameraFragments`, whose sinks are the recorder, event clips
and live HLS) and detection's decoder (`detection.frames.FrameSource`) each run one thread
that does the same thing around its own packet handler:

- **subscribe** to the hub (`PacketSource.subscribe_thread`) from inside the thread, so that a
  hub that is slow to answer never holds up the caller of `start`;
- **take packets**, either in batches (`batch_seconds`: wake up that often and handle everything
  queued meanwhile, because a thread wake-up costs more CPU than muxing a packet) or one by one
  as they come (`batch_seconds=None`, for consumers whose latency matters: live view, detection);
- **count drops** (the hub's queue overflowed because the consumer was slow) and tell the
  handler, which must then wait for a keyframe;
- **resubscribe** `RESUBSCRIBE_SECONDS` after the hub closed the queue (a hub that is stopped and
  started again takes new subscribers), or end there (`resubscribe=False`, when the owner makes a
  new consumer instead);
- **stop**: `request_stop` closes the subscription, which wakes a blocked `get`; consumers that
  write files (`drain_on_stop`) still handle what is queued, the others end at once; `join`
  waits for the thread with a timeout.

Locking: `_queue_lock` only guards swapping `_queue`. Nothing ever waits, subscribes or
unsubscribes while holding it, so an event-loop call that takes it (`request_stop`) never
waits for the thread, and the thread never waits for the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from ..hub import MediaPacket, StreamInfo, ThreadPacketQueue

_LOGGER = logging.getLogger(__name__)

# A closed subscription is renewed after this long: a hub being restarted has time to come back,
# and a hub that stays down costs one subscription a second, nothing more.
RESUBSCRIBE_SECONDS = 1.0
# How often a thread blocked in `get` (or waiting to resubscribe) looks at its flags.
POLL_SECONDS = 0.5
DEFAULT_JOIN_SECONDS = 30.0


class PacketSource(Protocol):
    """What a consumer needs from a StreamHub (tests feed it from a file the same way)."""

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


class PacketConsumer:
    """One thread reading one PacketSource; subclasses handle the packets (see the module doc).

    Hooks (all called in the consumer thread): `_handle_packet` (required), `_on_subscribed`,
    `_on_queue_closed`, `_on_drops`, `_on_idle`, `_on_waiting`, `_blocked`/`_on_blocked` and
    `_on_exit`.
    """

    def __init__(
        self,
        source: PacketSource,
        *,
        label: str,
        thread_name: str,
        queue_packets: int,
        batch_seconds: float | None,
        drain_on_stop: bool,
        resubscribe: bool = True,
        from_keyframe: bool = True,
        poll_seconds: float = POLL_SECONDS,
        join_seconds: float = DEFAULT_JOIN_SECONDS,
    ) -> None:
        """Prepare the consumer; nothing runs before `start`.

        `label` names the consumer in logs ("Recorder of Front door").
        """
        self._source = source
        self._label = label
        self._thread_name = thread_name
        self._queue_packets = queue_packets
        self._batch_seconds = batch_seconds
        self._drain_on_stop = drain_on_stop
        self._resubscribe = resubscribe
        self._from_keyframe = from_keyframe
        self._poll_seconds = poll_seconds
        self._join_seconds = join_seconds

        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None  # native id, for CPU accounting
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._queue_lock = threading.Lock()  # guards swapping _queue, never held while waiting
        self._queue: ThreadPacketQueue | None = None
        self._queue_dropped = 0  # drops of the current queue already counted
        self._dropped = 0  # packets lost between the hub and this consumer, in all
        self._resubscribe_at = 0.0
        self._last_packet_at = 0.0  # time.monotonic() of the last packet (or subscription)
        self.subscriptions = 0

    # ----- control (any thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (it subscribes itself)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end, without waiting (safe on the event loop)."""
        self._stopping.set()
        self._wake.set()
        self._close_queue()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end. Blocking: run it in an executor."""
        thread = self._thread
        if thread is not None:
            thread.join(self._join_seconds if timeout is None else timeout)
            if thread.is_alive():
                _LOGGER.warning("%s did not stop in time", self._label)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it. Blocking: run it in an executor."""
        self.request_stop()
        self.join(timeout)
        self._thread = None  # a stopped consumer may be started again

    @property
    def alive(self) -> bool:
        """Return True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def dropped_packets(self) -> int:
        """Return the packets lost because this consumer was too slow, in all."""
        queue = self._queue
        pending = queue.dropped - self._queue_dropped if queue is not None else 0
        return self._dropped + pending

    def _close_queue(self) -> None:
        """End the current subscription: the thread drains it (or not), then sees EOF."""
        with self._queue_lock:
            queue = self._queue
        if queue is not None:
            # Outside the lock: unsubscribing takes the hub's lock and the queue's.
            self._source.unsubscribe(queue)

    # ----- hooks (consumer thread) --------------------------------------------------------------

    def _handle_packet(self, packet: MediaPacket) -> None:
        """Handle one packet."""
        raise NotImplementedError

    def _on_subscribed(self) -> None:
        """Start over on a new subscription (it begins with the hub's cached GOP)."""

    def _on_queue_closed(self) -> None:
        """Clean up after the subscription ended (hub stopped, or `request_stop`/`_close_queue`)."""

    def _on_drops(self, count: int) -> None:
        """`count` packets were lost before this one: references are broken."""

    def _on_idle(self) -> None:
        """No packet is queued (every batch interval, or every poll without a packet)."""

    def _on_waiting(self) -> None:
        """No subscription yet (waiting to resubscribe): about every batch interval."""

    def _blocked(self) -> bool:
        """Return True while the consumer must not be subscribed (e.g. recording off)."""
        return False

    def _on_blocked(self) -> None:
        """Idle about every poll interval while `_blocked` (already unsubscribed)."""

    def _on_exit(self) -> None:
        """Clean up as the thread ends (already unsubscribed)."""

    # ----- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._thread_id = threading.get_native_id()
        try:
            self._loop()
        except Exception:
            _LOGGER.exception("%s failed", self._label)
        finally:
            try:
                self._drop_queue()
            finally:
                self._on_exit()

    def _loop(self) -> None:
        batch = self._batch_seconds
        while True:
            stopping = self._stopping.is_set()
            if stopping and (not self._drain_on_stop or self._queue is None):
                return
            if not stopping and self._blocked():
                self._drop_queue()
                self._on_blocked()
                self._wait(self._poll_seconds)
                continue
            queue = self._ensure_queue()
            if queue is None:
                if self._stopping.is_set():
                    return
                self._on_waiting()
                continue
            try:
                packet = queue.get(timeout=0 if batch is not None else self._poll_seconds)
            except EOFError:
                self._end_subscription()
                if not self._resubscribe:
                    return
                continue
            self._count_drops(queue)
            if packet is None:
                if self._stopping.is_set():
                    self._end_subscription()  # drained: the end
                    continue
                self._on_idle()
                if batch is not None:
                    self._wait(batch)  # a stop or a control call wakes it at once
                continue
            self._last_packet_at = time.monotonic()
            self._handle_packet(packet)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _ensure_queue(self) -> ThreadPacketQueue | None:
        """Return the subscription, subscribing when due; None while waiting (or stopping)."""
        queue = self._queue  # only this thread sets it
        if queue is not None or self._stopping.is_set():
            return queue
        wait = self._resubscribe_at - time.monotonic()
        if wait > 0:
            tick = self._poll_seconds
            if self._batch_seconds is not None:
                tick = min(tick, self._batch_seconds)
            self._wait(min(wait, tick))
            return None
        queue = self._source.subscribe_thread(
            self._queue_packets, from_keyframe=self._from_keyframe
        )
        with self._queue_lock:
            self._queue = queue
            self._queue_dropped = 0
        self.subscriptions += 1
        if self._stopping.is_set() or self._blocked():
            # A stop (or a switch) ran while subscribing and saw no queue to close: do it here,
            # the loop then drains it (or not) and ends (or waits) as usual.
            self._source.unsubscribe(queue)
        self._last_packet_at = time.monotonic()
        self._on_subscribed()
        return queue

    def _drop_queue(self) -> None:
        with self._queue_lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            self._source.unsubscribe(queue)
            self._dropped += queue.dropped - self._queue_dropped
            self._queue_dropped = 0

    def _end_subscription(self) -> None:
        self._drop_queue()
        self._on_queue_closed()
        if not self._stopping.is_set():
            # A hub that is stopped and started again takes new subscribers.
            self._resubscribe_at = time.monotonic() + RESUBSCRIBE_SECONDS

    def _count_drops(self, queue: ThreadPacketQueue) -> None:
        dropped = queue.dropped
        if dropped != self._queue_dropped:
            count = dropped - self._queue_dropped
            self._dropped += count
            self._queue_dropped = dropped
            self._on_drops(count)
