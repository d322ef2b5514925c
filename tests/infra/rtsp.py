"""Pytest-side controller for the GStreamer RTSP test server (``rtsp_server.py``).

The server needs GStreamer's Python bindings, which only Debian's ``/usr/bin/python3`` has, so
it runs as a subprocess. This module is stdlib-only and runs in the project's venv.

No threads: HA's test harness (``verify_cleanup``) fails a test if a thread it started is still
alive, and a reader thread blocked on a pipe is easy to leak. Instead the server's stdout and
stderr go to files in a private temp dir, which the controller reads incrementally whenever a
count is asked for. Unlike a pipe, a file never fills up, so a test that never looks at the
events cannot stall the server.

Typical use in a fixture::

    with RtspServer({"cam": clip}, user="admin", password="secret") as server:
        url = server.url("cam")                  # rtsp://127.0.0.1:PORT/cam
        secured = server.auth_url("cam")         # rtsp://admin:secret@127.0.0.1:AUTH_PORT/cam
        server.wait_for(lambda: server.connected_clients == 1, timeout=10)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
import functools
import itertools
import os
from pathlib import Path
import shutil
import signal
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO, Self
from urllib.parse import quote
import weakref

__all__ = ["SERVER_SCRIPT", "SYSTEM_PYTHON", "RtspServer", "ServerEvent", "unavailable_reason"]

# Debian's interpreter: it has python3-gi; the venv's interpreter does not.
SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
HOST = "127.0.0.1"

# Exit status of rtsp_server.py when it cannot bind a port.
_EXIT_BIND_FAILED = 2
_POLL_INTERVAL_S = 0.02
# Retry binding a fixed port only while this much of ready_timeout is left, pausing in between.
_BIND_RETRY_MIN_S = 1.0
_BIND_RETRY_PAUSE_S = 0.2

# Ports for servers that were not given one come from a range below the kernel's ephemeral
# ports (32768 and up on Linux), one block per pytest-xdist worker. A server keeps its ports
# across restarts (a camera outage brings it back at the same URL); were they ephemeral, another
# worker's server or any client socket could take one while the camera is down.
_PORT_BASE = 20000
_PORT_BLOCK = 1200


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    start = _PORT_BASE + (index % 10) * _PORT_BLOCK
    return range(start, start + _PORT_BLOCK)


_free_ports = itertools.cycle(_port_block())


@dataclass(frozen=True)
class ServerEvent:
    """One line the server printed, e.g. ``CLIENT-CONNECTED id=3 server=plain ip=127.0.0.1``.

    ``generation`` counts server starts (1 for the first start()), because client ids restart
    at 1 in every server process.
    """

    kind: str
    attrs: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    time: float = 0.0  # time.monotonic() when the controller read the line

    @classmethod
    def parse(cls, line: str, generation: int) -> ServerEvent:
        kind, _, rest = line.strip().partition(" ")
        attrs = dict(token.partition("=")[::2] for token in rest.split())
        return cls(kind, attrs, generation, time.monotonic())


@functools.cache
def unavailable_reason() -> str | None:
    """Why the real-camera infrastructure cannot run here, or None if it can.

    Checks Debian's python3 with GstRtspServer and the ffmpeg CLI; meant for ``pytest.skip``.
    """
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); "
        "gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst; Gst.init(None); "
        "missing = [e for e in ('qtdemux', 'h264parse', 'rtph264pay', 'h265parse', "
        "'rtph265pay', 'aacparse', 'rtpmp4gpay', 'rtppcmapay', 'rtppcmupay') "
        "if Gst.ElementFactory.find(e) is None]; "
        "assert not missing, missing"
    )
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe],
            capture_output=True,
            text=True,
            timeout=30,
            env=_child_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run {SYSTEM_PYTHON}: {err}"
    if result.returncode != 0:
        return (
            "GStreamer RTSP server bindings missing (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
            f"gstreamer1.0-plugins-good/bad): {result.stderr.strip()[-300:]}"
        )
    if shutil.which("ffmpeg") is None and not os.access("/usr/bin/ffmpeg", os.X_OK):
        return "ffmpeg CLI not found (apt: ffmpeg)"
    return None


def _child_env() -> dict[str, str]:
    """The environment for Debian's python: without the venv's interpreter settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class _Running:
    """Everything one server process owns; also what the GC finalizer cleans up."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    stdout: IO[bytes]  # read handle on workdir/stdout.log
    generation: int
    buffer: bytes = b""
    stopped: bool = False

    def terminate(self, timeout: float = 5.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            # SIGTERM lets the server quit its GLib loop and tear its pipelines down.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def _finalize(running: _Running) -> None:
    """Last resort if a test forgets stop(): never leave a server process behind."""
    running.terminate(timeout=2.0)
    running.stdout.close()
    shutil.rmtree(running.workdir, ignore_errors=True)


class RtspServer:
    """A looping RTSP "camera" serving media files (not re-encoded) on 127.0.0.1.

    ``media`` maps mount names (``"cam"`` or ``"/cam"``) to files: MP4/MOV with H.264 or
    H.265 video and optionally AAC, G.711 A-law or µ-law audio (see ``media.make_video`` and
    ``media.add_audio``; ``cameras.CameraMatrix`` serves a whole set of camera shapes).
    ``port``/``auth_port`` None means "pick a free port on the first start()"; later start()
    calls reuse the same ports, so a camera can be taken down and brought back at the same URL.
    Giving ``user`` and ``password`` adds a second server on ``auth_port`` with the same mounts
    behind basic auth.
    """

    def __init__(
        self,
        media: Mapping[str, Path | str],
        *,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        auth_port: int | None = None,
        ready_timeout: float = 15.0,
    ) -> None:
        if not media:
            raise ValueError("at least one mount is needed")
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self._media = {_mount_name(mount): Path(path) for mount, path in media.items()}
        self._port = port
        self._auth_port = auth_port
        self.user = user
        self.password = password
        self.ready_timeout = ready_timeout
        self._running: _Running | None = None
        self._finalizer: weakref.finalize | None = None
        self._generation = 0
        self._events: list[ServerEvent] = []
        self._open: set[tuple[int, str]] = set()  # (generation, client id)
        self._last_stderr = ""

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Launch the server and wait until it listens; raise RuntimeError if it cannot."""
        if self.running:
            raise RuntimeError("RTSP server already running")
        for path in self._media.values():
            if not path.is_file():
                raise FileNotFoundError(path)
        deadline = time.monotonic() + self.ready_timeout
        picked = self._port is None  # ports of our own choice: on a clash, take the next ones
        while True:
            if picked:
                self._port = next(_free_ports)
                if self.user is not None:
                    self._auth_port = next(_free_ports)
            self._spawn()
            try:
                self._wait_ready(deadline)
            except _BindError:
                if picked and time.monotonic() < deadline:
                    self.stop()
                    continue
                # A fixed port can be briefly unavailable right after the previous process
                # exited; retry while there is time for another attempt (start-up ~0.2 s).
                self.stop()
                if time.monotonic() + _BIND_RETRY_MIN_S >= deadline:
                    raise RuntimeError(
                        f"RTSP server could not bind port(s) {self._port}/{self._auth_port}:\n"
                        f"{self._last_stderr}"
                    ) from None
                time.sleep(_BIND_RETRY_PAUSE_S)
            else:
                return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and release its files. Idempotent."""
        running = self._running
        if running is None:
            return
        try:
            running.terminate(timeout)
        finally:
            # Read what the server printed while shutting down (CLIENT-CLOSED, STOPPED).
            self._read_events(running, final=True)
            running.stdout.close()
            self._last_stderr = _read_text(running.workdir / "stderr.log")
            shutil.rmtree(running.workdir, ignore_errors=True)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            self._running = None
            # The process is gone, so are its connections.
            self._open.clear()

    def restart(self) -> Self:
        """stop() then start() on the same ports (clients see the camera drop and return)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running is not None and self._running.proc.poll() is None

    @property
    def exit_status(self) -> int | None:
        """The server process's exit status if it exited on its own (None while it runs)."""
        return self._running.proc.poll() if self._running else None

    @property
    def pid(self) -> int | None:
        return self._running.proc.pid if self._running else None

    # ----------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("port unknown until start()")
        return self._port

    @property
    def auth_port(self) -> int:
        if self.user is None:
            raise RuntimeError("no auth server: create RtspServer with user and password")
        if self._auth_port is None:
            raise RuntimeError("auth port unknown until start()")
        return self._auth_port

    @property
    def mounts(self) -> list[str]:
        return list(self._media)

    def url(self, mount: str) -> str:
        """``rtsp://127.0.0.1:PORT/mount`` on the server without authentication."""
        return f"rtsp://{HOST}:{self.port}/{self._known_mount(mount)}"

    def auth_url(
        self,
        mount: str,
        user: str | None = None,
        password: str | None = None,
        *,
        credentials: bool = True,
    ) -> str:
        """URL on the auth server; with the configured credentials unless others are given.

        ``credentials=False`` gives the URL without any user info (the server answers 401).
        User and password are percent-encoded, so any characters are safe.
        """
        base = f"{HOST}:{self.auth_port}/{self._known_mount(mount)}"
        if not credentials:
            return f"rtsp://{base}"
        user = self.user if user is None else user
        password = self.password if password is None else password
        return f"rtsp://{quote(user or '', safe='')}:{quote(password or '', safe='')}@{base}"

    # ----------------------------------------------------------------- observations

    @property
    def events(self) -> list[ServerEvent]:
        """Every event line so far, across restarts (a copy)."""
        self.poll()
        return list(self._events)

    @property
    def connected_clients(self) -> int:
        """RTSP connections currently open (both servers)."""
        self.poll()
        return len(self._open)

    @property
    def total_connections(self) -> int:
        """RTSP connections ever accepted, across restarts (both servers)."""
        return self.count("CLIENT-CONNECTED")

    def play_count(self, mount: str | None = None) -> int:
        """Successful PLAY requests, optionally for one mount."""
        return self.count("PLAY", mount)

    def media_count(self, mount: str | None = None) -> int:
        """Pipelines constructed; clients of a mount share one while any is connected."""
        return self.count("MEDIA-CONSTRUCTED", mount)

    def mount_info(self, mount: str) -> dict[str, str]:
        """What the server detected in a mount's file: ``{"video": "h264", "audio": "aac"}``.

        ``audio`` is ``"none"`` for a file without audio. Known once the server has started.
        """
        path = "/" + self._known_mount(mount)
        for event in reversed(self.events):
            if event.kind == "MOUNT" and event.attrs.get("path") == path:
                return {key: value for key, value in event.attrs.items() if key != "path"}
        raise RuntimeError(f"no MOUNT line for {path}; was the server started?")

    def loop_count(self, mount: str | None = None) -> int:
        """How often a file restarted from the beginning."""
        return self.count("LOOP", mount)

    def count(self, kind: str, mount: str | None = None) -> int:
        """Number of events of ``kind``, optionally only those whose ``path`` is ``mount``."""
        self.poll()
        path = None if mount is None else "/" + _mount_name(mount)
        return sum(
            1
            for event in self._events
            if event.kind == kind and (path is None or event.attrs.get("path") == path)
        )

    def poll(self) -> list[ServerEvent]:
        """Read lines the server printed since the last call; return the new events."""
        if self._running is None:
            return []
        return self._read_events(self._running)

    def stderr_text(self) -> str:
        """The server's stderr (GStreamer warnings, tracebacks): live, or of the last run."""
        if self._running is not None:
            return _read_text(self._running.workdir / "stderr.log")
        return self._last_stderr

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` is true; raise TimeoutError with the server state.

        Blocking (time.sleep): use it from sync code or an executor, and ``async_wait_for`` in
        coroutines running on HA's event loop.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(predicate, timeout))
            time.sleep(_POLL_INTERVAL_S)

    async def async_wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Like wait_for, but yields to the event loop between checks."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(predicate, timeout))
            await asyncio.sleep(_POLL_INTERVAL_S)

    def wait_for_clients(self, count: int, timeout: float = 10.0) -> None:
        """Wait until exactly ``count`` connections are open."""
        self.wait_for(lambda: self.connected_clients == count, timeout)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<RtspServer {state} port={self._port} auth_port={self._auth_port}>"

    # ----------------------------------------------------------------- internals

    def _known_mount(self, mount: str) -> str:
        name = _mount_name(mount)
        if name not in self._media:
            raise KeyError(f"unknown mount {mount!r}; mounts: {', '.join(self._media)}")
        return name

    def _command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self._port or 0)]
        for mount, path in self._media.items():
            cmd += ["--mount", f"/{mount}={path.resolve()}"]
        if self.user is not None and self.password is not None:
            cmd += ["--auth-port", str(self._auth_port or 0)]
            cmd += ["--user", self.user, "--password", self.password]
        return cmd

    def _spawn(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="rtsp-server-"))
        stdout_path = workdir / "stdout.log"
        # The child writes through its own handles (append mode); the controller reads through
        # a separate handle with its own file offset.
        with (
            open(stdout_path, "ab") as child_out,
            open(workdir / "stderr.log", "ab") as child_err,
        ):
            proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=child_out,
                stderr=child_err,
                env=_child_env(),
                close_fds=True,
            )
        self._generation += 1
        # Kept open for the server's lifetime and closed in stop() (or by the finalizer).
        reader = open(stdout_path, "rb")  # noqa: SIM115
        running = _Running(proc, workdir, reader, self._generation)
        self._running = running
        self._finalizer = weakref.finalize(self, _finalize, running)

    def _wait_ready(self, deadline: float) -> None:
        running = self._running
        assert running is not None
        need_auth = self.user is not None
        port: int | None = None
        auth_port: int | None = None
        while True:
            for event in self._read_events(running):
                if event.kind == "READY":
                    if "port" in event.attrs:
                        port = int(event.attrs["port"])
                    if "auth_port" in event.attrs:
                        auth_port = int(event.attrs["auth_port"])
            if port is not None and (auth_port is not None or not need_auth):
                self._port = port
                if need_auth:
                    self._auth_port = auth_port
                return
            code = running.proc.poll()
            if code is not None:
                self._read_events(running, final=True)
                if code == _EXIT_BIND_FAILED and (self._port or self._auth_port):
                    raise _BindError
                stderr = _read_text(running.workdir / "stderr.log")
                self.stop()
                raise RuntimeError(f"RTSP server exited with status {code}:\n{stderr}")
            if time.monotonic() >= deadline:
                stderr = _read_text(running.workdir / "stderr.log")
                self.stop()
                raise RuntimeError(f"RTSP server not ready in {self.ready_timeout} s:\n{stderr}")
            time.sleep(_POLL_INTERVAL_S)

    def _read_events(self, running: _Running, final: bool = False) -> list[ServerEvent]:
        if running.stdout.closed:
            return []
        running.buffer += running.stdout.read()
        *lines, running.buffer = running.buffer.split(b"\n")
        if final and running.buffer:
            lines.append(running.buffer)
            running.buffer = b""
        new = [
            ServerEvent.parse(raw.decode(errors="replace"), running.generation)
            for raw in lines
            if raw.strip()
        ]
        for event in new:
            self._apply(event)
        self._events.extend(new)
        return new

    def _apply(self, event: ServerEvent) -> None:
        key = (event.generation, event.attrs.get("id", ""))
        if event.kind == "CLIENT-CONNECTED":
            self._open.add(key)
        elif event.kind == "CLIENT-CLOSED":
            self._open.discard(key)

    def _timeout_message(self, predicate: Callable[[], bool], timeout: float) -> str:
        recent = "\n".join(f"  {event.kind} {event.attrs}" for event in self.events[-15:])
        return (
            f"condition {getattr(predicate, '__name__', predicate)} not met within {timeout} s; "
            f"{self!r}, connected_clients={len(self._open)}, recent events:\n{recent}\n"
            f"stderr:\n{self.stderr_text()[-2000:]}"
        )


class _BindError(Exception):
    """The server could not bind its (fixed) port."""


def _mount_name(mount: str) -> str:
    name = mount.strip("/")
    if not name:
        raise ValueError(f"invalid mount {mount!r}")
    return name


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
