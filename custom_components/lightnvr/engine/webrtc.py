"""WebRTC sessions of the embedded engine: aiortc peers fed by the hub, pass-through.

Packets go from the hub to aiortc's packetiser untouched: no decode, no re-encode. Every viewer
starts on the newest keyframe the hub holds; those already-old packets are given timestamps a
millisecond apart so the browser shows them at once and is at live right after (instead of
playing the whole group of pictures a second late).

Negotiation follows the viewer's offer, whatever its order (Home Assistant's frontend offers
audio, then video): the offer is applied first, then our tracks are attached to the offer's own
transceivers and each m-line is narrowed to the one codec we send, with the camera's own
parameters in the answer (H.264 `profile-level-id` from its SPS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
import logging
import time
from typing import Protocol

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.sdp import SessionDescription, candidate_from_sdp
import av
from webrtc_models import RTCIceCandidateInit, RTCIceServer as HassIceServer

from .. import h265
from ..compat import PeerConnection, set_transceiver_codecs
from ..h264 import has_parameter_sets, parameter_sets_annexb, profile_class, profile_level_id
from ..hub import MediaPacket, PacketQueue, StreamHub, StreamInfo
from .rtp_h265 import choose_h265, register_h265

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
# Audio older than this when it reaches the viewer is dropped, never sent late: late audio
# would only hold the browser's playout (and with it the picture) behind live.
AUDIO_STALE_SECONDS = 0.25

# RTP clock rates of the audio codecs we send (RFC 3551; Opus: RFC 7587).
AUDIO_CLOCKS = {"pcm_alaw": 8000, "pcm_mulaw": 8000, "opus": 48000}
# The SDP names of the codecs we send.
SDP_NAMES = {"h264": "h264", "pcm_alaw": "pcma", "pcm_mulaw": "pcmu", "opus": "opus"}
# RTCP feedback aiortc's senders answer (NACK, PLI, FIR, REMB).
_FEEDBACK = {("nack", None), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", None)}


class _SourceTrack(MediaStreamTrack):
    """A track fed by one subscription to a packet source (hub, sub-stream or transcode)."""

    def __init__(self, source: PacketSource, *, from_keyframe: bool) -> None:
        super().__init__()
        self._source = source
        self._queue = source.subscribe(VIEWER_QUEUE_PACKETS, from_keyframe=from_keyframe)
        # RTP clock mapping (see the subclasses' _rtp_timestamp).
        self._last_in: int | None = None
        self._last_out: int | None = None
        self._offset: int | None = None

    async def _next(self) -> MediaPacket:
        """Return the source's next timed packet of this track's kind."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                packet = await self._queue.get()
            except EOFError:
                self.stop()
                raise MediaStreamError from None
            if packet.kind == self.kind and packet.pts is not None:
                return packet

    def stop(self) -> None:
        """Stop the track and release its subscription."""
        super().stop()
        self._source.unsubscribe(self._queue)


class HubVideoTrack(_SourceTrack):
    """A video track that hands the source's H.264/H.265 packets to aiortc unchanged."""

    kind = "video"

    def __init__(self, hub: PacketSource) -> None:
        """Subscribe to `hub`, starting at its newest keyframe."""
        super().__init__(hub, from_keyframe=True)
        self._hub = hub
        self._started = False
        self.frames_sent = 0

    async def recv(self) -> av.Packet:
        """Return the next video packet for aiortc to packetise."""
        while True:
            packet = await self._next()
            if not self._started and not packet.keyframe:
                continue  # a decoder can only start on a keyframe
            self._started = True
            self.frames_sent += 1
            return self._to_av_packet(packet)

    def _to_av_packet(self, packet: MediaPacket) -> av.Packet:
        data = packet.data
        info = self._hub.info
        if packet.keyframe and info is not None and info.video_codec == "hevc":
            # WebRTC has no out-of-band H.265 parameter sets: every keyframe carries them.
            data = h265.with_parameter_sets(data, info.extradata)
        elif packet.keyframe and not has_parameter_sets(data):
            # Cameras that announce SPS/PPS only in the SDP: the viewer needs them in-band.
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


