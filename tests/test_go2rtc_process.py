"""Binary discovery, go2rtc.yaml, and the process supervisor, against the double."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
import socket
import stat

import pytest
import yaml

from custom_components.lightnvr.engine.go2rtc.binary import (
    BinaryProblem,
    check_binary,
    find_usable_binary,
    parse_version_output,
    parse_version_tuple,
)
from custom_components.lightnvr.engine.go2rtc.client import Go2RtcClient, Redactor, parse_streams
from custom_components.lightnvr.engine.go2rtc.config import (
    RESERVED_PORTS,
    Go2RtcSettings,
    IceServer,
    write_config,
)
from custom_components.lightnvr.engine.go2rtc.process import (
    Go2RtcPortInUseError,
    Go2RtcProcess,
    Go2RtcStartError,
)

from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures and helpers
from .go2rtc_double.fixtures import DoubleBinary, pid_alive

TCP = Go2RtcSettings(unix_socket=False)

# ----- binary --------------------------------------------------------------------------------


def test_version_parsing() -> None:
    """`go2rtc -v` output and version strings, dev builds included."""
    assert parse_version_output("go2rtc version 1.9.13 (a1b2c3d) linux/amd64\n") == "1.9.13"
    assert parse_version_output("go2rtc version 1.9.14+dev.abc () linux/arm64") == "1.9.14+dev.abc"
    assert parse_version_output("Current version:  1.8.3") is None
    assert parse_version_tuple("1.9.14+dev.abc") == (1, 9, 14)
    assert parse_version_tuple("v1.9") == (1, 9, 0)


def test_usable_binary(go2rtc_double: DoubleBinary) -> None:
    """The double runs, prints its version, and is new enough."""
    check = check_binary(str(go2rtc_double.path))
    assert check.usable
    assert check.version == "1.9.13"
    assert check.version_tuple == (1, 9, 13)
    assert check.issue_key is None


def test_too_old_binary(go2rtc_double: DoubleBinary) -> None:
    """go2rtc 1.8 is refused with a reason naming both versions (1.9.12: see hardening tests)."""
    go2rtc_double.control.set(version="1.8.4")
    check = check_binary(str(go2rtc_double.path))
    assert check.problem is BinaryProblem.TOO_OLD
    assert "1.8.4" in check.detail
    assert "1.9.12" in check.detail
    assert check.issue_key == "go2rtc_binary_unusable"
    assert check.issue_placeholders == {"path": str(go2rtc_double.path), "detail": check.detail}


def test_missing_not_executable_wrong_architecture(tmp_path: Path) -> None:
    """Each problem gets its own clear reason."""
    missing = check_binary(str(tmp_path / "go2rtc"))
    assert missing.problem is BinaryProblem.MISSING
    assert missing.issue_key == "go2rtc_binary_missing"
    assert set(missing.issue_placeholders) == {"detail"}

    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\necho go2rtc version 1.9.13\n")
    plain.chmod(0o644)
    assert check_binary(str(plain)).problem is BinaryProblem.NOT_EXECUTABLE

    foreign = tmp_path / "foreign"  # an ELF header for another machine: not runnable here
    foreign.write_bytes(b"\x7fELF\x01\x01\x01" + b"\x00" * 9 + b"\x02\x00\x28\x00" + b"\x00" * 40)
    foreign.chmod(0o755)
    check = check_binary(str(foreign))
    assert check.problem is BinaryProblem.WRONG_ARCHITECTURE
    assert "architecture" in check.detail

    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexit 3\n")
    silent.chmod(0o755)
    assert check_binary(str(silent)).problem is BinaryProblem.BROKEN


def test_discovery_order(tmp_path: Path, go2rtc_double: DoubleBinary) -> None:
    """Configured path wins; then PATH; then the install script's folder."""
    on_path = tmp_path / "path"
    installed = tmp_path / "installed"
    on_path.mkdir()
    installed.mkdir()
    (installed / "go2rtc").symlink_to(go2rtc_double.path)

    found = find_usable_binary(None, search_path=str(on_path), install_dirs=(installed,))
    assert found.usable
    assert found.path == str(installed / "go2rtc")

    (on_path / "go2rtc").symlink_to(go2rtc_double.path)
    found = find_usable_binary(None, search_path=str(on_path), install_dirs=(installed,))
    assert found.path == str(on_path / "go2rtc")

    configured = find_usable_binary(
        str(tmp_path / "nowhere"), search_path=str(on_path), install_dirs=(installed,)
    )
    assert configured.problem is BinaryProblem.MISSING  # an explicit choice is not second-guessed

    nothing = find_usable_binary(None, search_path=str(tmp_path), install_dirs=())
    assert nothing.problem is BinaryProblem.MISSING
    assert nothing.path is None


