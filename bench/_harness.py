"""Run a benchmark module through pytest so it gets a real in-process Home Assistant."""

from __future__ import annotations

from pathlib import Path
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Generated benchmark media is kept between runs here (git-ignored).
CACHE = ROOT / ".cache" / "bench"


def run(module_file: str) -> int:
    """Collect the `bench_*` functions of `module_file` and run them, printing their output."""
    path = Path(module_file).resolve()
    return pytest.main(
        [
            str(path),
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "-o",
            f"python_files={path.name}",
            "-o",
            "python_functions=bench_*",
            "-o",
            "timeout=1800",
            "-W",
            "ignore::DeprecationWarning",
            *sys.argv[1:],
        ]
    )
