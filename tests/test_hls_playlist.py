"""Pure playlist rendering: live window and VOD, tags, discontinuities, durations, grouping."""

from __future__ import annotations

from custom_components.lightnvr.hls.playlist import (
    ByteRange,
    InitRef,
    LowLatency,
    PlaylistPart,
    PlaylistSegment,
    format_program_date_time,
    group_fragments,
    playlist_duration,
    render_live_playlist,
    render_vod_playlist,
    target_duration,
)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
INIT_A = InitRef("a.mp4?sig=1", ByteRange(800, 0), key="a")
INIT_B = InitRef("b.mp4?sig=2", ByteRange(790, 0), key="b")


def _segment(
    start: float, duration: float, init: InitRef = INIT_A, offset: int = 800, **extra: object
) -> PlaylistSegment:
    return PlaylistSegment(
        uri=init.uri,
        duration=duration,
        start=start,
        init=init,
        byterange=ByteRange(1000, offset),
        **extra,  # type: ignore[arg-type]
    )


def _lines(text: str) -> list[str]:
    assert text.endswith("\n")
    return text.splitlines()


def test_program_date_time_and_target_duration() -> None:
    assert format_program_date_time(T0) == "2025-06-15T15:06:40.000Z"
    assert format_program_date_time(T0 + 0.0456) == "2025-06-15T15:06:40.045Z"
    # Every EXTINF rounded to the nearest integer must fit.
    assert target_duration([_segment(T0, 2.0), _segment(T0 + 2, 2.49)]) == 2
    assert target_duration([_segment(T0, 2.5)]) == 3
    assert target_duration([_segment(T0, 0.4)]) == 1
    assert target_duration([], minimum=2.0) == 2


