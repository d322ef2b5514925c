"""Find a go2rtc binary and check that this machine can run it and that it is new enough.

Order: the path set in the options → `go2rtc` on PATH → where `scripts/install_go2rtc.sh`
installs it. Each candidate is run once with `-v` (blocking: call these functions in an
executor) and judged: missing, not executable, built for another architecture, too old, or
usable. The verdict carries the HA repair issue that tells the user what to do.

A binary found here is one LightNVR runs itself, with a config it writes: that config relies on
`api.local_auth` and `api.allow_paths` (1.9.12) to keep other local programs off go2rtc's API,
so older versions are refused (`MANAGED_MIN_VERSION`), not merely warned about.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
import errno
import logging
import os
from pathlib import Path
import re
import shutil
import subprocess

from .config import SECURITY_MIN_VERSION
from .process import minimal_environment

_LOGGER = logging.getLogger(__name__)

BINARY_NAME = "go2rtc"
# scripts/install_go2rtc.sh installs here unless told otherwise (--install-dir).
INSTALL_DIRS: tuple[Path, ...] = (Path("/usr/local/bin"),)
# The API LightNVR speaks (also what an external go2rtc must at least be).
MIN_VERSION: tuple[int, int, int] = (1, 9, 0)
# What LightNVR runs itself: below 1.9.12 there is no api.local_auth, so every local program
# could use the API of a go2rtc holding the cameras' credentials, bypassing its password.
MANAGED_MIN_VERSION: tuple[int, int, int] = SECURITY_MIN_VERSION
VERSION_TIMEOUT = 10.0

_VERSION_RE = re.compile(r"go2rtc version (?P<version>\S+)")

ISSUE_BINARY_MISSING = "go2rtc_binary_missing"
ISSUE_BINARY_UNUSABLE = "go2rtc_binary_unusable"


class BinaryProblem(StrEnum):
    """Why a binary cannot be used."""

    MISSING = "missing"
    NOT_EXECUTABLE = "not_executable"
    WRONG_ARCHITECTURE = "wrong_architecture"
    TOO_OLD = "too_old"
    BROKEN = "broken"  # runs, but fails or prints no version


@dataclass(frozen=True, slots=True)
class BinaryCheck:
    """The verdict on one go2rtc binary (or on the search for one)."""

    path: str | None
    version: str | None = None
    problem: BinaryProblem | None = None
    detail: str = ""

    @property
    def usable(self) -> bool:
        """Return True when the engine can run this binary."""
        return self.problem is None and self.path is not None

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        """Return the version as numbers ((0, 0, 0) when unknown)."""
        return parse_version_tuple(self.version or "")

    @property
    def issue_key(self) -> str | None:
        """Return the translation key of the repair issue for this verdict, if any."""
        if self.problem is None:
            return None
        if self.problem is BinaryProblem.MISSING:
            return ISSUE_BINARY_MISSING
        return ISSUE_BINARY_UNUSABLE

    @property
    def issue_placeholders(self) -> dict[str, str]:
        """Return the placeholders of that repair issue."""
        if self.problem is BinaryProblem.MISSING:
            return {"detail": self.detail}
        return {"path": self.path or "", "detail": self.detail}


def parse_version_tuple(version: str) -> tuple[int, int, int]:
    """Return (1, 9, 14) for "1.9.14", "v1.9.14" or "1.9.14+dev.abc"."""
    numbers = [int(n) for n in re.findall(r"\d+", version.split("+", 1)[0])[:3]]
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


def parse_version_output(output: str) -> str | None:
    """Return the version from `go2rtc -v` output (`go2rtc version 1.9.13 (rev) linux/amd64`)."""
    match = _VERSION_RE.search(output)
    return match.group("version").removeprefix("v") if match else None


def check_binary(path: str, timeout: float = VERSION_TIMEOUT) -> BinaryCheck:
    """Run `path -v` and judge the binary. Blocking: run it in an executor."""
    file = Path(path)
    if not file.exists():
        return BinaryCheck(path, problem=BinaryProblem.MISSING, detail=f"{path} does not exist")
    if file.is_dir() or not os.access(file, os.X_OK):
        return BinaryCheck(
            path,
            problem=BinaryProblem.NOT_EXECUTABLE,
            detail="the file is not executable (chmod +x it)",
        )
    try:
        result = subprocess.run(  # noqa: S603 - the user's own go2rtc binary, no shell
            [path, "-v"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env=minimal_environment(),  # it is go2rtc: none of HA's secrets, even for -v
        )
    except OSError as err:
        if err.errno == errno.ENOEXEC:
            return BinaryCheck(
                path,
                problem=BinaryProblem.WRONG_ARCHITECTURE,
                detail="it is built for another processor architecture (exec format error)",
            )
        if err.errno == errno.EACCES:
            return BinaryCheck(
                path,
                problem=BinaryProblem.NOT_EXECUTABLE,
                detail="permission denied when running it",
            )
        return BinaryCheck(path, problem=BinaryProblem.BROKEN, detail=f"cannot run it: {err}")
    except subprocess.TimeoutExpired:
        return BinaryCheck(
            path,
            problem=BinaryProblem.BROKEN,
            detail=f"`go2rtc -v` did not finish within {timeout:.0f} s",
        )
    version = parse_version_output(result.stdout + "\n" + result.stderr)
    if version is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        return BinaryCheck(
            path,
            problem=BinaryProblem.BROKEN,
            detail=f"`go2rtc -v` exited with {result.returncode} and no version: {tail[0][:200]}",
        )
    found = parse_version_tuple(version)
    minimum = ".".join(str(n) for n in MANAGED_MIN_VERSION)
    if found < MIN_VERSION:
        return BinaryCheck(
            path,
            version,
            BinaryProblem.TOO_OLD,
            f"version {version} is too old; {minimum} or newer is needed",
        )
    if found < MANAGED_MIN_VERSION:
        return BinaryCheck(
            path,
            version,
            BinaryProblem.TOO_OLD,
            f"version {version} cannot require a login from local programs (api.local_auth) "
            f"nor limit its API (api.allow_paths), so any program on this machine could use "
            f"its API and the camera passwords it holds; {minimum} or newer is needed",
        )
    return BinaryCheck(path, version)


def find_usable_binary(
    configured: str | None,
    *,
    search_path: str | None = None,
    install_dirs: tuple[Path, ...] = INSTALL_DIRS,
) -> BinaryCheck:
    """Return the first usable binary, or the verdict explaining why there is none.

    A configured path is the user's explicit choice: it is the only candidate. Otherwise PATH,
    then the install script's folder; when candidates exist but none is usable, the first
    one's problem is reported (it is the one the user most likely meant). Blocking.
    """
    if configured:
        check = check_binary(configured)
        _log(check)
        return check
    candidates: list[str] = []
    if found := shutil.which(BINARY_NAME, path=search_path):
        candidates.append(found)
    for folder in install_dirs:
        path = str(folder / BINARY_NAME)
        if path not in candidates and (os.path.lexists(path)):
            candidates.append(path)
    first_problem: BinaryCheck | None = None
    for candidate in candidates:
        check = check_binary(candidate)
        _log(check)
        if check.usable:
            return check
        first_problem = first_problem or check
    if first_problem is not None:
        return first_problem
    searched = ", ".join(["PATH", *(str(d) for d in install_dirs)])
    return BinaryCheck(
        None, problem=BinaryProblem.MISSING, detail=f"no go2rtc program in {searched}"
    )


def _log(check: BinaryCheck) -> None:
    if check.usable:
        _LOGGER.debug("go2rtc %s found at %s", check.version, check.path)
    else:
        _LOGGER.debug("go2rtc at %s cannot be used: %s", check.path, check.detail)
