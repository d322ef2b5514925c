"""The manifest's requirements install next to each supported Home Assistant release.

Home Assistant installs an integration's requirements, and those of the integrations it depends
on, under the release's package_constraints.txt. pip's resolver does the same here (dry run, for
the release's Python version, wheels only), so a requirement no wheel satisfies next to HA's
pins fails here instead of on a user's machine.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import subprocess
import sys
import tempfile
from typing import Any
import zipfile

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
import pytest

from .compat import MANIFEST, ReleaseFiles, load_release, release_versions

# Shown when a check fails; they are checked against HA's pins like every package resolved.
WATCHED = ("av", "numpy", "aiortc", "cryptography", "pyopenssl")
# Requirements that Home Assistant's own integrations pin exactly (its `onvif` integration:
# onvif-zeep-async, WSDiscovery). pip cannot resolve them here for every release: WSDiscovery
# is an sdist on PyPI, and onvif-zeep-async 3.2.5 needs ciso8601, which HA 2025.4 pins to a
# version PyPI has no Python 3.13 wheel of; HA's wheel index serves both, and HA's own CI
# installs its pins under its constraints. So each release's pin stands for the requirement,
# and it must satisfy the manifest's range (a release that moves its pin outside fails here).
HA_PINNED = ("onvif-zeep-async", "wsdiscovery")


def integration_pins(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Exact pins (`name==version`) of every integration of the release, by package name."""
    pins: dict[str, str] = {}
    for name in wheel.namelist():
        if name.startswith("homeassistant/components/") and name.endswith("/manifest.json"):
            for text in json.loads(wheel.read(name)).get("requirements", []):
                req = Requirement(text)
                exact = [s.version for s in req.specifier if s.operator == "=="]
                if exact:
                    pins[canonicalize_name(req.name)] = exact[0]
    return pins


def left_to_ha(reqs: list[str], wheel: zipfile.ZipFile, version: str) -> list[str]:
    """Drop the HA_PINNED requirements, checking the release's pin satisfies each of them."""
    pins = integration_pins(wheel)
    kept = []
    for text in reqs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name not in HA_PINNED:
            kept.append(text)
            continue
        assert name in pins, f"{version}: no integration pins {req.name} any more"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{version} pins {req.name}=={pins[name]}, outside the manifest's {text!r}"
        )
    return kept


def constraints(release: ReleaseFiles) -> dict[str, SpecifierSet]:
    """The release's constraints by package name (a name may appear on several lines)."""
    found: dict[str, SpecifierSet] = {}
    for text in release.constraints.read_text(encoding="utf-8").splitlines():
        line = text.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            name = canonicalize_name(req.name)
            found[name] = found.get(name, SpecifierSet()) & req.specifier
    return found


def pinned(spec: SpecifierSet) -> bool:
    """Whether the specifier fixes one version."""
    return any(s.operator in ("==", "===") for s in spec)


def requirements(release: ReleaseFiles, manifest: Path = MANIFEST) -> list[str]:
    """The manifest's requirements plus those of the integrations it depends on in `release`.

    Like HA, dependencies and after-dependencies are followed transitively; a dependency the
    release lacks fails, a missing after-dependency is ignored (HA loads us without it). What
    the constraints pin exactly is left to them: HA installs those itself (some, like
    PyTurboJPEG, are sdists pip cannot resolve for another Python version), and the pins hold
    for everything our requirements pull in.
    """
    data = json.loads(manifest.read_text(encoding="utf-8"))
    limits = constraints(release)
    reqs = list(data.get("requirements", []))
    todo = [(d, True) for d in data.get("dependencies", [])]
    todo += [(d, False) for d in data.get("after_dependencies", [])]
    seen: set[str] = set()
    with zipfile.ZipFile(release.wheel) as wheel:
        reqs = left_to_ha(reqs, wheel, release.version)
        while todo:
            domain, required = todo.pop(0)
            if domain in seen:
                continue
            seen.add(domain)
            try:
                dep = json.loads(wheel.read(f"homeassistant/components/{domain}/manifest.json"))
            except KeyError:
                assert not required, f"{release.version} has no integration {domain!r}"
                continue
            reqs += [
                req
                for req in dep.get("requirements", [])
                if not pinned(limits.get(canonicalize_name(Requirement(req).name), SpecifierSet()))
            ]
            todo += [(d, True) for d in dep.get("dependencies", [])]
            todo += [(d, False) for d in dep.get("after_dependencies", [])]
    return reqs


