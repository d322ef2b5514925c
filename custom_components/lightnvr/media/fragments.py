"""CameraFragments: the one thread per camera that muxes its packets into fMP4 fragments.

Every consumer of a camera's MP4 (the recorder, event clips, live HLS) is a `FragmentSink` of
the camera's one `CameraFragments`: the camera is muxed once (`media.muxer.CameraMuxer`:
stream copy, repaired timestamps, AAC audio), however many of them run. The runtime owns one
per camera; a consumer made with a bare packet source (tests, benchmarks) makes its own.

- The thread (the shared `media.consumer` skeleton) is subscribed to the camera's hub only
  while a sink wants fragments (`FragmentSink.wants_fragments`); otherwise nothing is muxed.
- Fragments are handed to every sink in this thread, as each completes; a sink that writes
  files does so here (one thread per camera for all of them). `end_of_container` follows the
  last fragment of a container (a new connection, lost packets, nobody wanting fragments).
- A **ring** of the newest fragments (`retain` seconds, back to a keyframe fragment) lets a
  sink start in the past: an event clip's pre-roll, a first live viewer's segments.
- A sink is attached with `add_sink` and detached with `remove_sink` (any thread; it may get
  one more fragment) or `detach` (blocking: waits for a delivery in progress, then calls
  `sink.detached()` so a file writer can finish its file).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
import logging
import threading
import time
from typing import Protocol

from ..hub import MediaPacket, StreamInfo
from .consumer import PacketConsumer, PacketSource
from .muxer import CameraMuxer, Fragment

_LOGGER = logging.getLogger(__name__)

# A fragment is cut at every keyframe and at the latest after this long: live HLS lists every
# fragment as an LL-HLS part (shorter than a GOP), and a crash loses at most this much plus one
# batch interval (< 1 s) even with cameras sending long GOPs.
DEFAULT_FRAGMENT_SECONDS = 0.5
# About 80 s of a 25 fps camera (28 s with AAC audio): room for a slow disk to catch up before
# packets are lost (and counted). Queued packets are shared with other consumers, not copied.
DEFAULT_QUEUE_PACKETS = 2048
# What the ring holds unless a sink asks for more (event clips ask for their pre-roll): a first
# live viewer's three segments. It is memory: about 3 MB for a 4 Mbit/s camera.
DEFAULT_RING_SECONDS = 6.0

# The thread wakes up this often and muxes everything queued meanwhile, instead of waking up
# for every packet: on these machines a thread wake-up costs more CPU than muxing a packet.
# It adds at most this much to the time a finished fragment takes to reach its sinks.
_BATCH_SECONDS = 0.25
_STOP_SECONDS = 30.0
_LOG_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class MuxerStats:
    """A camera muxer's counters (diagnostics)."""

    muxing: bool  # a container is being muxed now
    consumers: int  # sinks that want fragments now (recorder, clips, live viewers)
    fragments: int  # muxed since start
    ring_seconds: float  # of fragments kept for pre-roll and live start
    timestamp_repairs: int
    dropped_packets: int  # lost between the hub and the muxer (queue full)
    unsupported_codec: str | None


class FragmentSink(Protocol):
    """A consumer of a camera's fragments (called in the camera's fragment thread)."""

    def wants_fragments(self) -> bool:
        """Return True while the camera must be muxed for this sink (any thread)."""

    def handle_fragment(self, fragment: Fragment) -> None:
        """Take one complete fragment (its own errors are its own: log, never raise)."""

    def end_of_container(self) -> None:
        """Close what the fragments so far went into: their container ended."""

    def idle(self, seconds: float) -> None:
        """Note that no packet came for `seconds` (about every batch interval meanwhile)."""

    def detached(self) -> None:
        """Finish what it writes: it was detached (`CameraFragments.detach`)."""


def shared_or_own(
    source: CameraFragments | PacketSource,
    name: str,
    *,
    thread_name: str,
    fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
    queue_packets: int = DEFAULT_QUEUE_PACKETS,
) -> tuple[CameraFragments, bool]:
    """Return the camera's shared muxer, or a muxer of the caller's own over a packet source.

    The second value is True for a muxer of its own: the caller starts and stops it.
    """
    if isinstance(source, CameraFragments):
        return source, False
    own = CameraFragments(
        name,
        source,
        fragment_seconds=fragment_seconds,
        queue_packets=queue_packets,
        thread_name=thread_name,
    )
    return own, True


