"""The go2rtc watchdog against the double (a real subprocess) and real RTSP cameras.

Hang → restart; flapping → back-off, rate limit and the `go2rtc_keeps_failing` repair issue,
cleared on recovery; a stuck stream is registered again without restarting go2rtc; one failing
camera never restarts go2rtc; most streams failing while their cameras answer does; cameras that
do not answer at all do not. Plus the pure back-off/rate-limit and consensus rules.
"""

from __future__ import annotations

import logging

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
import pytest

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.engine.go2rtc import HealthTimings, stream_name
from custom_components.lightnvr.engine.go2rtc.health import RestartPolicy, go2rtc_at_fault
from custom_components.lightnvr.hub import HubState

from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures and helpers
from .go2rtc_double.fixtures import EngineFactory, camera_config, fast_timings, pid_alive, wait_for
from .infra.rtsp import RtspServer

pytestmark = pytest.mark.usefixtures("allow_unix_sockets")


async def _add_cameras(engine, server: RtspServer, mounts: list[str]) -> list[str]:
    ids = []
    for mount in mounts:
        camera_id = f"id_{mount}"
        await engine.async_add_camera(camera_config(camera_id, server.url(mount)))
        ids.append(camera_id)
    return ids


def _all_streaming(engine, ids: list[str]) -> bool:
    return all(engine.hub(c).state is HubState.STREAMING for c in ids)


# ----- pure rules ----------------------------------------------------------------------------


def test_restart_policy_backs_off_exponentially_and_rate_limits() -> None:
    """1 s, 2 s, 4 s … capped at 5 min; at most 5 restarts per 10 minutes; stable → reset."""
    now = [0.0]
    policy = RestartPolicy(HealthTimings(), clock=lambda: now[0])
    delays = []
    for _ in range(5):
        assert policy.allowed()
        delays.append(policy.next_delay())
        policy.record()
        now[0] += 10
    assert delays == [1, 2, 4, 8, 16]
    assert not policy.allowed()
    assert policy.recent == 5
    now[0] = 601  # the first restart left the 10-minute window
    assert policy.allowed()
    for _ in range(20):
        policy.record()
    assert policy.next_delay() == 300
    policy.reset_backoff()
    assert policy.next_delay() == 1


@pytest.mark.parametrize(
    ("failing", "total", "answering", "expected"),
    [
        (1, 1, 1, False),  # a lone camera never restarts go2rtc
        (1, 3, 1, False),  # one failing camera among several: its own problem
        (2, 3, 2, True),  # most fail while their cameras answer: go2rtc
        (2, 3, 0, False),  # most fail and the cameras are gone: the network, not go2rtc
        (3, 3, 1, True),  # all fail and a camera answers: go2rtc
        (3, 3, 0, False),  # all fail, no camera answers: restarting go2rtc cannot help
        (2, 4, 2, False),  # half is not most
    ],
)
def test_consensus(failing: int, total: int, answering: int, expected: bool) -> None:
    """Who is at fault when streams fail."""
    assert go2rtc_at_fault(failing, total, answering) is expected


# ----- against the double --------------------------------------------------------------------


