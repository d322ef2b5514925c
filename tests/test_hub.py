"""StreamHub against a real RTSP camera: fan-out, keyframe start, back-off, clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from fractions import Fraction
import threading

import pytest

from custom_components.lightnvr.hub import HubState, MediaPacket, PacketQueue, StreamHub
from custom_components.lightnvr.source import CameraSource

from .conftest import CAMERA_PASSWORD, CAMERA_USER
from .infra.rtsp import RtspServer


@pytest.fixture
async def hub(rtsp_camera: RtspServer) -> AsyncIterator[StreamHub]:
    """A started hub reading the test camera through its login-protected port."""
    source = CameraSource(
        rtsp_camera.auth_url("cam", credentials=False), CAMERA_USER, CAMERA_PASSWORD
    )
    hub = StreamHub("test", source, asyncio.get_running_loop(), backoff_initial=0.2)
    hub.start()
    yield hub
    await hub.async_stop()


async def _wait(predicate, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_subscribers_start_on_a_keyframe_and_see_rising_timestamps(hub: StreamHub) -> None:
    """Every subscriber's first packet is a keyframe; then every packet in order."""
    await _wait(lambda: hub.latest_keyframe() is not None)
    queue = hub.subscribe(64)
    first = await queue.get()
    assert first.kind == "video"
    assert first.keyframe
    assert first.data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))  # Annex B
    previous = first.dts
    for _ in range(60):  # across the camera's next keyframes
        packet = await queue.get()
        assert packet.dts is not None
        assert previous is not None
        assert packet.dts > previous
        previous = packet.dts
    hub.unsubscribe(queue)
    assert queue.closed


async def test_stats_describe_the_stream(hub: StreamHub) -> None:
    """fps, bitrate, packet count and last packet time are readable from the loop."""
    await _wait(lambda: hub.stats().packets > 60)
    stats = hub.stats()
    assert stats.state is HubState.STREAMING
    assert 20 <= stats.fps <= 30
    assert 100_000 < stats.bitrate < 10_000_000
    assert stats.last_packet_time is not None
    assert stats.reconnects == 0
    info = hub.info
    assert info is not None
    assert (info.video_codec, info.width, info.height) == ("h264", 640, 360)


async def test_reconnects_after_the_camera_returns(hub: StreamHub, rtsp_camera: RtspServer) -> None:
    """Camera gone: reconnecting with back-off; camera back: streaming again by itself."""
    states: list[HubState] = []
    remove = hub.add_listener(lambda: states.append(hub.state))
    await _wait(lambda: hub.state is HubState.STREAMING)
    rtsp_camera.stop()
    await _wait(lambda: hub.state is HubState.RECONNECTING)
    assert not hub.available
    await asyncio.sleep(1.0)  # a few failed attempts with growing back-off
    failed_attempts = hub.stats().reconnects
    assert failed_attempts >= 2
    assert hub.last_error == "cannot_connect"
    rtsp_camera.start()
    await _wait(lambda: hub.state is HubState.STREAMING, timeout=30)
    assert hub.available
    assert hub.last_error is None
    assert HubState.RECONNECTING in states
    assert states[-1] is HubState.STREAMING
    remove()


async def test_stop_closes_subscribers_and_joins_thread(hub: StreamHub) -> None:
    """Stopping ends the reader thread and wakes every waiting consumer."""
    await _wait(lambda: hub.state is HubState.STREAMING)
    queue = hub.subscribe(8, from_keyframe=False)
    waiter = asyncio.create_task(_drain(queue))
    await hub.async_stop()
    with pytest.raises(EOFError):
        await waiter
    assert hub.state is HubState.STOPPED
    assert not [t for t in threading.enumerate() if t.name == "lightnvr-hub-test"]


async def _drain(queue: PacketQueue) -> None:
    while True:
        await queue.get()


async def test_wrong_password_is_reported(rtsp_camera: RtspServer) -> None:
    """A hub with a bad login keeps retrying and says why."""
    source = CameraSource(rtsp_camera.auth_url("cam", credentials=False), CAMERA_USER, "nope")
    hub = StreamHub("bad", source, asyncio.get_running_loop(), backoff_initial=0.2)
    hub.start()
    try:
        await _wait(lambda: hub.last_error == "invalid_auth")
        assert not hub.available
    finally:
        await hub.async_stop()


def _packet(n: int) -> MediaPacket:
    return MediaPacket("video", bytes([n]), n, n, Fraction(1, 90000), n == 0, 0.0)


async def test_packet_queue_drops_oldest_and_counts() -> None:
    """A full queue never blocks the producer: the oldest packet goes, the drop is counted."""
    queue = PacketQueue(asyncio.get_running_loop(), maxlen=3)
    for n in range(5):
        queue.put(_packet(n))
    assert queue.dropped == 2
    assert [(await queue.get()).pts for _ in range(3)] == [2, 3, 4]


async def test_packet_queue_wakes_consumer_from_another_thread() -> None:
    """A consumer waiting on the loop is woken by a put from the reader thread."""
    queue = PacketQueue(asyncio.get_running_loop(), maxlen=3)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    thread = threading.Thread(target=queue.put, args=(_packet(7),))
    thread.start()
    thread.join()
    assert (await asyncio.wait_for(getter, 5)).pts == 7
    queue.close()
    queue.put(_packet(8))  # ignored once closed
    with pytest.raises(EOFError):
        await queue.get()


async def test_thread_subscriber_gets_keyframe_first(hub: StreamHub) -> None:
    """A worker-thread consumer blocks on `get`, starts on a keyframe, and ends on stop."""
    await _wait(lambda: hub.latest_keyframe() is not None)
    queue = hub.subscribe_thread(64)

    def read_some() -> list[MediaPacket]:
        packets: list[MediaPacket] = []
        while len(packets) < 30:
            packet = queue.get(timeout=5)
            assert packet is not None
            packets.append(packet)
        return packets

    packets = await asyncio.get_running_loop().run_in_executor(None, read_some)
    assert packets[0].keyframe
    assert all(p.generation == 1 for p in packets)
    await hub.async_stop()
    while len(queue):  # what was queued before the stop is still delivered
        queue.get(timeout=1)
    with pytest.raises(EOFError):
        queue.get(timeout=1)


async def test_silent_camera_times_out_and_stops_promptly(socket_enabled: None) -> None:
    """A camera that accepts the connection but never answers: timeout, retry, clean stop."""
    import socket as socketlib

    silent = socketlib.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing is ever said
    port = silent.getsockname()[1]
    hub = StreamHub(
        "silent",
        CameraSource(f"rtsp://127.0.0.1:{port}/live"),
        asyncio.get_running_loop(),
        read_timeout=1.0,
        backoff_initial=0.2,
    )
    try:
        hub.start()
        await _wait(lambda: hub.last_error == "cannot_connect", timeout=20)
        assert hub.state is HubState.RECONNECTING
        await asyncio.wait_for(hub.async_stop(), timeout=10)
        assert not [t for t in threading.enumerate() if t.name == "lightnvr-hub-silent"]
    finally:
        silent.close()
