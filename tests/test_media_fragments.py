"""CameraFragments: one muxer per camera, run only while a sink wants it, a ring, safe sinks.

Fed with the packets of a real 12 s H.264 + AAC clip through real hub queues (`ClipFeed`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
import threading
import time

import pytest

from custom_components.lightnvr.hub import MediaPacket, StreamInfo
from custom_components.lightnvr.media.fragments import CameraFragments
from custom_components.lightnvr.media.muxer import Fragment

from .test_recorder_segmenter import ClipFeed, clip_packets, make_av_clip, wait_until

type Clip = tuple[StreamInfo, list[MediaPacket]]


class Sink:
    """A sink whose wish can be switched, which records what it is handed."""

    def __init__(self, *, wants: bool = True) -> None:
        self.wants = wants
        self.fragments: list[Fragment] = []
        self.ends = 0
        self.idle_calls = 0
        self.detached_calls = 0

    def wants_fragments(self) -> bool:
        return self.wants

    def handle_fragment(self, fragment: Fragment) -> None:
        self.fragments.append(fragment)

    def end_of_container(self) -> None:
        self.ends += 1

    def idle(self, seconds: float) -> None:
        self.idle_calls += 1

    def detached(self) -> None:
        self.detached_calls += 1


class FailingSink(Sink):
    """A sink that raises on every fragment (its error must not reach the others)."""

    def handle_fragment(self, fragment: Fragment) -> None:
        raise RuntimeError("broken consumer")


class BlockingSink(Sink):
    """A sink that holds the muxer thread inside a delivery until released."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = threading.Event()
        self.release = threading.Event()

    def handle_fragment(self, fragment: Fragment) -> None:
        super().handle_fragment(fragment)
        self.inside.set()
        assert self.release.wait(30)


@pytest.fixture
def clip(media_cache: Path) -> Clip:
    """The packets a hub would publish for a 12 s H.264 + AAC clip (GOP 1 s)."""
    return clip_packets(make_av_clip(media_cache))


async def test_muxes_only_while_a_sink_wants_it(clip: Clip) -> None:
    """No sink wanting: no subscription; one wants: muxed; it stops wanting: the container ends."""
    info, packets = clip
    feed = ClipFeed(info)
    fragments = CameraFragments("cam", feed)
    sink = Sink(wants=False)
    fragments.add_sink(sink)
    fragments.start()
    try:
        await asyncio.sleep(0.6)  # a few polls of the thread
        assert feed.subscriptions == 0  # nobody wants fragments: the camera is not read
        sink.wants = True
        fragments.wake()
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets[: len(packets) // 2])
        await wait_until(lambda: len(sink.fragments) >= 6)
        assert fragments.muxing
        sink.wants = False
        fragments.wake()
        await wait_until(lambda: sink.ends == 1)  # the last fragment, then the end
        assert not fragments.muxing
        await wait_until(lambda: not feed.queues)  # unsubscribed from the hub
    finally:
        fragments.stop()
    assert sink.fragments[0].keyframe
    assert all(f.init is sink.fragments[0].init for f in sink.fragments)  # one container
    starts = [f.start for f in sink.fragments]
    assert starts == sorted(starts)
    assert all(f.duration <= 0.5 + 0.04 + 1e-6 for f in sink.fragments)  # 0.5 s (+1 frame)


async def test_every_sink_gets_the_same_fragments_once_and_errors_stay_local(
    clip: Clip,
) -> None:
    """Two sinks share one mux (the same objects); a failing sink does not stop the others."""
    info, packets = clip
    feed = ClipFeed(info)
    fragments = CameraFragments("cam", feed)
    first, second, failing = Sink(), Sink(), FailingSink()
    for sink in (first, failing, second):
        fragments.add_sink(sink)
    fragments.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets)
        feed.close()  # the camera's end: the last fragment is muxed
        await wait_until(lambda: first.ends >= 1)
    finally:
        fragments.stop()
    assert first.fragments
    assert [id(f) for f in first.fragments] == [id(f) for f in second.fragments]
    assert fragments.stats().fragments == len(first.fragments)  # muxed once for all
    video_seconds = sum(f.duration for f in first.fragments)
    assert video_seconds == pytest.approx(12.0, abs=0.1)
    assert feed.subscriptions >= 1
    assert fragments.stats().dropped_packets == 0


async def test_ring_keeps_whole_gops_back_to_a_keyframe(
    clip: Clip,
) -> None:
    """The ring holds at least `retain` seconds, starting on a keyframe fragment."""
    info, packets = clip
    feed = ClipFeed(info)
    fragments = CameraFragments("cam", feed, ring_seconds=2.0)
    sink = Sink()
    fragments.add_sink(sink)
    fragments.retain("clips", 4.0)
    fragments.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets)
        await wait_until(lambda: len(sink.fragments) >= 20)
        ring = fragments.recent()
        newest = sink.fragments[-1]
        assert ring[0].keyframe
        assert ring[-1] is newest
        kept = newest.start - ring[0].start
        assert 4.0 <= kept <= 4.0 + 1.0 + 1e-6  # at most one GOP (1 s) more than asked
        since = newest.start - 2.2
        from_since = fragments.recent(since=since)
        assert from_since[0].keyframe
        assert from_since[0].start <= since < from_since[0].start + 1.0 + 1e-6
        assert fragments.stats().ring_seconds == pytest.approx(
            newest.start + newest.duration - ring[0].start, abs=0.001
        )
    finally:
        fragments.stop()
    assert not fragments.recent()  # the container ended: a ring never spans two


async def test_adding_a_sink_never_waits_for_a_delivery_detach_does(
    clip: Clip,
) -> None:
    """`add_sink` returns at once while a sink writes; `detach` waits for it, then `detached`."""
    info, packets = clip
    feed = ClipFeed(info)
    fragments = CameraFragments("cam", feed)
    blocking = BlockingSink()
    fragments.add_sink(blocking)
    fragments.start()
    try:
        await wait_until(lambda: feed.subscriptions == 1)
        feed.put(packets)
        await wait_until(blocking.inside.is_set)
        started = time.monotonic()
        late = Sink()
        fragments.add_sink(late)  # what live HLS does on the event loop
        assert time.monotonic() - started < 0.5
        detached = threading.Event()
        detacher = threading.Thread(
            target=lambda: (fragments.detach(blocking), detached.set()), daemon=True
        )
        detacher.start()
        await asyncio.sleep(0.3)
        assert not detached.is_set()  # the delivery in progress is waited for
        assert blocking.detached_calls == 0
        blocking.release.set()
        assert detached.wait(10)
        assert blocking.detached_calls == 1
        delivered = len(blocking.fragments)
        await wait_until(lambda: len(late.fragments) >= 3)
        assert len(blocking.fragments) == delivered  # nothing after it was detached
    finally:
        blocking.release.set()
        fragments.stop()
