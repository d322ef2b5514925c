"""Audio for the MP4 writers: AAC as the camera sends it, anything else transcoded to AAC.

Browsers and MP4 players play AAC from an MP4 file; the G.711 (A-law, µ-law) of doorbells and
cheap cameras, and most other camera codecs, they do not. The recorder, the event clips and
the in-memory live muxer therefore write an AAC track whatever the camera sends:

- AAC is stream-copied as before (nothing here touches it);
- any other audio that PyAV can decode is decoded, resampled to the AAC encoder's format
  (float planar, mono, the camera's rate or 16 kHz at least) and encoded with FFmpeg's native
  `aac` encoder, in the consumer's own thread (8 kHz G.711 costs a few tenths of a percent of
  a core).

`AudioToAac` converts one connection's audio. Its packets keep the camera's clock (in
1/sample-rate ticks), so the writers place them against the video exactly as they place copied
AAC, and the writers' timestamp repair still applies to them. `AacAudio` is what a consumer
holds: it builds a converter for every new connection and hands the writers a `StreamInfo`
that says AAC, with the encoder's AudioSpecificConfig.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from fractions import Fraction
import logging
from typing import Any

import av
import av.error

from ..compat import fraction
from ..hub import MediaPacket, StreamInfo

_LOGGER = logging.getLogger(__name__)

AAC = "aac"
# AAC's own sampling rates from wideband up. A narrowband camera (8 kHz G.711) is upsampled
# to 16 kHz: the lowest rate that every MP4/HLS player decodes, for little more encoding work.
_AAC_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
_MIN_RATE = 16000
_MAX_RATE = 48000
_MIN_BIT_RATE = 32000  # mono speech from a camera microphone at 16 kHz
_MAX_BIT_RATE = 64000
# Input timestamps and the count of samples may disagree by this much (rounding, jitter)
# before the output is put back onto the camera's clock.
_RESYNC_SECONDS = 0.1


def needs_aac(info: StreamInfo | None) -> bool:
    """Return True when the connection's audio must be transcoded to go into MP4."""
    return info is not None and info.audio_codec is not None and info.audio_codec != AAC


def aac_rate(rate: int | None) -> int:
    """Return the AAC sampling rate used for a camera's rate."""
    if rate is not None and rate in _AAC_RATES:
        return rate
    return _MIN_RATE if not rate or rate < _MIN_RATE else _MAX_RATE


def _audio_specific_config(rate: int, channels: int) -> bytes:
    """Return the AudioSpecificConfig of AAC-LC (when the encoder gives none)."""
    index = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
    return ((2 << 11) | (index.index(rate) << 7) | (channels << 3)).to_bytes(2, "big")


