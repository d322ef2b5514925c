"""WebRTC sessions of the embedded engine: aiortc peers fed by the hub, H.264 pass-through.

Packets go from the hub to aiortc's packetiser untouched: no decode, no re-encode. Every viewer
starts on the newest keyframe the hub holds; those already-old packets are given timestamps a
millisecond apart so the browser shows them at once and is at live right after (instead of
playing the whole group of pictures a second late).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
import logging
import time

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
import av
from webrtc_models import RTCIceCandidateInit, RTCIceServer as HassIceServer

from ..h264 import has_parameter_sets, parameter_sets_annexb
from ..hub import MediaPacket, StreamHub

_LOGGER = logging.getLogger(__name__)

RTP_CLOCK = 90000
RTP_TIME_BASE = Fraction(1, RTP_CLOCK)
# A packet older than this when the viewer gets it is backlog (the cached GOP or a queue that
# built up): it is sent right away with compressed timestamps so the viewer catches up to live.
STALE_AFTER_SECONDS = 0.25
CATCH_UP_STEP = RTP_CLOCK // 1000
# A jump of the source clock larger than this (reconnect, broken camera clock) re-anchors time.
MAX_SOURCE_STEP = 5 * RTP_CLOCK
VIEWER_QUEUE_PACKETS = 300


class HubVideoTrack(MediaStreamTrack):
    """A video track that hands the hub's H.264 packets to aiortc unchanged."""

    kind = "video"

    def __init__(self, hub: StreamHub) -> None:
        """Subscribe to `hub`, starting at its newest keyframe."""
        super().__init__()
        self._hub = hub
        self._queue = hub.subscribe(VIEWER_QUEUE_PACKETS, from_keyframe=True)
        self._started = False
        self._last_in: int | None = None
        self._last_out: int | None = None
        self._offset: int | None = None
        self.frames_sent = 0

    async def recv(self) -> av.Packet:
        """Return the next video packet for aiortc to packetise."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                packet = await self._queue.get()
            except EOFError:
                self.stop()
                raise MediaStreamError from None
            if packet.kind != "video" or packet.pts is None:
                continue
            if not self._started and not packet.keyframe:
                continue  # a decoder can only start on a keyframe
            self._started = True
            self.frames_sent += 1
            return self._to_av_packet(packet)

    def stop(self) -> None:
        """Stop the track and release its hub subscription."""
        super().stop()
        self._hub.unsubscribe(self._queue)

    def _to_av_packet(self, packet: MediaPacket) -> av.Packet:
        data = packet.data
        if packet.keyframe and not has_parameter_sets(data):
            # Cameras that announce SPS/PPS only in the SDP: the viewer needs them in-band.
            info = self._hub.info
            data = parameter_sets_annexb(info.extradata if info else None) + data
        out = av.Packet(data)
        out.pts = self._rtp_timestamp(packet)
        out.time_base = RTP_TIME_BASE
        return out

    def _rtp_timestamp(self, packet: MediaPacket) -> int:
        """Map source time to a steadily rising RTP clock (see module docstring)."""
        assert packet.pts is not None
        ts_in = int(packet.pts * packet.time_base * RTP_CLOCK)
        stale = time.monotonic() - packet.received > STALE_AFTER_SECONDS
        if self._last_out is None:
            out = 0
        elif stale:
            out = self._last_out + CATCH_UP_STEP
            self._offset = None
        else:
            jumped = self._last_in is None or not 0 < ts_in - self._last_in <= MAX_SOURCE_STEP
            if self._offset is None or jumped:
                fps = self._hub.info.fps if self._hub.info else None
                frame_step = int(RTP_CLOCK / fps) if fps else RTP_CLOCK // 25
                self._offset = self._last_out + frame_step - ts_in
            out = max(ts_in + self._offset, self._last_out + 1)
        self._last_in = ts_in
        self._last_out = out
        return out


def to_aiortc_ice_servers(servers: Iterable[HassIceServer]) -> list[RTCIceServer]:
    """Convert Home Assistant's configured ICE servers to aiortc's type."""
    return [
        RTCIceServer(
            urls=server.urls,  # type: ignore[arg-type]  # aiortc takes a list too
            username=server.username,
            credential=server.credential,
        )
        for server in servers
    ]


def split_candidates(sdp: str) -> tuple[str, list[RTCIceCandidateInit]]:
    """Take the ICE candidates out of an SDP so they can be trickled one by one."""
    lines: list[str] = []
    candidates: list[RTCIceCandidateInit] = []
    m_index = -1
    mid: str | None = None
    pending: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            candidates += [
                RTCIceCandidateInit(c, sdp_mid=mid, sdp_m_line_index=m_index) for c in pending
            ]
            pending = []
            m_index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            pending.append(line[2:])
            continue
        if line == "a=end-of-candidates":
            continue
        lines.append(line)
    candidates += [RTCIceCandidateInit(c, sdp_mid=mid, sdp_m_line_index=m_index) for c in pending]
    return "\r\n".join(lines) + "\r\n", candidates


class WebRTCViewer:
    """One viewer: a peer connection, its track, and candidates that arrived early."""

    def __init__(self, session_id: str, hub: StreamHub, ice_servers: list[RTCIceServer]) -> None:
        """Create the peer connection (nothing is negotiated yet)."""
        self.session_id = session_id
        self.hub = hub
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self.track: HubVideoTrack | None = None
        self.closed = False
        self._remote_set = False
        self._early_candidates: list[RTCIceCandidateInit] = []
        self._mids: list[str] = []

    async def answer(self, offer_sdp: str) -> tuple[str, list[RTCIceCandidateInit]]:
        """Negotiate: return the answer SDP (without candidates) and our candidates."""
        if "\nm=video " not in "\n" + offer_sdp.replace("\r\n", "\n"):
            raise ValueError("the offer has no video")
        # The transceiver and its codec preference must exist BEFORE the offer is applied:
        # aiortc fixes the answer's codecs while applying it, and browsers list VP8 first
        # (which aiortc would then try to encode). H.264 only: we pass the camera's through.
        self.track = HubVideoTrack(self.hub)
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences(
            [
                codec
                for codec in RTCRtpSender.getCapabilities("video").codecs
                if codec.mimeType.lower() in ("video/h264", "video/rtx")
            ]
        )
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        self._mids = [t.mid or str(i) for i, t in enumerate(self.pc.getTransceivers())]
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._remote_set = True
        for candidate in self._early_candidates:
            await self.add_candidate(candidate)
        self._early_candidates.clear()
        return split_candidates(self.pc.localDescription.sdp)

    async def add_candidate(self, candidate: RTCIceCandidateInit) -> None:
        """Add a remote candidate (queued until the offer has been applied)."""
        if not self._remote_set:
            self._early_candidates.append(candidate)
            return
        text = candidate.candidate.strip()
        if not text:
            return  # end-of-candidates: aioice keeps checking the pairs it has
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        parsed = candidate_from_sdp(text)
        mid = candidate.sdp_mid
        if mid is None and candidate.sdp_m_line_index is not None:
            index = candidate.sdp_m_line_index
            mid = self._mids[index] if 0 <= index < len(self._mids) else None
        parsed.sdpMid = mid if mid is not None else (self._mids[0] if self._mids else "0")
        parsed.sdpMLineIndex = candidate.sdp_m_line_index
        await self.pc.addIceCandidate(parsed)

    async def close(self) -> None:
        """Close the peer connection and release the hub subscription."""
        if self.closed:
            return
        self.closed = True
        if self.track is not None:
            self.track.stop()
        await self.pc.close()
