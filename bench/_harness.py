"""Run a benchmark module through pytest so it gets a real in-process Home Assistant."""

from __future__ import annotations

import asyncio
from pathlib import Path
import sys
import time

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


# The event loop's lag, as the benchmarks that load Home Assistant measure it.
LAG_INTERVAL_S = 0.01


async def lag_sampler(stop: asyncio.Event, samples: list[float]) -> None:
    """Append how late each 10 ms sleep wakes up (seconds) until `stop` is set."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(LAG_INTERVAL_S)
        samples.append(time.perf_counter() - started - LAG_INTERVAL_S)


def p99(values: list[float]) -> float:
    """Return the 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