async def test_hang_restarts_go2rtc(
    hass: HomeAssistant,
    engines: EngineFactory,
    rtsp_cameras: RtspServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The process lives but its API is silent (and it ignores SIGTERM): killed and restarted."""
    engine = await engines.managed(stop_timeout=1.0)
    ids = await _add_cameras(engine, rtsp_cameras, ["cam1"])
    await wait_for(lambda: _all_streaming(engine, ids))
    old_pid = engine.process_pid
    engines.binary.control.hang(old_pid, hard=True)
    await wait_for(lambda: engine.process_pid not in (None, old_pid) and engine.health.healthy)
    assert not pid_alive(old_pid)
    assert engine.health.restart_count == 1
    assert "did not stop within" in caplog.text  # SIGTERM was ignored: SIGKILL did it
    assert stream_name(ids[0]) in await engine.async_check_api(2.0)
    await wait_for(lambda: _all_streaming(engine, ids), timeout=30)


async def test_flapping_backs_off_raises_issue_and_clears_it(
    hass: HomeAssistant,
    engines: EngineFactory,
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """go2rtc keeps dying: limited restarts, then the repair issue; it works again: cleared."""
    caplog.set_level(logging.DEBUG, "custom_components.lightnvr.engine.go2rtc")
    # The window must hold three restarts even on a busy machine (each costs a process start).
    timings = fast_timings(restart_limit=3, restart_window=12.0)
    engine = await engines.managed(timings=timings)
    engines.binary.control.set(crash_after=0.3)  # every go2rtc from now on dies quickly

    await wait_for(
        lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_keeps_failing"), timeout=40
    )
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_keeps_failing")
    assert issue.translation_placeholders["restarts"] == "3"
    assert "panic" in issue.translation_placeholders["log"]  # the last lines it printed
    assert engine.health.restart_count == 3
    assert not engine.health.healthy
    # Back-off: each restart waited longer than the one before.
    waits = [
        float(r.getMessage().split(" in ")[1].split(" s")[0])
        for r in caplog.records
        if r.getMessage().startswith("Restarting go2rtc in ")
    ]
    assert waits[:3] == sorted(waits[:3])
    assert waits[0] < waits[2]

    engines.binary.control.clear("crash_after")  # whatever was wrong is fixed
    await wait_for(
        lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_keeps_failing") is None,
        timeout=40,
    )
    assert engine.health.healthy
    assert engine.health.restart_count == 4
    assert pid_alive(engine.process_pid)


async def test_stuck_stream_is_registered_again_without_restart(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """A stream whose bytes stop growing is registered again; go2rtc keeps running."""
    engine = await engines.managed()
    ids = await _add_cameras(engine, rtsp_cameras, ["cam1"])
    await wait_for(lambda: _all_streaming(engine, ids))
    pid = engine.process_pid
    engines.binary.control.freeze(pid, stream_name(ids[0]))
    await wait_for(lambda: engine.health.reregistrations >= 1)
    packets = engine.hub(ids[0]).stats().packets
    # The hub finds the fresh registration on its next reconnect and video flows again.
    await wait_for(lambda: engine.hub(ids[0]).stats().packets > packets + 25, timeout=40)
    assert engine.process_pid == pid
    assert engine.health.restart_count == 0
    assert engine.health.healthy


async def test_one_failing_camera_never_restarts_go2rtc(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """A camera that does not exist fails forever: re-registered with its cool-down, no restart."""
    engine = await engines.managed(timings=fast_timings(reregister_cooldown=1.0))
    ids = await _add_cameras(engine, rtsp_cameras, ["cam1", "cam2"])
    await wait_for(lambda: _all_streaming(engine, ids))
    broken = f"rtsp://127.0.0.1:{rtsp_cameras.port}/no-such-camera"
    await engine.async_add_camera(camera_config("id_broken", broken))
    pid = engine.process_pid
    await wait_for(lambda: engine.health.reregistrations >= 2, timeout=30)
    assert engine.process_pid == pid
    assert engine.health.restart_count == 0
    assert engine.health.healthy
    assert _all_streaming(engine, ids)


async def test_most_streams_failing_restarts_go2rtc(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """Every stream stuck at once while the cameras answer: go2rtc is restarted."""
    engine = await engines.managed()
    ids = await _add_cameras(engine, rtsp_cameras, ["cam1", "cam2", "cam3"])
    await wait_for(lambda: _all_streaming(engine, ids))
    pid = engine.process_pid
    engines.binary.control.freeze(pid, *(stream_name(c) for c in ids))
    await wait_for(lambda: engine.process_pid not in (None, pid) and engine.health.healthy)
    assert engine.health.restart_count == 1
    assert engine.health.reregistrations == 0  # consensus: no per-stream fiddling
    assert "3 of 3 streams stopped" in (engine.health.last_error or "")
    await wait_for(lambda: _all_streaming(engine, ids), timeout=30)


async def test_cameras_gone_do_not_restart_go2rtc(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """All streams fail because no camera answers: streams re-registered, go2rtc left alone."""
    engine = await engines.managed(timings=fast_timings(reregister_cooldown=1.0))
    ids = await _add_cameras(engine, rtsp_cameras, ["cam1", "cam2"])
    await wait_for(lambda: _all_streaming(engine, ids))
    pid = engine.process_pid
    rtsp_cameras.stop()
    await wait_for(lambda: engine.health.reregistrations >= 2, timeout=30)
    assert engine.process_pid == pid
    assert engine.health.restart_count == 0


async def test_restart_into_a_taken_port_reports_it_and_recovers(
    hass: HomeAssistant, engines: EngineFactory, issue_registry: ir.IssueRegistry
) -> None:
    """go2rtc dies and its RTSP port is taken meanwhile: repair issue; port free: cleared."""
    engine = await engines.managed()
    engines.binary.control.set(refuse=["rtsp"])
    engines.binary.control.crash(engine.process_pid)
    await wait_for(lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_port_in_use"))
    assert (
        "rtsp"
        in issue_registry.async_get_issue(DOMAIN, "go2rtc_port_in_use").translation_placeholders[
            "detail"
        ]
    )
    assert not engine.health.healthy
    engines.binary.control.clear("refuse")
    await wait_for(lambda: engine.health.healthy and engine.process_pid is not None)
    assert issue_registry.async_get_issue(DOMAIN, "go2rtc_port_in_use") is None
    assert engine.health.restart_count >= 2
