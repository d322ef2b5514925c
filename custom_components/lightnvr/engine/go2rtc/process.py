"""One go2rtc process: start it, pump its log into HA's logger, know when it is ready, stop it.

Ready means both: go2rtc printed its API (and RTSP) listen lines, and `GET /api` answers. A port
already in use is a clear error, never a restart loop: go2rtc keeps running without the listener
when its bind fails, so the supervisor watches for that `ERR … address already in use` line.

Nothing may be left running: the process gets its own process group, stop is SIGTERM, a wait,
then SIGKILL to the whole group (older go2rtc versions do not signal their ffmpeg children).

go2rtc never sees Home Assistant's environment (`minimal_environment`): it expands `${NAME}` in
its config file from its environment and reads `$CREDENTIALS_DIRECTORY/NAME` files, and it passes
its environment on to every ffmpeg it starts, so SUPERVISOR_TOKEN and the like must not be there.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
import contextlib
import logging
import os
from pathlib import Path
import re
import signal
import time

from ...source import redact_url

_LOGGER = logging.getLogger(__name__)

LOG_LINES = 500
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# How often the API is asked during start-up once the listen lines are there.
_PROBE_PAUSE = 0.05
# After the process ended, how long its log pipe may stay open (a child holding it).
_PUMP_DRAIN_TIMEOUT = 1.0
_READ_LIMIT = 1024 * 1024
# After the API answers, how long to wait for the WebRTC listener's line.
_SETTLE_TIMEOUT = 0.5

_LINE_RE = re.compile(r"^\d\d:\d\d:\d\d(?:\.\d+)? (?P<level>TRC|DBG|INF|WRN|ERR|FTL|PNC)\b")
# go2rtc's INF lines are chatty and already summarised by our own logging.
_LEVELS = {
    "TRC": logging.DEBUG,
    "DBG": logging.DEBUG,
    "INF": logging.DEBUG,
    "WRN": logging.WARNING,
    "ERR": logging.WARNING,
    "FTL": logging.ERROR,
    "PNC": logging.ERROR,
}
_LISTEN_LINE = re.compile(r" INF \[(?P<module>api|rtsp|webrtc)\] listen addr=")
_IN_USE = "address already in use"

type ReadyProbe = Callable[[], Awaitable[bool]]

# All go2rtc gets of our environment: PATH to find ffmpeg, HOME for Go's per-user paths, TZ for
# the local time of its log lines, LANG for ffmpeg's text. Nothing else: HA's environment holds
# tokens (SUPERVISOR_TOKEN, HASSIO_TOKEN, …) that a `${NAME}` in go2rtc.yaml would hand to a
# camera URL, and CREDENTIALS_DIRECTORY would let `${NAME}` read HA's systemd credentials.
ENV_KEEP = ("PATH", "HOME", "TZ", "LANG")
# Without PATH, Go's exec.LookPath finds nothing (go2rtc runs ffmpeg by name).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment to run go2rtc with: ENV_KEEP from `environ` (ours by default)."""
    source = os.environ if environ is None else environ
    env = {key: source[key] for key in ENV_KEEP if key in source}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


class Go2RtcProcessError(Exception):
    """go2rtc could not be started (or stopped working)."""

    def __init__(self, message: str, log: Iterable[str] = ()) -> None:
        """Keep the last log lines for the repair issue."""
        super().__init__(message)
        self.log = list(log)


class Go2RtcStartError(Go2RtcProcessError):
    """go2rtc did not become ready: it exited, or did not answer in time."""


class Go2RtcPortInUseError(Go2RtcStartError):
    """go2rtc could not listen on one of its ports."""

    def __init__(self, listener: str, detail: str, log: Iterable[str] = ()) -> None:
        """Say which listener failed and why."""
        super().__init__(f"go2rtc cannot listen ({listener}): {detail}", log)
        self.listener = listener
        self.detail = detail


def _port_conflict(line: str) -> tuple[str, str] | None:
    """Return (listener, detail) when `line` reports a port already in use."""
    if _IN_USE not in line or not re.search(r" (ERR|FTL) ", line):
        return None
    match = re.search(r"\[(api|rtsp|webrtc|srtp|rtmp)\]", line)
    if match:
        listener = match.group(1)
    elif "webrtc" in line or "listen udp" in line:
        listener = "webrtc"  # the WebRTC UDP error is logged with a caller, not a module
    else:
        listener = "unknown"
    detail = line.split('error="', 1)[-1].split('"', 1)[0] if 'error="' in line else line
    return listener, detail


