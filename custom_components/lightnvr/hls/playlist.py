"""HLS media playlists, rendered from plain data (no I/O, no Home Assistant).

Both playlists use fragmented MP4 (`EXT-X-MAP` init sections, version 6). Live: a sliding
window with `EXT-X-MEDIA-SEQUENCE` and `EXT-X-DISCONTINUITY-SEQUENCE`. VOD: the whole range,
`EXT-X-PLAYLIST-TYPE:VOD`, `EXT-X-ENDLIST`. Every segment carries `EXT-X-PROGRAM-DATE-TIME`
(players show the wall clock while scrubbing), and `EXT-X-DISCONTINUITY` marks every place where
the init section changes (a new recording file, a new camera connection) or time jumps (a gap
in the recordings).

Live playlists can also carry LL-HLS (RFC 8216bis): `EXT-X-PART` for the newest segments and
the one being filled, `EXT-X-PRELOAD-HINT` for the next part, `EXT-X-PART-INF` and
`EXT-X-SERVER-CONTROL`. These need no higher version (9 is for `EXT-X-SKIP`, not served), and
players without LL-HLS skip them, so one playlist serves both.

Also here: the one rule that cuts fragments into segments (`group_fragments`), shared by the
live and the recorded playlists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
import math

HLS_VERSION = 6  # EXT-X-MAP in a media playlist without I-frames-only needs version 6
# Time between two segments beyond which a VOD playlist marks a gap (the recorder continues
# one connection's timeline across files to the millisecond; a reconnect takes seconds).
DEFAULT_GAP_SECONDS = 0.5
TARGET_TOLERANCE = 0.05  # seconds: a segment this close to the target is long enough
# PART-HOLD-BACK in part targets: the spec asks for at least 2, and 3 or more is what it
# recommends (room for one late part before a player stalls).
PART_HOLD_BACK_PARTS = 3


@dataclass(frozen=True, slots=True)
class ByteRange:
    """`length@offset` of a resource."""

    length: int
    offset: int

    def render(self) -> str:
        """Return the HLS notation."""
        return f"{self.length}@{self.offset}"


@dataclass(frozen=True, slots=True)
class InitRef:
    """An init section (`EXT-X-MAP`)."""

    uri: str
    byterange: ByteRange | None = None
    # Identifies the init section's content independently of the (signed) URI.
    key: str = ""

    def render(self) -> str:
        """Return the EXT-X-MAP line."""
        line = f'#EXT-X-MAP:URI="{self.uri}"'
        if self.byterange is not None:
            line += f',BYTERANGE="{self.byterange.render()}"'
        return line

    @property
    def identity(self) -> str:
        """Return what tells two init sections apart."""
        if self.key:
            return self.key
        extra = self.byterange.render() if self.byterange else ""
        return f"{self.uri}#{extra}"


@dataclass(frozen=True, slots=True)
class PlaylistPart:
    """One LL-HLS partial segment (`EXT-X-PART`)."""

    uri: str
    duration: float
    independent: bool  # starts with a keyframe

    def render(self) -> str:
        """Return the EXT-X-PART line."""
        line = f'#EXT-X-PART:DURATION={self.duration:.3f},URI="{self.uri}"'
        return line + (",INDEPENDENT=YES" if self.independent else "")


@dataclass(frozen=True, slots=True)
class PlaylistSegment:
    """One media segment."""

    uri: str
    duration: float  # seconds
    start: float  # epoch seconds of its first frame
    init: InitRef
    byterange: ByteRange | None = None
    discontinuity: bool = False  # force EXT-X-DISCONTINUITY before it
    independent: bool = True  # starts with a keyframe
    parts: tuple[PlaylistPart, ...] = ()  # LL-HLS: listed before its EXTINF

    @property
    def end(self) -> float:
        """Return the epoch second after its last frame."""
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class LowLatency:
    """What a live playlist adds for LL-HLS."""

    part_target: float  # seconds: no part is longer
    preload_hint: str  # URI of the next part
    # The segment being filled (parts only, `uri` unused); None when it has no part yet.
    partial: PlaylistSegment | None = None
    can_block_reload: bool = True

    def header(self) -> list[str]:
        """Return EXT-X-SERVER-CONTROL and EXT-X-PART-INF."""
        # Rounded up: every part's DURATION (3 decimals) must fit in it.
        target = math.ceil(self.part_target * 1000 - 1e-6) / 1000
        control = f"PART-HOLD-BACK={PART_HOLD_BACK_PARTS * target:.3f}"
        if self.can_block_reload:
            control = "CAN-BLOCK-RELOAD=YES," + control
        return [f"#EXT-X-SERVER-CONTROL:{control}", f"#EXT-X-PART-INF:PART-TARGET={target:.3f}"]


def format_program_date_time(epoch: float) -> str:
    """Return an EXT-X-PROGRAM-DATE-TIME value (UTC, milliseconds)."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def target_duration(segments: Sequence[PlaylistSegment], minimum: float = 1.0) -> int:
    """Return EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer fits in it."""
    longest = max((segment.duration for segment in segments), default=minimum)
    return max(1, int(max(longest, minimum) + 0.5))


