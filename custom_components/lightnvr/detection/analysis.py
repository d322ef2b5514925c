"""The analysis thread of a detection pipeline: newest frame → motion detector → event loop.

One `FrameAnalysis` is one run of an enabled `DetectionPipeline`: a `FrameSource` decoding in its
own thread, and the analysis thread (`lightnvr-detect-<camera>`) that takes the newest frame, runs
the numpy motion detector and posts the result to the event loop (`call_soon_threadsafe`). Frames
that arrive while it is busy are dropped, never queued: detection always looks at the newest
picture.

It lives apart from `pipeline.py` because nothing here touches the pipeline's state: the thread
only hands results over, and the pipeline decides on the event loop whether they still matter
(a result of an older run is ignored there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
import logging
import threading
import time
from typing import Any

from ..hub import StreamHub
from .frames import DetectionFrame, FrameSource
from .motion import MotionDetector, MotionOptions, MotionResult

_LOGGER = logging.getLogger(__name__)

# No frame for this long (camera lost): motion is ended through the normal off path.
STALE_FRAME_SECONDS = 3.0
STALE_KEYFRAMES_ONLY_SECONDS = 12.0
_WAIT_SECONDS = 0.5


class FrameAnalysis:
    """The decoder and the analysis thread of one run of a pipeline."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        hub: StreamHub,
        *,
        name: str,
        fps: float,
        width: int,
        keyframes_only: bool,
        motion_options: MotionOptions,
        detect_motion: bool,
        on_frame: Callable[[DetectionFrame, MotionResult | None], None],
        on_stale: Callable[[], None],
    ) -> None:
        """Prepare both threads; nothing runs before `start`.

        `on_frame` (every analysed frame, with its motion result unless `detect_motion` is off)
        and `on_stale` (no frame for a while) are called in the event loop.
        """
        self._loop = loop
        self._name = name
        self._fps = fps
        self._keyframes_only = keyframes_only
        self._motion_options = motion_options
        self._detect_motion = detect_motion
        self._on_frame = on_frame
        self._on_stale = on_stale
        self.frames = FrameSource(
            hub, name=name, fps=fps, width=width, keyframes_only=keyframes_only
        )
        self._stop = threading.Event()
        self.thread = threading.Thread(
            target=self._analyse, name=f"lightnvr-detect-{name}", daemon=True
        )

    def start(self) -> None:
        """Start decoding and analysing."""
        self.frames.start()
        self.thread.start()

    def signal_stop(self) -> None:
        """Ask the analysis thread to stop (without waiting for it)."""
        self._stop.set()

    def stop_and_join(self) -> None:
        """Stop the decoder and join both threads (blocking)."""
        self.frames.stop()
        self.thread.join(_WAIT_SECONDS * 4)
        if self.thread.is_alive():
            _LOGGER.warning("Detection thread %s did not stop in time", self.thread.name)

    def thread_ids(self) -> list[int]:
        """Return the native ids of the decoder and analysis threads (for CPU accounting)."""
        ids = [self.frames.stats().thread_id, self.thread.native_id]
        return [i for i in ids if i is not None]

    def _analyse(self) -> None:
        detector = MotionDetector(self._motion_options)
        use_motion = self._detect_motion
        frames = self.frames
        stop = self._stop
        seq = 0
        generation: int | None = None
        last_frame = time.monotonic()
        stale = False
        # Keyframes-only decoding delivers one frame per GOP, which can be several seconds.
        stale_after = max(
            STALE_FRAME_SECONDS,
            3.0 / self._fps,
            STALE_KEYFRAMES_ONLY_SECONDS if self._keyframes_only else 0.0,
        )
        while not stop.is_set():
            frame = frames.wait_frame(seq, _WAIT_SECONDS)
            if frame is None:
                if not stale and time.monotonic() - last_frame > stale_after:
                    stale = True
                    detector.reset()
                    self._post(self._on_stale)
                continue
            seq = frame.seq
            last_frame = time.monotonic()
            stale = False
            if frame.generation != generation:
                generation = frame.generation
                detector.reset()  # a new connection: the old background means nothing
            result: MotionResult | None = None
            if use_motion:
                try:
                    result = detector.process(frame.gray, frame.time)
                except Exception:
                    _LOGGER.exception("Motion detection failed for %s", self._name)
                    detector.reset()
            self._post(self._on_frame, frame, result)

    def _post(self, func: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is listening
            self._loop.call_soon_threadsafe(func, *args)
