"""The archive tier with real parts: a recording camera, a share that goes read-only and away.

Recordings of the RTSP camera move to a second folder, mounted like a NAS (`infra.share`):
they leave the main folder, keep their Media panel ids, and one VOD playlist over both tiers
decodes every frame. The share turns read-only and is unmounted in the middle of a move:
nothing is lost or doubled, recording goes on, a repair issue says why, and moving resumes
when the share is back. A restart finds the archive's files again and settles what a crash
left behind. The mover's rules (age, fill) and the archive's retention are checked on real
files too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
import shutil
import threading
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.hls import vod_playlist_path
from custom_components.lightnvr.recorder.archive import (
    MOVING_SUFFIX,
    REASON_NOT_MOUNTED,
    REASON_READ_ONLY,
    ArchiveSettings,
    ArchiveTier,
    ArchiveUnavailableError,
    MoveStopped,
    RateLimit,
)
from custom_components.lightnvr.recorder.manager import ISSUE_ARCHIVE_UNAVAILABLE
from custom_components.lightnvr.recorder.storage import (
    RetentionPolicy,
    Segment,
    SegmentIndex,
    StorageLayout,
)

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer
from .infra.share import Share
from .test_exports import (
    _segments as place_recordings,
    recording_files,  # noqa: F401 - pytest finds the fixture by name
)
from .test_hls_views import camera_id_of, register_hls, signed, wait_segments
from .test_hls_vod import _probe, _wait_until_not_recording, decoded_frames

SEGMENT_SECONDS = 2
DUE_AT_ONCE = 1e-9  # days: every finished recording is due for the archive


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Share]:
    """A NAS share mounted at `<tmp>/archive`."""
    mounted = Share(tmp_path / "nas", tmp_path / "archive")
    yield mounted
    mounted.close()


type StartHub = Callable[..., Awaitable[MockConfigEntry]]


@pytest.fixture
async def start_hub(
    hass: HomeAssistant, rtsp_camera: RtspServer, share: Share, tmp_path: Path
) -> AsyncIterator[StartHub]:
    """Set up a hub recording the camera ("Porch") in 2 s files, archiving to the share."""
    assert await async_setup_component(hass, "http", {})
    assert await async_setup_component(hass, "media_source", {})
    register_hls(hass)
    entries: list[MockConfigEntry] = []

    async def start(**options: Any) -> MockConfigEntry:
        entry = MockConfigEntry(
            domain=DOMAIN,
            data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": SEGMENT_SECONDS},
            options={
                "archive_path": str(share.mount_point),
                "archive_after_days": DUE_AT_ONCE,
                **options,
            },
            subentries_data=[camera_subentry("Porch", rtsp_camera.url("cam"))],
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        entries.append(entry)
        return entry

    yield start
    for entry in entries:
        await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def _archive_pass(entry: MockConfigEntry) -> None:
    task = entry.runtime_data.recorder.async_start_archive_pass()
    assert task is not None
    await task


def _moving_files(folder: Path) -> list[Path]:
    return list(folder.rglob(f"*{MOVING_SUFFIX}"))


def _where(entry: MockConfigEntry, share: Share, segment: Segment) -> list[str]:
    """Return the tiers holding a file of the segment's relative path."""
    relative = entry.runtime_data.recorder.relative(segment)
    local = entry.runtime_data.recorder.layout.root / relative
    return [
        tier
        for tier, path in (("main", local), ("archive", share.files / relative))
        if path.is_file()
    ]


def _assert_archive_issue(
    hass: HomeAssistant, entry: MockConfigEntry, share: Share, reason: str
) -> None:
    """The archive is reported unusable for `reason`, by the recorder and a repair issue."""
    problem = entry.runtime_data.recorder.archive_problem
    assert problem is not None
    assert problem.reason == reason
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_ARCHIVE_UNAVAILABLE)
    assert issue is not None
    assert issue.translation_key == f"{ISSUE_ARCHIVE_UNAVAILABLE}_{reason}"
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["path"] == str(share.mount_point)


async def _browse(ws: Any, media_id: str) -> dict[str, Any]:
    await ws.send_json_auto_id({"type": "media_source/browse_media", "media_content_id": media_id})
    answer = await ws.receive_json()
    assert answer["success"], answer
    result: dict[str, Any] = answer["result"]
    return result


