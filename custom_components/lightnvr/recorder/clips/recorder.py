"""Event clips: the clip sink of one camera (pre-roll from the muxer's ring, never the camera).

Per camera, a `ClipRecorder` is a `FragmentSink` of the camera's one muxer
(`media.fragments.CameraFragments`, shared with the recorder and live HLS): a clip never
subscribes to the camera nor muxes a packet itself. It asks the muxer's **ring** to keep
`buffer_seconds` of fragments; a trigger opens a clip from the ring (the newest keyframe
fragment that arrived at least `pre_roll` seconds before the trigger), and the clip then takes
the live fragments until the detection is released plus `post_roll` seconds, never longer than
`max_length` seconds in all. A clip file is the muxer's init section and its fragments moved to
start at 0 (`recorder.segment_writer.SegmentWriter`, as for segments), written in the muxer's
thread as each fragment completes: a crash loses at most the fragment being built. Video is
never decoded; audio is AAC (the muxer transcodes other codecs as it arrives).

- **Whole fragments**: a fragment is cut at every keyframe and lasts at most
  `fragment_seconds` (0.5 s). A clip ends at the fragment boundary nearest to its end (release
  plus `post_roll`, within half a fragment). Decisions use the fragments' own times (the arrival
  of their keyframe, `Fragment.arrived`), never the moment they are delivered.
- **One event clip at a time per camera**: a trigger while a clip runs (or is in its
  post-roll) extends that clip and adds its label; the clip ends once every label that
  triggered it was released (plus post-roll), at `max_length`, when the camera goes away
  (no packets for `idle_seconds`, a new connection, the hub stopped) or when the recorder
  stops. Labels still held then are forgotten: the next trigger starts a new clip, so a
  detector stuck "on" cannot fill the disk.
- **Clips on demand** (`lightnvr.save_clip`) are independent of event clips: `duration`
  seconds in all, `pre_roll` of them before the call (bounded by `buffer_seconds`, what the ring
  keeps for clips); like every clip they start on a keyframe, so they may be up to one GOP
  longer.
- `max_length` is measured on the media timeline: a file is never longer than that (a fragment
  that would pass it is left out).
- A clip never starts with fragments from before the camera went silent (`idle_seconds`).
- The muxer runs for clips only while `buffer_seconds` > 0 or a clip is being made.

`ClipRecorder` calls `on_finished` in the muxer's thread (also for a clip given up because no
video came at all: the muxer reports silence through `idle`) and resolves `ClipHandle`s through
`call_soon_threadsafe`. Where the files go and how they are finished is `store.py`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
import logging
import math
from pathlib import Path
import threading
import time
from typing import Final

from ...detection import Box
from ...media.consumer import PacketSource
from ...media.fragments import DEFAULT_FRAGMENT_SECONDS, CameraFragments, shared_or_own
from ...media.muxer import Fragment
from ..segment_writer import SegmentWriter
from .handle import ClipFinishedCallback, ClipHandle, ClipState, box_dict
from .store import (
    MANUAL_LABEL,
    ClipError,
    ClipLayout,
    EventClip,
    clip_from_files,
    recover_clip_part,
    sidecar_path,
    snapshot_path,
    write_sidecar,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_PRE_ROLL: Final = 5.0
DEFAULT_POST_ROLL: Final = 5.0
DEFAULT_MAX_LENGTH: Final = 120.0
# A clip on demand longer than this is a recording, not a clip.
MAX_SAVE_SECONDS: Final = 3600.0

# No packet for this long: the camera is gone, running clips are finished.
_IDLE_FINISH_SECONDS = 5.0
# The ring keeps this much more than the pre-roll: a fragment reaches the sinks up to a fragment
# plus a batch interval after its first frame, and a trigger reaches the muxer thread later still.
_RING_SLACK_SECONDS = 1.0
# A clip that has no file this long after its end, while no fragment came meanwhile, is given up
# (a camera that never sent video, a hub that is down): whoever waits on it gets None.
_GIVE_UP_SECONDS = 2.0
_EPSILON = 1e-6


class ClipRecorder:
    """Writes one camera's clips from its fragments (a `FragmentSink`, see the module doc).

    `source` is the camera's shared muxer, or a bare packet source (tests): the recorder then
    runs a muxer of its own. `stop` (blocking: run it in an executor) finishes every running
    clip; with a muxer of its own, packets already queued still go into them.
    """

    def __init__(
        self,
        camera_id: str,
        source: CameraFragments | PacketSource,
        layout: ClipLayout,
        loop: asyncio.AbstractEventLoop,
        *,
        pre_roll: float = DEFAULT_PRE_ROLL,
        post_roll: float = DEFAULT_POST_ROLL,
        max_length: float = DEFAULT_MAX_LENGTH,
        buffer_seconds: float | None = None,
        fragment_seconds: float = DEFAULT_FRAGMENT_SECONDS,
        idle_seconds: float = _IDLE_FINISH_SECONDS,
        on_finished: ClipFinishedCallback | None = None,
    ) -> None:
        """Prepare a recorder; nothing runs before `start`.

        `buffer_seconds` (default `pre_roll`) is how much the ring keeps for clips: the most
        pre-roll a clip on demand can have. `on_finished(handle, clip)` runs in the muxer thread.
        """
        layout.camera_dir(camera_id)  # refuses an unsafe id before anything runs
        self._fragments, self._owns_muxer = shared_or_own(
            source,
            camera_id,
            thread_name=f"lightnvr-clips-{camera_id}",
            fragment_seconds=fragment_seconds,
        )
        self.camera_id = camera_id
        self._layout = layout
        self._event_loop = loop
        self.pre_roll = max(0.0, pre_roll)
        self.post_roll = max(0.0, post_roll)
        self.max_length = max(1.0, max_length)
        self.buffer_seconds = max(self.pre_roll, buffer_seconds or 0.0)
        self._idle_seconds = idle_seconds
        self._on_finished = on_finished

        # Guards _clips, _event, _closing and the (lock) fields of clips.
        self._lock = threading.Lock()
        self._clips: list[ClipState] = []
        self._event: ClipState | None = None  # the clip new triggers extend
        self._closing = False  # stop has begun: no new clips
        self._started = False

        # Muxer thread only (read elsewhere without harm):
        self._skew = 0.0  # epoch arrival minus media-dated start, from the newest keyframe
        self._fresh_from = -math.inf  # fragments starting earlier precede a silence
        self._delivered_at = 0.0  # time.monotonic() of the last fragment handed to us

        self.clips_written = 0

    # ----- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start taking the camera's fragments (and keeping the pre-roll in the ring)."""
        self._started = True
        self._fragments.retain(self, self.buffer_seconds + _RING_SLACK_SECONDS)
        self._fragments.add_sink(self)
        if self._owns_muxer:
            self._fragments.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every running clip and stop taking fragments. Blocking: run it in an executor."""
        with self._lock:
            self._closing = True
        if self._owns_muxer:
            self._fragments.stop(timeout)  # drains what is queued: running clips get it
        self._started = False
        self._fragments.detach(self)  # finishes every clip (`detached`), also never started ones

    @property
    def alive(self) -> bool:
        """Return True while the recorder takes fragments (its own muxer's thread runs)."""
        if self._owns_muxer:
            return self._fragments.alive
        return self._started

    # ----- control (any thread) -------------------------------------------------------------------

    def trigger(
        self,
        label: str,
        *,
        confidence: float | None = None,
        box: Box | Mapping[str, float] | Sequence[float] | None = None,
        snapshot: bytes | None = None,
    ) -> ClipHandle:
        """Start an event clip, or extend the running one; return its handle (quick)."""
        now = time.time()
        box_data = box_dict(box)
        with self._lock:
            if self._closing:
                raise ClipError(f"the clip recorder of {self.camera_id} is stopped")
            clip = self._event
            if clip is None:
                handle = ClipHandle(
                    self.camera_id, label, self._event_loop, manual=False, triggered=now
                )
                clip = ClipState(handle, now, self.pre_roll, self.max_length)
                self._event = clip
                self._clips.append(clip)
            clip.note(label, confidence, box_data)
            clip.held.add(label)
            clip.end_at = math.inf  # a trigger in the post-roll keeps the clip going
            if snapshot and not clip.has_snapshot and clip.snapshot is None:
                clip.snapshot = snapshot
            handle = clip.handle
        self._fragments.wake()  # the muxer may have been idle
        return handle

    def release(self, label: str) -> bool:
        """Release `label` from the running clip; return False if no running clip holds it.

        The clip ends `post_roll` seconds after the last of its labels is released.
        """
        now = time.time()
        with self._lock:
            clip = self._event
            if clip is None or label not in clip.held:
                return False
            clip.held.discard(label)
            if not clip.held:
                clip.end_at = now + self.post_roll
        return True

    def save(self, duration: float, pre_roll: float | None = None) -> ClipHandle:
        """Start a clip on demand: `duration` seconds in all, `pre_roll` of them before now.

        The pre-roll is bounded by `buffer_seconds`; the clip starts on the keyframe at or
        before it, so it may be up to one GOP longer than asked.
        """
        if self._closing:
            raise ClipError(f"the clip recorder of {self.camera_id} is stopped")
        pre = self.pre_roll if pre_roll is None else pre_roll
        if not 0 < duration <= MAX_SAVE_SECONDS or not math.isfinite(duration):
            raise ValueError(f"duration must be within 0..{MAX_SAVE_SECONDS:g} s")
        if not 0 <= pre <= duration:
            raise ValueError("pre-roll must be within 0..duration")
        if pre > self.buffer_seconds:
            _LOGGER.debug(
                "%s: pre-roll %.1f s limited to the buffer (%.1f s)",
                self.camera_id,
                pre,
                self.buffer_seconds,
            )
        now = time.time()
        pre = min(pre, self.buffer_seconds)  # the rest of the length comes after the call
        with self._lock:
            if self._closing:
                raise ClipError(f"the clip recorder of {self.camera_id} is stopped")
            handle = ClipHandle(
                self.camera_id, MANUAL_LABEL, self._event_loop, manual=True, triggered=now
            )
            clip = ClipState(handle, now, pre, None, end_at=now + (duration - pre))
            self._clips.append(clip)
        self._fragments.wake()
        return handle

    @property
    def active(self) -> ClipHandle | None:
        """Return the running event clip's handle, if any."""
        with self._lock:
            return self._event.handle if self._event is not None else None

    @property
    def buffered_seconds(self) -> float:
        """Return how many seconds of video the ring offers as pre-roll (from its keyframe)."""
        fragments = self._usable_ring()
        if not fragments:
            return 0.0
        last = fragments[-1]
        return max(0.0, last.start + last.duration - fragments[0].start)

    # ----- the sink (the muxer's thread) ----------------------------------------------------------

    def wants_fragments(self) -> bool:
        """Return True while the ring must be filled or a clip is being made."""
        return self._started and (self.buffer_seconds > 0 or bool(self._clips))

    def handle_fragment(self, fragment: Fragment) -> None:
        """Open pending clips (from the ring, which holds `fragment`) and extend running ones."""
        self._delivered_at = time.monotonic()
        if fragment.keyframe and fragment.arrived is not None:
            self._skew = fragment.arrived - fragment.start
        for clip in self._snapshot():
            try:
                if clip.writer is None:
                    self._try_open(clip)
                elif fragment is not clip.last:
                    self._take(clip, fragment)
            except Exception:
                _LOGGER.exception("Clip recorder of %s failed on a fragment", self.camera_id)
                self._finish(clip)  # with what it has

    def end_of_container(self) -> None:
        """Finish the running clips: a gap (new connection, hub stopped) is never hidden in one."""
        self._finish_open("the stream ended")
        self._skew = 0.0
        self._fresh_from = -math.inf  # the ring was emptied with the container

    def idle(self, seconds: float) -> None:
        """Open pending clips from the ring; finish running ones once the camera is gone."""
        if seconds > self._idle_seconds:
            self._finish_open("no video")
            ring = self._fragments.recent()
            if ring:  # stale: a later clip must not start with it
                self._fresh_from = ring[-1].start + 1e-3
        for clip in self._snapshot():
            if clip.writer is None:
                self._try_open(clip)
        self._give_up_silent()

    def detached(self) -> None:
        """Finish every clip (the recorder stops); those without video are given up."""
        for clip in self._snapshot():
            self._finish(clip)

    # ----- clips ----------------------------------------------------------------------------------

    def _snapshot(self) -> list[ClipState]:
        with self._lock:
            return list(self._clips)

    def _wall(self, fragment: Fragment) -> float:
        """Return the epoch second the fragment's first frame arrived."""
        if fragment.arrived is not None:
            return fragment.arrived
        return fragment.start + self._skew

    def _usable_ring(self) -> list[Fragment]:
        """Return the ring's fragments a clip may start with: from a keyframe, none stale."""
        fragments = self._fragments.recent()
        fresh = self._fresh_from
        if fragments and fragments[0].start < fresh:
            fragments = [fragment for fragment in fragments if fragment.start >= fresh]
            while fragments and not fragments[0].keyframe:
                fragments.pop(0)
        return fragments

    def _claim(self, clip: ClipState, when: float | None = None) -> bool:
        """Take a clip out of the running ones, so that no trigger extends it any more.

        With `when` (an epoch second of the media), only if the clip's end is before it: the
        check and the removal happen under one lock, so a trigger either extends the clip in
        time or starts a new one.
        """
        with self._lock:
            if when is not None and when <= clip.end_at:
                return False
            self._forget(clip)
            return True

    def _forget(self, clip: ClipState) -> None:
        """Remove a clip from the running ones (lock held)."""
        if clip in self._clips:
            self._clips.remove(clip)
        if self._event is clip:
            self._event = None

    def _give_up_silent(self) -> None:
        """Give up clips that have no file long after their end while no fragment comes."""
        if time.monotonic() - self._delivered_at < _GIVE_UP_SECONDS:
            return  # fragments come: a pending clip opens (or ends) on the next one
        now = time.time()
        for clip in self._snapshot():
            if clip.writer is None and now > clip.end_at + _GIVE_UP_SECONDS:
                _LOGGER.debug("%s: no video for a clip; giving it up", self.camera_id)
                self._complete(clip, None)

    # ----- writing (the muxer's thread) -----------------------------------------------------------

    def _try_open(self, clip: ClipState) -> None:
        """Open a pending clip from the ring, at the keyframe fragment before its pre-roll."""
        fragments = self._usable_ring()
        if not fragments:
            return
        for fragment in reversed(fragments):
            if fragment.keyframe and fragment.arrived is not None:
                self._skew = fragment.arrived - fragment.start
                break
        target = clip.trigger_at - clip.pre_roll
        start = 0  # the usable ring starts on a keyframe
        for index, fragment in enumerate(fragments):
            if self._wall(fragment) > target + _EPSILON:
                break
            if fragment.keyframe:
                start = index
        first = fragments[start]
        if self._claim(clip, self._middle(first)):
            self._complete(clip, None)  # its time is over and no video came: nothing to save
            return
        start_wall = self._wall(first)
        try:
            part = self._layout.new_part_path(self.camera_id, start_wall, clip.handle.label)
            writer = SegmentWriter(part, first, start_wall=start_wall)
        except OSError as err:
            _LOGGER.warning("%s: could not start a clip: %s", self.camera_id, err)
            self._complete(clip, None)
            return
        clip.writer = writer
        clip.handle.part_path = part
        _LOGGER.debug("%s: clip %s started", self.camera_id, self._layout.relative(part))
        self._update_side_files(clip, force=True)
        for fragment in fragments[start:]:
            if not self._take(clip, fragment):
                return

    def _middle(self, fragment: Fragment) -> float:
        """Return the epoch second of the middle of a fragment (clips end at the nearest cut)."""
        return self._wall(fragment) + fragment.duration / 2

    def _take(self, clip: ClipState, fragment: Fragment) -> bool:
        """Write a fragment into a running clip, or finish the clip; True while it goes on."""
        writer = clip.writer
        if writer is None:
            return False
        fits = clip.max_length is None or (
            writer.elapsed(fragment) + fragment.duration <= clip.max_length + _EPSILON
        )
        if (
            fragment.init is not writer.init
            or not fits
            or self._claim(clip, self._middle(fragment))
        ):
            self._finish(clip)
            return False
        try:
            writer.append(fragment)
        except OSError as err:
            _LOGGER.warning("%s: writing a clip failed: %s", self.camera_id, err)
            clip.writer = None
            writer.abort()
            self._complete(clip, self._salvage(writer.path))
            return False
        clip.last = fragment
        self._update_side_files(clip)
        if clip.max_length is not None and writer.duration >= clip.max_length - _EPSILON:
            self._finish(clip)  # full: no fragment fits any more
            return False
        return True

    def _update_side_files(self, clip: ClipState, *, force: bool = False) -> None:
        """Write the snapshot once, and the sidecar when labels or detections changed."""
        writer = clip.writer
        if writer is None:
            return
        with self._lock:
            snapshot, clip.snapshot = clip.snapshot, None
            dirty, clip.dirty = clip.dirty, False
        try:
            if snapshot is not None and not clip.has_snapshot:
                snapshot_path(writer.path).write_bytes(snapshot)
                clip.has_snapshot = True
                dirty = True
            if dirty or force:
                with self._lock:
                    meta = clip.sidecar(self.camera_id, writer, None)
                write_sidecar(sidecar_path(writer.path), meta)
        except OSError as err:
            _LOGGER.warning("%s: could not write a clip's side files: %s", self.camera_id, err)

    def _finish_open(self, reason: str) -> None:
        """Finish every clip being written (the stream ended or changed)."""
        for clip in self._snapshot():
            if clip.writer is not None:
                _LOGGER.debug("%s: clip ends (%s)", self.camera_id, reason)
                self._finish(clip)

    def _finish(self, clip: ClipState) -> None:
        """Close a clip, make it final (sidecar, mtime = end, rename) and report it."""
        if clip.done:
            return
        self._claim(clip)  # from now on a trigger starts a new clip
        writer = clip.writer
        if writer is None:
            self._complete(clip, None)
            return
        if not writer.fragments:
            clip.writer = None
            self._discard(writer)  # opened, but not one fragment was its: nothing to save
            self._complete(clip, None)
            return
        try:
            self._update_side_files(clip)  # a snapshot given at the last moment
            clip.writer = None
            writer.close()
            end = writer.start_wall + writer.duration
            # The name was reserved for all of the clip's files when it opened.
            with self._lock:
                meta = clip.sidecar(self.camera_id, writer, end)
            # Before the video: never a clip without its sidecar.
            write_sidecar(sidecar_path(self._layout.final_path(writer.path)), meta)
            final = self._layout.finish(writer.path, end)  # mtime = end, then renamed
        except OSError as err:
            _LOGGER.warning("%s: could not finish a clip: %s", self.camera_id, err)
            clip.writer = None
            writer.abort()
            self._complete(clip, self._salvage(writer.path))
            return
        self._complete(clip, clip_from_files(self._layout, self.camera_id, final, end=end))

    def _discard(self, writer: SegmentWriter) -> None:
        """Delete a clip's files that hold no video."""
        writer.abort()
        for path in (writer.path, sidecar_path(writer.path), snapshot_path(writer.path)):
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                _LOGGER.warning("%s: could not delete %s: %s", self.camera_id, path.name, err)

    def _salvage(self, part: Path) -> EventClip | None:
        """Keep the complete fragments of a clip that could not be finished normally."""
        if not part.exists():
            return None
        return recover_clip_part(self._layout, self.camera_id, part)

    def _complete(self, clip: ClipState, result: EventClip | None) -> None:
        with self._lock:
            if clip.done:
                return
            clip.done = True
            self._forget(clip)
        self._report(clip, result)
        self._fragments.wake()  # the muxer may not be wanted any more

    def _report(self, clip: ClipState, result: EventClip | None) -> None:
        """Tell `on_finished`, then whoever waits on the handle."""
        if result is not None:
            self.clips_written += 1
            _LOGGER.debug(
                "%s: clip %s finished (%.1f s)",
                self.camera_id,
                self._layout.relative(result.path),
                result.duration,
            )
        # The callback first: it indexes the clip, which whoever awaits the handle then finds.
        if self._on_finished is not None:
            try:
                self._on_finished(clip.handle, result)
            except Exception:
                _LOGGER.exception("Error in the clip callback")
        clip.handle._resolve(result)
