"""The day-tree store shared by recordings and event clips.

Both keep their files the same way, under their own root::

    <root>/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>[_<label>][_<n>].mp4        finished
    <root>/<camera_id>/<YYYY-MM-DD>/<HH-MM-SS>[_<label>][_<n>].mp4.part   being written

Recordings have no label, clips always have one (and may have side files beside the video, such
as `.json` and `.jpg`, sharing its stem). Day folders and clock names are the local time of the
start; a finished file's mtime is the exact end of its media, because local names alone are
ambiguous once a year (the repeated hour when daylight saving time ends). One `DayTree` holds
the rules both kinds depend on, so they can never drift apart: safe names, never overwriting a
file (the `_n` suffix), `.part` → final with mtime = end, removing emptied folders (never the
root), scanning without following symlinks (foreign files are ignored, so retention can only
ever delete what we wrote) and recovering parts left by a crash.

Everything here is blocking file work: callers run it in threads or the executor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
import logging
import os
from pathlib import Path
import re
from typing import BinaryIO

import av
import av.error

from ..media.bmff import iter_file_boxes

_LOGGER = logging.getLogger(__name__)

VIDEO_SUFFIX = ".mp4"
PART_SUFFIX = ".part"  # appended to VIDEO_SUFFIX while a file is written
# Beyond this a file's end time (its mtime) is not believed: it was touched by something else.
MAX_FILE_SECONDS = 6 * 3600

_DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# Camera ids are subentry ids (ULIDs); anything else that could walk out of the folder or hide
# (a path separator, a leading dot) is refused.
_CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_LABEL_CHARS_RE = re.compile(r"[^a-z0-9]+")
_MAX_LABEL_CHARS = 32
_MAX_NAME_SUFFIX = 1000
_CLOCK = r"(?P<h>\d{2})-(?P<m>\d{2})-(?P<s>\d{2})"
# Labels are sanitised to [a-z0-9-], so "_" only ever separates the parts of a name.
_LABEL = r"_(?P<label>[a-z0-9-]{1,32})"
_NUMBER = r"(?:_(?P<n>\d{1,4}))?"


class UnsafePathError(ValueError):
    """A path given from outside (a URL, a media id) does not lead inside the storage root."""


def valid_camera_id(camera_id: str) -> bool:
    """Return True when `camera_id` can be used as a folder name safely."""
    return bool(_CAMERA_ID_RE.match(camera_id)) and camera_id not in {".", ".."}


def safe_label(label: str) -> str:
    """Return `label` as it appears in file names: lower-case letters, digits and dashes."""
    slug = _LABEL_CHARS_RE.sub("-", label.lower()).strip("-")[:_MAX_LABEL_CHARS].strip("-")
    return slug or "event"


def parse_day(name: str) -> date | None:
    """Return the date of a day folder's name (`YYYY-MM-DD`), None for any other name."""
    match = _DAY_RE.match(name)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def filed_day(path: Path, start: float) -> date:
    """Return the local day a file is filed under (its folder); the UTC day for foreign folders."""
    parsed = parse_day(path.parent.name)
    return parsed if parsed is not None else datetime.fromtimestamp(start, UTC).date()


def local_start(
    day: date, clock: tuple[int, int, int], tz: tzinfo, end_hint: float | None = None
) -> float | None:
    """Return the epoch time of a local day and (hour, minute, second), as file names hold them.

    The hour repeated when daylight saving time ends has two answers; with `end_hint` (the
    file's end) the one just before that end is taken, else the first.
    """
    try:
        candidates = sorted(
            {
                datetime(day.year, day.month, day.day, *clock, tzinfo=tz, fold=fold).timestamp()
                for fold in (0, 1)
            }
        )
    except ValueError:
        return None
    if end_hint is not None:
        before = [c for c in candidates if c <= end_hint + 1.0]
        if before:
            return before[-1]
    return candidates[0]