def test_vod_playlist_over_two_files_and_a_gap() -> None:
    segments = [
        _segment(T0, 2.0),
        _segment(T0 + 2.0, 1.0, offset=1800),
        # The next file continues the timeline: new init section, no gap.
        _segment(T0 + 3.0, 2.0, INIT_B, offset=790),
        # The camera was gone for 5.5 s.
        _segment(T0 + 10.5, 2.0, INIT_B, offset=1790),
    ]
    text = render_vod_playlist(segments)
    lines = _lines(text)
    assert lines[:6] == [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    assert lines[-1] == "#EXT-X-ENDLIST"
    body = lines[6:-1]
    assert body[:6] == [
        '#EXT-X-MAP:URI="a.mp4?sig=1",BYTERANGE="800@0"',
        "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:40.000Z",
        "#EXTINF:2.000,",
        "#EXT-X-BYTERANGE:1000@800",
        "a.mp4?sig=1",
        "#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:42.000Z",
    ]
    assert body.count("#EXT-X-DISCONTINUITY") == 2  # the new file, and the gap
    # One per init section, and again after the gap so a player can start there.
    assert text.count("#EXT-X-MAP:") == 3
    new_file = body.index('#EXT-X-MAP:URI="b.mp4?sig=2",BYTERANGE="790@0"')
    assert body[new_file - 1] == "#EXT-X-DISCONTINUITY"
    after_gap = body.index("#EXT-X-PROGRAM-DATE-TIME:2025-06-15T15:06:50.500Z")
    assert body[after_gap - 2 : after_gap] == [
        "#EXT-X-DISCONTINUITY",
        '#EXT-X-MAP:URI="b.mp4?sig=2",BYTERANGE="790@0"',
    ]
    assert playlist_duration(segments) == 7.0
    assert sum(float(line[8:-1]) for line in body if line.startswith("#EXTINF:")) == 7.0


def test_vod_playlist_without_byte_ranges_and_with_forced_breaks() -> None:
    init = InitRef("init.mp4")
    segments = [
        PlaylistSegment("0.m4s", 2.0, T0, init),
        PlaylistSegment("1.m4s", 2.0, T0 + 2.0, init, discontinuity=True),
        PlaylistSegment("2.m4s", 2.0, T0 + 4.0, init, independent=False),
    ]
    text = render_vod_playlist(segments)
    assert "#EXT-X-BYTERANGE" not in text
    assert '#EXT-X-MAP:URI="init.mp4"' in text
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    # The MAP is repeated after a discontinuity, so a player can start there.
    assert text.count("#EXT-X-MAP:") == 2
    # One segment cannot be decoded on its own: no EXT-X-INDEPENDENT-SEGMENTS.
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in text


def test_live_playlist_window() -> None:
    segments = [
        PlaylistSegment("/live/7.m4s", 2.0, T0, InitRef("/live/init/1.mp4", key="1")),
        PlaylistSegment("/live/8.m4s", 1.04, T0 + 2.0, InitRef("/live/init/1.mp4", key="1")),
        PlaylistSegment(
            "/live/9.m4s",
            2.0,
            T0 + 3.04,
            InitRef("/live/init/2.mp4", key="2"),
            discontinuity=True,
        ),
    ]
    text = render_live_playlist(segments, media_sequence=7, discontinuity_sequence=3, target=2)
    lines = _lines(text)
    assert lines[:6] == [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:7",
        "#EXT-X-DISCONTINUITY-SEQUENCE:3",
    ]
    assert "#EXT-X-ENDLIST" not in text
    assert "#EXT-X-PLAYLIST-TYPE" not in text
    assert [line for line in lines if not line.startswith("#")] == [
        "/live/7.m4s",
        "/live/8.m4s",
        "/live/9.m4s",
    ]
    assert lines[6] == '#EXT-X-MAP:URI="/live/init/1.mp4"'
    switch = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[switch + 1] == '#EXT-X-MAP:URI="/live/init/2.mp4"'
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 3
    assert "#EXTINF:1.040," in lines


def test_live_playlist_flags_a_break_on_its_first_segment() -> None:
    """A window may start with a discontinuity (it counts once it leaves the window)."""
    init = InitRef("/i.mp4")
    text = render_live_playlist(
        [PlaylistSegment("/0.m4s", 2.0, T0, init, discontinuity=True)], media_sequence=0
    )
    lines = _lines(text)
    assert lines[6] == "#EXT-X-DISCONTINUITY"
    assert lines[7] == '#EXT-X-MAP:URI="/i.mp4"'
    assert "#EXT-X-TARGETDURATION:2" in lines


def test_group_fragments_cuts_on_keyframes_near_the_target() -> None:
    one_second_gop = [(True, 1.0)] * 7
    assert group_fragments(one_second_gop, 2.0) == [[0, 1], [2, 3], [4, 5], [6]]
    # 2 s GOPs: one fragment each.
    assert group_fragments([(True, 2.0)] * 3, 2.0) == [[0], [1], [2]]
    # A long GOP split by the muxer (fragments without keyframes) stays in one segment.
    long_gop = [(True, 2.0), (False, 2.0), (False, 1.0), (True, 2.0)]
    assert group_fragments(long_gop, 2.0) == [[0, 1, 2], [3]]
    # Slightly short fragments still make a segment (the muxer's frame rounding).
    assert group_fragments([(True, 0.98), (True, 0.98), (True, 1.0)], 2.0) == [[0, 1], [2]]
    assert group_fragments([], 2.0) == []


def test_live_playlist_with_ll_hls_parts() -> None:
    """Parts before each segment's EXTINF, the segment being filled, then the preload hint."""
    init = InitRef("/live/init/1.mp4", key="1")
    parts = (PlaylistPart("/live/7.0.m4s", 1.0, True), PlaylistPart("/live/7.1.m4s", 0.96, False))
    segments = [
        PlaylistSegment("/live/6.m4s", 2.0, T0, init),  # older: no parts listed
        PlaylistSegment("/live/7.m4s", 1.96, T0 + 2.0, init, parts=parts),
    ]
    partial = PlaylistSegment(
        "", 1.0, T0 + 3.96, init, parts=(PlaylistPart("/live/8.0.m4s", 1.0, True),)
    )
    low = LowLatency(part_target=1.0004, preload_hint="/live/8.1.m4s", partial=partial)
    text = render_live_playlist(segments, media_sequence=6, target=2, low_latency=low)
    lines = _lines(text)
    assert lines[:8] == [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.003",
        "#EXT-X-PART-INF:PART-TARGET=1.001",  # rounded up: every part fits
        "#EXT-X-MEDIA-SEQUENCE:6",
        "#EXT-X-DISCONTINUITY-SEQUENCE:0",
    ]
    seven = lines.index("/live/7.m4s")
    assert lines[seven - 3 : seven] == [
        '#EXT-X-PART:DURATION=1.000,URI="/live/7.0.m4s",INDEPENDENT=YES',
        '#EXT-X-PART:DURATION=0.960,URI="/live/7.1.m4s"',
        "#EXTINF:1.960,",
    ]
    assert lines[seven + 1 :] == [
        f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(T0 + 3.96)}",
        '#EXT-X-PART:DURATION=1.000,URI="/live/8.0.m4s",INDEPENDENT=YES',
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="/live/8.1.m4s"',
    ]
    assert text.count("#EXT-X-PART:") == 3
    # Without blocking reloads (a signed playlist URL): the parts stay, the offer goes.
    polled = LowLatency(part_target=1.0, preload_hint="/live/8.0.m4s", can_block_reload=False)
    text = render_live_playlist(segments, media_sequence=6, target=2, low_latency=polled)
    assert "#EXT-X-SERVER-CONTROL:PART-HOLD-BACK=3.000" in _lines(text)
    assert _lines(text)[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="/live/8.0.m4s"'