def test_unusable_binary_on_path_is_reported(tmp_path: Path, go2rtc_double: DoubleBinary) -> None:
    """A too-old go2rtc on PATH and nothing else: its own reason, not 'missing'."""
    go2rtc_double.control.set(version="1.8.4")
    (tmp_path / "go2rtc").symlink_to(go2rtc_double.path)
    found = find_usable_binary(None, search_path=str(tmp_path), install_dirs=())
    assert found.problem is BinaryProblem.TOO_OLD


# ----- config --------------------------------------------------------------------------------


def test_config_ports_credentials_and_stability(tmp_path: Path, socket_enabled: None) -> None:
    """Loopback listeners on free non-default ports, random credentials, same on rewrite."""
    folder = tmp_path / "go2rtc"
    first = write_config(folder, TCP, (1, 9, 13), {"cam": "rtsp://u:p4ssw0rd@10.0.0.2/s"})
    ports = {first.api_port, first.rtsp_port, first.webrtc_port}
    assert len(ports) == 3
    assert not ports & RESERVED_PORTS
    config = yaml.safe_load(first.path.read_text())
    assert config["api"]["listen"] == f"127.0.0.1:{first.api_port}"
    assert config["rtsp"]["listen"] == f"127.0.0.1:{first.rtsp_port}"
    assert config["webrtc"]["listen"] == f"127.0.0.1:{first.webrtc_port}"
    assert config["webrtc"]["ice_servers"] == []  # no public STUN queries by default
    assert config["api"]["username"] == first.api_username
    assert len(first.api_password) >= 16
    assert first.api_password != first.rtsp_password
    assert config["streams"] == {"cam": "rtsp://u:p4ssw0rd@10.0.0.2/s"}
    assert config["log"] == {"level": "info", "format": "text", "output": "stdout"}
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600

    second = write_config(folder, TCP, (1, 9, 13), {})
    assert (second.api_port, second.rtsp_port, second.webrtc_port) == (
        first.api_port,
        first.rtsp_port,
        first.webrtc_port,
    )
    assert second.api_password == first.api_password
    assert yaml.safe_load(second.path.read_text())["streams"] == {}  # rewritten each start


def test_config_replaces_a_taken_port(tmp_path: Path, socket_enabled: None) -> None:
    """A persisted port another program took meanwhile is replaced (and the change kept)."""
    folder = tmp_path / "go2rtc"
    first = write_config(folder, TCP, (1, 9, 13), {})
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.api_port))
        squatter.listen()
        second = write_config(folder, TCP, (1, 9, 13), {})
    assert second.api_port != first.api_port
    assert second.rtsp_port == first.rtsp_port
    assert write_config(folder, TCP, (1, 9, 13), {}).api_port == second.api_port


def test_config_security_follows_version(tmp_path: Path, socket_enabled: None) -> None:
    """local_auth, allow_paths and app.modules only where the version supports them."""
    old = yaml.safe_load(write_config(tmp_path / "a", TCP, (1, 9, 7), {}).path.read_text())
    assert "local_auth" not in old["api"]
    assert "allow_paths" not in old["api"]
    assert "app" not in old
    new = yaml.safe_load(write_config(tmp_path / "b", TCP, (1, 9, 12), {}).path.read_text())
    assert new["api"]["local_auth"] is True
    assert "/api/frame.jpeg" in new["api"]["allow_paths"]
    assert {"api", "ws", "rtsp", "webrtc", "mjpeg"} <= set(new["app"]["modules"])
    assert not {"exec", "echo", "expr"} & set(new["app"]["modules"])


