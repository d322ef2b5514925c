"""The consumer skeleton with real parts: a GStreamer RTSP camera → StreamHub → PacketConsumer.

The consumers under test are small subclasses recording what the skeleton hands them; the
source is a real hub reading a real RTSP camera, whose queues and drops are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
import threading
import time
from zoneinfo import ZoneInfo

import pytest

from custom_components.lightnvr.hub import MediaPacket, StreamHub
from custom_components.lightnvr.media.consumer import RESUBSCRIBE_SECONDS, PacketConsumer
from custom_components.lightnvr.recorder.segmenter import Segmenter
from custom_components.lightnvr.recorder.storage import StorageLayout
from custom_components.lightnvr.source import CameraSource

from .infra.rtsp import RtspServer
from .test_recorder_segmenter import wait_until


class Recording(PacketConsumer):
    """Records what the skeleton does: packets, subscriptions, closes, drops; can be slowed."""

    def __init__(
        self,
        hub: StreamHub,
        *,
        batch_seconds: float | None = 0.25,
        drain_on_stop: bool = True,
        queue_packets: int = 1024,
        from_keyframe: bool = True,
    ) -> None:
        super().__init__(
            hub,
            label=f"Test consumer of {hub.name}",
            thread_name="lightnvr-test-consumer",
            queue_packets=queue_packets,
            batch_seconds=batch_seconds,
            drain_on_stop=drain_on_stop,
            from_keyframe=from_keyframe,
            join_seconds=10.0,
        )
        self.packets: list[MediaPacket] = []
        self.closed_at: list[float] = []
        self.subscribed_at: list[float] = []
        self.drop_reports: list[int] = []
        self.exited = threading.Event()
        self.release = threading.Event()
        self.release.set()  # cleared: the handler blocks (a slow consumer)

    def _handle_packet(self, packet: MediaPacket) -> None:
        self.packets.append(packet)
        self.release.wait(10)

    def _on_subscribed(self) -> None:
        self.subscribed_at.append(time.monotonic())

    def _on_queue_closed(self) -> None:
        self.closed_at.append(time.monotonic())

    def _on_drops(self, count: int) -> None:
        self.drop_reports.append(count)

    def _on_exit(self) -> None:
        self.exited.set()


@pytest.fixture
async def camera_hub(rtsp_camera: RtspServer) -> AsyncIterator[StreamHub]:
    """A started hub reading the test camera (640x360 H.264, 25 fps, keyframe each second)."""
    hub = StreamHub(
        "Front door",
        CameraSource(rtsp_camera.url("cam")),
        asyncio.get_running_loop(),
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    hub.start()
    yield hub
    await hub.async_stop()


async def _in_executor(func: object, *args: object) -> float:
    """Run a blocking call off the loop; return how long it took."""
    assert callable(func)
    started = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, func, *args)
    return time.monotonic() - started


@pytest.mark.parametrize("batch_seconds", [0.25, None], ids=["batches", "one-by-one"])
async def test_gets_packets_and_stops_promptly_while_idle(
    camera_hub: StreamHub, rtsp_camera: RtspServer, batch_seconds: float | None
) -> None:
    """Packets arrive from the hub's cached keyframe on; an idle consumer stops at once."""
    await wait_until(lambda: camera_hub.latest_keyframe() is not None)
    consumer = Recording(camera_hub, batch_seconds=batch_seconds)
    consumer.start()
    try:
        await wait_until(lambda: len(consumer.packets) >= 50)
        assert consumer.packets[0].keyframe  # the subscription starts on the cached GOP
        assert consumer.subscriptions == 1
        assert consumer.dropped_packets == 0
        # The camera goes away: the consumer idles (batch waits or a blocking get()).
        await _in_executor(rtsp_camera.stop)
        await asyncio.sleep(1.0)
        count = len(consumer.packets)
        await asyncio.sleep(0.6)
        assert len(consumer.packets) == count  # idle indeed
    finally:
        took = await _in_executor(consumer.stop)
    assert took < 0.5
    assert consumer.exited.is_set()
    assert not consumer.alive
    assert camera_hub.stats().subscribers == 0


