"""Camera outages: a camera away for 2 / 30 / 120 / 300 s, seconds until frames flow again.

Every outage gets its own real RTSP camera (GStreamer server process) and its own StreamHub,
and all outages run at once (tests/infra/outage.py), so the run takes as long as the longest
outage plus start-up (~5 min). "Back after" is from the camera's server listening again to the
hub's first packet of the new connection. Goal: ≤ 5 s for every outage length.

Without the hub's reachability probe, its back-off (1, 2, 4 … 60 s) alone would decide when
the next open comes; the bench prints where in that schedule each outage ends.

Run: .venv/bin/python -m bench.recovery
     BENCH_QUICK=1 .venv/bin/python -m bench.recovery   (skips the 300 s outage: ~2 min)
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

import itertools
import os

import pytest

from custom_components.lightnvr.const import HUB_BACKOFF_INITIAL, HUB_BACKOFF_MAX
from custom_components.lightnvr.reachability import RECOVERY_PROBE_SECONDS
from tests.infra.media import make_default_clip
from tests.infra.outage import measure_recoveries

from ._harness import CACHE

GOAL_SECONDS = 5.0
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
OUTAGES: tuple[float, ...] = (2.0, 30.0, 120.0) if QUICK else (2.0, 30.0, 120.0, 300.0)


def _backoff_steps() -> list[float]:
    """The hub's waits between failed opens: 1, 2, 4 … capped at HUB_BACKOFF_MAX."""
    steps: list[float] = []
    step = HUB_BACKOFF_INITIAL
    while step < HUB_BACKOFF_MAX:
        steps.append(step)
        step = min(step * 2, HUB_BACKOFF_MAX)
    return steps


def _without_probe(away: float) -> tuple[float, float]:
    """Return (back-off step in progress, seconds to the next open) when the camera returns.

    The ideal schedule: the hub loses the camera at 0 and every failed open takes no time, so
    opens come at 1, 3, 7, 15, 31, 63, 123, 183 … s. The step is the worst case.
    """
    elapsed = 0.0
    for step in itertools.chain(_backoff_steps(), itertools.repeat(HUB_BACKOFF_MAX)):
        elapsed += step
        if elapsed >= away:
            return step, elapsed - away
    raise AssertionError("unreachable")


def _fmt(values: list[float]) -> str:
    return " / ".join(f"{v:g}" for v in values)


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("socket_enabled")
async def bench_recovery() -> None:
    """Print the table."""
    clip = make_default_clip(CACHE)
    recoveries = await measure_recoveries(clip, OUTAGES)

    print()
    print("Camera away → frames flow again (one real RTSP camera + hub per outage, run at once)")
    print("| away (s) | back after (s) | goal (s) | ok  |")
    print("|----------|----------------|----------|-----|")
    for away, seconds in zip(OUTAGES, recoveries, strict=True):
        ok = "yes" if seconds <= GOAL_SECONDS else "NO"
        print(f"| {away:>8g} | {seconds:>14.2f} | {GOAL_SECONDS:>8.1f} | {ok:<3} |")
    if QUICK:
        print("(BENCH_QUICK: the 300 s outage was skipped)")

    schedule = ", ".join(f"{s:g}" for s in _backoff_steps())
    without = [_without_probe(away) for away in OUTAGES]
    print(
        f"\nWithout the reachability probe (every {RECOVERY_PROBE_SECONDS:g} s during back-off "
        f"steps ≥ {RECOVERY_PROBE_SECONDS:g} s) the back-off ({schedule}, then "
        f"{HUB_BACKOFF_MAX:g} s each) alone would decide: a camera back after "
        f"{_fmt(list(OUTAGES))} s finds the hub in a {_fmt([s for s, _ in without])} s "
        f"back-off step, so up to that long before the next open (on the ideal schedule, "
        f"failed opens taking no time, the next open would come "
        f"{_fmt([round(n, 1) for _, n in without])} s later; where an outage ends in that "
        f"schedule is luck)."
    )
    worst = max(recoveries)
    verdict = "met" if worst <= GOAL_SECONDS else "NOT met"
    print(f"Goal: every outage back within {GOAL_SECONDS:g} s: {verdict} (worst {worst:.2f} s)")
