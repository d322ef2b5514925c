"""Live HLS's share of a camera's fragments: a sink of the camera's one muxer.

The camera is muxed once (`media.fragments.CameraFragments`) for the recorder, event clips
and live HLS alike. While someone watches, a `LiveSink` is attached to it and hands every
fragment, as it completes in the muxer's thread, to the event loop, where the camera's live
window (`live.LiveCamera`) lists it. Nothing here copies or retimes bytes: a fragment is moved
onto the wall clock when a player first asks for it (`live_io`, in the executor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib

from ..media.muxer import Fragment

type FragmentHandler = Callable[["LiveSink", Fragment], None]


class LiveSink:
    """Hands a camera's fragments to the event loop while live HLS is wanted."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_fragment: FragmentHandler) -> None:
        """Attach nothing yet; `on_fragment(sink, fragment)` runs on `loop`."""
        self._loop = loop
        self._on_fragment = on_fragment
        self.active = True
        self.fragments = 0

    def wants_fragments(self) -> bool:
        """Return True until live HLS of the camera stops."""
        return self.active

    def handle_fragment(self, fragment: Fragment) -> None:
        """Hand a fragment to the loop (the muxer's thread: never wait here)."""
        if not self.active:
            return
        self.fragments += 1
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._on_fragment, self, fragment)

    def end_of_container(self) -> None:
        """Do nothing: the next fragment's new init section marks the break itself."""

    def idle(self, seconds: float) -> None:
        """Do nothing: players see no new parts, and the live window's timers decide."""

    def detached(self) -> None:
        """Stop handing fragments over."""
        self.active = False
