"""The pre-roll buffer of one camera: its last seconds of packets, from a keyframe on.

Timestamps are repaired here, once per packet, as the recorder does (`TimestampRepair`), so every
clip cut from the buffer shares them; ADTS headers are stripped (MP4 holds raw AAC). Memory is
bounded by time (`seconds`, extended back to the keyframe before them, so a clip can always start
on a keyframe) and by bytes, whatever the camera's bitrate and GOP.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from ...hub import MediaPacket, StreamInfo
from ...media.audio_align import align_audio
from ...media.params import AUDIO_CODECS
from ...media.timestamps import TimestampRepair, connection_clocks

# The buffer keeps a little more than asked for: a trigger is applied a moment after the call.
_BUFFER_SLACK_SECONDS = 0.5
# Memory bound of one camera's buffer, whatever its bitrate and GOP (8 Mbit/s for 60 s).
_MAX_BUFFER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BufferedPacket:
    """A buffered packet with repaired timestamps (repaired once, shared by every clip)."""

    kind: Literal["video", "audio"]
    data: bytes
    dts: int
    pts: int
    duration: int  # in time_base ticks
    keyframe: bool
    received: float  # time.monotonic() when the hub got it
    time_base: Fraction


class PreRollBuffer:
    """The last `seconds` of one connection's packets (the clip thread's alone: no lock).

    `buffered_seconds` may be read from other threads: it tolerates the thread emptying it.
    """

    def __init__(self, seconds: float) -> None:
        """Keep `seconds` (plus the GOP before them)."""
        self.seconds = seconds
        self._entries: deque[BufferedPacket] = deque()
        self._keyframes: deque[float] = deque()  # arrival of each buffered keyframe
        self._bytes = 0
        self._video_clock = TimestampRepair(None)
        self._audio_clock = TimestampRepair(None)
        self._audio_codec: str | None = None
        self.adts_config: bytes | None = None  # learnt from ADTS headers if the SDP had none

    def reset(self, info: StreamInfo | None, generation: int) -> None:
        """Start over for connection `generation`, described by `info` (None: not known yet)."""
        self.clear()
        self._video_clock, self._audio_clock = connection_clocks(info, generation)
        self._audio_codec = info.audio_codec if info is not None else None
        self.adts_config = None

    def __bool__(self) -> bool:
        """Return True when the buffer holds packets."""
        return bool(self._entries)

    def entries(self) -> list[BufferedPacket]:
        """Return the buffered packets, oldest (a keyframe) first."""
        return list(self._entries)

    @property
    def buffered_seconds(self) -> float:
        """Return how many seconds of video the buffer holds (from its keyframe)."""
        try:
            return max(0.0, self._entries[-1].received - self._entries[0].received)
        except IndexError:  # emptied by the thread meanwhile
            return 0.0

    def audio_config(self, info: StreamInfo) -> bytes | None:
        """Return the AAC config of the stream (the SDP's, or the one learnt from ADTS)."""
        if info.audio_codec not in AUDIO_CODECS or not info.audio_sample_rate:
            return None
        return info.audio_extradata or self.adts_config

    def entry(self, packet: MediaPacket) -> BufferedPacket | None:
        """Repair the packet's timestamps (once for all clips) as the recorder does."""
        if packet.kind == "video":
            dts, pts, _ = self._video_clock.fix(packet)
            return BufferedPacket(
                "video",
                packet.data,
                dts,
                pts,
                self._video_clock.step,
                packet.keyframe,
                packet.received,
                packet.time_base,
            )
        if self._audio_codec not in AUDIO_CODECS:
            return None
        audio = align_audio(packet, self._audio_clock, self._video_clock, self.adts_config)
        self.adts_config = audio.config
        return BufferedPacket(
            "audio",
            audio.data,
            audio.dts,
            audio.pts,
            audio.duration,
            False,
            packet.received,
            packet.time_base,
        )

    def add(self, entry: BufferedPacket) -> None:
        """Keep the last `seconds`, from the keyframe before them on."""
        buffer = self._entries
        if not buffer and not entry.keyframe:
            return  # a clip can only start on a keyframe: nothing before one is useful
        buffer.append(entry)
        self._bytes += len(entry.data)
        keyframes = self._keyframes
        if entry.keyframe:
            keyframes.append(entry.received)
        limit = entry.received - self.seconds - _BUFFER_SLACK_SECONDS
        while len(keyframes) >= 2 and (keyframes[1] <= limit or self._bytes > _MAX_BUFFER_BYTES):
            keyframes.popleft()
            first = buffer.popleft()  # the old keyframe, then everything up to the next one
            self._bytes -= len(first.data)
            while not buffer[0].keyframe:
                self._bytes -= len(buffer.popleft().data)
        if self._bytes > _MAX_BUFFER_BYTES:
            self.clear()  # one GOP larger than the bound: start over at the next one

    def clear(self) -> None:
        """Forget every packet (the clocks stay: the connection is the same)."""
        self._entries.clear()
        self._keyframes.clear()
        self._bytes = 0