class AudioToAac:
    """Decodes one connection's audio and encodes it as AAC (mono), keeping its timestamps.

    Raises `av.error.FFmpegError` (or ValueError) from the constructor when the codec cannot
    be decoded or AAC cannot be encoded; after that, `convert` never raises: a packet that
    does not decode is skipped and counted in `errors`.
    """

    def __init__(self, info: StreamInfo) -> None:
        """Open a decoder for `info`'s audio and an AAC encoder."""
        if info.audio_codec is None:
            raise ValueError("the connection has no audio")
        self.generation = info.generation
        self.source_codec = info.audio_codec
        self.errors = 0  # input packets skipped (undecodable)
        self.resyncs = 0  # times the output was put back onto the input's clock
        self._decoder = self._open_decoder(info)
        rate = aac_rate(info.audio_sample_rate)
        self.sample_rate = rate
        self.time_base = Fraction(1, rate)
        self._encoder = self._open_encoder(rate)
        self._frame_size = int(self._encoder.frame_size or 1024)
        self._resampler = self._new_resampler()
        self._fifo: Any = av.AudioFifo()
        extradata = self._encoder.extradata
        self.info = replace(
            info,
            audio_codec=AAC,
            audio_sample_rate=rate,
            audio_channels=1,
            audio_extradata=bytes(extradata) if extradata else _audio_specific_config(rate, 1),
        )
        # The encoder runs on a sample count of its own (0, 1024, …): it never sees the
        # camera's clock going back. `_marks` maps that count back onto the camera's clock:
        # (sample count, camera tick, arrival), one at least every encoder frame and one at
        # every resync; the samples between two marks are consecutive on both clocks.
        self._written = 0  # samples put into the FIFO
        self._encoded = 0  # samples handed to the encoder
        self._camera_next: int | None = None  # camera tick of the next sample written
        self._marks: deque[tuple[int, int, float]] = deque()
        self._resync_ticks = max(1, round(rate * _RESYNC_SECONDS))

    @staticmethod
    def _open_decoder(info: StreamInfo) -> Any:
        assert info.audio_codec is not None
        decoder: Any = av.CodecContext.create(info.audio_codec, "r")
        if info.audio_sample_rate:
            decoder.sample_rate = info.audio_sample_rate
        # G.711 carries no header: the decoder must be told the layout (mono when unknown,
        # as cameras send it).
        decoder.layout = "stereo" if (info.audio_channels or 1) >= 2 else "mono"
        if info.audio_extradata:
            decoder.extradata = info.audio_extradata
        decoder.open()
        return decoder

    @staticmethod
    def _open_encoder(rate: int) -> Any:
        encoder: Any = av.CodecContext.create(AAC, "w")
        encoder.sample_rate = rate
        encoder.layout = "mono"
        encoder.format = "fltp"  # the native AAC encoder takes nothing else
        encoder.bit_rate = min(_MAX_BIT_RATE, max(_MIN_BIT_RATE, 2 * rate))
        encoder.time_base = Fraction(1, rate)
        encoder.open()
        return encoder

    def _new_resampler(self) -> Any:
        return av.AudioResampler(format="fltp", layout="mono", rate=self.sample_rate)

    def convert(self, packet: MediaPacket) -> list[MediaPacket]:
        """Return the AAC packets completed by one input audio packet (often none or one)."""
        if not packet.data:
            return []  # an empty packet would put the decoder into draining mode for good
        data = av.Packet(packet.data)
        data.pts = packet.pts if packet.pts is not None else packet.dts
        data.time_base = packet.time_base
        try:
            frames = self._decoder.decode(data)
        except (av.error.FFmpegError, ValueError) as err:
            self._skip(err)
            return []
        for frame in frames:
            self._add(frame, packet)
        return self._encode(packet)

    def close(self) -> None:
        """Drain the encoder (what it still holds belongs to a connection that has ended)."""
        try:
            self._encoder.encode(None)
        except (av.error.FFmpegError, ValueError):
            _LOGGER.debug("Error draining an AAC encoder", exc_info=True)

    def _skip(self, err: Exception) -> None:
        self.errors += 1
        log = _LOGGER.info if self.errors == 1 else _LOGGER.debug
        log(
            "Skipped %s audio that could not be converted to AAC (%d so far): %s",
            self.source_codec,
            self.errors,
            err,
        )

    def _add(self, frame: Any, packet: MediaPacket) -> None:
        """Resample a decoded frame into the FIFO and note where it is on the camera's clock."""
        try:
            resampled = self._resampler.resample(frame)
        except ValueError:
            # The camera changed its rate or layout mid-stream: a resampler for the new one.
            self._resampler = self._new_resampler()
            try:
                resampled = self._resampler.resample(frame)
            except (av.error.FFmpegError, ValueError) as err:
                self._skip(err)
                return
        camera = self._camera_ticks(frame, packet)
        expected = self._camera_next
        if expected is None and camera is None:
            return  # nothing to place them by yet (an RTSP connection's first packet)
        if expected is None or (camera is not None and abs(camera - expected) > self._resync_ticks):
            # The first samples, or samples lost or repeated on the way: follow the camera.
            if expected is not None:
                self.resyncs += 1
            assert camera is not None
            expected = camera
            self._marks.append((self._written, expected, packet.received))
        elif not self._marks or self._written - self._marks[-1][0] >= self._frame_size:
            self._marks.append((self._written, expected, packet.received))
        count = 0
        for out in resampled:
            out.pts = None  # the FIFO checks continuity of timestamps it is given
            self._fifo.write(out)
            count += out.samples
        self._written += count
        self._camera_next = expected + count

    def _camera_ticks(self, frame: Any, packet: MediaPacket) -> int | None:
        """Return the frame's time on the camera's clock, in output samples."""
        pts = frame.pts
        time_base = fraction(frame.time_base) or packet.time_base
        if pts is None:
            return None
        return round(int(pts) * time_base * self.sample_rate)

    def _encode(self, packet: MediaPacket) -> list[MediaPacket]:
        out: list[MediaPacket] = []
        while self._fifo.samples >= self._frame_size:
            frame = self._fifo.read(self._frame_size)
            frame.pts = self._encoded
            frame.time_base = self.time_base
            self._encoded += self._frame_size
            try:
                encoded = self._encoder.encode(frame)
            except (av.error.FFmpegError, ValueError) as err:
                self._skip(err)
                continue
            out.extend(self._to_media(item, packet) for item in encoded)
        return out

    def _to_media(self, encoded: Any, packet: MediaPacket) -> MediaPacket:
        """Put an encoded packet (on the encoder's sample count) onto the camera's clock."""
        count = int(encoded.pts if encoded.pts is not None else self._encoded)
        marks = self._marks
        while len(marks) > 1 and marks[1][0] <= count:
            marks.popleft()
        written, camera, received = marks[0]
        # Before the first mark only for the encoder's priming packet (count < 0).
        offset = count - written
        pts = camera + offset
        return MediaPacket(
            kind="audio",
            data=bytes(encoded),
            pts=pts,
            dts=pts,
            time_base=self.time_base,
            keyframe=False,
            received=min(packet.received, received + offset / self.sample_rate),
            generation=packet.generation,
        )


