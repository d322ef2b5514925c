"""The one place where PyAV and aiortc versions differ.

Home Assistant decides which PyAV the integration gets (13.1 on 2025.4, 16 on 2026.2, 19 on
2026.11) and with it which aiortc can be installed (1.10 up to 1.16). Everything that is spelled
differently across those versions lives here, so the rest of the code reads the same on all.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
import io
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.exceptions import InvalidStateError
import av

PYAV_VERSION: tuple[int, ...] = tuple(int(p) for p in av.__version__.split(".")[:2] if p.isdigit())
# PyAV 14 removed `add_stream(template=…)` and made `add_stream` look up an *encoder*.
_HAS_TEMPLATE_API = hasattr(av.container.OutputContainer, "add_stream_from_template")


def add_copy_stream(container: Any, codec_name: str) -> Any:
    """Add a stream to `container` for packets that are muxed as they are (stream copy).

    The stream's codec context is never opened: callers set width, height, extradata and the
    like on `stream.codec_context`, and the muxer takes them as the track's parameters.
    PyAV 13 gets a stream from the codec's decoder (opened for its parameters only). PyAV 14+
    would open an encoder for `add_stream` — an H.264 or H.265 encoder would then replace the
    camera's parameter sets with its own — so the stream is made from a template instead; a
    stream made from a template is never opened.
    """
    if not _HAS_TEMPLATE_API:
        stream = container.add_stream(av.codec.Codec(codec_name, "r"))
        # Opened for its parameters only: no pool of decoding threads per writer.
        stream.codec_context.thread_count = 1
        return stream
    # The template lives in a scratch container of the same format (which accepts the same
    # codecs); its encoder is only looked up, never opened.
    scratch = av.open(io.BytesIO(), mode="w", format=container.format.name)
    try:
        template = scratch.add_stream(codec_name)
        return container.add_stream_from_template(template)
    finally:
        with contextlib.suppress(av.error.FFmpegError):
            scratch.close()


def add_stream_like(container: Any, template: Any) -> Any:
    """Add a stream copying `template` (a stream of an open input container)."""
    if _HAS_TEMPLATE_API:
        return container.add_stream_from_template(template)
    return container.add_stream(template=template)


def fraction(value: Any) -> Fraction | None:
    """Return a PyAV rational as a `Fraction` (None when unset).

    PyAV 19 returns its own `AVRational`, whose hash differs from an equal `Fraction` and
    which is 0/1 rather than None when unset: time bases are used as dict keys and compared
    across packets, so they are made one type as soon as they leave PyAV.
    """
    if value is None or not value:
        return None
    return Fraction(int(value.numerator), int(value.denominator))


def set_transceiver_codecs(transceiver: Any, codecs: list[Any]) -> None:
    """Narrow what an aiortc transceiver negotiated (after the offer) to `codecs`.

    aiortc keeps the negotiated codecs in `RTCRtpTransceiver._codecs` (1.10 to 1.16): the
    answer lists them with their parameters, and the sender sends the first one. Setting them
    after the offer is applied is how the answer gets the camera's own codec parameters.
    """
    transceiver._codecs = list(codecs)


def audio_channels(ctx: Any) -> int | None:
    """Return the channel count of an audio codec context (PyAV 13 and 14+)."""
    layout = getattr(ctx, "layout", None)
    count = getattr(layout, "nb_channels", None)
    if count is None:
        count = getattr(ctx, "channels", None)
    return int(count) if count else None


class PeerConnection(RTCPeerConnection):
    """aiortc's peer connection, without a failed task when it is closed while connecting.

    aiortc (1.10 to 1.16) starts the transports in a task of its own (`__connect`), which walks
    the transceivers one by one. A viewer that leaves, or whose ICE fails, while that walk is
    between two transceivers makes the next step raise "RTCIceTransport is closed"; nobody
    awaits the task, so asyncio logs "Task exception was never retrieved" as an error. Once the
    connection is closed there is nothing left to start, so that error is dropped; any other
    error is kept.
    """

    async def _RTCPeerConnection__connect(self) -> None:  # noqa: N802 (aiortc's private name)
        try:
            await super()._RTCPeerConnection__connect()  # type: ignore[misc]
        except InvalidStateError:
            if self.signalingState != "closed":
                raise
