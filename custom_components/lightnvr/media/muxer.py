"""CameraMuxer: a camera's packets → fMP4 fragments in memory, muxed once for every consumer.

Each camera has one, run by its muxer thread (`media.fragments.CameraFragments`), whose
fragments the recorder, event clips and live HLS all take. What it does to every packet is the
one way the integration prepares a camera's media for MP4:

- **one container per connection** (`MediaPacket.generation`), opened at its first keyframe, a
  fragment (`moof`+`mdat`) at every keyframe and at least every `fragment_seconds`
  (`media.fmp4.Fmp4Writer`, stream copy into a memory buffer);
- **timestamps repaired** (`media.timestamps`): every repair is reported (`on_repair`) so the
  recorder can count and log them;
- **audio**: AAC copied, other codecs transcoded to AAC (`media.aac.AacAudio`), on the
  video's timeline (`media.audio_align`);
- **lost packets** (`resync`): frames are skipped up to the next keyframe, the container goes
  on (a gap in time, no broken references).

Each complete fragment is handed to `on_fragment` as a `Fragment` on the container's own
timeline (decode time 0 = its first frame); `on_close` follows the last fragment of a
container. Both are called in the caller's thread, from `handle` and `close`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
import logging
import time

import av
import av.error

from ..hub import MediaPacket, StreamInfo
from .aac import AacAudio
from .audio_align import align_audio
from .bmff import (
    TrackInfo,
    iter_boxes,
    parse_moof,
    parse_tracks,
    retime_fragments,
    timeline_shifts,
    traf_fields,
    video_track,
)
from .fmp4 import Fmp4Writer
from .params import AUDIO_CODECS, VIDEO_CODECS, video_extradata
from .timestamps import TimestampRepair, connection_clocks

_LOGGER = logging.getLogger(__name__)

# Keyframe arrival times kept to date fragments (a few GOPs: fragments are cut as they come).
_ARRIVALS_KEPT = 32


class MuxerInit:
    """One container's init section (`ftyp`+`moov`) and what its fragments need to be placed."""

    def __init__(self, data: bytes, zero: float, generation: int) -> None:
        self.data = data
        self.zero = zero  # epoch second of decode time 0 (the arrival of the first keyframe)
        self.generation = generation
        self.tracks: Mapping[int, TrackInfo] = parse_tracks(data)
        video = video_track(self.tracks)
        self.video_track_id = video.track_id if video is not None else 1
        self.video_scale = video.timescale if video is not None else 90000
        # Per track, the ticks that move decode time 0 onto the wall clock (live HLS).
        self.wall_shifts = timeline_shifts(self.tracks, zero)


@dataclass(frozen=True, slots=True, eq=False)
class Fragment:
    """One complete `moof`+`mdat` of a container, on the container's timeline."""

    init: MuxerInit  # the same object for every fragment of one container
    data: bytes
    bases: Mapping[int, int]  # per track id, the decode time of its first sample (tfdt)
    video_base: int  # the video tfdt, in the video track's time scale
    start: float  # epoch second of its first frame
    duration: float  # seconds of video
    keyframe: bool  # starts with a keyframe: playable without what came before
    arrived: float | None  # epoch second its first (key)frame arrived, if known

    def on_wall_clock(self) -> bytes:
        """Return the fragment with its decode times moved onto the wall clock (live HLS)."""
        data = bytearray(self.data)
        retime_fragments(data, self.init.wall_shifts)
        return bytes(data)