class AacAudio:
    """One consumer's audio: what it needs to write an AAC track, across reconnects.

    `reset` at every new connection, `stream_info` wherever the writers are described,
    `convert` for every packet: video and AAC pass as they are, other audio comes out as AAC.
    """

    def __init__(self, name: str) -> None:
        """Prepare for a consumer of the camera `name` (for logs)."""
        self._name = name
        self.converter: AudioToAac | None = None
        self._failed: set[str] = set()

    def reset(self, info: StreamInfo | None, generation: int) -> StreamInfo | None:
        """Start over for connection `generation`; return `info` as the writers must see it."""
        if self.converter is not None:
            self.converter.close()
            self.converter = None
        if info is None or info.generation != generation or not needs_aac(info):
            return info
        try:
            self.converter = AudioToAac(info)
        except (av.error.FFmpegError, ValueError) as err:
            if info.audio_codec not in self._failed:
                self._failed.add(str(info.audio_codec))
                _LOGGER.info(
                    "%s: %s audio cannot be converted to AAC (%s)",
                    self._name,
                    info.audio_codec,
                    err,
                )
            return info
        _LOGGER.debug(
            "%s: converting %s audio to AAC at %d Hz",
            self._name,
            info.audio_codec,
            self.converter.sample_rate,
        )
        return self.converter.info

    def stream_info(self, info: StreamInfo | None) -> StreamInfo | None:
        """Return `info` with its audio described as AAC when this connection's is converted."""
        converter = self.converter
        if info is None or converter is None or converter.generation != info.generation:
            return info
        return converter.info

    def convert(self, packet: MediaPacket) -> list[MediaPacket] | tuple[MediaPacket, ...]:
        """Return what to write for `packet`: itself, or the AAC packets it completed."""
        converter = self.converter
        if packet.kind != "audio" or converter is None:
            return (packet,)
        if packet.generation != converter.generation:
            return ()  # a packet of another connection than the converter was made for
        return converter.convert(packet)
