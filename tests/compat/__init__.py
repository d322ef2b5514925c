"""The Home Assistant releases LightNVR supports, as scripts/compat_refresh records them.

Each release has an entry in releases.json (the Python version to resolve for and the name of
its wheel in .cache/compat/wheels/) and a copy of its package_constraints.txt in <release>/.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
COMPAT = ROOT / "tests" / "compat"
WHEELS = ROOT / ".cache" / "compat" / "wheels"
MANIFEST = ROOT / "custom_components" / "lightnvr" / "manifest.json"
INDEX = COMPAT / "releases.json"
REFRESH = "run scripts/compat_refresh"


@dataclass(frozen=True)
class ReleaseFiles:
    """A supported release: the Python version it needs, its wheel and its constraints."""

    version: str
    python: str
    wheel: Path
    constraints: Path


def version_key(version: str) -> list[int]:
    """Sort key of a release version."""
    return [int(part) for part in version.split(".") if part.isdigit()]


def release_versions() -> list[str]:
    """Releases to parametrize over, oldest first; without an index one (failing) entry."""
    try:
        return sorted(json.loads(INDEX.read_text(encoding="utf-8")), key=version_key)
    except OSError:
        return [INDEX.name]  # its test fails: the index is missing


def load_release(version: str) -> ReleaseFiles:
    """The release's files; fail (never skip) when any of them is missing."""
    if not INDEX.is_file():
        pytest.fail(f"{INDEX.relative_to(ROOT)} is missing: {REFRESH}")
    if (entry := json.loads(INDEX.read_text(encoding="utf-8")).get(version)) is None:
        pytest.fail(f"{INDEX.relative_to(ROOT)} has no release {version}: {REFRESH}")
    wheel, constraints = WHEELS / entry["wheel"], COMPAT / version / "package_constraints.txt"
    for path in (wheel, constraints):
        if not path.is_file():
            pytest.fail(f"{path.relative_to(ROOT)} is missing: {REFRESH}")
    return ReleaseFiles(version, entry["python"], wheel, constraints)
