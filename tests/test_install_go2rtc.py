"""scripts/install_go2rtc.sh: help, options, architecture mapping, dry run (no downloads here)."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "install_go2rtc.sh"
RELEASES = "https://github.com/AlexxIT/go2rtc/releases"


def _run(*args: str, machine: str = "x86_64") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIGHTNVR_UNAME_M": machine}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_script_is_executable() -> None:
    """It can be run directly (sudo ./scripts/install_go2rtc.sh)."""
    assert os.access(SCRIPT, os.X_OK)


def test_help() -> None:
    """--help explains every option and exits 0."""
    result = _run("--help")
    assert result.returncode == 0
    for option in ("--install-dir", "--config-dir", "--version", "--dry-run", "--help"):
        assert option in result.stdout
    assert "/usr/local/bin" in result.stdout
    assert "/etc/lightnvr/go2rtc" in result.stdout


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "arm"),
        ("armv6l", "armv6"),
        ("i686", "386"),
        ("mips", "mipsel"),
        ("mipsel", "mipsel"),
    ],
)
def test_dry_run_per_architecture(tmp_path: Path, machine: str, arch: str) -> None:
    """The right release asset, where it would go, and nothing is written."""
    config_dir = tmp_path / "config"
    result = _run(
        "--dry-run",
        "--install-dir",
        str(tmp_path / "bin"),
        "--config-dir",
        str(config_dir),
        machine=machine,
    )
    assert result.returncode == 0, result.stderr
    assert f"{RELEASES}/latest/download/go2rtc_linux_{arch}\n" in result.stdout
    assert f"Would install:  {tmp_path / 'bin' / 'go2rtc'}" in result.stdout
    assert f"Would write:    {config_dir / 'go2rtc.yaml'}" in result.stdout
    assert 'listen: "127.0.0.1:1984"' in result.stdout
    assert not (tmp_path / "bin").exists()
    assert not config_dir.exists()


def test_dry_run_defaults_and_pinned_version(tmp_path: Path) -> None:
    """Default folders; a pinned version (with or without v) uses that release's URL."""
    result = _run("--dry-run", "--version", "v1.9.13")
    assert result.returncode == 0, result.stderr
    assert f"{RELEASES}/download/v1.9.13/go2rtc_linux_amd64" in result.stdout
    assert "/usr/local/bin/go2rtc" in result.stdout
    assert "/etc/lightnvr/go2rtc/go2rtc.yaml" in result.stdout
    result = _run("--dry-run", "--version=1.9.7", f"--config-dir={tmp_path}")
    assert f"{RELEASES}/download/v1.9.7/go2rtc_linux_amd64" in result.stdout


def test_dry_run_keeps_an_existing_config(tmp_path: Path) -> None:
    """A user's go2rtc.yaml is never overwritten."""
    (tmp_path / "go2rtc.yaml").write_text("api: {}\n")
    result = _run("--dry-run", "--config-dir", str(tmp_path))
    assert f"Would keep:     {tmp_path / 'go2rtc.yaml'} (exists)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [("--bogus",), ("--install-dir",), ("--version", "banana"), ("extra",)],
)
def test_bad_options_exit_non_zero_with_usage(args: tuple[str, ...]) -> None:
    """Wrong usage: exit 2 and the usage text on stderr."""
    result = _run(*args)
    assert result.returncode == 2
    assert "Usage:" in result.stderr


def test_unsupported_architecture() -> None:
    """An architecture go2rtc has no Linux build for is refused clearly."""
    result = _run("--dry-run", machine="sparc64")
    assert result.returncode == 1
    assert "unsupported architecture 'sparc64'" in result.stderr
