"""Detection for one camera: frames → motion → (optionally only while motion) remote objects.

Threads and the loop:

- `FrameSource` decodes in its own thread and keeps only the newest small frame.
- The analysis thread (`lightnvr-detect-<camera>`, see `analysis.py`) takes the newest frame,
  runs the numpy motion detector and posts the result to the event loop (`call_soon_threadsafe`).
  Frames that arrive while it is busy are dropped, never queued: detection always looks at the
  newest picture.
- On the event loop: the motion state (with the off-delay), the listeners, and one task asking
  the remote object detector about the newest frame (JPEG encoding in the executor, the HTTP
  request with aiohttp; at most one request in flight, at most one per `object_interval`). What
  the answers mean (labels held after their last sighting, events rate-limited per label) is kept
  in `labels.py`.

The off-delay is handled here, not by the entity: motion "off" then means the same thing to the
binary sensor, to `only_while_motion` object detection and to event clips (whose post-roll
lasts until motion ends), and the entity simply mirrors `MotionUpdate`s.

Listeners are plain callables run in the event loop; each `async_add_*_listener` returns a
function that removes the listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
import functools
import logging
import time
from typing import Any

import aiohttp
from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.util import dt as dt_util

from ..hub import StreamHub
from ..source import redacted_repr
from . import Box
from .analysis import FrameAnalysis
from .frames import DEFAULT_FPS, DEFAULT_WIDTH, DetectionFrame, JpegImage
from .labels import LabelTracker
from .motion import MotionOptions, MotionResult
from .remote import ObjectDetection, RemoteDetector, RemoteOptions

_LOGGER = logging.getLogger(__name__)

# A frame older than this is not worth sending to the object detector.
_MAX_OBJECT_FRAME_AGE = 5.0


@dataclass(frozen=True, slots=True)
class DetectionOptions:
    """Per-camera detection settings (from the camera's options)."""

    # Frames
    fps: float = DEFAULT_FPS  # detection frames per second
    frame_width: int = DEFAULT_WIDTH  # width of the grayscale frames motion works on
    keyframes_only: bool = False  # decode keyframes only (big main stream, weak machine)
    # Motion
    motion: bool = True  # run built-in motion detection
    sensitivity: int = 50  # 1..100
    min_area: float = 0.005  # fraction of the watched area
    cooldown: float = 1.0  # detector hold after the last moving frame (debounce), seconds
    off_delay: float = 0.0  # extra seconds the motion state stays on after that
    exclude: tuple[Box, ...] = ()  # ignored rectangles, relative coordinates
    # Objects (remote); nothing is sent without `object_url`
    object_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ("person",)  # labels that count; empty means all
    min_confidence: float = 0.6
    only_while_motion: bool = True  # ask only while motion is on (ignored without motion)
    object_interval: float = 1.0  # at least this many seconds between two requests
    object_off_delay: float = 10.0  # a label stays detected this long after its last sighting
    event_interval: float = 30.0  # at most one ObjectEvent per label per this many seconds
    snapshot_width: int = 640  # JPEG sent to the server and kept with the event
    request_timeout: float = 10.0
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    server_down_after: float = 60.0  # failing this long raises the repair issue

    def __repr__(self) -> str:
        """Return a repr fit for logs: the server URL may hold a login or a key."""
        return redacted_repr(self)

    def motion_options(self) -> MotionOptions:
        """Return the motion detector's options."""
        return MotionOptions(
            sensitivity=self.sensitivity,
            min_area=self.min_area,
            cooldown=self.cooldown,
            exclude=self.exclude,
        )

    def remote_options(self) -> RemoteOptions | None:
        """Return the remote client's options, or None without a server URL."""
        if not self.object_url:
            return None
        return RemoteOptions(
            url=self.object_url,
            api_key=self.api_key,
            min_confidence=self.min_confidence,
            labels=self.labels,
            timeout=self.request_timeout,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            down_after=self.server_down_after,
        )


@dataclass(frozen=True, slots=True)
class MotionUpdate:
    """Motion turned on or off."""

    camera_id: str
    motion: bool
    time: datetime  # UTC, when the state changed
    fraction: float  # changed fraction of the frame that turned motion on (0.0 for off)
    box: Box | None  # changed region of that frame (None for off)
    frame: DetectionFrame | None  # the frame that turned motion on (`to_jpeg` for a snapshot)
    frame_time: float | None  # source timeline (pts seconds): that frame, or the newest for off


@dataclass(frozen=True, slots=True)
class LabelUpdate:
    """An object label became detected or not (drives one binary sensor per label)."""

    camera_id: str
    label: str
    detected: bool
    time: datetime
    confidence: float | None  # best of the latest sighting (None for off)
    box: Box | None


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """An object detection worth an event (rate-limited per label), with its snapshot."""

    camera_id: str
    label: str
    confidence: float
    box: Box
    time: datetime  # UTC, when the answer came
    frame_time: float  # source timeline (pts seconds) of the detection frame
    snapshot: JpegImage  # the very frame the server looked at
    detections: tuple[ObjectDetection, ...]  # every object of this label in that frame


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """Counters for diagnostics."""

    enabled: bool
    motion: bool
    frames_decoded: int
    frames_kept: int
    frames_dropped: int
    frames_analysed: int
    packets_skipped: int
    decode_errors: int
    keyframes_only: bool
    object_requests: int
    object_failures: int
    server_down: bool
    last_server_error: str | None


@dataclass(slots=True)
class _Workers:
    """The running parts of an enabled pipeline."""

    run: int
    analysis: FrameAnalysis
    detect_task: asyncio.Task[None] | None = None
    analysed: int = 0  # frames whose results reached the event loop


class DetectionPipeline:
    """Motion and object detection for one camera."""

    def __init__(
        self,
        hass: HomeAssistant,
        camera_id: str,
        hub: StreamHub,
        options: DetectionOptions,
        *,
        name: str | None = None,
        enabled: bool = True,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Prepare the pipeline; nothing runs before `async_start`."""
        self._hass = hass
        self.camera_id = camera_id
        self.name = name or camera_id
        self._hub = hub
        self.options = options
        self._enabled = enabled
        self._session = session
        self._started = False
        self._run = 0
        self._workers: _Workers | None = None
        self._remote: RemoteDetector | None = None

        self._motion = False
        self._motion_box: Box | None = None
        self._off_timer: asyncio.TimerHandle | None = None
        self._labels = LabelTracker(
            hass.loop,
            hold=options.object_off_delay,
            event_interval=options.event_interval,
            on_label=self._on_label,
            on_event=self._on_object_event,
        )
        self._newest: DetectionFrame | None = None
        self._frame_event = asyncio.Event()

        self._motion_listeners: list[Callable[[MotionUpdate], None]] = []
        self._label_listeners: list[Callable[[LabelUpdate], None]] = []
        self._object_listeners: list[Callable[[ObjectEvent], None]] = []
        self._state_listeners: list[Callable[[], None]] = []

    # ----- listeners (event loop) ---------------------------------------------------------------

    def async_add_motion_listener(self, listener: Callable[[MotionUpdate], None]) -> CALLBACK_TYPE:
        """Call `listener` when motion turns on or off."""
        return _add(self._motion_listeners, listener)

    def async_add_label_listener(self, listener: Callable[[LabelUpdate], None]) -> CALLBACK_TYPE:
        """Call `listener` when a label becomes detected or not."""
        return _add(self._label_listeners, listener)

    def async_add_object_listener(self, listener: Callable[[ObjectEvent], None]) -> CALLBACK_TYPE:
        """Call `listener` for object detections (at most one per label per `event_interval`)."""
        return _add(self._object_listeners, listener)

    def async_add_state_listener(self, listener: Callable[[], None]) -> CALLBACK_TYPE:
        """Call `listener` when `enabled` or the detection server's state changes."""
        return _add(self._state_listeners, listener)

    # ----- state --------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Return True while detection runs (the `switch.<camera>_detection` state)."""
        return self._enabled

    @property
    def motion(self) -> bool:
        """Return the motion state (including the off-delay)."""
        return self._motion

    @property
    def motion_box(self) -> Box | None:
        """Return the changed region of the latest moving frame."""
        return self._motion_box

    @property
    def detected_labels(self) -> dict[str, tuple[float, Box]]:
        """Return the labels currently detected with their latest confidence and box."""
        return self._labels.detected

    @property
    def server_down(self) -> bool:
        """Return True while the object detection server counts as down."""
        return self._remote is not None and self._remote.down

    @property
    def latest_frame(self) -> DetectionFrame | None:
        """Return the newest analysed frame."""
        return self._newest

    async def async_snapshot(self, width: int | None = None) -> JpegImage | None:
        """Return a JPEG of the newest detection frame (encoded in the executor)."""
        frame = self._newest
        if frame is None:
            return None
        return await self._hass.async_add_executor_job(
            frame.to_jpeg, width or self.options.snapshot_width
        )

    def stats(self) -> PipelineStats:
        """Return counters for diagnostics."""
        workers = self._workers
        frames = workers.analysis.frames.stats() if workers is not None else None
        remote = self._remote
        return PipelineStats(
            enabled=self._enabled,
            motion=self._motion,
            frames_decoded=frames.decoded if frames else 0,
            frames_kept=frames.kept if frames else 0,
            frames_dropped=frames.dropped if frames else 0,
            frames_analysed=workers.analysed if workers else 0,
            packets_skipped=frames.skipped if frames else 0,
            decode_errors=frames.decode_errors if frames else 0,
            keyframes_only=frames.keyframes_only if frames else False,
            object_requests=remote.requests if remote else 0,
            object_failures=remote.failures if remote else 0,
            server_down=remote.down if remote else False,
            last_server_error=remote.last_error if remote else None,
        )

    def worker_thread_ids(self) -> list[int]:
        """Return the native ids of the decoder and analysis threads (for CPU accounting)."""
        workers = self._workers
        if workers is None:
            return []
        return workers.analysis.thread_ids()

    # ----- lifecycle ----------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Start detection (if enabled)."""
        if self._started:
            return
        self._started = True
        remote_options = self.options.remote_options()
        if remote_options is not None:
            session = self._session or async_get_clientsession(self._hass)
            self._remote = RemoteDetector(
                session, remote_options, hass=self._hass, on_status=self._on_server_status
            )
        if self._enabled:
            self._start_workers()

    async def async_stop(self) -> None:
        """Stop everything and join the threads (off the event loop). Listeners stay."""
        if not self._started:
            return
        self._started = False
        await self._async_stop_workers()
        self._cancel_timers()
        # Silently: listeners belong to entities that are going away with us.
        self._motion = False
        self._labels.forget()
        if self._remote is not None:
            self._remote.async_shutdown()
            self._remote = None

    async def async_set_enabled(self, enabled: bool) -> None:
        """Turn detection on or off (the detection switch); off stops decoding altogether."""
        if enabled == self._enabled:
            return
        self._enabled = enabled
        if self._started:
            if enabled:
                self._start_workers()
            else:
                await self._async_stop_workers()
                self._clear_states()
        self._notify(self._state_listeners)

    def _start_workers(self) -> None:
        self._run += 1
        run = self._run
        analysis = FrameAnalysis(
            self._hass.loop,
            self._hub,
            name=self.name,
            fps=self.options.fps,
            width=self.options.frame_width,
            keyframes_only=self.options.keyframes_only,
            motion_options=self.options.motion_options(),
            detect_motion=self.options.motion,
            on_frame=functools.partial(self._on_frame, run),
            on_stale=functools.partial(self._on_stale, run),
        )
        workers = _Workers(run=run, analysis=analysis)
        self._workers = workers
        self._newest = None
        analysis.start()
        if self._remote is not None:
            workers.detect_task = self._hass.async_create_background_task(
                self._object_loop(run), f"lightnvr detection objects {self.name}"
            )

    async def _async_stop_workers(self) -> None:
        workers, self._workers = self._workers, None
        if workers is None:
            return
        self._run += 1  # results still in flight from the old run are ignored
        workers.analysis.signal_stop()
        if workers.detect_task is not None:
            workers.detect_task.cancel()
            # gather: the task's own CancelledError is collected, ours (if any) still propagates.
            await asyncio.gather(workers.detect_task, return_exceptions=True)
        await self._hass.async_add_executor_job(workers.analysis.stop_and_join)

    def _cancel_timers(self) -> None:
        if self._off_timer is not None:
            self._off_timer.cancel()
            self._off_timer = None
        self._labels.cancel_timers()

    def _clear_states(self) -> None:
        """Turn off whatever was on (detection was switched off)."""
        self._cancel_timers()
        if self._motion:
            self._set_motion_off()
        self._labels.all_off()

    # ----- event loop: motion -------------------------------------------------------------------

    def _on_frame(self, run: int, frame: DetectionFrame, result: MotionResult | None) -> None:
        workers = self._workers
        if workers is None or run != self._run or not self._enabled:
            return
        workers.analysed += 1
        self._newest = frame
        self._frame_event.set()
        if result is None:
            return
        if result.motion:
            if result.box is not None:
                self._motion_box = result.box
            if self._off_timer is not None:
                self._off_timer.cancel()
                self._off_timer = None
            if not self._motion:
                self._motion = True
                _LOGGER.debug("%s: motion (%.1f %% changed)", self.name, 100 * result.fraction)
                update = MotionUpdate(
                    self.camera_id,
                    True,
                    dt_util.utcnow(),
                    result.fraction,
                    result.box,
                    frame,
                    frame.time,
                )
                self._notify(self._motion_listeners, update)
        elif self._motion:
            self._schedule_motion_off()

    def _on_stale(self, run: int) -> None:
        if run == self._run and self._motion:
            self._schedule_motion_off()

    def _schedule_motion_off(self) -> None:
        if self._off_timer is not None:
            return
        if self.options.off_delay <= 0:
            self._set_motion_off()
            return
        self._off_timer = self._hass.loop.call_later(self.options.off_delay, self._off_delay_done)

    def _off_delay_done(self) -> None:
        self._off_timer = None
        if self._motion:
            self._set_motion_off()

    def _set_motion_off(self) -> None:
        self._motion = False
        _LOGGER.debug("%s: motion ended", self.name)
        newest = self._newest
        update = MotionUpdate(
            self.camera_id,
            False,
            dt_util.utcnow(),
            0.0,
            None,
            None,
            newest.time if newest is not None else None,
        )
        self._notify(self._motion_listeners, update)
        self._frame_event.set()  # let the object task notice

    # ----- event loop: objects ------------------------------------------------------------------

    async def _object_loop(self, run: int) -> None:
        """Ask the server about the newest frame, at most one request at a time."""
        remote = self._remote
        assert remote is not None
        last_request = float("-inf")
        while run == self._run:
            await self._frame_event.wait()
            self._frame_event.clear()
            if not self._wants_objects():
                continue
            wait = max(last_request + self.options.object_interval - time.monotonic(), 0.0)
            wait = max(wait, remote.retry_in)
            if wait > 0:
                await asyncio.sleep(wait)  # frames keep coming meanwhile; we take the newest
                if run != self._run or not self._wants_objects():
                    continue
            frame = self._newest
            if frame is None or time.monotonic() - frame.received > _MAX_OBJECT_FRAME_AGE:
                continue
            last_request = time.monotonic()
            try:
                jpeg = await self._hass.async_add_executor_job(
                    frame.to_jpeg, self.options.snapshot_width
                )
            except Exception:
                _LOGGER.exception("Cannot encode a detection frame of %s", self.name)
                continue
            detections = await remote.async_detect(jpeg.data, jpeg.width, jpeg.height)
            if detections is not None and run == self._run:
                self._labels.on_detections(frame, jpeg, detections)

    def _wants_objects(self) -> bool:
        if not self._enabled:
            return False
        return self._motion or not (self.options.only_while_motion and self.options.motion)

    def _on_label(self, label: str, when: datetime, best: ObjectDetection | None) -> None:
        if best is None:
            update = LabelUpdate(self.camera_id, label, False, when, None, None)
        else:
            _LOGGER.debug("%s: %s (%.2f)", self.name, label, best.confidence)
            update = LabelUpdate(self.camera_id, label, True, when, best.confidence, best.box)
        self._notify(self._label_listeners, update)

    def _on_object_event(
        self,
        label: str,
        found: tuple[ObjectDetection, ...],
        when: datetime,
        frame: DetectionFrame,
        jpeg: JpegImage,
    ) -> None:
        best = found[0]
        event = ObjectEvent(
            camera_id=self.camera_id,
            label=label,
            confidence=best.confidence,
            box=best.box,
            time=when,
            frame_time=frame.time,
            snapshot=jpeg,
            detections=found,
        )
        self._notify(self._object_listeners, event)

    def _on_server_status(self, down: bool, detail: str | None) -> None:
        self._notify(self._state_listeners)

    # ----- helpers ------------------------------------------------------------------------------

    def _notify(self, listeners: list[Callable[..., None]], *args: Any) -> None:
        for listener in list(listeners):
            try:
                listener(*args)
            except Exception:
                _LOGGER.exception("Error in a detection listener of %s", self.name)


def _add[T](listeners: list[T], listener: T) -> CALLBACK_TYPE:
    listeners.append(listener)

    def remove() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return remove
