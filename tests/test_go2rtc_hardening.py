"""go2rtc hardening: no `${…}` expansion of our values, a minimal environment, no old go2rtc.

* go2rtc expands `${NAME}` in its config file from its environment (the double does the same,
  `double.py`'s `expand_env`): a value holding `${` is refused before go2rtc.yaml is written,
  and a `$` that go2rtc does not expand (`pa$$w0rd$`) is written as it is and works.
* The managed go2rtc gets PATH, HOME, TZ and LANG of our environment and nothing else.
* go2rtc older than 1.9.12 has no `api.local_auth`: refused for the managed mode, a repair issue
  for the external one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
import secrets
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
import pytest
import yaml

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.engine.go2rtc import (
    Go2RtcSettings,
    Go2RtcUnavailableError,
    IceServer,
    async_create_go2rtc_engine,
    config as go2rtc_config,
    stream_name,
)
from custom_components.lightnvr.engine.go2rtc.binary import BinaryProblem, check_binary
from custom_components.lightnvr.engine.go2rtc.process import Go2RtcStartError
from custom_components.lightnvr.hub import HubState
from custom_components.lightnvr.models import HubOptions
from custom_components.lightnvr.source import CameraSource

from .go2rtc_double import CONTROL_ENV
from .go2rtc_double.fixtures import *  # noqa: F403 - fixtures and helpers
from .go2rtc_double.fixtures import (
    DoubleBinary,
    EngineFactory,
    ExternalDouble,
    camera_config,
    fast_timings,
    wait_for,
)
from .infra.rtsp import RtspServer

TCP = Go2RtcSettings(unix_socket=False)
SECRET_VAR = "SOME_TEST_SECRET"
# A password go2rtc must pass on untouched: `$` without `{` is no template.
DOLLAR_PASSWORD = "pa$$w0rd$"
# What a shell adds to the environment of what it `exec`s (the double's launcher is a script).
SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_"}


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret in our environment, the way SUPERVISOR_TOKEN is in Home Assistant's."""
    value = f"leaked-{secrets.token_hex(8)}"
    monkeypatch.setenv(SECRET_VAR, value)
    return value


async def _double_streams(config_dir: Path) -> dict[str, Any]:
    """GET /api/streams on the managed double, with the credentials of its go2rtc.yaml.

    Retried for a while: the watchdog may be replacing the process just then.
    """
    api = yaml.safe_load((config_dir / "go2rtc.yaml").read_text())["api"]
    auth = aiohttp.BasicAuth(api["username"], api["password"])
    async with asyncio.timeout(15), aiohttp.ClientSession(auth=auth) as session:
        while True:
            try:
                async with session.get(f"http://{api['listen']}/api/streams") as response:
                    assert response.status == 200
                    return dict(await response.json())
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)


