"""Timestamp repair: camera timestamps made strictly rising, per stream and connection.

Cameras send missing, repeated, backwards or jumping timestamps; MP4 (and every player) needs
rising ones. The recorder, event clips and live HLS repair them the same way, so that audio and
video keep the common timeline the demuxer gave them.
"""

from __future__ import annotations

from fractions import Fraction

from ..hub import MediaPacket, StreamInfo

# A timestamp step this much larger than the time between the packets' arrivals is a jump
# in the camera's clock, not real time passing.
_JUMP_TOLERANCE_SECONDS = 1.0
# Going back by up to this much is jitter (clamped); by more, the camera's clock was reset.
_BACKWARD_CLAMP_SECONDS = 1.0


class TimestampRepair:
    """Turns one stream's camera timestamps into strictly rising ones, per connection.

    The output is the input plus an offset, which starts at 0: audio and video keep the
    common timeline the demuxer gave them (lip sync). The offset only changes when the
    camera's clock jumps (forwards further than the packets' arrival times show, or backwards
    by more than `_BACKWARD_CLAMP_SECONDS`): the stream then continues from the last good
    timestamp plus the real time that passed. Small steps back are clamped to one tick after
    the previous packet. A missing timestamp becomes the previous one plus one packet spacing.
    """

    def __init__(self, frame_seconds: float | None) -> None:
        """Create a repairer; `frame_seconds` is the expected packet spacing, if known."""
        self._frame_seconds = frame_seconds or 0.04
        self._time_base: Fraction | None = None
        self._seconds_per_tick = 0.0
        self._offset = 0
        self._last: int | None = None
        self._last_received = 0.0
        self._step = 1
        self._clean = False  # the previous packet needed no repair

    def fix(self, packet: MediaPacket) -> tuple[int, int, str | None]:
        """Return (dts, pts, repair) for `packet`; `repair` names what was fixed, if anything."""
        if packet.time_base != self._time_base:
            # Only at the start (a hub keeps one time base per connection and stream).
            self._time_base = packet.time_base
            self._seconds_per_tick = float(packet.time_base)
            self._step = max(1, round(self._frame_seconds / self._seconds_per_tick))
            self._offset = 0
            self._last = None
        repair: str | None = None
        raw = packet.dts if packet.dts is not None else packet.pts
        composition = 0
        if packet.dts is not None and packet.pts is not None:
            composition = packet.pts - packet.dts
            if composition < 0:
                composition = 0
                repair = "pts_before_dts"
        last = self._last
        if raw is None:
            out = 0 if last is None else last + self._step
            # The first packet of an RTSP connection has no timestamp (FFmpeg has no clock
            # reference yet): it is the connection's origin, not a camera fault.
            repair = None if last is None else "missing"
        elif last is None:
            out = raw + self._offset
        else:
            out = raw + self._offset
            delta = out - last
            arrival = packet.received - self._last_received
            if delta <= 0:
                if -delta * self._seconds_per_tick > _BACKWARD_CLAMP_SECONDS:
                    out = last + self._gap(arrival)
                    self._offset = out - raw
                    repair = "jump"
                else:
                    out = last + 1
                    repair = "non_monotonic"
            elif delta * self._seconds_per_tick > max(arrival, 0.0) + _JUMP_TOLERANCE_SECONDS:
                out = last + self._gap(arrival)
                self._offset = out - raw
                repair = "jump"
            elif self._clean and delta * self._seconds_per_tick < 1.0:
                self._step = delta  # learn the real spacing (for missing timestamps)
        self._clean = repair is None and raw is not None
        self._last = out
        self._last_received = packet.received
        return out, out + composition, repair

    def align(self, packet: MediaPacket, seconds: float) -> bool:
        """Before the first packet: map it to `seconds` if its own clock is far from that.

        Used to put audio on the video's timeline when the two clocks disagree by more than
        the jump tolerance (a source whose audio and video clocks start apart). Returns True
        if the offset was changed.
        """
        raw = packet.dts if packet.dts is not None else packet.pts
        if self._last is not None or raw is None:
            return False
        per_tick = float(packet.time_base)
        if abs(raw * per_tick - seconds) <= _JUMP_TOLERANCE_SECONDS:
            return False
        self._time_base = packet.time_base
        self._seconds_per_tick = per_tick
        self._step = max(1, round(self._frame_seconds / per_tick))
        self._offset = round(seconds / per_tick) - raw
        return True

    def _gap(self, arrival: float) -> int:
        """Return the ticks to advance after a jump: the real time that passed, or one frame."""
        return max(self._step, round(max(arrival, 0.0) / self._seconds_per_tick))

    @property
    def step(self) -> int:
        """Return the current packet spacing estimate in ticks."""
        return self._step

    @property
    def last_seconds(self) -> float | None:
        """Return the last output timestamp in seconds."""
        return None if self._last is None else self._last * self._seconds_per_tick

    @property
    def last_received(self) -> float:
        """Return when the last packet arrived (time.monotonic())."""
        return self._last_received


def connection_clocks(
    info: StreamInfo | None, generation: int
) -> tuple[TimestampRepair, TimestampRepair]:
    """Return new (video, audio) clocks for connection `generation`, spaced as `info` says.

    The recorder, event clips and live HLS start their clocks over the same way on every new
    connection, so that they repair one stream alike. The frame rate is only taken from the
    info of that very connection: the hub may already describe a newer one.
    """
    fps = info.fps if info is not None and info.generation == generation else None
    rate = info.audio_sample_rate if info is not None else None
    return TimestampRepair(1 / fps if fps else None), TimestampRepair(1024 / rate if rate else None)