async def test_recordings_move_to_the_archive_and_play_across_tiers(
    hass: HomeAssistant,
    *,
    start_hub: StartHub,
    share: Share,
    hass_ws_client: WebSocketGenerator,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
) -> None:
    """Finished files move, keep their ids, and one playlist plays both tiers frame for frame."""
    entry = await start_hub()
    recorder = entry.runtime_data.recorder
    camera_id = camera_id_of(entry)
    await wait_segments(entry, 3)
    await _archive_pass(entry)
    archive_pass = recorder.last_archive_pass
    assert archive_pass is not None
    assert archive_pass.problem is None
    moved = archive_pass.moved
    assert len(moved) >= 3
    for segment in moved:
        assert segment.archived
        assert _where(entry, share, segment) == ["archive"]  # copied, checked, then deleted
        assert (share.files / recorder.relative(segment)).stat().st_size == segment.size
        # The end time stays in the file's modification time, where a scan reads it back.
        assert segment.path.stat().st_mtime == pytest.approx(segment.end, abs=0.01)
    assert not _moving_files(share.files)
    assert recorder.archive_problem is None
    archived_bytes = recorder.index.archive.total_size()
    assert archived_bytes >= sum(s.size for s in moved)
    used = hass.states.get("sensor.lightnvr_archive_used")
    assert used is not None
    assert float(used.state) == pytest.approx(archived_bytes / 1e9, rel=0.01)  # in GB

    # Newer recordings stay in the main folder until the next pass.
    await wait_segments(entry, len(moved) + 2)
    recorder.set_recording(camera_id, False)
    await _wait_until_not_recording(entry, camera_id)
    segments = recorder.index.segments(camera_id)
    assert {s.archived for s in segments} == {True, False}
    assert len(recorder.index.archive) == len(moved)

    # The Media panel lists both tiers under the day; an archived file plays from its id.
    ws = await hass_ws_client(hass)
    day = f"{segments[0].day:%Y-%m-%d}"
    listed = await _browse(ws, f"media-source://{DOMAIN}/{camera_id}/{day}")
    ids = {child["media_content_id"] for child in listed["children"]}
    for segment in segments:
        if segment.day == segments[0].day:
            assert f"media-source://{DOMAIN}/{recorder.relative(segment)}" in ids
    await ws.send_json_auto_id(
        {
            "type": "media_source/resolve_media",
            "media_content_id": f"media-source://{DOMAIN}/{recorder.relative(moved[0])}",
        }
    )
    resolved = await ws.receive_json()
    assert resolved["success"], resolved
    client = await hass_client_no_auth()
    response = await client.get(resolved["result"]["url"])
    assert response.status == 200
    assert await response.read() == moved[0].path.read_bytes()

    # One VOD playlist over both tiers decodes every frame of every file.
    start = datetime.fromtimestamp(segments[0].start - 1, UTC)
    end = datetime.fromtimestamp(segments[-1].end + 1, UTC)
    path = await signed(hass, hass_access_token, vod_playlist_path(camera_id, start, end))
    playlist = await client.get(path)
    assert playlist.status == 200
    files = [await hass.async_add_executor_job(_probe, s.path) for s in segments]
    decoded, _player = await decoded_frames(hass, str(client.make_url(path)))
    assert decoded == sum(count for count, _ in files)


async def test_a_share_going_away_mid_move_loses_nothing(
    hass: HomeAssistant, start_hub: StartHub, share: Share
) -> None:
    """Unmounted mid-copy: nothing lost or doubled, recording goes on, moving resumes."""
    # Slow moves (about 3 s a file), so the share can go away in the middle of one.
    entry = await start_hub(archive_max_mbps=0.1)
    recorder = entry.runtime_data.recorder
    camera_id = camera_id_of(entry)
    issues = ir.async_get(hass)
    await wait_segments(entry, 2)
    recorded = {s.start for s in recorder.index.segments(camera_id)}

    def files_in_place() -> None:
        """Every indexed recording is in exactly one tier, and none was forgotten."""
        segments = recorder.index.segments(camera_id)
        starts = [s.start for s in segments]
        assert len(starts) == len(set(starts))
        assert recorded <= set(starts)
        for segment in segments:  # looked for on the share's own disk, mounted or not
            assert len(_where(entry, share, segment)) == 1, segment

    async def until_a_copy_runs() -> None:
        async with asyncio.timeout(30):
            while not _moving_files(share.mount_point):
                await asyncio.sleep(0.05)

    # Unmounted in the middle of a copy: the copy fails at its rename, the original stays,
    # and the empty mount point left behind is never written to (it is the main disk).
    task = recorder.async_start_archive_pass()
    assert task is not None
    await until_a_copy_runs()
    await hass.async_add_executor_job(share.unmount)
    await task
    assert recorder.archive_problem is not None
    await _archive_pass(entry)
    _assert_archive_issue(hass, entry, share, REASON_NOT_MOUNTED)
    assert not any(share.mount_point.iterdir())
    files_in_place()

    # Recording never stopped.
    await wait_segments(entry, len(recorder.index) + 1)
    assert recorder.camera_state(camera_id).recording

    # Back: the issue goes, and everything due moves (no copy left half-way, no duplicate).
    await hass.async_add_executor_job(share.mount)
    recorder.set_recording(camera_id, False)
    await _wait_until_not_recording(entry, camera_id)
    recorded = {s.start for s in recorder.index.segments(camera_id)}
    await _archive_pass(entry)
    assert recorder.archive_problem is None
    assert issues.async_get_issue(DOMAIN, ISSUE_ARCHIVE_UNAVAILABLE) is None
    assert not recorder.index.local.items(camera_id)
    assert len(recorder.index.archive) == len(recorded)
    files_in_place()
    assert not _moving_files(share.files)
    assert not list(recorder.layout.root.rglob("*.mp4"))