def group_fragments(fragments: Sequence[tuple[bool, float]], target: float) -> list[list[int]]:
    """Group (keyframe, seconds) fragments into segments of about `target` seconds.

    A segment is closed as soon as it is long enough, and the next one starts at the next
    fragment that begins with a keyframe, so every segment plays on its own. A fragment without
    a keyframe (a long GOP split by the muxer) joins the segment before it.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    length = 0.0
    for number, (keyframe, seconds) in enumerate(fragments):
        if current and keyframe and length >= target - TARGET_TOLERANCE:
            groups.append(current)
            current, length = [], 0.0
        current.append(number)
        length += seconds
    if current:
        groups.append(current)
    return groups


def _segment_lines(
    segment: PlaylistSegment, previous: PlaylistSegment | None, discontinuity: bool
) -> list[str]:
    lines: list[str] = []
    if discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if previous is None or discontinuity or previous.init.identity != segment.init.identity:
        lines.append(segment.init.render())
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(segment.start)}")
    lines.extend(part.render() for part in segment.parts)
    lines.append(f"#EXTINF:{segment.duration:.3f},")
    if segment.byterange is not None:
        lines.append(f"#EXT-X-BYTERANGE:{segment.byterange.render()}")
    lines.append(segment.uri)
    return lines


def render_live_playlist(
    segments: Sequence[PlaylistSegment],
    *,
    media_sequence: int,
    discontinuity_sequence: int = 0,
    target: int | None = None,
    low_latency: LowLatency | None = None,
) -> str:
    """Render a live (sliding window) media playlist.

    `media_sequence` is the sequence number of the first segment given; a segment's own
    `discontinuity` flag decides its EXT-X-DISCONTINUITY (the live source knows where its
    timeline or init section changed, also for the first segment of the window), and
    `discontinuity_sequence` counts the flagged segments that left the window. With
    `low_latency`, the segments' parts, the segment being filled and the preload hint are
    listed too.
    """
    duration = target if target is not None else target_duration(segments)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{HLS_VERSION}",
        f"#EXT-X-TARGETDURATION:{duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}",
    ]
    if low_latency is not None:
        lines[3:3] = low_latency.header()
    if segments and all(segment.independent for segment in segments):
        lines.insert(2, "#EXT-X-INDEPENDENT-SEGMENTS")
    previous: PlaylistSegment | None = None
    for segment in segments:
        lines.extend(_segment_lines(segment, previous, segment.discontinuity))
        previous = segment
    if low_latency is not None:
        if (partial := low_latency.partial) is not None:
            # Its parts only: no EXTINF and URI until it is complete.
            partial_lines = _segment_lines(partial, previous, partial.discontinuity)
            lines.extend(partial_lines[:-2])
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{low_latency.preload_hint}"')
    return "\n".join(lines) + "\n"


def render_vod_playlist(
    segments: Sequence[PlaylistSegment], *, gap: float = DEFAULT_GAP_SECONDS
) -> str:
    """Render a VOD playlist over recorded segments (oldest first).

    EXT-X-DISCONTINUITY goes before a segment whose init section differs from the one before
    it, whose start is more than `gap` seconds after the previous segment's end, or that asks
    for one itself.
    """
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{HLS_VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(segments)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    if segments and all(segment.independent for segment in segments):
        lines.insert(2, "#EXT-X-INDEPENDENT-SEGMENTS")
    previous: PlaylistSegment | None = None
    for segment in segments:
        discontinuity = previous is not None and (
            segment.discontinuity
            or segment.init.identity != previous.init.identity
            or segment.start - previous.end > gap
        )
        lines.extend(_segment_lines(segment, previous, discontinuity))
        previous = segment
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def playlist_duration(segments: Sequence[PlaylistSegment]) -> float:
    """Return the sum of the segments' durations (what a player shows as the length)."""
    return sum(segment.duration for segment in segments)
