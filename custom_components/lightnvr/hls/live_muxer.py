"""Live HLS's in-memory muxer: a camera's hub packets → fMP4 fragments, while nothing records.

Used when recording is off (or paused, or not started yet): it subscribes to the camera's
StreamHub (the one shared connection) and muxes it with the camera muxer every MP4 consumer
uses (`media.muxer.CameraMuxer`: stream copy, AAC audio, repaired timestamps), handing each
complete fragment, moved onto the wall-clock timeline, to the live window as a `LiveChunk`. It
starts from the hub's cached GOP, so its first fragment is ready at the camera's next keyframe.
"""

from __future__ import annotations

from collections.abc import Callable
import logging

from ..hub import MediaPacket
from ..media.consumer import PacketConsumer, PacketSource
from ..media.muxer import CameraMuxer, Fragment
from .live_types import LIVE_TARGET_SECONDS, LiveChunk, LiveSource, chunk_from_fragment

_LOGGER = logging.getLogger(__name__)

_MUXER_QUEUE_PACKETS = 512
_MUXER_JOIN_SECONDS = 10.0


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
        self._muxer = CameraMuxer(
            name,
            lambda: source.info,
            fragment_seconds=fragment_seconds,
            on_fragment=self._on_fragment,
        )
        self.chunks = 0

    def _on_drops(self, count: int) -> None:
        # A lost packet breaks the references of the frames after it.
        self._muxer.resync()

    def _on_exit(self) -> None:
        self._muxer.close()  # its last fragment is still listed
        try:
            self._on_end()
        except Exception:
            _LOGGER.exception("Error in the live HLS end callback")

    def _handle_packet(self, packet: MediaPacket) -> None:
        self._muxer.handle(packet)

    def _on_fragment(self, fragment: Fragment) -> None:
        chunk = chunk_from_fragment(fragment, LiveSource.MEMORY, on_wall_clock=True)
        self.chunks += 1
        try:
            self._on_chunk(chunk)
        except Exception:
            _LOGGER.exception("Error in the live HLS chunk callback")