async def test_a_read_only_share_pauses_moves(
    hass: HomeAssistant, start_hub: StartHub, share: Share
) -> None:
    """Remounted read-only: no move starts, nothing is lost, the issue says why; then resumed."""
    if not share.can_be_read_only:
        pytest.skip("a read-only share needs mount rights (or a user that is not root)")
    entry = await start_hub()
    recorder = entry.runtime_data.recorder
    camera_id = camera_id_of(entry)
    issues = ir.async_get(hass)
    await wait_segments(entry, 2)
    # The kernel refuses a read-only remount while a copy holds a file open: between passes.
    local_before = recorder.index.local.items(camera_id)
    await hass.async_add_executor_job(share.read_only)
    await _archive_pass(entry)
    _assert_archive_issue(hass, entry, share, REASON_READ_ONLY)
    assert recorder.index.local.items(camera_id)[: len(local_before)] == local_before
    assert all(_where(entry, share, s) == ["main"] for s in local_before)

    await hass.async_add_executor_job(share.writable)
    await _archive_pass(entry)
    assert recorder.archive_problem is None
    assert issues.async_get_issue(DOMAIN, ISSUE_ARCHIVE_UNAVAILABLE) is None
    assert all(_where(entry, share, s) == ["archive"] for s in local_before)


async def test_a_restart_finds_the_archive_and_settles_interrupted_moves(
    hass: HomeAssistant, start_hub: StartHub, share: Share
) -> None:
    """The start-up scan indexes the archive, deletes half copies, keeps one of two copies."""
    entry = await start_hub()
    recorder = entry.runtime_data.recorder
    camera_id = camera_id_of(entry)
    await wait_segments(entry, 3)
    recorder.set_recording(camera_id, False)
    await _wait_until_not_recording(entry, camera_id)
    await _archive_pass(entry)
    moved = recorder.index.archive.items(camera_id)
    assert len(moved) >= 3
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()

    # What a crash leaves: a copy cut short, and a move between its rename and its delete.
    local_root = recorder.layout.root
    half = share.files / (recorder.relative(moved[1]) + MOVING_SUFFIX)
    half.write_bytes(b"\0" * 1000)
    twice = local_root / recorder.relative(moved[0])
    twice.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(moved[0].path, twice)

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    recorder = entry.runtime_data.recorder
    await _archive_pass(entry)  # the first pass scans the archive (in the background)
    found = [s.path for s in recorder.index.archive.items(camera_id)]
    assert found[: len(moved)] == [s.path for s in moved]
    assert not twice.exists()  # the main folder's copy of the interrupted move went
    assert recorder.index.get(twice) is None
    assert not half.exists()
    assert recorder.resolve(recorder.relative(moved[0])) == moved[0].path


# ----- the mover's rules on real files (no Home Assistant) --------------------------------------


def _tier(tmp_path: Path, files: list[Path], **settings: Any) -> tuple[ArchiveTier, SegmentIndex]:
    layout = StorageLayout(tmp_path / "rec", UTC)
    index = SegmentIndex()
    for segment in place_recordings(files, "cam", layout.root):
        index.add(segment)
    (tmp_path / "nas").mkdir()
    return ArchiveTier(ArchiveSettings(root=tmp_path / "nas", **settings), layout), index


def _keep_all() -> RetentionPolicy:
    return RetentionPolicy(retention_days=0, min_free_bytes=0)


