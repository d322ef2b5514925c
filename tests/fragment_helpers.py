"""Live HLS's share of a camera's muxer, run on a test packet source until it ends."""

from __future__ import annotations

import threading

from custom_components.lightnvr.hls.live_types import LiveChunk, LiveSource, chunk_from_fragment
from custom_components.lightnvr.media.consumer import PacketSource
from custom_components.lightnvr.media.fragments import CameraFragments
from custom_components.lightnvr.media.muxer import Fragment


class CollectingSink:
    """A fragment sink that keeps every fragment, and notes the end of the first container."""

    def __init__(self) -> None:
        self.fragments: list[Fragment] = []
        self.ended = threading.Event()

    def wants_fragments(self) -> bool:
        return True

    def handle_fragment(self, fragment: Fragment) -> None:
        self.fragments.append(fragment)

    def end_of_container(self) -> None:
        self.ended.set()

    def idle(self, seconds: float) -> None:
        pass

    def detached(self) -> None:
        pass


def start_collecting(name: str, source: PacketSource) -> tuple[CameraFragments, CollectingSink]:
    """Start a camera muxer over `source` with a collecting sink attached."""
    fragments = CameraFragments(name, source)
    sink = CollectingSink()
    fragments.add_sink(sink)
    fragments.start()
    return fragments, sink


def live_chunks(
    fragments: CameraFragments, sink: CollectingSink, timeout: float
) -> list[LiveChunk]:
    """Wait for the source's end; return its fragments as live HLS serves them (wall clock)."""
    try:
        assert sink.ended.wait(timeout), "the muxer did not reach the end of the source"
    finally:
        fragments.stop()
    return [
        chunk_from_fragment(fragment, LiveSource.MUXER, on_wall_clock=True)
        for fragment in sink.fragments
    ]