PID_FILE = "go2rtc.pid"


def write_pid_file(folder: Path, pid: int) -> None:
    """Remember the running go2rtc's pid (to clean up after a killed Home Assistant). Blocking."""
    (folder / PID_FILE).write_text(f"{pid}\n")


def remove_pid_file(folder: Path) -> None:
    """Forget the pid after a clean stop. Blocking."""
    (folder / PID_FILE).unlink(missing_ok=True)


def kill_stale_process(folder: Path, config_path: Path) -> int | None:
    """Kill a go2rtc left running by a Home Assistant that was killed; return its pid. Blocking.

    Only a process whose command line names our own config file is touched: a recycled pid
    that belongs to something else is left alone.
    """
    try:
        pid = int((folder / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        remove_pid_file(folder)
        return None
    if os.fsencode(str(config_path)) not in cmdline:
        remove_pid_file(folder)
        return None
    _LOGGER.warning("Stopping a go2rtc (pid %d) left running by an earlier run", pid)
    for kill in (os.killpg, os.kill):  # its group (children too), then itself
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    remove_pid_file(folder)
    return pid


class Go2RtcProcess:
    """Supervises one run of the go2rtc binary (a new object per start)."""

    def __init__(
        self,
        binary: str,
        config_path: Path,
        *,
        ready_probe: ReadyProbe,
        # go2rtc logs source URLs, credentials included: never keep its lines unredacted.
        redact: Callable[[str], str] = redact_url,
        ready_timeout: float = READY_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        listeners: tuple[str, ...] = ("api", "rtsp"),
        late_listeners: tuple[str, ...] = ("webrtc",),
        log_lines: int = LOG_LINES,
        logger: logging.Logger = _LOGGER,
    ) -> None:
        """Prepare a run; nothing starts before `async_start`."""
        self._binary = binary
        self._config_path = config_path
        self._ready_probe = ready_probe
        self._redact = redact
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._listeners = listeners
        self._late_listeners = late_listeners
        self._logger = logger
        self._log: deque[str] = deque(maxlen=log_lines)
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._seen: set[str] = set()
        self._changed = asyncio.Event()
        self._stopping = False
        self.exited = asyncio.Event()
        self.port_conflict: tuple[str, str] | None = None
        self.started_at: float | None = None
        self._probe_error: str | None = None
        self._ready = False

    # ----- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Return the process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Return True while the process is alive."""
        return self._proc is not None and not self.exited.is_set()

    @property
    def returncode(self) -> int | None:
        """Return the exit status once it ended."""
        return self._proc.returncode if self._proc is not None else None

    def log_tail(self, count: int | None = None) -> list[str]:
        """Return the last `count` log lines (all kept lines by default), redacted."""
        lines = list(self._log)
        return lines if count is None else lines[-count:]

    def dump_log(self, level: int = logging.WARNING) -> None:
        """Write the kept log lines to HA's log (when go2rtc failed)."""
        if not self._log:
            return
        self._logger.log(level, "Last go2rtc output:\n%s", "\n".join(self._log))

    # ----- start ------------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Start go2rtc and wait until it is ready; raise Go2RtcStartError otherwise."""
        if self._proc is not None:
            raise RuntimeError("a Go2RtcProcess runs once; create a new one to restart")
        self._logger.debug("Starting %s -c %s", self._binary, self._config_path)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._binary,
                "-c",
                str(self._config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(self._config_path.parent),
                env=minimal_environment(),
                start_new_session=True,  # its own group: stop can reach its children too
                limit=_READ_LIMIT,
            )
        except OSError as err:
            raise Go2RtcStartError(f"cannot run {self._binary}: {err}") from err
        self.started_at = time.monotonic()
        self._pump = asyncio.create_task(self._pump_output(self._proc), name="go2rtc log")
        self._waiter = asyncio.create_task(self._wait_exit(self._proc), name="go2rtc exit")
        try:
            async with asyncio.timeout(self._ready_timeout):
                await self._wait_ready()
        except TimeoutError:
            await self.async_stop()
            self.dump_log()
            why = f" (API: {self._probe_error})" if self._probe_error else ""
            raise Go2RtcStartError(
                f"go2rtc was not ready within {self._ready_timeout:.0f} s{why}", self.log_tail(20)
            ) from None
        except Go2RtcProcessError:
            await self.async_stop()
            self.dump_log()
            raise
        except BaseException:
            await self.async_stop()  # cancelled while starting: leave nothing behind
            raise
        self._ready = True
        self._logger.debug("go2rtc is ready (pid %s)", self.pid)

    async def _wait_ready(self) -> None:
        while True:
            self._raise_if_failed()
            if all(listener in self._seen for listener in self._listeners):
                break
            await self._changed.wait()
            self._changed.clear()
        while True:
            self._raise_if_failed()
            try:
                if await self._ready_probe():
                    break
            except Exception as err:  # noqa: BLE001 - not ready yet; the reason is kept
                self._probe_error = self._redact(str(err) or type(err).__name__)
            await asyncio.sleep(_PROBE_PAUSE)
        # The WebRTC listener's line (or its bind error) may come a little after the API's.
        # Its absence is no error (a WebRTC TCP bind failure is silent), so wait only briefly.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                while not self._settled():
                    await self._changed.wait()
                    self._changed.clear()
        self._raise_if_failed()

    def _settled(self) -> bool:
        return self.port_conflict is not None or all(
            listener in self._seen for listener in self._late_listeners
        )

    def _raise_if_failed(self) -> None:
        if self.port_conflict is not None:
            listener, detail = self.port_conflict
            raise Go2RtcPortInUseError(listener, detail, self.log_tail(20))
        if self.exited.is_set():
            raise Go2RtcStartError(
                f"go2rtc exited with code {self.returncode} while starting", self.log_tail(20)
            )

    # ----- output -----------------------------------------------------------------------------

    async def _pump_output(self, proc: asyncio.subprocess.Process) -> None:
        """Log every line at a level matching go2rtc's own, keep the last ones."""
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line beyond the read limit: take what there is
                raw = await proc.stdout.read(_READ_LIMIT)
            if not raw:
                return
            self._handle_line(raw.decode(errors="replace").rstrip())

    def _handle_line(self, text: str) -> None:
        if not text:
            return
        line = self._redact(text)
        self._log.append(line)
        match = _LINE_RE.match(line)
        if match:
            level = _LEVELS[match.group("level")]
        else:
            # Panics and other raw output; "exit with signal" is just our own SIGTERM.
            level = logging.DEBUG if self._stopping else logging.WARNING
        self._logger.log(level, "go2rtc: %s", line)
        if listen := _LISTEN_LINE.search(line):
            self._seen.add(listen.group("module"))
        if self.port_conflict is None and (conflict := _port_conflict(line)) is not None:
            self.port_conflict = conflict
            if self._ready:
                # After start-up: a listener went missing. Ending the process hands it to the
                # watchdog, which reports the port and restarts with back-off.
                self._logger.error("go2rtc lost a listener: %s", conflict[1])
                self._terminate()
        self._changed.set()

    async def _wait_exit(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self.exited.set()
        self._changed.set()
        if not self._stopping:
            self._logger.warning("go2rtc (pid %s) exited with code %s", proc.pid, code)

    # ----- stop -------------------------------------------------------------------------------

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()

    async def async_stop(self) -> None:
        """Stop go2rtc: SIGTERM, wait, SIGKILL; then make sure nothing of it is left."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        waiter = self._waiter
        if proc.returncode is None:
            self._terminate()
            if waiter is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), self._stop_timeout)
                except TimeoutError:
                    self._logger.warning(
                        "go2rtc did not stop within %.0f s; killing it", self._stop_timeout
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
        if waiter is not None:
            await waiter
        # Children (ffmpeg, exec sources) share go2rtc's process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        pump = self._pump
        if pump is not None and not pump.done():
            try:
                await asyncio.wait_for(asyncio.shield(pump), _PUMP_DRAIN_TIMEOUT)
            except TimeoutError:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
