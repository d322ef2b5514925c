"""Timeline queries over the day indexes: recorded spans, gaps, event clips, and playback.

Everything is answered from the in-memory indexes (`SegmentIndex`, `ClipIndex`): a range looks
only at the days it can touch, and nothing here lists a folder. The functions are blocking
only in the sense of CPU work (tens of milliseconds for a month of one-minute files) and reading
one file's boxes for a playback's exact start: callers run them in the executor. The indexes are
thread-safe; each day's list is copied under the index's lock.

Spans: consecutive recordings closer than `MERGE_GAP` seconds are one span. Files cut every
minute leave milliseconds between them; a reconnect, a restart or the recording switch leave
more, and that is what a timeline should show.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
import math
from operator import attrgetter
from typing import Final, Protocol

from ..hls.views import VOD_TARGET_SECONDS
from ..hls.vod import FragmentCache, vod_chunks
from ..recorder.clips import EventClip
from ..recorder.storage import DayItems, Indexed, Segment

MERGE_GAP: Final = 2.0
# Local days (of any time zone) are at most a day off the UTC day, and a file lasts at most
# `files.MAX_FILE_SECONDS` (6 h): two days either side catch every file overlapping a range.
_DAY_MARGIN: Final = timedelta(days=2)

# Why a gap exists, where that is known (see `build_timeline`).
REASON_NOT_KEPT: Final = "not_kept"  # before the oldest recording kept (retention, or never)
REASON_IN_PROGRESS: Final = "in_progress"  # being recorded now; playable once the file ends
REASON_RECORDING_OFF: Final = "recording_off"  # the recording switch is off now
REASON_RECORDING_PAUSED: Final = "recording_paused"  # on, but held back (storage full, …)
REASON_CAMERA_OFFLINE: Final = "camera_offline"  # no video from the camera now
REASON_CAMERA_REMOVED: Final = "camera_removed"  # the camera is no longer configured


class TimedItem(Indexed, Protocol):
    """An indexed file with an end: recordings and event clips."""

    @property
    def end(self) -> float: ...  # noqa: D102


def _utc_day(epoch: float) -> date:
    return datetime.fromtimestamp(epoch, UTC).date()


def overlapping[T: TimedItem](
    index: DayItems[T], camera_id: str, start: float, end: float
) -> list[T]:
    """Return a camera's items overlapping [start, end), oldest first.

    An item without length (its end unknown) counts when it lies inside the range.
    """
    first = _utc_day(start) - _DAY_MARGIN
    last = _utc_day(end) + _DAY_MARGIN
    found: list[T] = []
    for day in index.days(camera_id):
        if day < first:
            continue
        if day > last:
            break
        items = index.items(camera_id, day)
        if items and items[0].start >= start and items[-1].start < end:
            found.extend(items)  # a day wholly inside the range (most of a long one): no test
            continue
        found.extend(
            item for item in items if item.start < end and (item.end > start or item.start >= start)
        )
    return found


# ----- spans, gaps, events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Recorded time: files no more than `MERGE_GAP` apart."""

    start: float
    end: float
    files: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Time without recordings between spans (or at the ends of a range)."""

    start: float
    end: float
    reason: str | None = None
    detail: str | None = None


def merge_spans(segments: Iterable[Segment], max_gap: float = MERGE_GAP) -> list[Span]:
    """Return the spans of `segments` (oldest first)."""
    spans: list[Span] = []
    start = end = 0.0
    files = 0
    for segment in segments:
        if files and segment.start - end < max_gap:
            end = max(end, segment.end)
            files += 1
            continue
        if files:
            spans.append(Span(start, end, files))
        start, end, files = segment.start, segment.end, 1
    if files:
        spans.append(Span(start, end, files))
    return spans


@dataclass(frozen=True, slots=True)
class GapHistory:
    """When a camera's recording was switched off and when it was away, as far as is known.

    From the state changes seen since Home Assistant started (see `journal`): older gaps have
    no known reason. Intervals are (start, end) epoch seconds, oldest first; an open one ends
    at infinity.
    """

    recording_off: tuple[tuple[float, float], ...] = ()
    camera_away: tuple[tuple[float, float], ...] = ()

    def reason(self, start: float, end: float) -> str | None:
        """Return why [start, end) was not recorded, if a known interval overlaps it.

        The switch first: recording switched off explains a gap whatever the camera did.
        """
        for intervals, reason in (
            (self.recording_off, REASON_RECORDING_OFF),
            (self.camera_away, REASON_CAMERA_OFFLINE),
        ):
            if any(first < end and last > start for first, last in intervals):
                return reason
        return None


@dataclass(frozen=True, slots=True)
class TrailingState:
    """What is known now about a camera's recording, for the gap that reaches the present."""

    reason: str | None = None
    detail: str | None = None
    writing_since: float | None = None  # start of the file being written, if one is


