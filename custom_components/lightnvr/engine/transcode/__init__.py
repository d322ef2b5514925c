"""Shared live-view transcoders: one per camera and kind, never one per viewer.

Pass-through is the rule for live view; these are for viewers that cannot take the camera's own
codecs. `VideoTranscoder` turns any video PyAV decodes (H.265 above all) into H.264 a browser
decodes; `AudioTranscoder` turns any audio PyAV decodes (AAC above all) into Opus. Each runs in
one worker thread fed by the camera's StreamHub (`subscribe_thread`), and fans its output out
to its own subscribers with the hub's API (`subscribe`, `unsubscribe`, `info`,
`latest_keyframe`), so a WebRTC track takes a transcoder wherever it takes a hub.

Life cycle: a transcoder runs while anyone uses it — a subscriber, or a hold taken with
`acquire` (the engine holds it while it negotiates, before its track subscribes) — and stops
`linger` seconds after the last one left, so a viewer who reloads the page or a second viewer
shortly after the first finds it running. `SharedTranscoders` keeps the pair of one camera.

What the output looks like and why:
- H.264 Constrained Baseline from libx264 (`ultrafast`, `zerolatency`): every browser decodes
  it (also the OpenH264 decoder some browsers use), no B-frames, one frame in, one packet out.
- A keyframe every second (GOP = the camera's fps) with SPS/PPS in-band before each: a viewer
  joining starts at the cached keyframe and needs nothing out of band. `info.extradata` holds
  the same SPS/PPS (Annex B), for the answer's `profile-level-id`.
- Timestamps are the camera's own (video: its time base; audio: 1/48000 derived from its audio
  timestamps) and `received` is the source packet's, so the WebRTC tracks' lip sync and
  catch-up logic work on transcoded media exactly as on the camera's.
- Opus is mono, 48 kHz, 20 ms packets. RTP always declares opus/48000/2, but the decoder
  handles mono and stereo alike and browsers offer `stereo=0` (they prefer mono); camera
  microphones are mono.

The hub's reader is never slowed down: the worker reads a drop-oldest queue (drops counted).
A worker that falls behind decodes the backlog without encoding it (a viewer catches up at
once; the cached group of pictures of a new subscription is handled the same way), and one
that falls far behind or lost packets waits for the next keyframe.

Cost in % of one core of this project's 2-core test machine, PyAV 13 and 19 alike (test
pictures with sensor-like noise): H.265 1080p15 to H.264 720p ~21 %, H.265 720p15 to H.264
720p ~12 %, AAC 16 kHz mono to Opus ~2.5 % (most of it handing 50 packets a second over).
"""

from __future__ import annotations

import asyncio

from ...media.consumer import PacketSource
from .audio import (
    OPUS_APPLICATION,
    OPUS_BITRATE,
    OPUS_CHANNELS,
    OPUS_FRAME_SAMPLES,
    OPUS_SAMPLE_RATE,
    OPUS_TIME_BASE,
    AudioTranscoder,
)
from .base import LINGER_SECONDS, TranscoderStats
from .video import (
    DEFAULT_MAX_WIDTH,
    READY_TIMEOUT_SECONDS,
    X264_PRESET,
    X264_PROFILE,
    VideoTranscoder,
)

__all__ = [
    "DEFAULT_MAX_WIDTH",
    "LINGER_SECONDS",
    "OPUS_APPLICATION",
    "OPUS_BITRATE",
    "OPUS_CHANNELS",
    "OPUS_FRAME_SAMPLES",
    "OPUS_SAMPLE_RATE",
    "OPUS_TIME_BASE",
    "READY_TIMEOUT_SECONDS",
    "X264_PRESET",
    "X264_PROFILE",
    "AudioTranscoder",
    "SharedTranscoders",
    "TranscoderStats",
    "VideoTranscoder",
]


class SharedTranscoders:
    """The video and audio transcoders of one camera, shared by all of its viewers."""

    def __init__(
        self,
        hub: PacketSource,
        loop: asyncio.AbstractEventLoop,
        *,
        max_width: int | None = DEFAULT_MAX_WIDTH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        """Prepare both transcoders; nothing runs before the first acquire or subscription."""
        self.video = VideoTranscoder(hub, max_width=max_width, linger=linger, loop=loop)
        self.audio = AudioTranscoder(hub, linger=linger, loop=loop)

    async def acquire_video(self, wait: float = READY_TIMEOUT_SECONDS) -> VideoTranscoder:
        """Hold the video transcoder (starting it); wait up to `wait` s for its first keyframe.

        It is returned also when no keyframe came in time (the camera sends nothing yet): its
        `info` is then None. Every acquire needs one `release_video`.
        """
        self.video.acquire()
        try:
            await self.video.async_wait_ready(wait)
        except BaseException:
            self.video.release()  # cancelled: the caller never got its hold
            raise
        return self.video

    def release_video(self) -> None:
        """Give back a hold of the video transcoder."""
        self.video.release()

    async def acquire_audio(self) -> AudioTranscoder:
        """Hold the audio transcoder (starting it). Every acquire needs one `release_audio`."""
        self.audio.acquire()
        return self.audio

    def release_audio(self) -> None:
        """Give back a hold of the audio transcoder."""
        self.audio.release()

    async def async_stop(self) -> None:
        """Stop both for good (threads joined off the event loop)."""
        await asyncio.gather(self.video.async_stop(), self.audio.async_stop())

    def stats(self) -> dict[str, TranscoderStats]:
        """Return the counters of both transcoders."""
        return {"video": self.video.stats(), "audio": self.audio.stats()}
