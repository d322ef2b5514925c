"""Copying a file safely: rate-limited, in the kernel where it can, checked, made durable.

The archive mover's tools (`archive.py`); blocking, for the executor.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
import threading
import time

from ..media.bmff import iter_file_boxes

COPY_CHUNK = 8 * 1024 * 1024


class MoveStopped(Exception):  # noqa: N818 - a signal, not an error
    """The move was asked to stop (the hub is stopping); nothing was lost."""


class FileNotMovedError(OSError):
    """One file could not be moved (its own problem, not the archive's); it stays in place."""


class RateLimit:
    """Keeps a copy under `bytes_per_second` on average (None: no limit)."""

    def __init__(self, bytes_per_second: float | None, stop: threading.Event) -> None:
        """Start counting now; `stop` cuts a wait short."""
        self._rate = bytes_per_second
        self._stop = stop
        self._start = time.monotonic()
        self._bytes = 0

    @property
    def chunk(self) -> int:
        """Return how much to copy at a time: about a quarter second's worth when limited."""
        if self._rate is None:
            return COPY_CHUNK
        return int(min(COPY_CHUNK, max(64 * 1024, self._rate / 4)))

    def took(self, size: int) -> None:
        """Account for `size` bytes copied; wait until the average is back under the limit."""
        self._bytes += size
        if self._rate is None:
            return
        ahead = self._bytes / self._rate - (time.monotonic() - self._start)
        if ahead > 0 and self._stop.wait(ahead):
            raise MoveStopped


def copy_range(
    source: int, target: int, size: int, limit: RateLimit, stop: threading.Event
) -> None:
    """Copy `size` bytes between two file descriptors, in the kernel where it can."""
    copied = 0
    in_kernel = hasattr(os, "copy_file_range")
    chunk = limit.chunk
    while copied < size:
        if stop.is_set():
            raise MoveStopped
        count = min(chunk, size - copied)
        done = 0
        if in_kernel:
            try:
                done = os.copy_file_range(source, target, count)
            except OSError as err:
                # Not between these file systems (or not on them): copy through user space.
                if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                in_kernel = False
        if not in_kernel:
            data = os.read(source, count)
            done = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(target, view) :]
        if done == 0:
            raise FileNotMovedError("the file got shorter while it was copied")
        copied += done
        limit.took(done)


def is_complete_mp4(path: Path, size: int) -> bool:
    """Return True when `path` is `size` bytes of whole top-level boxes: ftyp, moov, fragments."""
    kinds: list[bytes] = []
    end = 0
    with path.open("rb") as file:
        for kind, offset, _head, box_size in iter_file_boxes(file, size):
            kinds.append(kind)
            end = offset + box_size
    return (
        end == size
        and bool(kinds)
        and kinds[0] == b"ftyp"
        and b"moov" in kinds
        and b"moof" in kinds
        and b"mdat" in kinds
    )


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