def plausible_end(path: Path, start: float, end: float) -> float:
    """Return `end`, or `start` when the end (an mtime) cannot belong to the file.

    The mtime was changed by something else (a copy, a backup restore): the start from the name
    is still right; the length is unknown, so the file is shown as a moment.
    """
    if 0 <= end - start <= MAX_FILE_SECONDS:
        return end
    _LOGGER.debug("Implausible end time of %s; using its start", path.name)
    return start


class TimedFile:
    """What a finished recording and a finished clip share: a file with a start and an end.

    A mixin for their frozen dataclasses, which declare the fields (epoch seconds).
    """

    __slots__ = ()
    path: Path
    start: float  # epoch seconds of the first frame
    end: float  # epoch seconds of the end of the last frame

    @property
    def duration(self) -> float:
        """Return the media duration in seconds."""
        return max(0.0, self.end - self.start)

    @property
    def day(self) -> date:
        """Return the local day the file is filed under (its folder)."""
        return filed_day(self.path, self.start)

    @property
    def start_time(self) -> datetime:
        """Return the start as an aware UTC datetime."""
        return datetime.fromtimestamp(self.start, UTC)

    @property
    def end_time(self) -> datetime:
        """Return the end as an aware UTC datetime."""
        return datetime.fromtimestamp(self.end, UTC)


# ----- playable prefix of a part file ------------------------------------------------------------


def complete_fragments_end(file: BinaryIO, size: int) -> int:
    """Return the length of the playable prefix of a fragmented MP4, 0 if there is none.

    The prefix ends after the last complete `moof`+`mdat` pair that follows the `moov`; a
    fragment cut short by a crash (a partial `moof`, or an `mdat` shorter than its header says)
    is left out.
    """
    end = 0
    seen_moov = False
    moof_open = False
    for box_type, offset, _, box_size in iter_file_boxes(file, size):
        if box_type == b"moov":
            seen_moov = True
        elif box_type == b"moof":
            moof_open = True
        elif box_type == b"mdat" and moof_open and seen_moov:
            moof_open = False
            end = offset + box_size
    return end


def probe_duration(path: Path) -> float:
    """Return the video duration of a file by reading its packets (no decoding)."""
    first: int | None = None
    last_end: int | None = None
    with av.open(str(path), format="mp4") as container:
        if not container.streams.video:
            return 0.0
        stream = container.streams.video[0]
        time_base = stream.time_base
        try:
            for packet in container.demux(stream):
                if packet.dts is None:
                    continue
                if first is None:
                    first = packet.dts
                last_end = packet.dts + (packet.duration or 0)
        except av.error.FFmpegError:
            pass  # a damaged tail: what was read so far counts
    if first is None or last_end is None or time_base is None:
        return 0.0
    return float((last_end - first) * time_base)


# ----- the tree -----------------------------------------------------------------------------------


@dataclass(slots=True)
class DayFolder:
    """One day folder of a camera, as a scan found it (regular files only, no symlinks)."""

    camera_id: str
    path: Path
    finished: list[os.DirEntry[str]] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)
    side_files: list[Path] = field(default_factory=list)

    def orphans(self) -> list[Path]:
        """Return the side files whose video (finished or part) is gone."""
        stems = {file_stem(Path(entry.path)) for entry in self.finished}
        stems.update(file_stem(part) for part in self.parts)
        return [path for path in self.side_files if path.name.rsplit(".", 1)[0] not in stems]


@dataclass(frozen=True, slots=True)
class Recovered:
    """A part file made final by `DayTree.recover`."""

    path: Path  # the finished file
    start: float
    end: float
    size: int  # bytes kept
    cut: int  # bytes of an incomplete fragment cut off


def file_stem(path: Path) -> str:
    """Return the name a video (or its part) shares with its side files (`HH-MM-SS[_label][_n]`)."""
    return path.name.removesuffix(PART_SUFFIX).removesuffix(VIDEO_SUFFIX)


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    return [entry for entry in _entries(path) if entry.is_dir(follow_symlinks=False)]