class _MemorySink:
    """The file object PyAV writes into: a growing buffer, cut into boxes after every write."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)


class _Container:
    """One in-memory fMP4 container: from one keyframe of one connection until it ends."""

    def __init__(
        self,
        info: StreamInfo,
        video_extra: bytes | None,
        audio_extra: bytes | None,
        *,
        zero: float,
        origin_seconds: float,
        fragment_seconds: float,
    ) -> None:
        self.zero = zero
        self.generation = info.generation
        self.sink = _MemorySink()
        self.init: MuxerInit | None = None
        self.writer = Fmp4Writer(
            self.sink,
            info,
            video_extra,
            audio_extra,
            origin_seconds=origin_seconds,
            fragment_seconds=fragment_seconds,
        )
        self.arrivals: dict[int, float] = {}  # video ms from 0 → epoch second of arrival

    def take_fragments(self) -> list[Fragment]:
        """Cut what the muxer wrote into the init section and complete fragments.

        Whatever is complete is taken out of the buffer; a box still being written (or a
        `moof` whose `mdat` has not come yet) stays for the next call.
        """
        buffer = self.sink.buffer
        fragments: list[Fragment] = []
        consumed = 0
        moof: tuple[int, int, int] | None = None  # (start, body start, end)
        for kind, start, body, end in iter_boxes(buffer):
            if kind == b"ftyp":
                continue  # part of the init section, taken with the moov
            if kind == b"moov":
                self.init = MuxerInit(bytes(buffer[:end]), self.zero, self.generation)
                consumed = end
            elif kind == b"moof":
                moof = (start, body, end)
            elif kind == b"mdat" and moof is not None:
                moof_start, moof_body, moof_end = moof
                moof = None
                consumed = end
                fragment = self._fragment(buffer, moof_start, moof_body, moof_end, end)
                if fragment is not None:
                    fragments.append(fragment)
            elif moof is None:
                consumed = end  # anything else (the closing mfra): not a fragment
        del buffer[:consumed]
        return fragments

    def _fragment(
        self, buffer: bytearray, start: int, body: int, moof_end: int, end: int
    ) -> Fragment | None:
        init = self.init
        if init is None:
            return None
        parsed = parse_moof(bytes(buffer[body:moof_end]), init.video_track_id)
        if parsed is None:
            return None  # no video in it: nothing a player could start on
        base, duration, keyframe = parsed
        data = bytes(buffer[start:end])
        bases = {
            tfdt.track_id: tfdt.value
            for tfdt in traf_fields(data, body - start, moof_end - start, 0)
        }
        seconds = base / init.video_scale
        arrived = self.arrivals.pop(round(seconds * 1000), None) if keyframe else None
        return Fragment(
            init=init,
            data=data,
            bases=bases,
            video_base=base,
            start=self.zero + seconds,
            duration=duration / init.video_scale,
            keyframe=keyframe,
            arrived=arrived,
        )

    def note_keyframe(self, seconds: float, arrived: float) -> None:
        """Remember when the keyframe at `seconds` (from 0) arrived, to date its fragment."""
        arrivals = self.arrivals
        arrivals[round(seconds * 1000)] = arrived
        while len(arrivals) > _ARRIVALS_KEPT:
            del arrivals[next(iter(arrivals))]


type FragmentHandler = Callable[[Fragment], None]


class CameraMuxer:
    """Muxes one camera's packets into fragments (see the module doc). One thread uses it."""

    def __init__(
        self,
        name: str,
        stream_info: Callable[[], StreamInfo | None],
        *,
        fragment_seconds: float,
        on_fragment: FragmentHandler,
        on_close: Callable[[], None] | None = None,
        on_repair: Callable[[str], None] | None = None,
        on_unsupported: Callable[[str | None], None] | None = None,
    ) -> None:
        """Prepare a muxer for the camera `name` (for logs); `stream_info` is the hub's."""
        self._name = name
        self._stream_info = stream_info
        self._fragment_seconds = fragment_seconds
        self._on_fragment = on_fragment
        self._on_close = on_close
        self._on_repair = on_repair
        self._on_unsupported = on_unsupported
        self._container: _Container | None = None
        self._generation: int | None = None
        self._video_clock = TimestampRepair(None)
        self._audio_clock = TimestampRepair(None)
        self._audio_config: bytes | None = None  # learnt from ADTS headers
        self._aac = AacAudio(name)
        self._need_keyframe = True
        self._origin = 0  # repaired dts of the container's first frame
        self.unsupported: str | None = None  # a video codec MP4 cannot hold, while it lasts
        self._unsupported_audio_logged: set[str] = set()

    @property
    def is_open(self) -> bool:
        """Return True while a container is being written."""
        return self._container is not None

    def resync(self) -> None:
        """Packets were lost: skip to the next keyframe (the container goes on)."""
        self._need_keyframe = True

    def handle(self, packet: MediaPacket) -> None:
        """Mux one packet; complete fragments go to `on_fragment` before this returns.

        A packet the muxer refuses ends the container (its fragments so far are delivered) and
        muxing starts over at the next keyframe; the handlers' own errors propagate.
        """
        if packet.generation != self._generation:
            self._new_generation(packet.generation)
        container = self._container
        try:
            if packet.kind == "video":
                container = self._handle_video(packet)
            else:
                for audio in self._aac.convert(packet):  # other audio comes out as AAC
                    self._handle_audio(audio)
        except (av.error.FFmpegError, ValueError) as err:
            _LOGGER.debug("Muxer of %s: %s; starting over at a keyframe", self._name, err)
            self.close()
            self._need_keyframe = True
            return
        if container is not None:
            self._deliver(container.take_fragments())

    def close(self) -> None:
        """End the container: its last fragment goes to `on_fragment`, then `on_close`."""
        container, self._container = self._container, None
        self._need_keyframe = True
        if container is None:
            return
        try:
            container.writer.close()  # writes the last fragment
        except (av.error.FFmpegError, OSError, ValueError):
            _LOGGER.debug("Error closing the muxer of %s", self._name, exc_info=True)
        try:
            self._deliver(container.take_fragments())
        finally:
            if self._on_close is not None:
                self._on_close()

    def _deliver(self, fragments: list[Fragment]) -> None:
        for fragment in fragments:
            self._on_fragment(fragment)

    def _repaired(self, repair: str | None) -> None:
        if repair is not None and self._on_repair is not None:
            self._on_repair(repair)

    def _new_generation(self, generation: int) -> None:
        """Start over on a new connection: the container ends here, the clocks restart."""
        self.close()
        self._generation = generation
        info = self._aac.reset(self._stream_info(), generation)
        self._video_clock, self._audio_clock = connection_clocks(info, generation)
        self._audio_config = None

    def _handle_video(self, packet: MediaPacket) -> _Container | None:
        dts, pts, repair = self._video_clock.fix(packet)
        self._repaired(repair)
        container = self._container
        if self._need_keyframe or container is None:
            if not packet.keyframe:
                return container
            if container is None:
                container = self._open(packet, dts)
                if container is None:
                    return None
            self._need_keyframe = False
        if packet.keyframe:
            seconds = float((dts - self._origin) * packet.time_base)
            container.note_keyframe(seconds, _epoch(packet.received))
        container.writer.write_video(
            packet.data,
            dts - self._origin,
            pts - self._origin,
            packet.keyframe,
            self._video_clock.step,
        )
        return container

    def _handle_audio(self, packet: MediaPacket) -> None:
        info = self._aac.stream_info(self._stream_info())
        if info is None or info.audio_codec not in AUDIO_CODECS:
            return
        audio = align_audio(packet, self._audio_clock, self._video_clock, self._audio_config)
        self._audio_config = audio.config
        self._repaired(audio.repair)
        container = self._container
        if container is not None and container.writer.audio is not None:
            container.writer.write_audio(
                audio.data, audio.dts, audio.pts, packet.time_base, audio.duration
            )

    def _audio_extradata(self, info: StreamInfo) -> bytes | None:
        codec = info.audio_codec
        if codec is None or not info.audio_sample_rate:
            return None
        if codec not in AUDIO_CODECS:
            if codec not in self._unsupported_audio_logged:
                self._unsupported_audio_logged.add(codec)
                _LOGGER.info(
                    "%s: %s audio is left out of MP4 (it cannot be converted to AAC)",
                    self._name,
                    codec,
                )
            return None
        return info.audio_extradata or self._audio_config

    def _set_unsupported(self, codec: str | None) -> None:
        if codec != self.unsupported:
            self.unsupported = codec
            if self._on_unsupported is not None:
                self._on_unsupported(codec)

    def _open(self, packet: MediaPacket, dts: int) -> _Container | None:
        info = self._aac.stream_info(self._stream_info())
        if info is None or info.generation != packet.generation:
            return None  # this connection's details are gone: wait for the next keyframe
        if info.video_codec not in VIDEO_CODECS:
            if self.unsupported != info.video_codec:
                _LOGGER.warning(
                    "%s: %s video cannot be put in MP4 without transcoding",
                    self._name,
                    info.video_codec,
                )
            self._set_unsupported(info.video_codec)
            return None
        self._set_unsupported(None)
        container = _Container(
            info,
            video_extradata(info, packet.data),
            self._audio_extradata(info),
            zero=_epoch(packet.received),
            origin_seconds=float(dts * packet.time_base),
            fragment_seconds=self._fragment_seconds,
        )
        self._container = container
        self._origin = dts
        return container


def _epoch(received: float) -> float:
    """Return the epoch second of a `time.monotonic()` arrival stamp."""
    return time.time() - (time.monotonic() - received)
