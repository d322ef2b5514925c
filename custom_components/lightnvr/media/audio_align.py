"""One AAC packet made ready for MP4: on the video's timeline, rising timestamps, no ADTS header.

The recorder, event clips and live HLS each keep a video and an audio `TimestampRepair` per
connection and treat every audio packet the same way; this is that one way, so that the three
files they write from one stream keep the same lip sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hub import MediaPacket
from .params import adts_header_length, adts_to_asc
from .timestamps import TimestampRepair


@dataclass(frozen=True, slots=True)
class AlignedAudio:
    """An audio packet as MP4 holds it (timestamps in the packet's own time base)."""

    data: bytes  # raw AAC: an ADTS header, if there was one, is stripped
    dts: int
    pts: int
    duration: int  # the audio clock's packet spacing, in ticks
    repair: str | None  # what `TimestampRepair.fix` repaired, if anything
    config: bytes | None  # the AAC config known so far (the caller's, or learnt from ADTS)


def align_audio(
    packet: MediaPacket,
    audio_clock: TimestampRepair,
    video_clock: TimestampRepair,
    config: bytes | None,
) -> AlignedAudio:
    """Repair an AAC packet's timestamps against the video's and strip its ADTS header.

    `config` is the AudioSpecificConfig learnt so far (None: none yet); the result carries it
    on, learnt from this packet's ADTS header when there was none.
    """
    video_seconds = video_clock.last_seconds
    if video_seconds is not None:
        # Lip sync: audio stays on the demuxer's common timeline unless its clock is far off.
        audio_clock.align(packet, video_seconds + packet.received - video_clock.last_received)
    dts, pts, repair = audio_clock.fix(packet)
    data = packet.data
    header = adts_header_length(data)
    if header:
        # AAC from MPEG-TS style sources comes with ADTS headers, which MP4 does not hold; the
        # config is learnt from the first of them when the source gave none.
        if config is None:
            config = adts_to_asc(data)
        data = data[header:]
    return AlignedAudio(data, dts, pts, audio_clock.step, repair, config)
