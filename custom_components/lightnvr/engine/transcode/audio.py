"""AAC, G.711 (or any audio PyAV decodes) to Opus, once per camera."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from fractions import Fraction
import logging
from typing import Any, Literal

import av
import av.error

from ...compat import fraction
from ...hub import MediaPacket, StreamInfo, ThreadPacketQueue
from ...media.consumer import PacketSource
from .base import LINGER_SECONDS, Pipeline, Run, Transcoder

_LOGGER = logging.getLogger(__name__)

OPUS_SAMPLE_RATE = 48000
OPUS_TIME_BASE = Fraction(1, OPUS_SAMPLE_RATE)
OPUS_FRAME_SAMPLES = 960  # 20 ms
OPUS_BITRATE = 32000
OPUS_CHANNELS = 1
OPUS_APPLICATION = "voip"
# Camera audio timestamps off the sample count by more than this start a new timeline (a gap,
# a reconnect or a drifting clock); smaller differences are jitter and ignored.
_AUDIO_RESYNC_SECONDS = 0.06


class AudioTranscoder(Transcoder):
    """One camera's audio as Opus (48 kHz mono, 20 ms) for WebRTC viewers."""

    kind: Literal["video", "audio"] = "audio"
    codec_out = "opus"

    def __init__(
        self,
        hub: PacketSource,
        *,
        linger: float = LINGER_SECONDS,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Prepare a transcoder of `hub`'s audio; nothing runs before the first user."""
        super().__init__(hub, linger=linger, loop=loop, keep_gop=False)

    @property
    def info(self) -> StreamInfo | None:
        """The hub's streams, with the audio described as the Opus we send."""
        source = self._hub.info
        if source is None or source.audio_codec is None:
            return None
        return replace(
            source,
            audio_codec="opus",
            audio_sample_rate=OPUS_SAMPLE_RATE,
            audio_channels=OPUS_CHANNELS,
            audio_extradata=None,
        )

    @property
    def path(self) -> str:
        """Describe the conversion, e.g. "aac 16000 Hz -> opus 48000 Hz mono (libopus)"."""
        source = self._hub.info
        src = ""
        if source is not None and source.audio_codec:
            src = f"{source.audio_codec} {source.audio_sample_rate or '?'} Hz "
        return f"{src}-> opus {OPUS_SAMPLE_RATE} Hz mono (libopus)"

    def _new_pipeline(self, run: Run) -> Pipeline:
        return _AudioPipeline(self, run)

    def _codec_in(self) -> str | None:
        info = self._hub.info
        return info.audio_codec if info is not None else None


class _AudioPipeline(Pipeline):
    def __init__(self, owner: AudioTranscoder, run: Run) -> None:
        self._owner = owner
        self._hub = owner._hub
        self._run = run
        self._counters = owner._counters
        self._generation = -1
        self._lost_seen = 0
        self._decoder: Any = None
        self._encoder: Any = None
        self._resampler: Any = None
        self._fifo: Any = None
        # Positions on the 48 kHz timeline: where the next decoded input sample belongs, and
        # the pts of the next 20 ms frame handed to the encoder.
        self._in_next: float | None = None
        self._out_next = 0

    def handle(self, packet: MediaPacket, queue: ThreadPacketQueue) -> None:
        counters = self._counters
        counters.frames_in += 1
        if packet.generation != self._generation:
            # A new connection: the codec may differ, timestamps start over.
            self._generation = packet.generation
            self._decoder = None
            self._drop_encoder()
            self._in_next = None
        lost = queue.dropped
        if lost != self._lost_seen:
            counters.dropped += max(0, lost - self._lost_seen)
            self._lost_seen = lost  # the timestamps show the gap; the timeline resyncs on it
        for frame in self._decode(packet):
            self._push(frame, packet)

    def _new_decoder(self, packet: MediaPacket) -> Any:
        info = self._hub.info
        if info is None or info.audio_codec is None:
            raise ValueError("audio packets without audio stream information")
        decoder: Any = av.CodecContext.create(info.audio_codec, "r")
        if info.audio_sample_rate:
            decoder.sample_rate = info.audio_sample_rate
        # PCM decoders need the layout given; AAC finds it in its config (extradata) too.
        decoder.layout = "stereo" if (info.audio_channels or 1) >= 2 else "mono"
        if info.generation == packet.generation and info.audio_extradata:
            decoder.extradata = info.audio_extradata
        decoder.thread_count = 1
        return decoder

    def _decode(self, packet: MediaPacket) -> list[Any]:
        if self._decoder is None:
            self._decoder = self._new_decoder(packet)
        try:
            return list(self._decoder.decode(packet.to_av_packet()))
        except av.error.FFmpegError as err:
            self._counters.decode_errors += 1
            _LOGGER.debug("%s: audio decode error: %s", self._hub.name, err)
            self._decoder = None
            return []

    def _push(self, frame: Any, packet: MediaPacket) -> None:
        """Resample a decoded frame to 48 kHz and encode every whole 20 ms it completes."""
        rate = int(frame.sample_rate or 0)
        if rate <= 0 or frame.samples <= 0:
            return
        time_base = fraction(frame.time_base) or packet.time_base
        source = round(frame.pts * time_base * OPUS_SAMPLE_RATE) if frame.pts is not None else None
        if self._in_next is None or (
            source is not None
            and abs(source - self._in_next) > _AUDIO_RESYNC_SECONDS * OPUS_SAMPLE_RATE
        ):
            # First frame, a gap or a jump of the camera's clock: a new timeline from the
            # camera's timestamp. Up to 20 ms still buffered from before is let go.
            start = source if source is not None else self._out_next
            if self._in_next is not None and start < self._out_next:
                # Back in time: libopus queues its input by timestamp, so a new encoder.
                self._drop_encoder()
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_SAMPLE_RATE)
            self._fifo = av.AudioFifo()
            self._in_next = float(start)
            self._out_next = start
        self._in_next += frame.samples * OPUS_SAMPLE_RATE / rate
        for resampled in self._resampler.resample(frame):
            resampled.pts = None  # the timeline is ours; the FIFO would check theirs
            self._fifo.write(resampled)
        while self._fifo.samples >= OPUS_FRAME_SAMPLES:
            chunk = self._fifo.read(OPUS_FRAME_SAMPLES)
            chunk.pts = self._out_next
            chunk.time_base = OPUS_TIME_BASE
            self._out_next += OPUS_FRAME_SAMPLES
            for out in self._encoder_for().encode(chunk):
                self._publish(out, packet)

    def close(self) -> None:
        """Let go of the codecs."""
        self._decoder = None
        self._drop_encoder()

    def _drop_encoder(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            # Drained first: libopus warns about every frame still queued when it is freed.
            with contextlib.suppress(av.error.FFmpegError, ValueError):
                encoder.encode(None)

    def _encoder_for(self) -> Any:
        if self._encoder is None:
            encoder: Any = av.CodecContext.create("libopus", "w")
            encoder.sample_rate = OPUS_SAMPLE_RATE
            encoder.layout = "mono"
            encoder.format = "s16"
            encoder.bit_rate = OPUS_BITRATE
            encoder.time_base = OPUS_TIME_BASE
            encoder.thread_count = 1
            encoder.options = {"application": OPUS_APPLICATION, "frame_duration": "20"}
            self._encoder = encoder
        return self._encoder

    def _publish(self, out: Any, packet: MediaPacket) -> None:
        # libopus dates a packet 6.5 ms (its look-ahead) before the input frame it completes:
        # that is where its sound belongs, so the pts is kept as FFmpeg gives it.
        pts = int(out.pts) if out.pts is not None else self._out_next
        self._owner._publish(
            self._run,
            MediaPacket(
                kind="audio",
                data=bytes(out),
                pts=pts,
                dts=pts,
                time_base=OPUS_TIME_BASE,
                keyframe=False,
                received=packet.received,
                generation=packet.generation,
            ),
        )
