"""The go2rtc engine end to end: the go2rtc double as a real subprocess, a real RTSP camera.

Covers the managed mode (start, registration, one camera connection, restream, WebRTC, snapshots,
crash → restart → everything back, port in use, unload) and the external mode (registration,
unreachable → repair issue → recovery).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
import signal
import stat

from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from PIL import Image
import pytest
from webrtc_models import RTCIceCandidateInit
import yaml

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.engine.go2rtc import (
    Go2RtcPortInUseError,
    Go2RtcSettings,
    Go2RtcUnavailableError,
    async_create_go2rtc_engine,
    async_find_usable_binary,
    stream_name,
)
from custom_components.lightnvr.engine.go2rtc.config import RESERVED_PORTS
from custom_components.lightnvr.hub import HubState
from custom_components.lightnvr.models import HubOptions

from .conftest import CAMERA_PASSWORD
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures and helpers
from .go2rtc_double.fixtures import (
    DoubleBinary,
    EngineFactory,
    EngineViewer,
    ExternalDouble,
    camera_config,
    free_port,
    pid_alive,
    wait_for,
)
from .infra.rtsp import RtspServer

SOURCE_SIZE = (640, 360)


def _streaming(engine, camera_id: str) -> bool:
    return engine.hub(camera_id).state is HubState.STREAMING


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_start_registers_cameras_and_restreams(
    hass: HomeAssistant,
    engines: EngineFactory,
    rtsp_cameras: RtspServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """go2rtc starts privately, knows both cameras, and each camera sees ONE connection."""
    caplog.set_level(logging.DEBUG)
    engine = await engines.managed()
    assert engine.health.healthy
    assert engine.health.mode == "managed"
    assert engine.health.version == "1.9.13"
    pid = engine.process_pid
    assert pid is not None
    assert pid_alive(pid)

    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await engine.async_add_camera(
        camera_config(
            "cam_b",
            rtsp_cameras.url("cam2"),
            username="viewer",
            password=CAMERA_PASSWORD,
        )
    )
    streams = await engine.async_check_api(2.0)
    assert set(streams) == {stream_name("cam_a"), stream_name("cam_b")}

    await wait_for(lambda: _streaming(engine, "cam_a") and _streaming(engine, "cam_b"))
    assert engine.hub("cam_a").info.width == SOURCE_SIZE[0]
    # The hub reads go2rtc's restream: the camera itself has exactly one client per mount.
    await rtsp_cameras.async_wait_for(lambda: rtsp_cameras.connected_clients == 2)
    assert rtsp_cameras.play_count("cam1") == 1
    assert rtsp_cameras.play_count("cam2") == 1
    statuses = await engine.async_check_api(2.0)
    assert statuses[stream_name("cam_a")].receiving

    # The private config: loopback listeners on non-default ports, a unix API socket,
    # credentials, the 1.9.12+ allow-lists; only HA's user may read it.
    folder = engines.folder / "go2rtc"
    config = yaml.safe_load((folder / "go2rtc.yaml").read_text())
    assert config["api"]["listen"] == ""
    assert config["api"]["unix_listen"].endswith("api.sock")
    assert config["api"]["local_auth"] is True
    assert "/api/ws" in config["api"]["allow_paths"]
    assert "exec" not in config["app"]["modules"]
    for key in ("rtsp", "webrtc"):
        host, port = config[key]["listen"].rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) not in RESERVED_PORTS
    # stream_source(): go2rtc's restream, which HA's stream component may open.
    rtsp = config["rtsp"]
    assert await engine.async_stream_source("cam_a") == (
        f"rtsp://{rtsp['username']}:{rtsp['password']}@{rtsp['listen']}/{stream_name('cam_a')}"
    )
    assert len(config["api"]["password"]) >= 16
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "state.json").stat().st_mode) == 0o600
    assert CAMERA_PASSWORD not in caplog.text
    assert config["api"]["password"] not in caplog.text


@pytest.mark.usefixtures("allow_unix_sockets", "webrtc_loopback")
async def test_webrtc_and_snapshots_through_go2rtc(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """A real viewer gets decoded pictures from go2rtc; snapshots come from frame.jpeg."""
    engine = await engines.managed()
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    viewer = EngineViewer(engine, "cam_a")
    try:
        await viewer.start()
        await viewer.wait_frames(20)
        assert viewer.size == SOURCE_SIZE
        assert viewer.remote_candidates >= 1  # go2rtc trickled its candidates
        assert engine.viewer_count == 1
    finally:
        await viewer.close()
    assert engine.viewer_count == 0

    jpeg = await engine.async_snapshot("cam_a", None, None)
    assert Image.open(io.BytesIO(jpeg)).size == SOURCE_SIZE
    small = await engine.async_snapshot("cam_a", 320, None)
    assert Image.open(io.BytesIO(small)).size == (320, 180)


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_snapshot_falls_back_to_hub_keyframe(
    hass: HomeAssistant,
    engines: EngineFactory,
    rtsp_cameras: RtspServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """frame.jpeg answering 200 with an empty body → the hub's newest keyframe is decoded."""
    engine = await engines.managed()
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await wait_for(lambda: engine.hub("cam_a").latest_keyframe() is not None)
    # The real quirk first: a stream whose source is offline gives 200 + empty body.
    await engine.async_add_camera(camera_config("dead", "rtsp://127.0.0.1:9/none"))
    assert await engine._client.async_frame(stream_name("dead"), None, None) is None
    calls: list[str] = []

    async def _empty(name: str, *args: object) -> None:
        calls.append(name)

    monkeypatch.setattr(engine._client, "async_frame", _empty)
    jpeg = await engine.async_snapshot("cam_a", None, None)
    assert calls == [stream_name("cam_a")]
    assert Image.open(io.BytesIO(jpeg)).size == SOURCE_SIZE