class HubAudioTrack(_SourceTrack):
    """An audio track that hands already-encoded audio (G.711, Opus) to aiortc unchanged.

    The RTP clock follows the camera's own audio timestamps (so sound keeps the camera's pace
    and stays in step with the picture), anchored where the viewer joins.
    """

    kind = "audio"

    def __init__(self, source: PacketSource, codec: str) -> None:
        """Subscribe to `source`'s audio packets of `codec` (live only, no backlog)."""
        super().__init__(source, from_keyframe=False)
        self._codec = codec
        self._clock = AUDIO_CLOCKS[codec]
        self._time_base = Fraction(1, self._clock)
        self.packets_sent = 0

    async def recv(self) -> av.Packet:
        """Return the next audio packet for aiortc to packetise."""
        while True:
            packet = await self._next()
            if time.monotonic() - packet.received > AUDIO_STALE_SECONDS:
                continue
            out = av.Packet(packet.data)
            out.pts = self._rtp_timestamp(packet)
            out.time_base = self._time_base
            self.packets_sent += 1
            return out

    def _rtp_timestamp(self, packet: MediaPacket) -> int:
        assert packet.pts is not None
        ts_in = round(packet.pts * packet.time_base * self._clock)
        if self._last_in is None or self._last_out is None or self._offset is None:
            self._offset = -ts_in
        elif not 0 < ts_in - self._last_in <= 5 * self._clock:
            # A reconnect or a broken camera clock: continue one 20 ms packet later.
            self._offset = self._last_out + self._clock // 50 - ts_in
        out = ts_in + self._offset
        self._last_in, self._last_out = ts_in, out
        return out


class PacketSource(Protocol):
    """What a track reads: a camera's hub, its sub-stream's, or a shared transcoder."""

    @property
    def info(self) -> StreamInfo | None:
        """Describe the stream (None until known)."""

    def subscribe(self, maxlen: int = 256, *, from_keyframe: bool = True) -> PacketQueue:
        """Return a queue of the packets from now on."""

    def unsubscribe(self, queue: PacketQueue) -> None:
        """Stop and close a queue."""

    def latest_keyframe(self) -> MediaPacket | None:
        """Return the newest keyframe, if any."""


@dataclass(slots=True)
class ViewerPlan:
    """What one viewer gets: the sources and codecs (as PyAV names them) of its media."""

    video: PacketSource
    video_codec: str = "h264"
    video_path: str = "h264_passthrough"  # how its video is made (see engine.base)
    audio: PacketSource | None = None
    audio_codec: str | None = None  # pcm_alaw, pcm_mulaw, opus; None: no audio
    # Shared transcodes this viewer holds, released when it leaves.
    releases: list[Callable[[], None]] = field(default_factory=list)

    def release(self) -> None:
        """Let go of what the plan holds (once)."""
        releases, self.releases = self.releases, []
        for release in releases:
            release()


def offered_codecs(offer_sdp: str) -> dict[str, set[str]]:
    """Return the codec names (lower case) the offer lists per media kind."""
    offered: dict[str, set[str]] = {"audio": set(), "video": set()}
    for media in SessionDescription.parse(offer_sdp).media:
        if media.kind in offered:
            offered[media.kind] |= {c.mimeType.split("/")[1].lower() for c in media.rtp.codecs}
    return offered


def _feedback(codec: RTCRtpCodecParameters) -> list[RTCRtcpFeedback]:
    return [fb for fb in codec.rtcpFeedback if (fb.type, fb.parameter) in _FEEDBACK]


def _with_rtx(
    chosen: RTCRtpCodecParameters, offered: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    """`chosen` plus the offer's retransmission payload type for it, if any."""
    rtx = [
        c
        for c in offered
        if c.mimeType.lower().endswith("/rtx")
        and str(c.parameters.get("apt")) == str(chosen.payloadType)
    ]
    return [chosen, *rtx[:1]]


def choose_h264(
    offered: list[RTCRtpCodecParameters], camera_profile_level: str | None
) -> list[RTCRtpCodecParameters]:
    """Pick the offer's H.264 payload type for the camera's stream and describe it.

    A payload type whose profile equals the camera's gets the camera's own `profile-level-id`
    (the level may differ: level-asymmetry-allowed). When the viewer offers no such profile,
    its most capable packetization-mode=1 payload type is answered as offered and the camera's
    stream sent anyway: browsers' decoders take any profile; that is what they got before.
    """
    h264 = [
        c
        for c in offered
        if c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode")) == "1"
    ]
    if not h264:
        raise ValueError("the viewer offers no H.264 (packetization-mode 1)")
    wanted = profile_class(camera_profile_level) if camera_profile_level else None

    def profile(codec: RTCRtpCodecParameters) -> str | None:
        return profile_class(str(codec.parameters.get("profile-level-id", "42e01f")))

    same = [c for c in h264 if wanted is not None and profile(c) == wanted]
    rank = ["high", "main", "constrained-baseline", "baseline"]
    base = (
        same[0]
        if same
        else min(h264, key=lambda c: rank.index(p) if (p := profile(c)) in rank else len(rank))
    )
    parameters: dict[str, str | int | None] = {
        "level-asymmetry-allowed": 1,
        "packetization-mode": 1,
        "profile-level-id": (
            camera_profile_level
            if same and camera_profile_level
            else str(base.parameters.get("profile-level-id", "42e01f"))
        ),
    }
    chosen = RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=base.payloadType,
        rtcpFeedback=_feedback(base),
        parameters=parameters,
    )
    return _with_rtx(chosen, offered)