class CameraFragments(PacketConsumer):
    """Muxes one camera once for every MP4 consumer, in its own thread (see the module doc)."""

    def __init__(
        self,
        name: str,
        source: PacketSource,
        *,
        fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
        ring_seconds: float = DEFAULT_RING_SECONDS,
        queue_packets: int = DEFAULT_QUEUE_PACKETS,
        thread_name: str | None = None,
    ) -> None:
        """Prepare the muxer of the camera `name` (for logs); nothing runs before `start`."""
        super().__init__(
            source,
            label=f"Muxer of {source.name}",
            thread_name=thread_name or f"lightnvr-mux-{name}",
            queue_packets=queue_packets,
            batch_seconds=_BATCH_SECONDS,
            drain_on_stop=True,
            join_seconds=_STOP_SECONDS,
        )
        self.name = name
        self._sinks: tuple[FragmentSink, ...] = ()  # replaced, never changed in place
        self._sinks_lock = threading.Lock()  # guards replacing _sinks; never held for long
        self._deliver_lock = threading.RLock()  # held while sinks are called (and to detach)
        self._ring: deque[Fragment] = deque()
        self._ring_lock = threading.Lock()
        self._retained: dict[object, float] = {}
        self._ring_seconds = ring_seconds
        self._default_ring = ring_seconds
        self._listeners: list[Callable[[], None]] = []

        self._muxer = CameraMuxer(
            source.name,
            lambda: source.info,
            fragment_seconds=fragment_seconds,
            on_fragment=self._on_fragment,
            on_close=self._on_close,
            on_repair=self._count_repair,
            on_unsupported=self._on_unsupported,
        )
        self._generation: int | None = None
        self._last_received = 0.0  # arrival stamp of the newest packet handled
        self._last_packet: MediaPacket | None = None

        self.fragments = 0
        self.unsupported: str | None = None  # a video codec MP4 cannot hold, while it lasts
        self._repairs = 0
        self._repair_kinds: dict[str, int] = {}
        self._log_at = 0.0
        self._logged_repairs = 0
        self._logged_drops = 0

    # ----- sinks (any thread) -------------------------------------------------------------------

    @property
    def info(self) -> StreamInfo | None:
        """Describe the camera's current connection."""
        return self._source.info

    @property
    def source_name(self) -> str:
        """Return the camera's display name (for logs, never the URL)."""
        return self._source.name

    def add_sink(self, sink: FragmentSink) -> None:
        """Start handing fragments to `sink` (the thread subscribes if it was idle).

        Never waits for a delivery in progress: safe on the event loop.
        """
        with self._sinks_lock:
            if sink not in self._sinks:
                self._sinks = (*self._sinks, sink)
        self.wake()

    def remove_sink(self, sink: FragmentSink) -> None:
        """Stop handing fragments to `sink` without waiting (it may get one more)."""
        with self._sinks_lock:
            self._sinks = tuple(other for other in self._sinks if other is not sink)
        self.release(sink)
        self.wake()

    def detach(self, sink: FragmentSink) -> None:
        """Remove `sink`, wait for a delivery in progress, then call `sink.detached()`.

        Blocking (a sink may be writing a file): run it in an executor.
        """
        self.remove_sink(sink)
        with self._deliver_lock:
            sink.detached()

    def wake(self) -> None:
        """Look at the sinks again now (one started or stopped wanting fragments)."""
        self._wake.set()

    def retain(self, owner: object, seconds: float) -> None:
        """Keep at least `seconds` of fragments in the ring for `owner`."""
        with self._ring_lock:
            self._retained[owner] = seconds
            self._ring_seconds = max([self._default_ring, *self._retained.values()])

    def release(self, owner: object) -> None:
        """Forget what `owner` asked the ring to keep."""
        with self._ring_lock:
            if self._retained.pop(owner, None) is not None:
                self._ring_seconds = max([self._default_ring, *self._retained.values()])

    def recent(self, since: float | None = None) -> list[Fragment]:
        """Return the ring's fragments from the newest keyframe fragment at or before `since`.

        Without `since`, from the oldest keyframe fragment kept. All are of one container.
        """
        with self._ring_lock:
            ring = list(self._ring)
        first = 0
        for index, fragment in enumerate(ring):
            if fragment.keyframe and (since is None or fragment.start <= since + 1e-6):
                first = index
                if since is None:
                    break
        while first < len(ring) and not ring[first].keyframe:
            first += 1
        return ring[first:]

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` (in the thread) when `unsupported` changes; returns a remover."""
        self._listeners.append(listener)

        def _remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return _remove

    @property
    def muxing(self) -> bool:
        """Return True while a container is being muxed."""
        return self._muxer.is_open

    # ----- counters (any thread) ----------------------------------------------------------------

    @property
    def timestamp_repairs(self) -> int:
        """Return how many camera timestamps were repaired, in all."""
        return self._repairs

    def stats(self) -> MuxerStats:
        """Return the muxer's counters."""
        with self._ring_lock:
            ring = (
                self._ring[-1].start + self._ring[-1].duration - self._ring[0].start
                if self._ring
                else 0.0
            )
        return MuxerStats(
            muxing=self.muxing,
            consumers=sum(1 for sink in self._sinks if sink.wants_fragments()),
            fragments=self.fragments,
            ring_seconds=round(ring, 3),
            timestamp_repairs=self._repairs,
            dropped_packets=self.dropped_packets,
            unsupported_codec=self.unsupported,
        )

    def repair_counts(self) -> dict[str, int]:
        """Return the timestamp repairs by kind (missing, non_monotonic, jump, pts_before_dts)."""
        return dict(self._repair_kinds)

    # ----- consumer hooks (the thread) -----------------------------------------------------------

    def _blocked(self) -> bool:
        return not any(sink.wants_fragments() for sink in self._sinks)

    def _on_blocked(self) -> None:
        self._end()

    def _on_subscribed(self) -> None:
        self._muxer.resync()

    def _on_queue_closed(self) -> None:
        """End the container: the subscription ended (stop, nobody wanting, hub stopped)."""
        self._end()

    def _on_drops(self, count: int) -> None:
        # A lost packet breaks the references of the frames after it: wait for a keyframe.
        self._muxer.resync()
        self._log_counters()

    def _on_exit(self) -> None:
        self._end()
        self._log_counters(force=True)

    def _on_idle(self) -> None:
        # Since the last packet, or the subscription when none came yet.
        idle = time.monotonic() - self._last_packet_at
        for sink in self._sinks:
            self._call(sink.idle, idle)

    def _on_waiting(self) -> None:
        self._on_idle()  # no subscription (the hub is being restarted): silence goes on

    def _handle_packet(self, packet: MediaPacket) -> None:
        if packet.generation == self._generation and (
            packet.received < self._last_received or packet is self._last_packet
        ):
            # Seen already: a new subscription starts with the hub's cached group of
            # pictures, which may overlap what was muxed before.
            return
        self._generation = packet.generation
        self._last_received = packet.received
        self._last_packet = packet
        try:
            self._muxer.handle(packet)
        except Exception:
            _LOGGER.exception("Muxer of %s failed; starting over at a keyframe", self.name)
            self._end()

    def _end(self) -> None:
        """End the muxer's container: its last fragment goes out, then `end_of_container`."""
        self._muxer.close()

    # ----- muxer callbacks (the thread) ----------------------------------------------------------

    def _on_fragment(self, fragment: Fragment) -> None:
        self.fragments += 1
        self._keep(fragment)
        with self._deliver_lock:
            for sink in self._sinks:
                self._call(sink.handle_fragment, fragment)

    def _on_close(self) -> None:
        with self._ring_lock:
            self._ring.clear()
        with self._deliver_lock:
            for sink in self._sinks:
                self._call(sink.end_of_container)

    def _keep(self, fragment: Fragment) -> None:
        with self._ring_lock:
            ring = self._ring
            if ring and ring[-1].init is not fragment.init:
                ring.clear()
            ring.append(fragment)
            horizon = fragment.start - self._ring_seconds
            # Drop whole leading GOPs while the next keyframe fragment is still old enough.
            while len(ring) > 1:
                keep_from = next((i for i in range(1, len(ring)) if ring[i].keyframe), None)
                if keep_from is None or ring[keep_from].start > horizon:
                    break
                for _ in range(keep_from):
                    ring.popleft()

    def _call(self, method: Callable[..., None], *args: object) -> None:
        try:
            method(*args)
        except Exception:
            _LOGGER.exception("Error in a fragment consumer of %s", self.name)

    def _on_unsupported(self, codec: str | None) -> None:
        self.unsupported = codec
        for listener in list(self._listeners):
            self._call(listener)

    def _count_repair(self, kind: str) -> None:
        self._repairs += 1
        self._repair_kinds[kind] = self._repair_kinds.get(kind, 0) + 1
        self._log_counters()

    def _log_counters(self, force: bool = False) -> None:
        """Log new repairs and drops, at most once a minute per camera."""
        now = time.monotonic()
        if not force and now < self._log_at:
            return
        repairs = self._repairs - self._logged_repairs
        drops = self._dropped - self._logged_drops
        if not repairs and not drops:
            return
        self._log_at = now + _LOG_INTERVAL_SECONDS
        self._logged_repairs = self._repairs
        self._logged_drops = self._dropped
        if repairs:
            _LOGGER.warning(
                "%s sends broken timestamps: repaired %d (%s); recording goes on",
                self._source.name,
                repairs,
                ", ".join(f"{kind}: {count}" for kind, count in sorted(self._repair_kinds.items())),
            )
        if drops:
            _LOGGER.warning(
                "Recorder of %s could not keep up and lost %d packet(s) (%d in total)",
                self._source.name,
                drops,
                self._dropped,
            )