@pytest.mark.usefixtures("allow_unix_sockets", "webrtc_loopback")
async def test_crash_restart_reregisters_and_webrtc_works_again(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """go2rtc crashes: it is restarted, every stream is back, viewers play again."""
    engine = await engines.managed()
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await engine.async_add_camera(camera_config("cam_b", rtsp_cameras.url("cam2")))
    await wait_for(lambda: _streaming(engine, "cam_a"))
    old_pid = engine.process_pid
    changes: list[bool] = []
    remove = engine.add_listener(lambda: changes.append(engine.health.healthy))

    engines.binary.control.crash(old_pid)
    await wait_for(lambda: not pid_alive(old_pid))
    await wait_for(lambda: engine.process_pid not in (None, old_pid) and engine.health.healthy)
    remove()
    assert engine.health.restart_count == 1
    assert False in changes  # listeners heard about the outage
    assert engine.health.healthy
    streams = await engine.async_check_api(2.0)
    assert set(streams) == {stream_name("cam_a"), stream_name("cam_b")}

    viewer = EngineViewer(engine, "cam_b")
    try:
        await viewer.start()
        await viewer.wait_frames(10)
    finally:
        await viewer.close()
    # The hubs found the new go2rtc by themselves.
    await wait_for(lambda: _streaming(engine, "cam_a") and _streaming(engine, "cam_b"))


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_remove_camera_removes_its_stream(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """Removing a camera stops its hub and deletes its go2rtc stream."""
    engine = await engines.managed()
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await engine.async_add_camera(camera_config("cam_b", rtsp_cameras.url("cam2")))
    await engine.async_remove_camera("cam_a")
    assert set(await engine.async_check_api(2.0)) == {stream_name("cam_b")}
    with pytest.raises(KeyError):
        engine.hub("cam_a")


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_unload_leaves_nothing_running(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """async_stop: go2rtc and its camera connections are gone."""
    engine = await engines.managed()
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await wait_for(lambda: _streaming(engine, "cam_a"))
    pid = engine.process_pid
    await engine.async_stop()
    assert not pid_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no child of its process group is left either
    assert engine.process_pid is None
    assert not engine.health.healthy
    await rtsp_cameras.async_wait_for(lambda: rtsp_cameras.connected_clients == 0)


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_home_assistant_stop_stops_go2rtc(
    hass: HomeAssistant, engines: EngineFactory
) -> None:
    """HA does not unload entries when it stops: the engine stops go2rtc on the stop event."""
    engine = await engines.managed()
    pid = engine.process_pid
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    await wait_for(lambda: not pid_alive(pid))
    assert engine.process_pid is None
    assert not (engines.folder / "go2rtc" / "go2rtc.pid").exists()


@pytest.mark.usefixtures("allow_unix_sockets")
async def test_go2rtc_left_by_a_killed_home_assistant_is_stopped(
    hass: HomeAssistant, engines: EngineFactory
) -> None:
    """A go2rtc still running from a run that could not stop it is killed at the next start."""
    first = await engines.managed()
    orphan = first.process_pid
    await first._watchdog.async_stop()  # HA is gone: nobody watches or stops it any more
    second = await engines.managed()
    assert not pid_alive(orphan)
    assert pid_alive(second.process_pid)
    assert (engines.folder / "go2rtc" / "go2rtc.pid").read_text().strip() == str(second.process_pid)


async def test_port_in_use_is_a_clear_error(
    hass: HomeAssistant, engines: EngineFactory, issue_registry: ir.IssueRegistry
) -> None:
    """go2rtc cannot bind its RTSP port: a specific error, a repair issue, no process left."""
    engines.binary.control.set(refuse=["rtsp"])
    engine = await engines.managed(start=False, settings=Go2RtcSettings(unix_socket=False))
    with pytest.raises(Go2RtcPortInUseError) as caught:
        await engine.async_start()
    assert caught.value.listener == "rtsp"
    assert "address already in use" in caught.value.detail
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_port_in_use")
    assert issue is not None
    assert "address already in use" in issue.translation_placeholders["detail"]
    assert engine.process_pid is None

    # Once the port is free again, a start works and clears the issue.
    engines.binary.control.clear("refuse")
    await engine.async_start()
    assert engine.health.healthy
    assert issue_registry.async_get_issue(DOMAIN, "go2rtc_port_in_use") is None


async def test_ports_stay_stable_and_avoid_taken_ones(
    hass: HomeAssistant, engines: EngineFactory
) -> None:
    """Ports are kept across starts; a port taken meanwhile is replaced, the API is on TCP."""
    settings = Go2RtcSettings(unix_socket=False)
    first = await engines.managed(settings=settings)
    await first.async_stop()
    folder = engines.folder / "go2rtc"
    config = yaml.safe_load((folder / "go2rtc.yaml").read_text())
    api = config["api"]["listen"]
    rtsp_port = int(config["rtsp"]["listen"].rsplit(":", 1)[1])
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", rtsp_port))
        squatter.listen()
        second = await engines.managed(settings=settings)
        assert second.health.healthy
        config = yaml.safe_load((folder / "go2rtc.yaml").read_text())
    assert config["api"]["listen"] == api  # the API port did not move
    assert int(config["rtsp"]["listen"].rsplit(":", 1)[1]) != rtsp_port


async def test_external_mode_registers_and_streams(
    hass: HomeAssistant,
    engines: EngineFactory,
    external_double: ExternalDouble,
    rtsp_cameras: RtspServer,
) -> None:
    """An external go2rtc (the test runs it): streams registered, hubs read its restream."""
    engine = await engines.external(external_double.url)
    assert engine.health.healthy
    assert engine.health.mode == "external"
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await wait_for(lambda: _streaming(engine, "cam_a"))
    source = await engine.async_stream_source("cam_a")
    assert f":{external_double.rtsp_port}/{stream_name('cam_a')}" in source
    assert engine.process_pid is None  # nothing of ours runs


async def test_external_unreachable_raises_issue_then_recovers(
    hass: HomeAssistant,
    engines: EngineFactory,
    external_double: ExternalDouble,
    rtsp_cameras: RtspServer,
    issue_registry: ir.IssueRegistry,
) -> None:
    """External go2rtc goes away: repair issue, no restart; it returns: cleared, re-registered."""
    engine = await engines.external(external_double.url)
    await engine.async_add_camera(camera_config("cam_a", rtsp_cameras.url("cam1")))
    await external_double.async_stop()
    await wait_for(lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_unreachable"))
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_unreachable")
    assert issue.translation_placeholders["url"] == external_double.url
    assert issue.translation_placeholders["detail"]
    assert not engine.health.healthy
    assert engine.health.restart_count == 0

    external_double.write_config()  # it comes back without our stream
    await external_double.async_start()
    await wait_for(lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_unreachable") is None)
    await wait_for(lambda: engine.health.healthy)
    assert stream_name("cam_a") in await engine.async_check_api(2.0)
    await wait_for(lambda: _streaming(engine, "cam_a"), timeout=30)


async def test_external_unreachable_at_start(
    hass: HomeAssistant, engines: EngineFactory, issue_registry: ir.IssueRegistry
) -> None:
    """An external URL nobody answers: the engine loads, the repair issue is there at once."""
    engine = await engines.external(f"http://user:hunter2-secret@127.0.0.1:{free_port()}")
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_unreachable")
    assert issue is not None
    assert "hunter2-secret" not in str(issue.translation_placeholders)
    assert not engine.health.healthy


def test_stream_names_are_stable_and_url_safe() -> None:
    """Names derive from the subentry id only (a rename keeps them), URL-safe."""
    assert stream_name("01JQ8X-ABC.def") == "lightnvr_01jq8x_abc_def"
    assert stream_name("01JQ8X-ABC.def") == stream_name("01JQ8X-ABC.def")


async def test_kill_signal_exit_code_is_reported(
    hass: HomeAssistant, engines: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGKILLed go2rtc is noticed at once (not after three API checks) and restarted."""
    engine = await engines.managed(settings=Go2RtcSettings(unix_socket=False))
    pid = engine.process_pid
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: engine.process_pid not in (None, pid) and engine.health.healthy)
    assert "exited with code -9" in caplog.text


async def test_factory_managed_and_binary_issues(
    hass: HomeAssistant,
    go2rtc_double: DoubleBinary,
    tmp_path: Path,
    issue_registry: ir.IssueRegistry,
    socket_enabled: None,
) -> None:
    """The engine factory: a usable binary gives an engine; an unusable one, a repair issue."""
    options = HubOptions.from_entry(
        {"engine": "go2rtc", "go2rtc_binary": str(tmp_path / "nope"), "storage_path": "/x"}, {}
    )
    check = await async_find_usable_binary(hass, options.go2rtc_binary)
    assert not check.usable
    with pytest.raises(Go2RtcUnavailableError):
        await async_create_go2rtc_engine(hass, options, tmp_path / "g", mode="managed")
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_binary_missing")
    assert issue is not None
    assert "nope" in issue.translation_placeholders["detail"]

    go2rtc_double.control.set(version="1.8.4")
    old = HubOptions.from_entry(
        {"engine": "go2rtc", "go2rtc_binary": str(go2rtc_double.path), "storage_path": "/x"}, {}
    )
    with pytest.raises(Go2RtcUnavailableError) as caught:
        await async_create_go2rtc_engine(hass, old, tmp_path / "g", mode="managed")
    assert caught.value.check.problem.value == "too_old"
    assert issue_registry.async_get_issue(DOMAIN, "go2rtc_binary_missing") is None
    unusable = issue_registry.async_get_issue(DOMAIN, "go2rtc_binary_unusable")
    assert unusable.translation_placeholders["path"] == str(go2rtc_double.path)

    go2rtc_double.control.clear("version")
    engine = await async_create_go2rtc_engine(hass, old, tmp_path / "g", mode="managed")
    assert engine.mode == "managed"
    assert issue_registry.async_get_issue(DOMAIN, "go2rtc_binary_unusable") is None
    await engine.async_stop()  # never started: stopping is harmless

    with pytest.raises(Go2RtcUnavailableError):
        await async_create_go2rtc_engine(hass, old, tmp_path / "g", mode="external")
    url = HubOptions.from_entry({"go2rtc_url": "http://127.0.0.1:1984", "storage_path": "/x"}, {})
    external = await async_create_go2rtc_engine(hass, url, tmp_path / "g", mode="external")
    assert external.mode == "external"
    assert external.name == "go2rtc"


@pytest.mark.usefixtures("allow_unix_sockets", "webrtc_loopback")
async def test_offer_errors_reach_the_viewer(
    hass: HomeAssistant, engines: EngineFactory, rtsp_cameras: RtspServer
) -> None:
    """go2rtc's own error (camera offline) comes back as a WebRTC error; nothing lingers."""
    engine = await engines.managed()
    await engine.async_add_camera(camera_config("dead", f"rtsp://127.0.0.1:{free_port()}/x"))
    viewer = EngineViewer(engine, "dead", session_id="s-dead")
    try:
        await viewer.start()
        await wait_for(lambda: viewer.errors)
    finally:
        await viewer.close()
    assert viewer.errors[0].code == "webrtc_offer_failed"
    assert "offline" in viewer.errors[0].message
    assert engine.viewer_count == 0
    # A candidate for a session that is gone is ignored, not an error.
    await engine.async_on_candidate(
        "dead", "no-such-session", RTCIceCandidateInit("candidate:1 1 udp 1 127.0.0.1 9 typ host")
    )
    engine.close_session("no-such-session")
    # No go2rtc at all (stopped engine): a clear error, not an exception.
    await engine.async_stop()
    errors: list[object] = []
    await engine.async_handle_offer("dead", "s2", "v=0", errors.append)
    assert errors[0].code == "webrtc_offer_failed"
    assert await engine.async_snapshot("nope", None, None) is None


async def test_external_stuck_streams_are_reported_not_restarted(
    hass: HomeAssistant,
    engines: EngineFactory,
    external_double: ExternalDouble,
    rtsp_cameras: RtspServer,
) -> None:
    """External mode: all streams stuck → unhealthy and re-registered; go2rtc is not ours."""
    engine = await engines.external(external_double.url)
    for mount in ("cam1", "cam2"):
        await engine.async_add_camera(camera_config(mount, rtsp_cameras.url(mount)))
    await wait_for(lambda: _streaming(engine, "cam1") and _streaming(engine, "cam2"))
    changes: list[bool] = []
    remove = engine.add_listener(lambda: changes.append(engine.health.healthy))
    external_double.binary.control.freeze(
        external_double.pid, stream_name("cam1"), stream_name("cam2")
    )
    await wait_for(lambda: engine.health.reregistrations >= 2)
    remove()
    assert False in changes
    assert "2 of 2 streams stopped" in engine.health.last_error
    assert engine.health.restart_count == 0
    assert pid_alive(external_double.pid)
    await wait_for(lambda: engine.health.healthy)


def test_engine_arguments_are_checked(hass: HomeAssistant) -> None:
    """A managed engine needs a usable binary and a folder; an external one, a URL."""
    from custom_components.lightnvr.engine.go2rtc import BinaryCheck, Go2RtcEngine

    with pytest.raises(ValueError):
        Go2RtcEngine(hass, mode="managed", binary=BinaryCheck(None), config_dir=Path("/x"))
    with pytest.raises(ValueError):
        Go2RtcEngine(hass, mode="external")
    with pytest.raises(ValueError):
        Go2RtcEngine(hass, mode="sideways", url="http://127.0.0.1:1984")