def test_fill_rule_moves_the_oldest_until_under_the_share(
    tmp_path: Path,
    recording_files: list[Path],  # noqa: F811 - the fixture
) -> None:
    """Past `at_percent` of the cap, the oldest files move until the main folder is under it."""
    tier, index = _tier(tmp_path, recording_files, at_percent=50)
    segments = index.segments("cam")
    total = sum(s.size for s in segments)
    due = tier.due(index, (), size_cap=total, now=segments[-1].end)
    kept = total - sum(s.size for s in due)
    assert kept <= total / 2 < kept + due[-1].size  # no more than needed
    assert due == segments[: len(due)]  # oldest first
    # The file being written is never moved (it is not indexed either; a second guard).
    assert segments[0] not in tier.due(index, [segments[0].path], size_cap=total, now=0)

    result = tier.run_pass(index, list, size_cap=total, retention=_keep_all())
    assert result.problem is None
    assert [s.start for s in result.moved] == [s.start for s in due]
    assert all(not s.path.exists() for s in due)
    assert index.local.total_size() == kept


def test_age_rule_rate_limit_and_archive_retention(
    tmp_path: Path,
    recording_files: list[Path],  # noqa: F811 - the fixture
) -> None:
    """By age everything older moves; the archive keeps files by its own age and size cap."""
    tier, index = _tier(tmp_path, recording_files, after_days=1)
    segments = index.segments("cam")
    day = 86400
    assert not tier.due(index, (), size_cap=0, now=segments[0].end + day - 1)
    assert tier.due(index, (), size_cap=0, now=segments[1].end + day + 1) == segments[:2]

    result = tier.run_pass(
        index, list, size_cap=0, retention=_keep_all(), now=segments[-1].end + day + 1
    )
    assert len(result.moved) == len(segments)
    assert len(index.archive) == len(segments)
    assert not index.local.items("cam")
    # The archive's size cap deletes its oldest files; its age deletes the rest.
    capped = RetentionPolicy(
        retention_days=0,
        min_free_bytes=0,
        max_size_bytes=sum(s.size for s in segments[2:]),
    )
    result = tier.run_pass(index, list, size_cap=0, retention=capped)
    assert [s.start for s in result.deleted] == [s.start for s in segments[:2]]
    aged = RetentionPolicy(retention_days=1, min_free_bytes=0)
    result = tier.run_pass(index, list, size_cap=0, retention=aged, now=segments[-1].end + 2 * day)
    assert len(result.deleted) == 2
    assert not index.archive.items("cam")
    assert not [p for p in tier.layout.root.rglob("*") if p.is_file() and p.suffix == ".mp4"]

    # The bandwidth limit makes a copy wait (a stop cuts the wait short); no limit, no wait.
    stop = threading.Event()
    stop.set()
    with pytest.raises(MoveStopped):
        RateLimit(4_000_000, stop).took(1_000_000)
    RateLimit(None, stop).took(1_000_000)


def test_a_share_unmounted_between_two_files_is_never_written_through(
    tmp_path: Path,
    recording_files: list[Path],  # noqa: F811 - the fixture
    share: Share,
) -> None:
    """A long pass re-checks the share before each file and each rename: the mount point's
    own folder (the main disk) never receives a file, and the originals stay."""
    layout = StorageLayout(tmp_path / "rec", UTC)
    index = SegmentIndex()
    for segment in place_recordings(recording_files, "cam", layout.root):
        index.add(segment)
    tier = ArchiveTier(ArchiveSettings(root=share.mount_point, after_days=1e-9), layout)
    first, second = index.segments("cam")[:2]
    tier.check()
    moved = tier.move(first, RateLimit(None, tier.stop_event))
    assert (share.files / layout.relative(first.path)).is_file()
    share.unmount()
    with pytest.raises(ArchiveUnavailableError) as caught:
        tier.move(second, RateLimit(None, tier.stop_event))
    assert caught.value.reason == REASON_NOT_MOUNTED
    assert not any(share.mount_point.iterdir())
    assert second.path.is_file()
    share.mount()
    assert moved.path.is_file()  # the earlier copy is on the share, where it belongs


def test_a_name_taken_in_the_archive_and_an_original_deleted_mid_copy(
    tmp_path: Path,
    recording_files: list[Path],  # noqa: F811 - the fixture
) -> None:
    """Another file of the same name is never overwritten; a copy whose original retention
    deleted meanwhile is not kept (it would bring back what retention removed)."""
    tier, index = _tier(tmp_path, recording_files, after_days=1e-9)
    first, second = index.segments("cam")[:2]
    taken = tier.layout.root / tier.local.relative(first.path)
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"another recording of the same name")
    tier.check()
    moved = tier.move(first, RateLimit(None, tier.stop_event))
    assert moved.path != taken
    assert moved.path.name == first.path.name.replace(".mp4", "_1.mp4")
    assert taken.read_bytes() == b"another recording of the same name"
    assert moved.path.stat().st_size == first.size

    copy = tier.move(second, RateLimit(None, tier.stop_event))
    index.remove(second)  # retention deleted the original while it was copied
    tier._swap(index, second, copy)
    assert not copy.path.exists()
    assert index.get(copy.path) is None