async def test_resubscribes_after_the_hub_restarts(
    camera_hub: StreamHub, rtsp_camera: RtspServer
) -> None:
    """A camera reconnect keeps the subscription; a hub stop/start renews it after the delay."""
    consumer = Recording(camera_hub)
    consumer.start()
    try:
        await wait_until(lambda: len(consumer.packets) >= 25)
        first_generation = consumer.packets[-1].generation
        # The camera restarts: the hub reconnects into the same queues (a new generation).
        await _in_executor(rtsp_camera.restart)
        await wait_until(lambda: consumer.packets[-1].generation != first_generation, timeout=60)
        assert consumer.subscriptions == 1
        assert consumer.closed_at == []

        # The hub itself stops (closing every queue) and starts again.
        await camera_hub.async_stop()
        await wait_until(lambda: len(consumer.closed_at) == 1)
        assert consumer.alive
        camera_hub.start()
        await wait_until(lambda: consumer.subscriptions == 2, timeout=10)
        waited = consumer.subscribed_at[1] - consumer.closed_at[0]
        assert RESUBSCRIBE_SECONDS - 0.05 <= waited < RESUBSCRIBE_SECONDS + 1.0
        count = len(consumer.packets)
        await wait_until(lambda: len(consumer.packets) >= count + 25, timeout=30)
        assert camera_hub.stats().subscribers == 1
    finally:
        await _in_executor(consumer.stop)
    assert consumer.closed_at[-1] >= consumer.subscribed_at[-1]  # the last one closed by stop


async def test_counts_drops_when_slow(camera_hub: StreamHub) -> None:
    """A consumer stuck on one packet loses the oldest ones; every loss is counted and told."""
    consumer = Recording(camera_hub, queue_packets=8, from_keyframe=False)
    consumer.release.clear()
    consumer.start()
    try:
        await wait_until(lambda: len(consumer.packets) == 1)
        await asyncio.sleep(1.5)  # ~37 packets at 25 fps into a queue of 8
        assert consumer.dropped_packets >= 20  # read while stuck: counted from the live queue
        consumer.release.set()
        await wait_until(lambda: sum(consumer.drop_reports) >= 20)
        told = sum(consumer.drop_reports)
        assert consumer.dropped_packets >= told
    finally:
        consumer.release.set()
        await _in_executor(consumer.stop)
    # Everything the hub's queue dropped is counted, once.
    assert consumer.dropped_packets == camera_hub.stats().dropped


async def test_stop_never_waits_on_a_lock_the_loop_takes(
    camera_hub: StreamHub, tmp_path: Path
) -> None:
    """The event loop's calls (switch, pause) never wait for the thread, nor stop for them."""
    segmenter = Segmenter("cam1", camera_hub, StorageLayout(tmp_path, ZoneInfo("UTC")))
    segmenter.start()
    lags: list[float] = []
    try:
        await wait_until(lambda: segmenter.state().recording)

        def probe_lock() -> None:
            # The lock is held only to swap the queue: taking it is immediate whatever the
            # thread does (batch waits, waiting to resubscribe while paused).
            started = time.monotonic()
            assert segmenter._fragments._queue_lock.acquire(timeout=1.0)
            segmenter._fragments._queue_lock.release()
            lags.append(time.monotonic() - started)

        for _ in range(10):  # while recording: the thread sleeps between batches
            probe_lock()
            await asyncio.sleep(0.05)
        segmenter.pause("test")  # unsubscribes: the thread now waits while blocked
        for _ in range(10):
            probe_lock()
            await asyncio.sleep(0.05)
        segmenter.resume("test")

        # stop() in the executor while the loop keeps switching and pausing the recorder.
        stopping = asyncio.ensure_future(_in_executor(segmenter.stop))
        while not stopping.done():
            started = time.monotonic()
            segmenter.set_enabled(False)
            segmenter.set_enabled(True)
            segmenter.pause("test")
            segmenter.resume("test")
            probe_lock()
            lags.append(time.monotonic() - started)
            await asyncio.sleep(0.01)
        took = await stopping
    finally:
        await _in_executor(segmenter.stop)
    assert took < 5.0
    assert max(lags) < 0.1
    assert not segmenter.alive