def start_resolution(
    release: ReleaseFiles, reqs: list[str], workdir: Path
) -> subprocess.Popen[str] | None:
    """Start pip's resolver on `reqs` under the release's constraints (nothing is installed)."""
    if not reqs:
        return None
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
        "--disable-pip-version-check", "--no-input", "--report", str(workdir / "report.json"),
        "--python-version", release.python, "--only-binary=:all:",
        "--target", str(workdir / "target"), "-c", str(release.constraints), *reqs,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_resolution(
    release: ReleaseFiles, proc: subprocess.Popen[str] | None, workdir: Path
) -> dict[str, str]:
    """Wait for pip; the resolved versions by package name, or fail with pip's message."""
    if proc is None:
        return {}
    out = proc.communicate(timeout=170)[0].splitlines()
    if proc.returncode:
        errors = [i for i, line in enumerate(out) if line.startswith("ERROR:")]
        message = "\n".join(out[errors[0] :] if errors else out[-40:])
        pytest.fail(f"requirements do not resolve for {release.version}:\n{message}")
    report: dict[str, Any] = json.loads((workdir / "report.json").read_text(encoding="utf-8"))
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in report["install"]
    }


def resolve(release: ReleaseFiles, manifest: Path = MANIFEST) -> dict[str, str]:
    """Resolve the manifest's requirements for one release (for trying out a manifest)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_resolution(release, requirements(release, manifest), Path(tmp))
        return finish_resolution(release, proc, Path(tmp))


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """pip runs for every release at once (they wait on the network), each test reads its own."""
    procs: dict[str, tuple[subprocess.Popen[str] | None, Path]] = {}
    for version in release_versions():
        workdir = tmp_path_factory.mktemp(f"pip-{version}")
        try:
            release = load_release(version)
            procs[version] = start_resolution(release, requirements(release), workdir), workdir
        except (pytest.fail.Exception, AssertionError):
            continue  # that release's own test reports it
    yield procs
    for proc, _ in procs.values():
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.communicate()


@pytest.mark.parametrize("version", release_versions())
def test_requirements_resolve(version: str, resolutions: dict[str, Any], tmp_path: Path) -> None:
    """The requirements resolve, and every package HA constrains (av, numpy…) is HA's version."""
    release = load_release(version)
    if version not in resolutions:  # not started with the others: fails here, with the reason
        resolutions[version] = start_resolution(release, requirements(release), tmp_path), tmp_path
    resolved = finish_resolution(release, *resolutions[version])
    limits = constraints(release)
    wrong = {
        name: f"{found} (HA: {limits[name]})"
        for name, found in resolved.items()
        if name in limits and not limits[name].contains(found, prereleases=True)
    }
    watched = {name: resolved.get(name) for name in WATCHED}
    assert not wrong, f"{version}: resolved outside HA's constraints: {wrong}; {watched}"


@pytest.mark.parametrize("version", release_versions())
def test_manifest_pins_nothing_ha_pins(version: str) -> None:
    """A manifest `==` pin of a package HA pins breaks installs once HA moves its pin."""
    release = load_release(version)
    limits = constraints(release)
    data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    clashes = {
        str(req): str(limits[name])
        for req in map(Requirement, data.get("requirements", []))
        if pinned(req.specifier)
        and pinned(limits.get(name := canonicalize_name(req.name), SpecifierSet()))
    }
    assert not clashes, f"the manifest pins what {version} pins (manifest: HA): {clashes}"