@dataclass(frozen=True, slots=True)
class Timeline:
    """Spans, gaps and event clips of one camera over a range."""

    start: float
    end: float
    spans: list[Span]
    gaps: list[Gap]
    events: list[EventClip]


def _gaps(
    spans: Sequence[Span],
    start: float,
    limit: float,
    *,
    oldest: float | None,
    trailing: TrailingState,
    reaches_now: bool,
    history: GapHistory,
) -> list[Gap]:
    """Return the gaps of [start, limit) around `spans`; `limit` is the range's end or now.

    `reaches_now`: nothing was recorded after `limit`, so the last gap lasts until now and the
    present state (`trailing`) explains it.
    """
    gaps: list[Gap] = []
    position = start
    for span in spans:
        if span.start - position >= MERGE_GAP:
            kept = oldest is not None and span.start > oldest + MERGE_GAP
            reason = history.reason(position, span.start) if kept else REASON_NOT_KEPT
            gaps.append(Gap(position, span.start, reason))
        position = max(position, span.end)
    writing = trailing.writing_since
    if not reaches_now:
        if limit - position >= MERGE_GAP:
            # Recordings follow later: the present state does not explain it, history may.
            gaps.append(Gap(position, limit, history.reason(position, limit)))
    elif writing is not None and writing < limit:
        if writing - position >= MERGE_GAP:
            if not spans and oldest is None:
                gaps.append(Gap(position, writing, REASON_NOT_KEPT))
            else:
                gaps.append(Gap(position, writing, history.reason(position, writing)))
        gaps.append(Gap(max(position, writing, start), limit, REASON_IN_PROGRESS))
    elif limit - position >= MERGE_GAP:
        if not spans and (oldest is None or oldest >= limit):
            gaps.append(Gap(position, limit, REASON_NOT_KEPT))
        elif trailing.reason is not None:
            gaps.append(Gap(position, limit, trailing.reason, trailing.detail))
        else:
            gaps.append(Gap(position, limit, history.reason(position, limit)))
    return [gap for gap in gaps if gap.end > gap.start]


def build_timeline(
    segments: DayItems[Segment],
    clips: DayItems[EventClip],
    camera_id: str,
    start: float,
    end: float,
    *,
    now: float,
    trailing: TrailingState | None = None,
    history: GapHistory | None = None,
) -> Timeline:
    """Return a camera's spans, gaps and event clips over [start, end) (CPU work: executor).

    Gaps reach up to now at most (the future is not a gap). The gap reaching now gets the
    camera's present state as its reason (`trailing`); gaps before the oldest recording kept
    are `not_kept`; other gaps get the reason `history` knows, if any.
    """
    trailing = trailing if trailing is not None else TrailingState()
    recorded = overlapping(segments, camera_id, start, end)
    spans = merge_spans(recorded)
    oldest_item = segments.oldest(camera_id)
    oldest = oldest_item.start if oldest_item is not None else None
    newest = segments.newest(camera_id)
    limit = min(end, now)
    reaches_now = newest is None or newest.start < limit
    gaps = (
        _gaps(
            spans,
            start,
            limit,
            oldest=oldest,
            trailing=trailing,
            reaches_now=reaches_now,
            history=history if history is not None else GapHistory(),
        )
        if limit > start
        else []
    )
    events = overlapping(clips, camera_id, start, end)
    return Timeline(start, end, spans, gaps, events)


# ----- paging ------------------------------------------------------------------------------------


class BadCursorError(ValueError):
    """A cursor that this module did not make."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: the items starting at `time`, after the first `skip`.

    Items are ordered by start (then spans, gaps, events), so a cursor stays right when
    recordings are added after the range or deleted before it while a client pages.
    """

    time: float
    skip: int

    def encode(self) -> str:
        """Return the cursor as the client sends it back."""
        return f"{self.time!r}~{self.skip}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Return a cursor from its text; BadCursorError if it is not one."""
        moment, sep, skip = text.partition("~")
        try:
            time, count = float(moment), int(skip)
        except ValueError as err:
            raise BadCursorError(text) from err
        if not sep or not math.isfinite(time) or count < 0:
            raise BadCursorError(text)
        return cls(time, count)


type TimelineItem = Span | Gap | EventClip


def _rank(item: TimelineItem) -> int:
    return 0 if isinstance(item, Span) else 1 if isinstance(item, Gap) else 2