def choose_audio(
    offered: list[RTCRtpCodecParameters], codec: str
) -> list[RTCRtpCodecParameters] | None:
    """Return the offer's payload type for `codec` (pcm_alaw, pcm_mulaw, opus), if offered."""
    name = SDP_NAMES[codec]
    for candidate in offered:
        if candidate.mimeType.split("/")[1].lower() == name:
            return [
                RTCRtpCodecParameters(
                    mimeType=candidate.mimeType,
                    clockRate=candidate.clockRate,
                    channels=candidate.channels,
                    payloadType=candidate.payloadType,
                    rtcpFeedback=[],
                    parameters=dict(candidate.parameters),
                )
            ]
    return None


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
    """One viewer: a peer connection, its tracks, and candidates that arrived early."""

    def __init__(self, session_id: str, hub: StreamHub, ice_servers: list[RTCIceServer]) -> None:
        """Create the peer connection (nothing is negotiated yet)."""
        self.session_id = session_id
        self.hub = hub
        self.pc = PeerConnection(RTCConfiguration(iceServers=ice_servers))
        self.track: HubVideoTrack | None = None
        self.audio_track: HubAudioTrack | None = None
        self.plan = ViewerPlan(hub)
        self.closed = False
        self._remote_set = False
        self._early_candidates: list[RTCIceCandidateInit] = []
        self._mids: list[str] = []

    async def answer(
        self, offer_sdp: str, plan: ViewerPlan | None = None
    ) -> tuple[str, list[RTCIceCandidateInit]]:
        """Negotiate: return the answer SDP (without candidates) and our candidates."""
        plan = plan or ViewerPlan(self.hub)
        offer = SessionDescription.parse(offer_sdp)
        offered = {media.rtp.muxId: media for media in offer.media}
        if not any(media.kind == "video" for media in offer.media):
            raise ValueError("the offer has no video")
        # The offer first, then our tracks on the offer's own transceivers: adding ours before
        # would leave a viewer that offers audio first (HA's frontend) without pictures.
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        transceivers = self.pc.getTransceivers()
        self._mids = [t.mid or str(i) for i, t in enumerate(transceivers)]
        for transceiver in transceivers:
            media = offered.get(transceiver.mid)
            codecs = media.rtp.codecs if media is not None else []
            if transceiver.kind == "video" and self.track is None:
                chosen = self._video_codecs(plan, codecs)
                self.track = HubVideoTrack(plan.video)
                self._send(transceiver, self.track, chosen)
            elif transceiver.kind == "audio" and self.audio_track is None and plan.audio_codec:
                assert plan.audio is not None
                audio_codecs = choose_audio(codecs, plan.audio_codec)
                if audio_codecs is None:
                    transceiver.direction = "inactive"
                    continue
                self.audio_track = HubAudioTrack(plan.audio, plan.audio_codec)
                self._send(transceiver, self.audio_track, audio_codecs)
            else:
                transceiver.direction = "inactive"  # nothing of ours for this m-line
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._remote_set = True
        for candidate in self._early_candidates:
            await self.add_candidate(candidate)
        self._early_candidates.clear()
        return split_candidates(self.pc.localDescription.sdp)

    @staticmethod
    def _video_codecs(
        plan: ViewerPlan, offered: list[RTCRtpCodecParameters]
    ) -> list[RTCRtpCodecParameters]:
        """Return the answer's video codecs, with the parameters of the stream we send."""
        info = plan.video.info
        keyframe = plan.video.latest_keyframe()
        if plan.video_codec == "hevc":
            ptl = h265.profile_tier_level(info.extradata if info else None) or (
                h265.profile_tier_level(keyframe.data) if keyframe else None
            )
            if ptl is None:
                raise ValueError("the camera's H.265 parameter sets are not known yet")
            register_h265()
            chosen = choose_h265(offered, ptl)
            if not chosen:
                raise ValueError("the viewer offers no H.265 this camera's stream fits")
            return chosen
        camera_profile = profile_level_id(info.extradata if info else None)
        if camera_profile is None and keyframe is not None:
            camera_profile = profile_level_id(keyframe.data)
        return choose_h264(offered, camera_profile)

    @staticmethod
    def _send(
        transceiver: RTCRtpTransceiver,
        track: MediaStreamTrack,
        codecs: list[RTCRtpCodecParameters],
    ) -> None:
        transceiver.sender.replaceTrack(track)
        transceiver.direction = "sendonly"
        set_transceiver_codecs(transceiver, codecs)

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
        for track in (self.track, self.audio_track):
            if track is not None:
                track.stop()
        self.plan.release()
        await self.pc.close()
