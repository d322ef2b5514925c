"""A network share as the archive tier meets one: a folder mounted elsewhere, which can go away.

Where the tests may mount (root with the mount capability, as on the CI machines), the share
is a real bind mount of a folder: it turns read-only with a real `remount,ro` (writes fail with
EROFS) and goes away with a real (lazy) unmount, which leaves the empty mount point behind, as
an unmounted NAS does. Elsewhere the same states are made with permissions and a rename; as
root without the mount capability a read-only share cannot be made, and `can_be_read_only`
says so.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import time


def _run(*args: str) -> bool:
    """Run a mount command; True when it worked."""
    tool = shutil.which(args[0])
    if tool is None:
        return False
    result = subprocess.run([tool, *args[1:]], capture_output=True, check=False, timeout=30)
    return result.returncode == 0


class Share:
    """The folder `real` (the NAS's disk) seen at `mount_point` (where HA finds it).

    Without a bind mount the mount point itself holds the files, and "unmounting" moves it
    aside (to `away`) for an empty folder.
    """

    def __init__(self, real: Path, mount_point: Path) -> None:
        """Create both folders and mount the share."""
        self.real = real
        self.mount_point = mount_point
        self.away = mount_point.with_name(mount_point.name + ".away")
        real.mkdir(parents=True, exist_ok=True)
        mount_point.mkdir(parents=True, exist_ok=True)
        self.bind = _run("mount", "--bind", str(real), str(mount_point))
        self.mounted = True

    @property
    def files(self) -> Path:
        """Return where the share's files are, mounted or not."""
        return self.real if self.bind else (self.mount_point if self.mounted else self.away)

    @property
    def can_be_read_only(self) -> bool:
        """Return True when `read_only` really makes writes fail."""
        return self.bind or os.geteuid() != 0

    def read_only(self, wait: float = 30.0) -> None:
        """Make the share refuse writes (as a NAS remounted read-only).

        The kernel refuses the remount while a file is open for writing on the share, so it is
        tried until it works: at the end of a copy, before its rename.
        """
        if self.bind:
            deadline = time.monotonic() + wait
            while not _run("mount", "-o", "remount,bind,ro", str(self.mount_point)):
                assert time.monotonic() < deadline, "the share stayed busy"
                time.sleep(0.005)
        else:
            for folder, _dirs, _files in os.walk(self.files):
                os.chmod(folder, 0o555)

    def writable(self) -> None:
        """Let the share take writes again."""
        if self.bind:
            assert _run("mount", "-o", "remount,bind,rw", str(self.mount_point))
        else:
            for folder, _dirs, _files in os.walk(self.files):
                os.chmod(folder, 0o755)

    def unmount(self) -> None:
        """Take the share away, leaving the empty mount point (files open on it stay usable)."""
        if self.bind:
            assert _run("umount", "-l", str(self.mount_point))
        else:
            self.mount_point.rename(self.away)
            self.mount_point.mkdir()
        self.mounted = False

    def mount(self) -> None:
        """Bring the share back."""
        if self.bind:
            assert _run("mount", "--bind", str(self.real), str(self.mount_point))
        else:
            self.mount_point.rmdir()
            self.away.rename(self.mount_point)
        self.mounted = True

    def close(self) -> None:
        """Unmount for good (at teardown)."""
        if self.bind and self.mounted:
            _run("mount", "-o", "remount,bind,rw", str(self.mount_point))
            _run("umount", "-l", str(self.mount_point))
        self.mounted = False