def _order(item: TimelineItem) -> tuple[float, int, float]:
    return (item.start, _rank(item), item.end)


@dataclass(frozen=True, slots=True)
class Page:
    """One answer's share of a timeline."""

    spans: list[Span]
    gaps: list[Gap]
    events: list[EventClip]
    next_cursor: Cursor | None


def page(timeline: Timeline, limit: int, cursor: Cursor | None = None) -> Page:
    """Return at most `limit` items of `timeline` (spans, gaps and events) after `cursor`."""
    # Three lists sorted already: sorting their concatenation only merges the runs.
    ordered: list[TimelineItem] = [*timeline.spans, *timeline.gaps, *timeline.events]
    ordered.sort(key=_order)
    first = 0
    if cursor is not None:
        first = bisect_right(ordered, cursor.time, key=attrgetter("start"))
        # bisect_right passed every item starting at the cursor's time; step back over the
        # ones not sent yet.
        same = first
        while same > 0 and ordered[same - 1].start == cursor.time:
            same -= 1
        first = min(first, same + cursor.skip)
    chosen = ordered[first : first + limit]
    following = first + limit
    next_cursor = None
    if following < len(ordered):
        moment = ordered[following].start
        same = following
        while same > 0 and ordered[same - 1].start == moment:
            same -= 1
        next_cursor = Cursor(moment, following - same)
    return Page(
        spans=[item for item in chosen if isinstance(item, Span)],
        gaps=[item for item in chosen if isinstance(item, Gap)],
        events=[item for item in chosen if isinstance(item, EventClip)],
        next_cursor=next_cursor,
    )


# ----- playback ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Playback:
    """Which recordings a playback from an instant plays, as one recorded (VOD) playlist."""

    time: float  # the instant asked, or the next recording's start when it was in a gap
    segments: list[Segment]  # the playlist's files; the first holds `time`
    range_start: int  # whole epoch seconds of the playlist's range (its URL)
    range_end: int
    end: float  # where the playlist's media ends
    span: Span  # the span holding `time` (all of it, also beyond the playlist)


def find_playback(
    index: DayItems[Segment],
    camera_id: str,
    at: float,
    max_seconds: float,
    max_files: int,
) -> Playback | None:
    """Return the playlist playing from `at` (or the next recording after it); None if none.

    The playlist starts with the file holding the instant, so the offset into it is exact
    (a player's time counts media, not the small gaps between files), and ends with the span
    or after `max_seconds` or `max_files` files, whichever comes first.
    """
    segments = index.items(camera_id)
    # Files of one camera do not overlap: ends rise with starts.
    i = bisect_right(segments, at, key=attrgetter("end"))
    while i > 0 and segments[i - 1].end > at:
        i -= 1
    if i == len(segments):
        return None
    hit = segments[i]
    moment = max(at, hit.start)
    first = i
    while first > 0 and segments[first].start - segments[first - 1].end < MERGE_GAP:
        first -= 1
    last = i
    while last + 1 < len(segments) and segments[last + 1].start - segments[last].end < MERGE_GAP:
        last += 1
    span = Span(
        segments[first].start,
        max(segment.end for segment in segments[first : last + 1]),
        last - first + 1,
    )
    # The range's start is a whole second: the file before (if it ends within that second)
    # must stay out, or the playlist would start with its last chunk.
    range_start = math.floor(hit.start)
    if i > 0 and segments[i - 1].end > range_start - 0.001:
        range_start = math.ceil(segments[i - 1].end + 0.001)
    stop = hit.start + max_seconds
    # One file less than allowed: the whole second rounded up at the end may touch the next.
    chosen = [
        segment
        for segment in segments[i : min(last + 1, i + max(1, max_files - 1))]
        if segment.start < stop
    ]
    end = min(max(segment.end for segment in chosen), stop)
    return Playback(
        time=moment,
        segments=chosen,
        range_start=range_start,
        range_end=max(math.ceil(end), range_start + 1),
        end=end,
        span=span,
    )


def playlist_start(playback: Playback, fragments: FragmentCache | None) -> float:
    """Return the epoch second the playback's playlist starts at (blocking: reads one file).

    That is the first ~2 s chunk the VOD view lists, cut exactly as it cuts it; without the
    file's fragment index (no HLS service, or the file is gone), the recording's start.
    """
    first = playback.segments[0]
    if fragments is not None:
        indexes = fragments.get_many([first.path])
        chunks = vod_chunks(
            [first], indexes, playback.range_start, playback.range_end, VOD_TARGET_SECONDS
        )
        if chunks:
            return chunks[0].start
    return first.start