def test_config_settings(tmp_path: Path, socket_enabled: None) -> None:
    """ICE servers, candidates, a fixed WebRTC port, the log level (the api stays at info)."""
    settings = Go2RtcSettings(
        log_level="warn",
        ice_servers=(IceServer(("turn:turn.example.com:3478",), "u", "c"),),
        candidates=("192.168.1.5:8555", "stun:8555"),
        webrtc_port=28555,
        unix_socket=False,
    )
    config = yaml.safe_load(write_config(tmp_path, settings, (1, 9, 13), {}).path.read_text())
    assert config["webrtc"]["ice_servers"] == [
        {"urls": ["turn:turn.example.com:3478"], "username": "u", "credential": "c"}
    ]
    assert config["webrtc"]["candidates"] == ["192.168.1.5:8555", "stun:8555"]
    assert config["webrtc"]["listen"] == "127.0.0.1:28555"
    assert config["log"]["level"] == "warn"
    assert config["log"]["api"] == "info"  # readiness needs "INF [api] listen"


def test_config_unix_socket(tmp_path: Path, socket_enabled: None) -> None:
    """The API goes on a unix socket (no TCP) unless the path is too long for one."""
    short = write_config(tmp_path / "s", Go2RtcSettings(), (1, 9, 13), {})
    config = yaml.safe_load(short.path.read_text())
    if len(str(tmp_path / "s" / "api.sock")) <= 100:
        assert config["api"]["listen"] == ""
        assert config["api"]["unix_listen"] == str(short.api_socket)
        assert short.api_url == "http://localhost"
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    long = write_config(deep, Go2RtcSettings(), (1, 9, 13), {})
    assert long.api_socket is None
    assert yaml.safe_load(long.path.read_text())["api"]["listen"].startswith("127.0.0.1:")


def test_parse_streams_and_redactor() -> None:
    """Null lists, disconnected producers, counters; secrets never survive redaction."""
    statuses = parse_streams(
        {
            "a": {"producers": [{"url": "rtsp://x"}], "consumers": None},
            "b": {
                "producers": [{"id": 1, "url": "rtsp://y", "bytes_recv": 1200}, {"url": "z"}],
                "consumers": [{"id": 2}],
            },
            "c": {"producers": None, "consumers": None},
        }
    )
    assert not statuses["a"].receiving
    assert statuses["b"].receiving
    assert statuses["b"].bytes_recv == 1200
    assert statuses["b"].consumers == 1
    assert statuses["c"].producers == 0
    redact = Redactor(["s3cr3t/pass"])
    text = "GET rtsp://admin:other@h/x?src=rtsp%3A%2F%2Fu%3As3cr3t%2Fpass%40h and s3cr3t/pass"
    assert "s3cr3t" not in redact(text)
    assert "other" not in redact(text)


# ----- process -------------------------------------------------------------------------------


async def _process(
    binary: DoubleBinary, folder: Path, **kwargs: object
) -> tuple[Go2RtcProcess, Go2RtcClient]:
    config = write_config(folder, TCP, (1, 9, 13), {})
    client = Go2RtcClient(
        config.api_url, username=config.api_username, password=config.api_password
    )

    async def _probe() -> bool:
        await client.async_info(1.0)
        return True

    process = Go2RtcProcess(
        str(binary.path), config.path, ready_probe=_probe, redact=client.redact, **kwargs
    )
    return process, client


