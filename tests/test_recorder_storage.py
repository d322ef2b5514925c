"""Recording storage: layout and time zone, index scan, path safety, retention, recovery.

Also the day tree recordings and clips share (`recorder/files.py`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
import os
from pathlib import Path
import time
from zoneinfo import ZoneInfo

import pytest

from custom_components.lightnvr.recorder.clips import (
    CLIP_SHARE,
    ClipIndex,
    ClipLayout,
    ClipRetentionPeer,
    EventClip,
    recover_clip_part,
    scan_clips,
    sidecar_path,
    snapshot_path,
    write_sidecar,
)
from custom_components.lightnvr.recorder.storage import (
    PART_SUFFIX,
    DiskUsage,
    RetentionPolicy,
    Segment,
    SegmentIndex,
    StorageLayout,
    UnsafePathError,
    apply_retention,
    complete_fragments_end,
    recover_part,
    recover_parts,
    resolve_inside,
    scan_storage,
)

from .test_recorder_segmenter import duration_of, encode, ffprobe, video_of

BERLIN = ZoneInfo("Europe/Berlin")
DAY = 86400.0


def _epoch(*args: int, tz: ZoneInfo = BERLIN, fold: int = 0) -> float:
    return datetime(*args, tzinfo=tz, fold=fold).timestamp()


def _fake_segment(
    layout: StorageLayout, camera_id: str, start: float, seconds: float, size: int
) -> Segment:
    """Write a finished segment file the way the segmenter leaves it (name, size, mtime)."""
    part = layout.new_part_path(camera_id, start)
    part.write_bytes(b"\0" * size)
    final = layout.final_path(part)
    os.utime(part, (start + seconds, start + seconds))
    part.rename(final)
    return Segment(camera_id, final, start, start + seconds, size)


@pytest.fixture
def fragmented_clip(media_cache: Path, camera_clip: Path) -> Path:
    """The 10 s camera clip as fragmented MP4 (one 1 s fragment per keyframe), by ffmpeg."""
    return encode(
        media_cache / "fragmented_640x360_10s.mp4",
        [
            "-i", str(camera_clip), "-c", "copy", "-f", "mp4",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof",
        ],
    )  # fmt: skip


# ----- layout ---------------------------------------------------------------------------------


async def test_names_are_local_time_and_never_collide(tmp_path: Path) -> None:
    """Day folder and name are local; the DST repeated hour gets `_1` and is told apart."""
    layout = StorageLayout(tmp_path, BERLIN)
    start = _epoch(2025, 6, 1, 23, 59, 30)  # 21:59:30 UTC
    part = layout.new_part_path("cam1", start)
    assert part.relative_to(tmp_path).as_posix() == "cam1/2025-06-01/23-59-30.mp4.part"
    assert layout.final_path(part).name == "23-59-30.mp4"
    part.write_bytes(b"")  # the segmenter creates it (exclusively) when it starts writing

    # 02:30 happens twice on 2025-10-26 in Berlin (CEST, then CET).
    first = _epoch(2025, 10, 26, 2, 30, 0, fold=0)
    second = _epoch(2025, 10, 26, 2, 30, 0, fold=1)
    assert second - first == 3600
    a = _fake_segment(layout, "cam1", first, 60, 10)
    b = _fake_segment(layout, "cam1", second, 60, 10)
    assert (a.path.name, b.path.name) == ("02-30-00.mp4", "02-30-00_1.mp4")
    # Read back with the end time (the mtime): each resolves to its own instant.
    assert layout.start_from_name(a.path, end_hint=a.end) == first
    assert layout.start_from_name(b.path, end_hint=b.end) == second

    found = scan_storage(layout)
    assert sorted((s.path.name, s.start, s.end, s.size) for s in found.segments) == [
        ("02-30-00.mp4", first, first + 60, 10),
        ("02-30-00_1.mp4", second, second + 60, 10),
    ]
    assert found.parts == [part]
    with pytest.raises(UnsafePathError):
        layout.camera_dir("../evil")


async def test_scan_builds_the_index_and_ignores_foreign_files(tmp_path: Path) -> None:
    """Only our own names inside camera/day folders count; symlinked folders are not followed."""
    layout = StorageLayout(tmp_path / "rec", UTC)
    start = _epoch(2025, 5, 4, 10, 0, 0, tz=UTC)
    made = [
        _fake_segment(layout, "cam1", start, 60, 100),
        _fake_segment(layout, "cam1", start + 60, 60, 200),
        _fake_segment(layout, "cam1", start + DAY, 60, 300),
        _fake_segment(layout, "cam2", start + 30, 60, 400),
    ]
    (layout.root / "cam1" / "2025-05-04" / "notes.txt").write_text("not a recording")
    (layout.root / "cam1" / "junk").mkdir()
    (layout.root / "cam1" / "junk" / "10-00-00.mp4").write_bytes(b"x")
    outside = tmp_path / "outside" / "2025-05-04"
    outside.mkdir(parents=True)
    (outside / "10-00-00.mp4").write_bytes(b"x")
    (layout.root / "cam3").symlink_to(tmp_path / "outside")

    index = SegmentIndex()
    for segment in scan_storage(layout).segments:
        index.add(segment)
    assert index.cameras() == ["cam1", "cam2"]
    assert index.days("cam1") == [date(2025, 5, 4), date(2025, 5, 5)]
    assert index.segments("cam1", date(2025, 5, 4)) == made[:2]
    assert index.segments("cam1") == made[:3]
    assert index.total_size() == 1000
    assert index.total_size("cam2") == 400
    assert index.oldest() == made[0]
    assert index.newest("cam1") == made[2]
    assert index.get(made[3].path) == made[3]
    assert index.remove(made[0])
    assert not index.remove(made[0])
    assert index.oldest() == made[3]
    assert len(index) == 3


# ----- path safety ---------------------------------------------------------------------------


async def test_resolve_inside_refuses_everything_outside_the_root(tmp_path: Path) -> None:
    """Traversal, absolute paths and symlinks leading out are refused; links inside work."""
    root = tmp_path / "rec"
    (root / "cam1" / "2025-05-04").mkdir(parents=True)
    clip = root / "cam1" / "2025-05-04" / "10-00-00.mp4"
    clip.write_bytes(b"mp4")
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (root / "cam1" / "escape.mp4").symlink_to(secret)
    (root / "cam1" / "escape_dir").symlink_to(tmp_path)
    (root / "cam1" / "latest.mp4").symlink_to(clip)

    assert resolve_inside(root, "cam1/2025-05-04/10-00-00.mp4") == clip
    assert resolve_inside(root, "cam1/latest.mp4") == clip
    assert resolve_inside(root, "cam1/2025-05-04/missing.mp4").parent == clip.parent
    for bad in (
        "",
        "/etc/passwd",
        str(clip),
        "../secret.txt",
        "cam1/../../secret.txt",
        "cam1/./2025-05-04/10-00-00.mp4",
        "cam1//2025-05-04/10-00-00.mp4",
        "cam1\\..\\..\\secret.txt",
        "cam1/escape.mp4",
        "cam1/escape_dir/secret.txt",
        "cam1/2025-05-04/10-00-00.mp4\x00.txt",
        ".",
    ):
        with pytest.raises(UnsafePathError):
            resolve_inside(root, bad)


# ----- retention ---------------------------------------------------------------------------------


async def test_retention_by_age_with_a_camera_override(tmp_path: Path) -> None:
    """Older than the hub's days goes; a camera with its own days keeps (or loses) more."""
    layout = StorageLayout(tmp_path, UTC)
    now = time.time()
    index = SegmentIndex()
    ages = (10, 6, 2, 0.5)  # days
    for camera_id in ("cam1", "cam2"):
        for age in ages:
            index.add(_fake_segment(layout, camera_id, now - age * DAY, 60, 1000))
    policy = RetentionPolicy(retention_days=7, min_free_bytes=0, camera_days={"cam2": 1})
    result = apply_retention(layout, index, policy, usage_fn=_roomy, now=now)
    assert sorted((s.camera_id, round((now - s.start) / DAY, 1)) for s in result.deleted) == [
        ("cam1", 10.0),
        ("cam2", 2.0),
        ("cam2", 6.0),
        ("cam2", 10.0),
    ]
    assert not result.storage_full
    assert [round((now - s.start) / DAY, 1) for s in index.segments("cam1")] == [6.0, 2.0, 0.5]
    assert [round((now - s.start) / DAY, 1) for s in index.segments("cam2")] == [0.5]
    for segment in result.deleted:
        assert not segment.path.exists()
        assert not segment.path.parent.exists()  # emptied day folders go too
    assert tmp_path.exists()