class FakeCamera:
    """A TCP listener standing in for a camera: keeps every byte a client sends it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def _client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                self.received += data
            writer.close()

        self._server = await asyncio.start_server(_client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


# ----- ${…} expansion ---------------------------------------------------------------------------


async def test_double_expands_templates_like_go2rtc(
    go2rtc_double: DoubleBinary,
    tmp_path: Path,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    socket_enabled: None,
) -> None:
    """The double expands its config file as go2rtc does, so the tests below mean something.

    Order: the file's `env:` section, `$CREDENTIALS_DIRECTORY/NAME`, the environment; then the
    default after the first `:` of a non-empty name; else the text stays.
    """
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FROM_FILE").write_text("file-value\n")
    double = ExternalDouble(go2rtc_double, tmp_path / "external")
    double.write_config(
        {
            "environ": f"rtsp://h/${{{SECRET_VAR}}}",
            "section": "rtsp://h/${FROM_SECTION}",
            "file": "rtsp://h/${FROM_FILE}",
            "default": "rtsp://h/${NOT_SET:user:pw}",
            "unknown": "rtsp://h/${NOT_SET}",
            "no_name": "rtsp://h/${:x}",
            "doubled": f"rtsp://h/$${{{SECRET_VAR}}}",
        }
    )
    data = yaml.safe_load(double.config_path.read_text())
    data["env"] = {"FROM_SECTION": "section-value"}
    double.config_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    await double.async_start()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{double.url}/api/streams") as response,
        ):
            streams = await response.json()
    finally:
        await double.async_stop()
        double.kill_now()
    sources = {name: value["producers"][0]["url"] for name, value in streams.items()}
    assert sources == {
        "environ": f"rtsp://h/{secret}",
        "section": "rtsp://h/section-value",
        "file": "rtsp://h/file-value",
        "default": "rtsp://h/user:pw",
        "unknown": "rtsp://h/${NOT_SET}",
        "no_name": "rtsp://h/${:x}",
        "doubled": f"rtsp://h/${secret}",  # no escape: `$$` is a `$` and a template
    }


def test_config_refuses_values_go2rtc_would_expand(tmp_path: Path, socket_enabled: None) -> None:
    """Any `${` in any value: a clear ValueError naming the value's place, nothing written."""
    folder = tmp_path / "go2rtc"
    refused = go2rtc_config.UnsafeConfigValueError
    cases: list[tuple[Go2RtcSettings, dict[str, str], str]] = [
        (TCP, {"lightnvr_cam": "rtsp://10.0.0.2/live/${SUPERVISOR_TOKEN}"}, "lightnvr_cam"),
        (TCP, {"lightnvr_cam": "rtsp://u:p${X:default}@10.0.0.2/s"}, "lightnvr_cam"),
        (TCP, {"lightnvr_cam": "rtsp://10.0.0.2/${unclosed"}, "lightnvr_cam"),
        (
            Go2RtcSettings(
                unix_socket=False,
                ice_servers=(IceServer(("turn:t.example",), "u", "${HASSIO_TOKEN}"),),
            ),
            {},
            "webrtc.ice_servers[0].credential",
        ),
        (Go2RtcSettings(unix_socket=False, candidates=("${HOST}:8555",)), {}, "candidates"),
    ]
    for settings, streams, where in cases:
        with pytest.raises(refused) as caught:
            go2rtc_config.write_config(folder, settings, (1, 9, 13), streams)
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, Go2RtcStartError)  # reported like a failed start
        assert where in str(caught.value)
        assert "%24" in str(caught.value)  # and what to do instead
        assert "10.0.0.2" not in str(caught.value)  # never the value itself (credentials)
        assert not (folder / "go2rtc.yaml").exists()
    with pytest.raises(refused):
        go2rtc_config.check_source("lightnvr_cam", "rtsp://h/${X}")

    # A `$` go2rtc leaves alone is written as it is; the password field is percent-encoded.
    field = CameraSource("rtsp://10.0.0.3/s", "admin", "p${SUPERVISOR_TOKEN}w").connect_url()
    streams = {"raw": f"rtsp://admin:{DOLLAR_PASSWORD}@10.0.0.2/s?a=$b", "field": field}
    go2rtc_config.check_source("raw", streams["raw"])
    written = go2rtc_config.write_config(folder, TCP, (1, 9, 13), streams)
    assert yaml.safe_load(written.path.read_text())["streams"] == streams
    assert "${" not in written.path.read_text()


