r"""Write go2rtc.yaml for a go2rtc process LightNVR runs itself.

Security first, because any go2rtc API caller can read secrets, rewrite the config and (before
1.9.12) run commands: every listener is on 127.0.0.1 (the API on a unix socket in our own 0700
folder when the path allows it), API and RTSP get random credentials, and from 1.9.12 on
`local_auth`, `api.allow_paths` and `app.modules` shut everything off that LightNVR does not use.

Ports are picked once (free, and never go2rtc's defaults 1984/8554/8555 nor HA core's
11984/18554/18555), persisted with the credentials in a state file, and reused on later starts
so URLs stay stable; a persisted port that has been taken meanwhile is replaced.

No value we write may contain `${`. go2rtc replaces `${NAME}` and `${NAME:default}` anywhere in a
config file's raw text, before parsing the YAML, with the file's `env:` entry, the file
`$CREDENTIALS_DIRECTORY/NAME`, or its environment variable NAME (app/config.go with
pkg/shell or, from 1.9.11, pkg/creds). A camera URL such as `rtsp://host/${SUPERVISOR_TOKEN}`
would make go2rtc send that secret to the host. go2rtc has no escape for this: the pattern is
`${` + anything without braces + `}`, so `$${X}` and `\${X}` expand too. Hiding the `$` behind a
YAML escape (`"\x24{X}"`) would work only because the text is expanded before it is parsed. That
is an implementation detail, and go2rtc writes added streams back into this file unescaped.
So such values are refused (`UnsafeConfigValueError`) instead of escaped. A `$` not followed by
`{` is left alone by go2rtc and written as it is; credentials from the password field are
percent-encoded (`$` as %24) by `CameraSource.connect_url` anyway.

All functions here block (file and socket work): call them in an executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
import json
import logging
import os
from pathlib import Path
import secrets
import socket
from typing import Any

import yaml

from ...source import redacted_repr
from .process import Go2RtcStartError

_LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "go2rtc.yaml"
STATE_FILE = "state.json"
API_SOCKET = "api.sock"
LISTEN_HOST = "127.0.0.1"
# go2rtc's own defaults (the add-on's too) and HA core's managed go2rtc.
RESERVED_PORTS = frozenset({1984, 8554, 8555, 11984, 18554, 18555})
# sun_path holds 108 bytes including the terminating NUL; keep a margin.
MAX_UNIX_PATH = 100
SECURITY_MIN_VERSION = (1, 9, 12)  # local_auth, api.allow_paths, app.modules
# The API routes LightNVR calls; nothing else gets registered (from 1.9.12).
API_ALLOW_PATHS = ("/api", "/api/streams", "/api/webrtc", "/api/frame.jpeg", "/api/ws")
# Modules LightNVR needs: the API and its WebSocket, stream sources we accept (rtsp, rtmp,
# http), the RTSP restream, WebRTC, frame.jpeg (mjpeg, with ffmpeg for the conversion).
# `exec`/`echo`/`expr` stay out: they run commands. "streams" is listed defensively in case a
# version treats the stream registry as a module of its own.
APP_MODULES = (
    "api",
    "ws",
    "streams",
    "http",
    "rtsp",
    "rtmp",
    "webrtc",
    "mjpeg",
    "mp4",
    "ffmpeg",
)
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
# What starts a go2rtc template. Refusing any occurrence (closed or not, braces inside or not) is
# a superset of what go2rtc expands, so a change in its pattern cannot open a gap.
TEMPLATE_START = "${"


class UnsafeConfigValueError(Go2RtcStartError, ValueError):
    """A value would be expanded by go2rtc (it contains `${`): go2rtc.yaml is not written.

    A Go2RtcStartError so the engine reports it like any failed start: setup is retried with
    the message on the integration's card, and the watchdog logs it and shows it as the last
    error. The message names where the value would go, never the value (it may hold credentials).
    """

    def __init__(self, where: str) -> None:
        """Say which value is refused and what to do."""
        super().__init__(
            f"go2rtc.yaml not written: {where} contains {TEMPLATE_START!r}, which go2rtc would "
            "replace with an environment variable or credential file of its host. Remove it, "
            "or write a literal $ in a URL as %24"
        )
        self.where = where


def find_template(value: object, where: str = "") -> str | None:
    """Return where in `value` (a string or nested dicts and lists) a `${` is, else None."""
    if isinstance(value, str):
        if TEMPLATE_START in value:
            return where or "a value"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if TEMPLATE_START in str(key):
                return path
            if (found := find_template(item, path)) is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := find_template(item, f"{where}[{index}]")) is not None:
                return found
    return None


def check_source(name: str, url: str) -> None:
    """Raise UnsafeConfigValueError if go2rtc would expand part of stream `name`'s source.

    For callers that can refuse one camera before it reaches go2rtc (the config flow, stream
    registration), rather than `write_config` refusing the whole file.
    """
    if TEMPLATE_START in url:
        raise UnsafeConfigValueError(f"the source of stream {name}")


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN/TURN server for go2rtc's WebRTC."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)  # a TURN password

    def to_go2rtc(self) -> dict[str, Any]:
        """Return go2rtc's shape (`urls` always a list)."""
        server: dict[str, Any] = {"urls": list(self.urls)}
        if self.username:
            server["username"] = self.username
        if self.credential:
            server["credential"] = self.credential
        return server


