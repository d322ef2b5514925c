"""Event clips: the clip thread of one camera (pre-roll in memory, never the camera again).

Per camera, a `ClipRecorder` thread is a thread subscriber of the camera's StreamHub and keeps
a **pre-roll buffer** in memory (`buffer.PreRollBuffer`): the packets of the last
`buffer_seconds`, extended back to the keyframe before them so that a clip can always start on
a keyframe. A trigger opens a clip from that buffer (the newest keyframe at least `pre_roll`
seconds before the trigger) and the clip then follows the live stream until the detection is
released plus `post_roll` seconds, never longer than `max_length` seconds in all. Packets are
copied into a fragmented MP4 by the recorder's own writer (`segmenter`): no second muxer, and a
crash loses at most the fragment being built. Video is never decoded; audio other than AAC is
transcoded to AAC as it arrives (`audio.AacAudio`), so the buffer and every clip hold AAC.

- **One event clip at a time per camera**: a trigger while a clip runs (or is in its
  post-roll) extends that clip and adds its label; the clip ends once every label that
  triggered it was released (plus post-roll), at `max_length`, when the camera goes away
  (no packets, a new connection) or when the recorder stops. Labels still held then are
  forgotten: the next trigger starts a new clip, so a detector stuck "on" cannot fill the disk.
- **Clips on demand** (`lightnvr.save_clip`) are independent of event clips: `duration`
  seconds in all, `pre_roll` of them before the call (bounded by the buffer); like every
  clip they start on a keyframe, so they may be up to one GOP longer.
- `max_length` is measured on the media timeline: a file is never longer than that.

`ClipRecorder` calls `on_finished` in its own thread and resolves `ClipHandle`s through
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

import av
import av.error

from ...detection import Box
from ...hub import MediaPacket
from ...media.consumer import PacketConsumer, PacketSource
from ...media.params import VIDEO_CODECS, video_extradata
from ..audio import AacAudio
from ..segmenter import DEFAULT_FRAGMENT_SECONDS
from .buffer import BufferedPacket, PreRollBuffer
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
from .writer import ClipWriter

_LOGGER = logging.getLogger(__name__)

DEFAULT_PRE_ROLL: Final = 5.0
DEFAULT_POST_ROLL: Final = 5.0
DEFAULT_MAX_LENGTH: Final = 120.0
# A clip on demand longer than this is a recording, not a clip.
MAX_SAVE_SECONDS: Final = 3600.0

# The thread wakes up this often and takes everything queued meanwhile, instead of waking up
# for every packet (a wake-up costs more CPU than buffering a packet, as in the segmenter).
# Decisions use the packets' arrival stamps, so this delay never changes what a clip holds.
_BATCH_SECONDS = 0.25
# No packet for this long: the camera is gone, running clips are finished.
_IDLE_FINISH_SECONDS = 5.0
# After a clip's end, packets that arrived before it but are this late are not waited for.
_LATE_PACKET_SECONDS = 1.0
_QUEUE_PACKETS = 2048


class ClipRecorder(PacketConsumer):
    """Keeps one camera's pre-roll in memory and writes its clips, in its own thread.

    The thread is a `PacketConsumer`: batched, draining what is queued on stop (running clips
    get every packet that came before it), resubscribing after the hub restarts.
    """

    def __init__(
        self,
        camera_id: str,
        source: PacketSource,
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

        `buffer_seconds` (default `pre_roll`) is how much the buffer holds: the most pre-roll a
        clip on demand can have. `on_finished(handle, clip)` runs in the clip thread.
        """
        layout.camera_dir(camera_id)  # refuses an unsafe id before any thread starts
        super().__init__(
            source,
            label=f"Clip recorder of {camera_id}",
            thread_name=f"lightnvr-clips-{camera_id}",
            queue_packets=_QUEUE_PACKETS,
            batch_seconds=_BATCH_SECONDS,
            drain_on_stop=True,
        )
        self.camera_id = camera_id
        self._layout = layout
        self._event_loop = loop  # not `_loop`: that is the consumer's thread loop
        self.pre_roll = max(0.0, pre_roll)
        self.post_roll = max(0.0, post_roll)
        self.max_length = max(1.0, max_length)
        self.buffer_seconds = max(self.pre_roll, buffer_seconds or 0.0)
        self._fragment_seconds = fragment_seconds
        self._idle_seconds = idle_seconds
        self._on_finished = on_finished

        self._lock = threading.Lock()  # guards _clips, _event and the (lock) fields of clips
        self._clips: list[ClipState] = []
        self._event: ClipState | None = None  # the clip new triggers extend

        self._buffer = PreRollBuffer(self.buffer_seconds)
        self._generation: int | None = None
        self._aac = AacAudio(source.name)
        self._unsupported_logged: set[str] = set()

        self.clips_written = 0

    # ----- control (any thread) ---------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Finish every running clip and stop the thread. Blocking: run it in an executor."""
        started = self._thread is not None
        super().stop(timeout)  # the thread drains its queue, then finishes every clip
        if not started:
            self._finish_all()  # never started: give up pending clips so nobody waits forever

    def trigger(
        self,
        label: str,
        *,
        confidence: float | None = None,
        box: Box | Mapping[str, float] | Sequence[float] | None = None,
        snapshot: bytes | None = None,
    ) -> ClipHandle:
        """Start an event clip, or extend the running one; return its handle (quick)."""
        if self._stopping.is_set():
            raise ClipError(f"the clip recorder of {self.camera_id} is stopped")
        now = time.monotonic()
        box_data = box_dict(box)
        with self._lock:
            clip = self._event
            if clip is None:
                handle = ClipHandle(
                    self.camera_id, label, self._event_loop, manual=False, triggered=time.time()
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
        self._wake.set()
        return handle

    def release(self, label: str) -> bool:
        """Release `label` from the running clip; return False if no running clip holds it.

        The clip ends `post_roll` seconds after the last of its labels is released.
        """
        now = time.monotonic()
        with self._lock:
            clip = self._event
            if clip is None or label not in clip.held:
                return False
            clip.held.discard(label)
            if not clip.held:
                clip.end_at = now + self.post_roll
        self._wake.set()
        return True

    def save(self, duration: float, pre_roll: float | None = None) -> ClipHandle:
        """Start a clip on demand: `duration` seconds in all, `pre_roll` of them before now.

        The pre-roll is bounded by the buffer; the clip starts on the keyframe at or before
        it, so it may be up to one GOP longer than asked.
        """
        if self._stopping.is_set():
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
        now = time.monotonic()
        handle = ClipHandle(
            self.camera_id, MANUAL_LABEL, self._event_loop, manual=True, triggered=time.time()
        )
        pre = min(pre, self.buffer_seconds)  # the rest of the length comes after the call
        clip = ClipState(handle, now, pre, None, end_at=now + (duration - pre))
        with self._lock:
            self._clips.append(clip)
        self._wake.set()
        return handle

    @property
    def active(self) -> ClipHandle | None:
        """Return the running event clip's handle, if any."""
        with self._lock:
            return self._event.handle if self._event is not None else None

    @property
    def buffered_seconds(self) -> float:
        """Return how many seconds of video the pre-roll buffer holds (from its keyframe)."""
        return self._buffer.buffered_seconds

    # ----- the thread -------------------------------------------------------------------------

    def _handle_packet(self, packet: MediaPacket) -> None:
        try:
            self._on_packet(packet)
        except Exception:
            # Never stop buffering for one bad packet: running clips end with what they have,
            # the buffer starts over at the next keyframe.
            _LOGGER.exception("Clip recorder of %s failed on a packet", self.camera_id)
            self._finish_open("error")
            self._buffer.clear()

    def _on_queue_closed(self) -> None:
        """Finish the open clips: we stop, or the hub stopped (and may restart)."""
        self._finish_open("the stream ended")
        self._buffer.clear()

    def _on_drops(self, count: int) -> None:
        _LOGGER.warning(
            "Clip recorder of %s could not keep up and lost %d packet(s) (%d in all)",
            self.camera_id,
            count,
            self.dropped_packets,
        )
        # A lost packet breaks the references of the frames after it: the buffer starts over
        # and running clips continue at the next keyframe.
        self._buffer.clear()
        for clip in self._snapshot():
            clip.need_keyframe = True

    def _on_waiting(self) -> None:
        # No subscription (the hub is restarting): clips on demand still end on time.
        self._check_deadlines(time.monotonic())

    def _on_exit(self) -> None:
        self._finish_all()

    def _on_idle(self) -> None:
        now = time.monotonic()
        if now - self._last_packet_at > self._idle_seconds and (
            self._buffer or any(clip.writer is not None for clip in self._snapshot())
        ):
            _LOGGER.debug("%s: no packets; finishing running clips", self.camera_id)
            self._finish_open("no video")
            self._buffer.clear()  # stale: a later clip must not start with it
        self._check_deadlines(now)

    def _check_deadlines(self, now: float) -> None:
        """Finish clips whose end has passed while no packet came to tell."""
        late = now - _LATE_PACKET_SECONDS
        for clip in self._snapshot():
            if clip.writer is None and self._buffer and late > self._end_of(clip):
                self._try_open(clip)  # e.g. a clip on demand that is all pre-roll
            too_long = (
                clip.writer is not None
                and clip.max_length is not None
                and late > clip.opened_at + clip.max_length
            )
            if too_long or self._claim(clip, late):
                self._finish(clip)

    def _snapshot(self) -> list[ClipState]:
        with self._lock:
            return list(self._clips)

    def _end_of(self, clip: ClipState) -> float:
        """Return when (monotonic arrival time) the clip's last packet may have arrived."""
        with self._lock:
            return clip.end_at

    def _claim(self, clip: ClipState, arrival: float | None = None) -> bool:
        """Take a clip out of the running ones, so that no trigger extends it any more.

        With `arrival`, only if the clip's end is before it: the check and the removal happen
        under one lock, so a trigger either extends the clip in time or starts a new one.
        """
        with self._lock:
            if arrival is not None and arrival <= clip.end_at:
                return False
            if clip in self._clips:
                self._clips.remove(clip)
            if self._event is clip:
                self._event = None
            return True

    # ----- packets ----------------------------------------------------------------------------

    def _on_packet(self, packet: MediaPacket) -> None:
        if packet.generation != self._generation:
            self._new_generation(packet.generation)
        for media in self._aac.convert(packet):  # audio other than AAC comes out as AAC
            entry = self._buffer.entry(media)
            if entry is not None:
                self._on_entry(entry)

    def _on_entry(self, entry: BufferedPacket) -> None:
        self._buffer.add(entry)
        for clip in self._snapshot():
            if clip.writer is None:
                # Opening writes the buffer up to this entry (or up to the clip's end).
                self._try_open(clip)
                if not clip.done and clip.writer is None and self._claim(clip, entry.received):
                    self._finish(clip)  # its time is over and no video came: nothing to save
            elif clip.too_long(entry) or self._claim(clip, entry.received):
                self._finish(clip)
            else:
                self._write(clip, entry)
            if clip.writer is not None:
                self._update_side_files(clip)

    def _new_generation(self, generation: int) -> None:
        """Start over on a new connection: running clips end (a gap is never hidden in one)."""
        if self._generation is not None:
            self._finish_open("new connection")
        self._generation = generation
        info = self._aac.reset(self._source.info, generation)
        # Another connection's info (the hub may be a step ahead) describes nothing buffered.
        self._buffer.reset(
            info if info is not None and info.generation == generation else None, generation
        )

    # ----- writing ----------------------------------------------------------------------------

    def _try_open(self, clip: ClipState) -> None:
        """Open a pending clip from the buffer, at the keyframe before its pre-roll."""
        info = self._aac.stream_info(self._source.info)
        if info is None or info.generation != self._generation or not self._buffer:
            return
        if info.video_codec not in VIDEO_CODECS:
            if info.video_codec not in self._unsupported_logged:
                self._unsupported_logged.add(info.video_codec)
                _LOGGER.warning(
                    "%s: %s video cannot be saved as a clip without transcoding",
                    self.camera_id,
                    info.video_codec,
                )
            return
        entries = self._buffer.entries()
        target = clip.trigger_at - clip.pre_roll
        start = 0  # the buffer always starts with a keyframe
        for index, entry in enumerate(entries):
            if entry.received > target:
                break
            if entry.keyframe:
                start = index
        first = entries[start]
        start_wall = time.time() - (time.monotonic() - first.received)
        try:
            part = self._layout.new_part_path(self.camera_id, start_wall, clip.handle.label)
            writer = ClipWriter(
                part,
                info,
                video_extradata(info, first.data),
                self._buffer.audio_config(info),
                start_wall=start_wall,
                origin_seconds=first.dts * float(first.time_base),
                fragment_seconds=self._fragment_seconds,
            )
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("%s: could not start a clip: %s", self.camera_id, err)
            self._complete(clip, None)
            return
        clip.writer = writer
        clip.opened_at = first.received
        clip.origin = first.dts
        clip.handle.part_path = part
        _LOGGER.debug("%s: clip %s started", self.camera_id, self._layout.relative(part))
        self._update_side_files(clip, force=True)
        for entry in entries[start:]:
            if clip.too_long(entry) or self._claim(clip, entry.received):
                self._finish(clip)
                return
            self._write(clip, entry)
            if clip.writer is None:
                return  # the write failed and the clip was finished

    def _write(self, clip: ClipState, entry: BufferedPacket) -> None:
        writer = clip.writer
        if writer is None:
            return
        try:
            if entry.kind == "video":
                if clip.need_keyframe:
                    if not entry.keyframe:
                        return
                    clip.need_keyframe = False
                writer.write_video(
                    entry.data,
                    entry.dts - clip.origin,
                    entry.pts - clip.origin,
                    entry.keyframe,
                    entry.duration,
                )
            elif writer.audio is not None and not clip.need_keyframe:
                writer.write_audio(
                    entry.data, entry.dts, entry.pts, entry.time_base, entry.duration
                )
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("%s: writing a clip failed: %s", self.camera_id, err)
            clip.writer = None
            writer.abort()
            self._complete(clip, self._salvage(writer.path))

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

    def _finish_all(self) -> None:
        for clip in self._snapshot():
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
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("%s: could not finish a clip: %s", self.camera_id, err)
            clip.writer = None
            writer.abort()
            self._complete(clip, self._salvage(writer.path))
            return
        self._complete(clip, clip_from_files(self._layout, self.camera_id, final, end=end))

    def _salvage(self, part: Path) -> EventClip | None:
        """Keep the complete fragments of a clip that could not be finished normally."""
        if not part.exists():
            return None
        return recover_clip_part(self._layout, self.camera_id, part)

    def _complete(self, clip: ClipState, result: EventClip | None) -> None:
        if clip.done:
            return
        clip.done = True
        self._claim(clip)
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