class DayTree:
    """Files of one kind in `<root>/<camera_id>/<local day>/`, named by their local start.

    `labelled` selects the naming rule (clips carry `_<label>` after the clock, recordings
    nothing); `side_suffixes` are the files kept beside a video under its stem.
    """

    def __init__(
        self, root: Path, tz: tzinfo, *, labelled: bool, side_suffixes: tuple[str, ...] = ()
    ) -> None:
        """Keep files under `root`; `tz` names day folders and files."""
        self.root = Path(root)
        self.tz = tz
        self.labelled = labelled
        self.side_suffixes = side_suffixes
        base = _CLOCK + (_LABEL if labelled else "")
        self.name_re = re.compile(rf"^(?P<base>{base}){_NUMBER}\.mp4(?P<part>\.part)?$")
        sides = "|".join(re.escape(suffix.removeprefix(".")) for suffix in side_suffixes)
        self.side_re = re.compile(rf"^{base}{_NUMBER}\.(?:{sides})$") if sides else None

    def camera_dir(self, camera_id: str) -> Path:
        """Return a camera's folder (refuses ids that are no safe folder name)."""
        if not valid_camera_id(camera_id):
            raise UnsafePathError(f"invalid camera id {camera_id!r}")
        return self.root / camera_id

    def relative(self, path: Path) -> str:
        """Return `path` relative to the root, with forward slashes (for URLs and media ids)."""
        return Path(path).relative_to(self.root).as_posix()

    @staticmethod
    def final_path(part: Path) -> Path:
        """Return the finished name of a part file."""
        return part.with_name(part.name.removesuffix(PART_SUFFIX))

    def _name_free(self, folder: Path, stem: str) -> bool:
        """Return True when no file of `stem` (video, part, side file) exists in `folder`."""
        suffixes = (VIDEO_SUFFIX, VIDEO_SUFFIX + PART_SUFFIX, *self.side_suffixes)
        return not any((folder / f"{stem}{suffix}").exists() for suffix in suffixes)

    def _free_stem(self, folder: Path, base: str) -> str:
        for number in range(_MAX_NAME_SUFFIX):
            stem = base if number == 0 else f"{base}_{number}"
            if self._name_free(folder, stem):
                return stem
        raise FileExistsError(f"no free name for {base} in {folder}")

    def new_part_path(self, camera_id: str, start: float, label: str | None = None) -> Path:
        """Create the day folder and return an unused `.mp4.part` path (blocking).

        No file of the name (finished, part, side file) may exist, so the final rename can never
        overwrite a file, nor a side file be mixed up with another video's. `label` is used
        (made safe) only by labelled trees.
        """
        local = datetime.fromtimestamp(start, self.tz)
        folder = self.camera_dir(camera_id) / local.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        base = local.strftime("%H-%M-%S")
        if self.labelled:
            base = f"{base}_{safe_label(label or '')}"
        return folder / f"{self._free_stem(folder, base)}{VIDEO_SUFFIX}{PART_SUFFIX}"

    def start_from_name(self, path: Path, end_hint: float | None = None) -> float | None:
        """Return the epoch start encoded in a file's day folder and name.

        With `end_hint` (the file's end), the repeated local hour when daylight saving time ends
        is resolved to the start that lies just before that end.
        """
        day = parse_day(path.parent.name)
        match = self.name_re.match(path.name)
        if day is None or match is None:
            return None
        clock = (int(match["h"]), int(match["m"]), int(match["s"]))
        return local_start(day, clock, self.tz, end_hint)

    def label_from_name(self, path: Path) -> str | None:
        """Return the label in a file's name (labelled trees), None if it has none."""
        match = self.name_re.match(path.name)
        return match.groupdict().get("label") if match is not None else None

    def side_path(self, video: Path, suffix: str) -> Path:
        """Return the side file `suffix` of a video (or of its part file)."""
        return video.with_name(file_stem(video) + suffix)

    def finish(self, part: Path, end: float) -> Path:
        """Make a part file final (blocking): mtime = `end`, renamed without overwriting.

        The index reads the end back from the mtime. If the finished name is taken (which only a
        file copied in by hand can cause) a free `_n` name is used and the side files follow.
        """
        final = self.final_path(part)
        if final.exists():
            match = self.name_re.match(final.name)
            base = match["base"] if match is not None else file_stem(final)
            final = final.with_name(self._free_stem(final.parent, base) + VIDEO_SUFFIX)
            for suffix in self.side_suffixes:
                old = self.side_path(part, suffix)
                if old.exists():
                    os.rename(old, self.side_path(final, suffix))
        os.utime(part, (end, end))
        os.rename(part, final)
        return final

    def delete(self, video: Path) -> None:
        """Delete a video with its side files and emptied folders (blocking).

        OSError only when the video itself could not be deleted.
        """
        self._unlink(video)
        self.remove_empty_dirs(video.parent)

    def _unlink(self, video: Path) -> None:
        video.unlink(missing_ok=True)
        for suffix in self.side_suffixes:
            try:
                self.side_path(video, suffix).unlink(missing_ok=True)
            except OSError as err:  # the video is gone: a stray side file is cleaned at start-up
                _LOGGER.debug("Could not delete a side file of %s: %s", video.name, err)

    def remove_empty_dirs(self, folder: Path) -> None:
        """Remove an emptied day folder (and camera folder), never the root itself."""
        for path in (folder, folder.parent):
            if path == self.root or not path.is_relative_to(self.root):
                return
            try:
                path.rmdir()
            except OSError:
                return  # not empty (or already gone): stop climbing

    def scan(self) -> Iterator[DayFolder]:
        """Walk the tree (blocking): every day folder with the files named by this tree's rule.

        Symlinked folders and files are not followed and foreign names are ignored, so
        retention can only ever delete files this tree wrote, inside the root.
        """
        for camera_dir in _subdirs(self.root):
            if not valid_camera_id(camera_dir.name):
                continue
            for day_dir in _subdirs(Path(camera_dir.path)):
                if parse_day(day_dir.name) is None:
                    continue
                folder = DayFolder(camera_dir.name, Path(day_dir.path))
                for entry in _entries(folder.path):
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if (match := self.name_re.match(entry.name)) is not None:
                        if match["part"]:
                            folder.parts.append(Path(entry.path))
                        else:
                            folder.finished.append(entry)
                    elif self.side_re is not None and self.side_re.match(entry.name):
                        folder.side_files.append(Path(entry.path))
                yield folder

    def recover(self, part: Path, start: float | None = None) -> Recovered | None:
        """Make a leftover `.mp4.part` playable and final (blocking); None if nothing was saved.

        The file is cut after its last complete fragment, its end time is written into its
        mtime like for any finished file, and it is renamed. A file without a single complete
        fragment holds nothing playable and is deleted with its side files. `start` (known
        from elsewhere, e.g. a sidecar) wins over the start in the name.
        """
        try:
            size = part.stat().st_size
            with part.open("rb") as file:
                kept = complete_fragments_end(file, size)
            duration = 0.0
            if kept:
                if kept < size:
                    os.truncate(part, kept)
                duration = probe_duration(part)
            if duration <= 0:
                _LOGGER.info("Deleting %s: nothing playable was written", part.name)
                self._unlink(part)  # its folder stays: a writer may be about to use it
                return None
            if start is None:
                start = self.start_from_name(part, end_hint=part.stat().st_mtime)
            if start is None:
                return None
            final = self.finish(part, start + duration)
        except (OSError, av.error.FFmpegError) as err:
            _LOGGER.warning("Could not recover %s: %s", part.name, err)
            return None
        _LOGGER.info("Recovered %s (%.1f s, %d bytes cut)", final.name, duration, size - kept)
        return Recovered(final, start, start + duration, kept, size - kept)