async def test_retention_by_total_size_deletes_oldest_of_all_cameras(tmp_path: Path) -> None:
    """Above the size cap, the oldest segments of any camera go until it fits."""
    layout = StorageLayout(tmp_path, UTC)
    now = time.time()
    index = SegmentIndex()
    made = [_fake_segment(layout, f"cam{n % 2}", now - 3600 + n * 60, 60, 1000) for n in range(10)]
    for segment in made:
        index.add(segment)
    policy = RetentionPolicy(retention_days=7, min_free_bytes=0, max_size_bytes=6500)
    result = apply_retention(layout, index, policy, usage_fn=_roomy, now=now)
    assert list(result.deleted) == made[:4]
    assert index.total_size() == 6000


class SmallDisk:
    """A disk of `capacity` bytes holding only the storage root: the injected free space."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.calls = 0

    def __call__(self, path: Path) -> DiskUsage:
        self.calls += 1
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return DiskUsage(self.capacity, used, self.capacity - used)


def _roomy(path: Path) -> DiskUsage:
    return DiskUsage(10**12, 0, 10**12)


async def test_retention_keeps_free_space_and_spares_the_file_being_written(
    tmp_path: Path,
) -> None:
    """Below the floor: oldest first until it is met; with nothing left: storage full."""
    layout = StorageLayout(tmp_path, UTC)
    now = time.time()
    index = SegmentIndex()
    made = [_fake_segment(layout, "cam1", now - 600 + n * 60, 60, 1000) for n in range(6)]
    for segment in made:
        index.add(segment)
    writing = layout.new_part_path("cam1", now)
    writing.write_bytes(b"\0" * 1500)
    disk = SmallDisk(tmp_path, capacity=10_000)  # 7500 used, 2500 free

    policy = RetentionPolicy(retention_days=7, min_free_bytes=4000)
    result = apply_retention(layout, index, policy, active=[writing], usage_fn=disk, now=now)
    assert list(result.deleted) == made[:2]  # 2500 + 2000 >= 4000
    assert result.usage.free == 4500
    assert not result.storage_full

    # The floor cannot be met: everything finished goes, the part being written stays.
    policy = RetentionPolicy(retention_days=7, min_free_bytes=9000)
    result = apply_retention(layout, index, policy, active=[writing], usage_fn=disk, now=now)
    assert list(result.deleted) == made[2:]
    assert result.storage_full
    assert result.usage.free == 8500
    assert writing.exists()
    assert len(index) == 0

    # Even a finished file that is still being written (the guard beyond the index) stays.
    kept = _fake_segment(layout, "cam1", now, 60, 100)
    index.add(kept)
    result = apply_retention(layout, index, policy, active=[kept.path], usage_fn=disk, now=now)
    assert not result.deleted
    assert kept.path.exists()
    assert result.storage_full


def _fake_clip(layout: ClipLayout, camera_id: str, start: float, size: int) -> EventClip:
    """Write a finished event clip file (video only: retention deletes sidecars if present)."""
    path = layout.final_path(layout.new_part_path(camera_id, start, "manual"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return EventClip(camera_id, path, start, start + 10, ("manual",), size, manual=True)


async def test_a_clip_storm_never_takes_the_recordings_share(tmp_path: Path) -> None:
    """Clips count toward the size cap and the floor; past their share they go first."""
    layout = StorageLayout(tmp_path, UTC)
    clip_layout = ClipLayout(tmp_path, UTC)
    now = time.time()
    index = SegmentIndex()
    segments = [_fake_segment(layout, "cam1", now - 3600 + n * 60, 60, 1000) for n in range(8)]
    for segment in segments:
        index.add(segment)
    clips = ClipIndex()
    peer = ClipRetentionPeer(clip_layout, clips)
    # An old clip (older than every recording) and then a storm of new ones.
    old_clip = _fake_clip(clip_layout, "cam1", now - 7200, 500)
    storm = [_fake_clip(clip_layout, "cam1", now - 300 + n, 1000) for n in range(12)]
    for clip in (old_clip, *storm):
        clips.add(clip)

    # The size cap counts both: 8000 + 12500 bytes against a cap of 12000.
    policy = RetentionPolicy(retention_days=7, min_free_bytes=0, max_size_bytes=12_000)
    result = apply_retention(layout, index, policy, usage_fn=_roomy, now=now, peer=peer)
    assert index.total_size() + clips.total_size() <= 12_000
    # Clips held far more than their share: clips went (oldest first), recordings stayed.
    assert not result.deleted
    assert result.deleted_peers[0] == old_clip
    assert index.total_size() == 8000
    assert clips.total_size() <= 4000
    for clip in result.deleted_peers:
        assert not clip.path.exists()

    # The free-space floor: clips still hold more than their share, so they go first...
    disk = SmallDisk(tmp_path, capacity=14_000)
    used = index.total_size() + clips.total_size()
    policy = RetentionPolicy(retention_days=7, min_free_bytes=14_000 - used + 2000)
    result = apply_retention(layout, index, policy, usage_fn=disk, now=now, peer=peer)
    assert not result.deleted
    assert len(result.deleted_peers) == 2
    assert clips.total_size() <= CLIP_SHARE * (index.total_size() + clips.total_size())

    # ...and once they are within it, both kinds go oldest first: here recordings.
    used = index.total_size() + clips.total_size()
    policy = RetentionPolicy(retention_days=7, min_free_bytes=14_000 - used + 2000)
    result = apply_retention(layout, index, policy, usage_fn=disk, now=now, peer=peer)
    assert list(result.deleted) == segments[:2]
    assert not result.deleted_peers
    assert not result.storage_full
    kept = index.total_size()
    assert kept >= (1 - CLIP_SHARE) * (kept + clips.total_size())


# ----- crash recovery ------------------------------------------------------------------------


async def test_recover_a_part_cut_mid_fragment(tmp_path: Path, fragmented_clip: Path) -> None:
    """A part cut inside a fragment: trimmed to whole fragments, renamed, plays, has its end."""
    layout = StorageLayout(tmp_path, BERLIN)
    start = _epoch(2025, 7, 14, 8, 15, 0)
    part = layout.new_part_path("cam1", start)
    data = fragmented_clip.read_bytes()
    cut = int(len(data) * 0.55)  # inside the 6th of 10 fragments
    part.write_bytes(data[:cut])
    with part.open("rb") as file:
        whole = complete_fragments_end(file, cut)
    assert 0 < whole < cut

    segment = recover_part(layout, "cam1", part)
    assert segment is not None
    assert not part.exists()
    assert segment.path == layout.final_path(part)
    assert segment.path.stat().st_size == whole == segment.size
    probe = ffprobe(segment.path)
    assert (video_of(probe)["width"], video_of(probe)["height"]) == (640, 360)
    duration = duration_of(probe)
    assert duration == pytest.approx(5.0, abs=0.05)  # five whole 1 s fragments
    assert int(video_of(probe)["nb_read_frames"]) == 125
    assert segment.start == start
    assert segment.end == pytest.approx(start + duration, abs=0.05)
    assert segment.path.stat().st_mtime == pytest.approx(segment.end, abs=0.01)


async def test_recover_parts_deletes_what_holds_nothing(
    tmp_path: Path, fragmented_clip: Path
) -> None:
    """A part with only its header (or nothing) is deleted; the good one is indexed."""
    layout = StorageLayout(tmp_path, UTC)
    data = fragmented_clip.read_bytes()
    good = layout.new_part_path("cam1", _epoch(2025, 7, 14, 8, 0, 0, tz=UTC))
    good.write_bytes(data)
    header_only = layout.new_part_path("cam1", _epoch(2025, 7, 14, 9, 0, 0, tz=UTC))
    header_only.write_bytes(data[:1500])
    empty = layout.new_part_path("cam2", _epoch(2025, 7, 14, 9, 0, 0, tz=UTC))
    empty.write_bytes(b"")

    index = SegmentIndex()
    found = scan_storage(layout)
    assert sorted(found.parts) == sorted([good, header_only, empty])
    recovered = recover_parts(layout, found.parts, index)
    assert [s.path.name for s in recovered] == ["08-00-00.mp4"]
    assert index.segments("cam1") == recovered
    assert recovered[0].duration == pytest.approx(10.0, abs=0.05)
    assert not list(tmp_path.rglob("*" + PART_SUFFIX))
    assert [p.name for p in tmp_path.rglob("*.mp4")] == ["08-00-00.mp4"]


# ----- the shared day tree (recordings and clips) ----------------------------------------------


async def test_both_naming_rules_do_not_mix(tmp_path: Path) -> None:
    """Recordings and clips under one storage root: each scan finds its own files only."""
    recordings = StorageLayout(tmp_path, UTC)
    clips = ClipLayout(tmp_path, UTC)
    start = _epoch(2025, 5, 4, 10, 0, 0, tz=UTC)
    segment = _fake_segment(recordings, "cam1", start, 60, 100)
    made: list[Path] = []
    for label in ("Person", "1"):  # a label like a number is still a clip, in its own tree
        part = clips.new_part_path("cam1", start, label)
        part.write_bytes(b"\0" * 50)
        write_sidecar(sidecar_path(part), {"start": start, "labels": [label]})
        made.append(clips.finish(part, start + 20))
    assert [clips.relative(path) for path in made] == [
        "events/cam1/2025-05-04/10-00-00_person.mp4",
        "events/cam1/2025-05-04/10-00-00_1.mp4",
    ]
    assert made[0].stat().st_mtime == pytest.approx(start + 20)
    # Names of the other kind, copied into each other's day folders, are foreign there.
    (segment.path.parent / "10-00-00_person.mp4").write_bytes(b"x")
    (made[0].parent / "10-00-00.mp4").write_bytes(b"x")

    found = scan_storage(recordings)
    assert [s.path for s in found.segments] == [segment.path]
    assert found.parts == []
    scanned = scan_clips(clips)
    assert sorted((c.path, c.labels, c.end) for c in scanned.clips) == sorted(
        [(made[0], ("Person",), start + 20), (made[1], ("1",), start + 20)]
    )
    assert scanned.parts == []
    # The clip scan deletes only its own orphaned side files, never a foreign file.
    assert (made[0].parent / "10-00-00.mp4").exists()
    assert sidecar_path(made[1]).exists()


async def test_recovered_clip_never_overwrites_and_stays_scannable(
    tmp_path: Path, fragmented_clip: Path
) -> None:
    """A clip part whose name was taken meanwhile gets the next free `_n`; side files follow."""
    layout = ClipLayout(tmp_path, UTC)
    start = _epoch(2025, 7, 14, 8, 0, 0, tz=UTC)
    folder = layout.camera_dir("cam1") / "2025-07-14"
    folder.mkdir(parents=True)
    part = folder / ("08-00-00_person_1.mp4" + PART_SUFFIX)
    part.write_bytes(fragmented_clip.read_bytes())
    write_sidecar(sidecar_path(part), {"start": start, "labels": ["person"]})
    snapshot_path(part).write_bytes(b"jpeg")
    for taken in ("08-00-00_person.mp4", "08-00-00_person_1.mp4"):  # copied in by hand
        (folder / taken).write_bytes(b"keep me")

    clip = recover_clip_part(layout, "cam1", part)
    assert clip is not None
    assert clip.path.name == "08-00-00_person_2.mp4"
    assert (folder / "08-00-00_person.mp4").read_bytes() == b"keep me"
    assert (folder / "08-00-00_person_1.mp4").read_bytes() == b"keep me"
    assert clip.snapshot == folder / "08-00-00_person_2.jpg"
    assert clip.labels == ("person",)
    assert clip.start == start
    assert clip.path.stat().st_mtime == pytest.approx(clip.end, abs=0.01)
    assert clip.duration == pytest.approx(10.0, abs=0.05)
    assert not sidecar_path(part).exists()
    assert not snapshot_path(part).exists()
    assert clip.path in {c.path for c in scan_clips(layout).clips}


async def test_emptied_folders_go_but_never_the_root(tmp_path: Path) -> None:
    """Deleting the last file of a day removes the day and camera folders, not the root."""
    layout = StorageLayout(tmp_path / "rec", UTC)
    segment = _fake_segment(layout, "cam1", _epoch(2025, 5, 4, 10, 0, 0, tz=UTC), 60, 10)
    layout.delete(segment.path)
    assert not layout.camera_dir("cam1").exists()
    assert layout.root.is_dir()
    layout.remove_empty_dirs(layout.root)
    assert layout.root.is_dir()