async def test_managed_go2rtc_never_gets_an_expandable_source(
    hass: HomeAssistant,
    engines: EngineFactory,
    camera_clip: Path,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A camera URL with `${SOME_TEST_SECRET}` while that variable is set in our environment.

    That camera is never given to go2rtc (neither through the API nor in go2rtc.yaml, where
    go2rtc would expand it), with a clear error in the log; the other cameras keep working. A
    camera whose password has `$`s (no template) works, from the config file.
    """
    caplog.set_level(logging.DEBUG)
    fake = FakeCamera()
    await fake.start()
    server = RtspServer({"cam": camera_clip}, user="viewer", password=DOLLAR_PASSWORD)
    server.start()
    try:
        engine = await engines.managed(settings=TCP, timings=fast_timings(restart_limit=10**6))
        config_dir = engines.folder / "go2rtc"
        bad_url = f"rtsp://127.0.0.1:{fake.port}/live/${{{SECRET_VAR}}}"
        dollar_url = f"rtsp://viewer:{DOLLAR_PASSWORD}@127.0.0.1:{server.auth_port}/cam"
        await engine.async_add_camera(camera_config("bad", bad_url))
        await engine.async_add_camera(camera_config("dollar", dollar_url))
        assert "is not given to go2rtc" in caplog.text
        streams = await _double_streams(config_dir)
        assert stream_name("bad") not in streams

        await engine.async_restart()  # writes go2rtc.yaml: the safe cameras only
        await wait_for(lambda: engine.health.healthy and engine.process_pid is not None)
        streams = await _double_streams(config_dir)
        assert set(streams) == {stream_name("dollar")}
        assert secret not in json.dumps(streams)
        assert streams[stream_name("dollar")]["producers"][0]["url"] == dollar_url
        written = yaml.safe_load((config_dir / "go2rtc.yaml").read_text())["streams"]
        assert written == {stream_name("dollar"): dollar_url}  # read from the file, as it is
        assert "${" not in (config_dir / "go2rtc.yaml").read_text()
        await wait_for(lambda: engine.hub("dollar").state is HubState.STREAMING, timeout=30)
        assert secret not in fake.received.decode(errors="replace")
        assert secret not in caplog.text
    finally:
        server.stop()
        await fake.stop()


# ----- environment ------------------------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


async def test_managed_go2rtc_gets_a_minimal_environment(
    hass: HomeAssistant, engines: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATH, HOME, TZ and LANG from ours; no token, no credentials folder, nothing else."""
    monkeypatch.setenv("LIGHTNVR_TEST_MARKER", "marker")
    monkeypatch.setenv("SUPERVISOR_TOKEN", "supervisor-token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/home-assistant.service")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    monkeypatch.setenv("LANG", "C.UTF-8")
    engine = await engines.managed(settings=TCP)
    assert engine.process_pid is not None
    env = _environ(engine.process_pid)  # the launcher exec'd the double: same pid
    assert env.pop(CONTROL_ENV)  # the launcher's own addition
    assert set(env) - SHELL_VARS == {"PATH", "HOME", "TZ", "LANG"}
    assert env["PATH"] == os.environ["PATH"]
    assert env["TZ"] == "Europe/Berlin"
    assert env["LANG"] == "C.UTF-8"


def test_version_check_gets_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even `go2rtc -v` runs without our secrets."""
    monkeypatch.setenv("SUPERVISOR_TOKEN", "supervisor-token")
    dump = tmp_path / "env.txt"
    fake = tmp_path / "go2rtc"
    fake.write_text(f"#!/bin/sh\nenv > '{dump}'\necho 'go2rtc version 1.9.13 (abc) linux/amd64'\n")
    fake.chmod(0o755)
    assert check_binary(str(fake)).usable
    names = {line.partition("=")[0] for line in dump.read_text().splitlines()}
    assert "SUPERVISOR_TOKEN" not in names
    assert names - SHELL_VARS <= {"PATH", "HOME", "TZ", "LANG"}


# ----- old go2rtc -------------------------------------------------------------------------------


def test_managed_mode_refuses_go2rtc_without_local_auth(go2rtc_double: DoubleBinary) -> None:
    """1.9.0–1.9.11 run fine but cannot keep local programs off the API: refused; 1.9.12 not."""
    for version in ("1.9.0", "1.9.11"):
        go2rtc_double.control.set(version=version)
        check = check_binary(str(go2rtc_double.path))
        assert not check.usable, version
        assert check.problem is BinaryProblem.TOO_OLD
        assert version in check.detail
        assert "local_auth" in check.detail
        assert "1.9.12 or newer is needed" in check.detail
        assert check.issue_key == "go2rtc_binary_unusable"
    go2rtc_double.control.set(version="1.9.12")
    assert check_binary(str(go2rtc_double.path)).usable


async def test_managed_engine_with_go2rtc_1_9_11_raises_the_unusable_issue(
    hass: HomeAssistant,
    go2rtc_double: DoubleBinary,
    tmp_path: Path,
    issue_registry: ir.IssueRegistry,
) -> None:
    """The engine factory reports it with the existing repair issue, the reason included."""
    go2rtc_double.control.set(version="1.9.11")
    options = HubOptions.from_entry(
        {"engine": "go2rtc", "go2rtc_binary": str(go2rtc_double.path), "storage_path": "/x"}, {}
    )
    with pytest.raises(Go2RtcUnavailableError) as caught:
        await async_create_go2rtc_engine(hass, options, tmp_path / "g", mode="managed")
    assert "local_auth" in str(caught.value)
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_binary_unusable")
    assert issue is not None
    assert "1.9.11" in issue.translation_placeholders["detail"]


async def test_external_old_go2rtc_gets_a_repair_issue(
    hass: HomeAssistant,
    engines: EngineFactory,
    external_double: ExternalDouble,
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not ours to refuse: it is used, with a warning and a repair issue until it is updated."""
    control = external_double.binary.control
    control.set(version="1.9.11")
    await external_double.async_stop()
    await external_double.async_start()
    engine = await engines.external(external_double.url)
    assert engine.health.healthy  # it works: only its API is open to local programs
    issue = issue_registry.async_get_issue(DOMAIN, "go2rtc_insecure_version")
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders == {
        "url": external_double.url,
        "version": "1.9.11",
        "minimum": "1.9.12",
    }
    assert "api.local_auth" in caplog.text

    control.set(version="1.9.13")  # updated
    await external_double.async_stop()
    await external_double.async_start()
    await wait_for(
        lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_insecure_version") is None
    )
    assert engine.health.version == "1.9.13"

    control.set(version="1.9.11")  # and back: raised again; unloading clears it
    await external_double.async_stop()
    await external_double.async_start()
    await wait_for(lambda: issue_registry.async_get_issue(DOMAIN, "go2rtc_insecure_version"))
    engines.engines.remove(engine)
    await engine.async_stop()
    assert issue_registry.async_get_issue(DOMAIN, "go2rtc_insecure_version") is None