async def test_start_ready_logs_and_stop(
    go2rtc_double: DoubleBinary,
    tmp_path: Path,
    socket_enabled: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ready = listen lines + API answers; levels mapped; SIGTERM stops it; nothing left."""
    caplog.set_level(logging.DEBUG, "custom_components.lightnvr.engine.go2rtc.process")
    process, client = await _process(go2rtc_double, tmp_path)
    try:
        await process.async_start()
        assert process.running
        info = await client.async_info()
        assert info["version"] == "1.9.13"
        pid = process.pid
        assert pid_alive(pid)
        listen = [r for r in caplog.records if "INF [api] listen addr=" in r.getMessage()]
        assert listen
        assert listen[0].levelno == logging.DEBUG  # INF → debug
        assert any("INF [rtsp] listen" in line for line in process.log_tail())
    finally:
        await process.async_stop()
        await client.async_close()
    assert not pid_alive(pid)
    assert not process.running
    assert process.returncode == 0
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


async def test_readiness_timeout(
    go2rtc_double: DoubleBinary, tmp_path: Path, socket_enabled: None
) -> None:
    """A go2rtc that never gets ready: a start error with its log, and no process left."""
    go2rtc_double.control.set(startup_delay=60)
    process, client = await _process(go2rtc_double, tmp_path, ready_timeout=1.5)
    try:
        with pytest.raises(Go2RtcStartError) as caught:
            await process.async_start()
    finally:
        await client.async_close()
    assert "not ready within" in str(caught.value)
    assert any("INF go2rtc" in line for line in caught.value.log)
    assert not pid_alive(process.pid)


@pytest.mark.parametrize("listener", ["api", "rtsp", "webrtc"])
async def test_port_in_use_lines(
    go2rtc_double: DoubleBinary, tmp_path: Path, socket_enabled: None, listener: str
) -> None:
    """go2rtc keeps running when a port is taken: the ERR line itself ends the start."""
    go2rtc_double.control.set(refuse=[listener])
    process, client = await _process(go2rtc_double, tmp_path, ready_timeout=15)
    try:
        with pytest.raises(Go2RtcPortInUseError) as caught:
            await process.async_start()
    finally:
        await client.async_close()
    assert caught.value.listener == listener
    assert "address already in use" in caught.value.detail
    assert not pid_alive(process.pid)


async def test_really_taken_port(
    go2rtc_double: DoubleBinary, tmp_path: Path, socket_enabled: None
) -> None:
    """A port another program holds (taken after the config was written) is reported."""
    process, client = await _process(go2rtc_double, tmp_path, ready_timeout=15)
    config = yaml.safe_load((tmp_path / "go2rtc.yaml").read_text())
    rtsp_port = int(config["rtsp"]["listen"].rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", rtsp_port))
        squatter.listen()
        try:
            with pytest.raises(Go2RtcPortInUseError) as caught:
                await process.async_start()
        finally:
            await client.async_close()
    assert caught.value.listener == "rtsp"


async def test_exit_during_start(
    go2rtc_double: DoubleBinary, tmp_path: Path, socket_enabled: None
) -> None:
    """A go2rtc that dies while starting: a start error with its exit code and its panic."""
    go2rtc_double.control.set(crash_after=0, startup_delay=0.5)
    process, client = await _process(go2rtc_double, tmp_path)
    try:
        with pytest.raises(Go2RtcStartError) as caught:
            await process.async_start()
    finally:
        await client.async_close()
    assert "exited with code 2" in str(caught.value)
    assert any("panic" in line for line in caught.value.log)


async def test_kill_after_stop_timeout_and_secrets_redacted(
    go2rtc_double: DoubleBinary,
    tmp_path: Path,
    socket_enabled: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGTERM ignored → SIGKILL; a secret printed by go2rtc never reaches HA's log."""
    caplog.set_level(logging.DEBUG)
    process, client = await _process(go2rtc_double, tmp_path, stop_timeout=0.5)
    client.redact.add("sup3r-secret-pw")
    try:
        await process.async_start()
        process._handle_line("10:00:00.000 WRN [rtsp] error=x url=rtsp://a:sup3r-secret-pw@h/")
        go2rtc_double.control.hang(process.pid, hard=True)
        await asyncio.sleep(0.3)
        await process.async_stop()
    finally:
        await client.async_close()
    assert not pid_alive(process.pid)
    assert "did not stop within" in caplog.text
    assert "sup3r-secret-pw" not in caplog.text
    assert "sup3r-secret-pw" not in "\n".join(process.log_tail())


async def test_cannot_run_binary(tmp_path: Path, socket_enabled: None) -> None:
    """A binary that vanished between check and start: a start error, not a crash."""
    config = write_config(tmp_path, TCP, (1, 9, 13), {})

    async def _probe() -> bool:
        return True

    process = Go2RtcProcess(str(tmp_path / "gone"), config.path, ready_probe=_probe)
    with pytest.raises(Go2RtcStartError):
        await process.async_start()
    assert os.path.exists(config.path)


async def test_listener_lost_after_start_ends_the_process(
    go2rtc_double: DoubleBinary, tmp_path: Path, socket_enabled: None
) -> None:
    """A bind error reported after start-up ends go2rtc, so the watchdog takes over."""
    process, client = await _process(go2rtc_double, tmp_path)
    try:
        await process.async_start()
        process._handle_line(
            "10:00:00.000 ERR github.com/AlexxIT/go2rtc/internal/webrtc/webrtc.go:72 > "
            'error="listen udp 127.0.0.1:1: bind: address already in use"'
        )
        await asyncio.wait_for(process.exited.wait(), 10)
        assert process.port_conflict == (
            "webrtc",
            "listen udp 127.0.0.1:1: bind: address already in use",
        )
    finally:
        await process.async_stop()
        await client.async_close()