@dataclass(frozen=True, slots=True)
class Go2RtcSettings:
    """What the user may tune about a managed go2rtc (through the hub options)."""

    log_level: str = "info"
    ice_servers: tuple[IceServer, ...] = ()
    # Extra WebRTC candidates, "ip:port" or "stun:port" (go2rtc looks the public IP up).
    candidates: tuple[str, ...] = ()
    # A fixed WebRTC port (TCP and UDP), e.g. one forwarded in the router; None picks one.
    webrtc_port: int | None = None
    # Where WebRTC listens. Loopback keeps go2rtc off the network like every other listener;
    # viewers on other machines need "" (all interfaces) or a LAN address here.
    webrtc_listen_host: str = LISTEN_HOST
    # Serve the API on a unix socket (only HA's user can reach it) instead of TCP.
    unix_socket: bool = True


@dataclass(slots=True)
class PersistedState:
    """Ports and credentials chosen once and kept across restarts."""

    api_port: int = 0
    rtsp_port: int = 0
    webrtc_port: int = 0
    api_username: str = ""
    api_password: str = field(default="", repr=False)
    rtsp_username: str = ""
    rtsp_password: str = field(default="", repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PersistedState:
        """Build from the state file, ignoring unknown or malformed values."""
        state = cls()
        for name in state.__dataclass_fields__:
            value = data.get(name)
            if isinstance(value, type(getattr(state, name))):
                setattr(state, name, value)
        return state


@dataclass(frozen=True, slots=True)
class Go2RtcConfig:
    """A written configuration: everything needed to talk to the process it configures."""

    path: Path
    api_port: int
    rtsp_port: int
    webrtc_port: int
    api_socket: Path | None
    api_username: str
    api_password: str = field(repr=False)
    rtsp_username: str
    rtsp_password: str = field(repr=False)
    version: tuple[int, int, int]
    streams: dict[str, str] = field(default_factory=dict)  # source URLs, credentials included

    def __repr__(self) -> str:
        """Return a repr fit for logs: no passwords, and the stream sources redacted."""
        return redacted_repr(self)

    @property
    def api_url(self) -> str:
        """Return the API's base URL (the host is a placeholder when a unix socket is used)."""
        if self.api_socket is not None:
            return "http://localhost"
        return f"http://{LISTEN_HOST}:{self.api_port}"

    def restream_url(self, name: str) -> str:
        """Return the RTSP restream URL of stream `name` (without credentials)."""
        return f"rtsp://{LISTEN_HOST}:{self.rtsp_port}/{name}"

    def secrets(self) -> tuple[str, ...]:
        """Return the values that must never appear in logs."""
        return (self.api_password, self.rtsp_password)


def port_is_free(port: int, *, udp: bool = False) -> bool:
    """Return True if `port` can be bound on 127.0.0.1 now (TCP, and UDP too when asked)."""
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                # Like go2rtc's listener: a port with connections in TIME_WAIT is still free.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LISTEN_HOST, port))
            except OSError:
                return False
    return True


def pick_port(exclude: set[int], *, udp: bool = False) -> int:
    """Return a free port that is neither reserved nor in `exclude`."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LISTEN_HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS and port not in exclude and port_is_free(port, udp=udp):
            return port
    raise OSError("no free port found on 127.0.0.1")


def load_state(folder: Path) -> PersistedState:
    """Read the persisted ports and credentials (a fresh state if none or unreadable)."""
    try:
        data = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return PersistedState()
    return PersistedState.from_dict(data if isinstance(data, dict) else {})


def _write_private(path: Path, text: str) -> None:
    """Write a file only HA's user may read (it holds credentials), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to an existing file
    tmp.replace(path)


def ensure_state(folder: Path, settings: Go2RtcSettings) -> PersistedState:
    """Load the persisted state, fill what is missing, replace ports taken meanwhile, save."""
    state = load_state(folder)
    changed = False
    used: set[int] = set()
    wanted_webrtc = settings.webrtc_port
    for name, udp in (("api_port", False), ("rtsp_port", False), ("webrtc_port", True)):
        if name == "webrtc_port" and wanted_webrtc:
            used.add(wanted_webrtc)  # the user's fixed port: never persisted, never replaced
            continue
        port = getattr(state, name)
        valid = 0 < port < 65536 and port not in RESERVED_PORTS and port not in used
        if valid and port_is_free(port, udp=udp):
            used.add(port)
            continue
        new = pick_port(used, udp=udp)
        if port:
            _LOGGER.info("go2rtc %s %d is taken; using %d from now on", name, port, new)
        setattr(state, name, new)
        used.add(new)
        changed = True
    for name in ("api_username", "rtsp_username"):
        if not getattr(state, name):
            setattr(state, name, f"lightnvr-{secrets.token_hex(4)}")
            changed = True
    for name in ("api_password", "rtsp_password"):
        if len(getattr(state, name)) < 16:
            setattr(state, name, secrets.token_urlsafe(24))
            changed = True
    if changed:
        _write_private(folder / STATE_FILE, json.dumps(asdict(state), indent=2))
    return state


def build_config(
    state: PersistedState,
    settings: Go2RtcSettings,
    version: tuple[int, int, int],
    streams: Mapping[str, str],
    api_socket: Path | None,
) -> dict[str, Any]:
    """Return go2rtc.yaml's content as a dict."""
    secure = version >= SECURITY_MIN_VERSION
    api: dict[str, Any] = {
        # With a unix socket there is no TCP API at all.
        "listen": "" if api_socket is not None else f"{LISTEN_HOST}:{state.api_port}",
        "username": state.api_username,
        "password": state.api_password,
    }
    if api_socket is not None:
        api["unix_listen"] = str(api_socket)
    if secure:
        api["local_auth"] = True
        api["allow_paths"] = list(API_ALLOW_PATHS)
    webrtc_port = settings.webrtc_port or state.webrtc_port
    webrtc: dict[str, Any] = {
        "listen": f"{settings.webrtc_listen_host}:{webrtc_port}",
        # Always written: an empty list stops go2rtc's default public STUN queries.
        "ice_servers": [server.to_go2rtc() for server in settings.ice_servers],
    }
    if settings.candidates:
        webrtc["candidates"] = list(settings.candidates)
    level = settings.log_level if settings.log_level in LOG_LEVELS else "info"
    log: dict[str, Any] = {
        "level": level,
        # Plain text whatever stdout is: the supervisor parses levels and the listen lines.
        "format": "text",
        "output": "stdout",
    }
    if LOG_LEVELS.index(level) > LOG_LEVELS.index("info"):
        # Readiness waits for the "INF [api] listen" and "INF [rtsp] listen" lines: keep those
        # modules at info (a module may be more verbose than the global level).
        log["api"] = "info"
        log["rtsp"] = "info"
    config: dict[str, Any] = {
        "api": api,
        "rtsp": {
            "listen": f"{LISTEN_HOST}:{state.rtsp_port}",
            "username": state.rtsp_username,
            "password": state.rtsp_password,
        },
        "webrtc": webrtc,
        "log": log,
    }
    if secure:
        config["app"] = {"modules": list(APP_MODULES)}
    config["streams"] = dict(streams)
    return config


def socket_path(folder: Path, settings: Go2RtcSettings) -> Path | None:
    """Return the API socket path, or None when TCP must be used (disabled or path too long)."""
    if not settings.unix_socket:
        return None
    path = folder.absolute() / API_SOCKET
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        _LOGGER.debug("Socket path %s is too long for a unix socket; using TCP", path)
        return None
    return path


def write_config(
    folder: Path,
    settings: Go2RtcSettings,
    version: tuple[int, int, int],
    streams: Mapping[str, str],
    *,
    refresh_ports: bool = True,
    previous: Go2RtcConfig | None = None,
) -> Go2RtcConfig:
    """Write go2rtc.yaml into `folder` (created 0700) and return what was written.

    `streams` maps stream names to source URLs (credentials included: the file is private).
    Raises UnsafeConfigValueError, before writing anything go2rtc reads, when a value contains
    `${` (see the module docstring); the go2rtc that would read the file must not be started.
    With `refresh_ports=False` and a `previous` config, the same ports are kept even if one is
    taken (go2rtc then reports it): restarts within one run never move the restream URLs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # go2rtc rewrites the config file 0644 when streams are added through its API; the folder
    # is what keeps the credentials private.
    os.chmod(folder, 0o700)
    if refresh_ports or previous is None:
        state = ensure_state(folder, settings)
    else:
        state = PersistedState(
            api_port=previous.api_port,
            rtsp_port=previous.rtsp_port,
            webrtc_port=previous.webrtc_port,
            api_username=previous.api_username,
            api_password=previous.api_password,
            rtsp_username=previous.rtsp_username,
            rtsp_password=previous.rtsp_password,
        )
    api_socket = socket_path(folder, settings)
    if api_socket is not None and (api_socket.exists() or api_socket.is_symlink()):
        # A socket file left by a killed go2rtc makes its bind fail with "address in use".
        api_socket.unlink()
    config = build_config(state, settings, version, streams, api_socket)
    if (where := find_template(config)) is not None:
        name = where.removeprefix("streams.")
        raise UnsafeConfigValueError(f"the source of stream {name}" if name in streams else where)
    header = "# Managed by LightNVR and rewritten on every start: do not edit.\n"
    text = header + yaml.safe_dump(config, sort_keys=False)
    if TEMPLATE_START in text:  # go2rtc expands the raw text: check what it will read, too
        raise UnsafeConfigValueError(CONFIG_FILE)
    path = folder / CONFIG_FILE
    _write_private(path, text)
    return Go2RtcConfig(
        path=path,
        api_port=state.api_port,
        rtsp_port=state.rtsp_port,
        webrtc_port=settings.webrtc_port or state.webrtc_port,
        api_socket=api_socket,
        api_username=state.api_username,
        api_password=state.api_password,
        rtsp_username=state.rtsp_username,
        rtsp_password=state.rtsp_password,
        version=version,
        streams=dict(streams),
    )
