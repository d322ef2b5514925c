"""Live HLS's in-memory muxer: a camera's hub packets → fMP4 fragments, while nothing records.

Used when recording is off (or paused, or not started yet): it subscribes to the camera's
StreamHub (the one shared connection), stream-copies the video (and AAC audio; other audio is
transcoded by `recorder.audio.AacAudio`) through the one fMP4 writer into memory, and hands each
complete fragment, already on the wall-clock timeline, to the live window as a `LiveChunk`. It
starts from the hub's cached GOP, so its first fragment is ready at the camera's next keyframe.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
import logging
import time

import av
import av.error

from ..hub import MediaPacket, StreamInfo
from ..media.audio_align import align_audio
from ..media.bmff import (
    iter_boxes,
    parse_moof,
    parse_tracks,
    retime_fragments,
    timeline_shifts,
    video_track,
)
from ..media.consumer import PacketConsumer, PacketSource
from ..media.fmp4 import Fmp4Writer
from ..media.params import AUDIO_CODECS, VIDEO_CODECS, video_extradata
from ..media.timestamps import TimestampRepair, connection_clocks
from ..recorder.audio import AacAudio
from .live_types import LIVE_TARGET_SECONDS, LiveChunk, LiveSource

_LOGGER = logging.getLogger(__name__)

_MUXER_QUEUE_PACKETS = 512
_MUXER_JOIN_SECONDS = 10.0


class _MemorySink:
    """The file object PyAV writes into: a growing buffer, cut into boxes by the muxer thread."""

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
        self.key = object()
        self.zero = zero
        self.sink = _MemorySink()
        self.init: bytes | None = None
        self.shifts: dict[int, int] = {}
        self.video_track_id = 1
        self.video_scale = 1
        self._writer = Fmp4Writer(
            self.sink,
            info,
            video_extra,
            audio_extra,
            origin_seconds=origin_seconds,
            fragment_seconds=fragment_seconds,
        )
        self.audio = self._writer.audio  # None when the camera's audio is not muxed

    def write_video(self, data: bytes, dts: int, pts: int, keyframe: bool, duration: int) -> None:
        """Mux one video packet (relative to the container's first frame)."""
        self._writer.write_video(data, dts, pts, keyframe, duration)

    def write_audio(
        self, data: bytes, dts: int, pts: int, time_base: Fraction, duration: int
    ) -> None:
        """Mux one audio packet (connection timestamps; before the first frame: dropped)."""
        self._writer.write_audio(data, dts, pts, time_base, duration)

    def take_chunks(self) -> list[LiveChunk]:
        """Cut what the muxer wrote into the init section and complete fragments.

        Whatever is complete is taken out of the buffer; a box still being written (or a
        `moof` whose `mdat` has not come yet) stays for the next call.
        """
        buffer = self.sink.buffer
        chunks: list[LiveChunk] = []
        consumed = 0
        moof: tuple[int, int, int] | None = None  # (start, body start, end)
        for kind, start, body, end in iter_boxes(buffer):
            if kind == b"ftyp":
                continue  # part of the init section, taken with the moov
            if kind == b"moov":
                self.init = bytes(buffer[:end])
                tracks = parse_tracks(self.init)
                video = video_track(tracks)
                if video is not None:
                    self.video_track_id = video.track_id
                    self.video_scale = video.timescale
                self.shifts = timeline_shifts(tracks, self.zero)
                consumed = end
            elif kind == b"moof":
                moof = (start, body, end)
            elif kind == b"mdat" and moof is not None:
                moof_start, moof_body, moof_end = moof
                moof = None
                consumed = end
                parsed = parse_moof(bytes(buffer[moof_body:moof_end]), self.video_track_id)
                if parsed is None or self.init is None:
                    continue  # no video in it: nothing a viewer could start on
                base, duration, keyframe = parsed
                data = bytearray(buffer[moof_start:end])
                retime_fragments(data, self.shifts)
                chunks.append(
                    LiveChunk(
                        source=LiveSource.MEMORY,
                        init_key=self.key,
                        zero=self.zero,
                        start=self.zero + base / self.video_scale,
                        duration=duration / self.video_scale,
                        keyframe=keyframe,
                        data=bytes(data),
                        init_data=self.init,
                    )
                )
            elif moof is None:
                consumed = end  # anything else (the closing mfra): not for HLS
        del buffer[:consumed]
        return chunks

    def close(self) -> None:
        """Finish the container (its last fragment stays in the buffer for take_chunks)."""
        try:
            self._writer.close()
        except (av.error.FFmpegError, OSError, ValueError):
            _LOGGER.debug("Error closing a live muxer", exc_info=True)


class MemoryMuxer(PacketConsumer):
    """Muxes one camera's hub packets into in-memory fMP4 fragments (stream copy), in a thread.

    A muxer is started once and stopped once (`request_stop` on the loop, `join` in an
    executor). It handles each packet as it comes (no batching: a segment is listed as soon as
    its last fragment is muxed) and does not resubscribe: when the hub closes its queue the
    muxer ends and `on_end` lets the live camera start a new one on whatever hub the camera
    has then. `on_chunk` and `on_end` are called in its thread and must return at once.
    """

    def __init__(
        self,
        name: str,
        source: PacketSource,
        *,
        on_chunk: Callable[[LiveChunk], None],
        on_end: Callable[[], None],
        fragment_seconds: float = LIVE_TARGET_SECONDS,
    ) -> None:
        """Prepare a muxer; nothing runs before `start`."""
        super().__init__(
            source,
            label=f"Live HLS muxer of {name}",
            thread_name=f"lightnvr-hls-{name}",
            queue_packets=_MUXER_QUEUE_PACKETS,
            batch_seconds=None,
            drain_on_stop=False,
            resubscribe=False,
            join_seconds=_MUXER_JOIN_SECONDS,
        )
        self.name = name
        self._on_chunk = on_chunk
        self._on_end = on_end
        self._fragment_seconds = fragment_seconds
        self._container: _Container | None = None
        self._generation: int | None = None
        self._video_clock = TimestampRepair(None)
        self._audio_clock = TimestampRepair(None)
        self._audio_extradata: bytes | None = None  # learnt from ADTS headers
        self._aac = AacAudio(name)
        self._need_keyframe = True
        self._origin = 0
        self.chunks = 0

    def _on_drops(self, count: int) -> None:
        # A lost packet breaks the references of the frames after it.
        self._need_keyframe = True

    def _on_exit(self) -> None:
        self._close()
        try:
            self._on_end()
        except Exception:
            _LOGGER.exception("Error in the live HLS end callback")

    def _handle_packet(self, packet: MediaPacket) -> None:
        if packet.generation != self._generation:
            self._new_generation(packet.generation)
        try:
            if packet.kind == "video":
                self._handle_video(packet)
            else:
                for audio in self._aac.convert(packet):  # other audio comes out as AAC
                    self._handle_audio(audio)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            # One bad packet must not end live view: start over at the next keyframe.
            _LOGGER.debug("Live HLS muxer of %s: %s; restarting", self.name, err)
            self._close()
            self._need_keyframe = True
            return
        self._deliver(self._container)

    def _new_generation(self, generation: int) -> None:
        self._close()
        self._generation = generation
        info = self._aac.reset(self._source.info, generation)
        self._video_clock, self._audio_clock = connection_clocks(info, generation)
        self._audio_extradata = None
        self._need_keyframe = True

    def _handle_video(self, packet: MediaPacket) -> None:
        dts, pts, _ = self._video_clock.fix(packet)
        container = self._container
        if self._need_keyframe or container is None:
            if not packet.keyframe:
                return
            self._need_keyframe = False
            if container is None:
                container = self._open(packet, dts)
                if container is None:
                    self._need_keyframe = True
                    return
        container.write_video(
            packet.data,
            dts - self._origin,
            pts - self._origin,
            packet.keyframe,
            self._video_clock.step,
        )

    def _handle_audio(self, packet: MediaPacket) -> None:
        info = self._aac.stream_info(self._source.info)
        if info is None or info.audio_codec not in AUDIO_CODECS:
            return
        audio = align_audio(packet, self._audio_clock, self._video_clock, self._audio_extradata)
        self._audio_extradata = audio.config
        container = self._container
        if container is not None and container.audio is not None:
            container.write_audio(
                audio.data, audio.dts, audio.pts, packet.time_base, audio.duration
            )

    def _open(self, packet: MediaPacket, dts: int) -> _Container | None:
        info = self._aac.stream_info(self._source.info)
        if info is None or info.generation != packet.generation:
            return None
        if info.video_codec not in VIDEO_CODECS:
            return None
        audio = None
        if info.audio_codec in AUDIO_CODECS and info.audio_sample_rate:
            audio = info.audio_extradata or self._audio_extradata
        zero = time.time() - (time.monotonic() - packet.received)
        container = _Container(
            info,
            video_extradata(info, packet.data),
            audio,
            zero=zero,
            origin_seconds=float(dts * packet.time_base),
            fragment_seconds=self._fragment_seconds,
        )
        self._container = container
        self._origin = dts
        return container

    def _deliver(self, container: _Container | None) -> None:
        if container is None:
            return
        for chunk in container.take_chunks():
            self.chunks += 1
            try:
                self._on_chunk(chunk)
            except Exception:
                _LOGGER.exception("Error in the live HLS chunk callback")

    def _close(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        container.close()  # writes the last fragment
        self._deliver(container)
