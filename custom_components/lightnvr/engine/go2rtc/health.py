"""The go2rtc watchdog: notice what is wrong, fix what can be fixed, tell the user the rest.

Every `interval` seconds (and at once when a managed process exits) it checks:

* **the API** (`GET /api` and `GET /api/streams`): down for `failures_to_act` checks in a row →
  restart go2rtc (managed) or raise the `go2rtc_unreachable` repair issue (external, cleared
  as soon as it answers again);
* **every stream**: no connected producer, or `bytes_recv` flat, for `failures_to_act` checks
  while it should flow (we always consume it: the camera's hub reads the restream) → register
  that stream again, at most once per `reregister_cooldown`. A stream go2rtc forgot is
  registered again right away;
* **consensus**: when most streams fail together and their cameras answer a TCP probe — or
  all of them fail and at least one camera answers — the fault is go2rtc's, not the cameras':
  restart it. One failing camera never restarts go2rtc; neither does a network where no
  camera answers (restarting go2rtc cannot help there).

Restarts back off exponentially (`backoff_initial` → `backoff_max`, reset once go2rtc stayed
healthy for `stable_after`) and at most `restart_limit` happen per `restart_window`. Past
that, the `go2rtc_keeps_failing` repair issue shows the last log lines, and restarts resume
when the window allows; the issue clears itself when go2rtc works again.

An external go2rtc older than 1.9.12 gets the `go2rtc_insecure_version` repair issue: it has no
`api.local_auth`, so its API (config with every camera password, stream control) is open to
every program on its machine whatever its password. A managed one that old is never started
(binary.py refuses it).

A go2rtc that only some cameras use (engine/router.py) has a watchdog of its own whose issue ids
carry a per-server suffix (`IssueNaming`), and whose unreachable issue is
`camera_go2rtc_unreachable`, naming the server and its cameras: servers never share an issue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
import contextlib
from dataclasses import dataclass, replace
import logging
import time
from typing import Protocol

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from ...const import DOMAIN
from ...source import redact_url
from .binary import parse_version_tuple
from .client import StreamStatus
from .config import SECURITY_MIN_VERSION
from .process import Go2RtcPortInUseError, Go2RtcProcessError

_LOGGER = logging.getLogger(__name__)

MODE_MANAGED = "managed"
MODE_EXTERNAL = "external"

ISSUE_KEEPS_FAILING = "go2rtc_keeps_failing"
ISSUE_UNREACHABLE = "go2rtc_unreachable"
ISSUE_PORT_IN_USE = "go2rtc_port_in_use"
ISSUE_INSECURE_VERSION = "go2rtc_insecure_version"
# The unreachable issue of a go2rtc that only some cameras use (not the hub's engine).
ISSUE_CAMERA_UNREACHABLE = "camera_go2rtc_unreachable"
ISSUE_LOG_LINES = 20


@dataclass(frozen=True, slots=True)
class IssueNaming:
    """How a watchdog names its repair issues.

    The hub's engine uses the plain ids. Each go2rtc of some cameras' own has a suffix, so two
    servers never share (and clear) one issue, and its unreachable issue lists its cameras.
    """

    suffix: str = ""
    unreachable_key: str = ISSUE_UNREACHABLE
    placeholders: Callable[[], dict[str, str]] | None = None

    def issue_id(self, key: str) -> str:
        """Return the id of issue `key` for this go2rtc."""
        return key + self.suffix

    def extra(self) -> dict[str, str]:
        """Return the placeholders the issue texts get besides the URL and the detail."""
        return self.placeholders() if self.placeholders is not None else {}


@dataclass(frozen=True, slots=True)
class HealthTimings:
    """Every timing of the watchdog, in seconds (tests shrink them)."""

    interval: float = 10.0
    request_timeout: float = 5.0
    failures_to_act: int = 3
    # No verdict on a stream this soon after it was (re-)registered or go2rtc (re)started:
    # its consumers need time to connect.
    stream_grace: float = 20.0
    reregister_cooldown: float = 60.0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    restart_limit: int = 5
    restart_window: float = 600.0
    stable_after: float = 60.0
    probe_timeout: float = 3.0


@dataclass(frozen=True, slots=True)
class Go2RtcHealth:
    """What the hub's entities and diagnostics show about go2rtc."""

    mode: str
    healthy: bool
    restart_count: int = 0
    last_error: str | None = None
    version: str | None = None
    reregistrations: int = 0
    pid: int | None = None


class RestartPolicy:
    """Exponential back-off plus a sliding-window rate limit (pure logic, injectable clock)."""

    def __init__(self, timings: HealthTimings, clock: Callable[[], float] = time.monotonic):
        """Start with no restarts."""
        self._timings = timings
        self._clock = clock
        self._attempts: deque[float] = deque()
        self._streak = 0

    def _prune(self) -> None:
        now = self._clock()
        while self._attempts and now - self._attempts[0] >= self._timings.restart_window:
            self._attempts.popleft()

    @property
    def recent(self) -> int:
        """Return the number of restarts within the window."""
        self._prune()
        return len(self._attempts)

    def allowed(self) -> bool:
        """Return True if another restart fits in the window."""
        return self.recent < self._timings.restart_limit

    def next_delay(self) -> float:
        """Return how long to wait before the next restart."""
        delay = self._timings.backoff_initial * 2.0**self._streak
        return min(delay, self._timings.backoff_max)

    def record(self) -> None:
        """Count a restart (successful or not)."""
        self._attempts.append(self._clock())
        self._streak = min(self._streak + 1, 32)

    def reset_backoff(self) -> None:
        """go2rtc has been stable: the next failure is restarted quickly again."""
        self._streak = 0


def go2rtc_at_fault(failing: int, total: int, answering: int) -> bool:
    """Decide whether failing streams mean go2rtc is broken (not the cameras).

    `answering` is how many of the failing streams' cameras answered a probe.
    """
    if total < 2 or failing < 2:
        return False  # one camera failing alone is that camera's problem
    if failing == total:
        return answering > 0  # all down: go2rtc, unless the cameras are unreachable too
    return failing * 2 > total and answering * 2 >= failing


class WatchdogTarget(Protocol):
    """What the watchdog needs from the engine."""

    @property
    def process_exited(self) -> asyncio.Event | None:
        """Return the managed process's exit event (None: external mode or no process)."""

    def process_running(self) -> bool:
        """Return True if the managed process runs (always True in external mode)."""

    async def async_check_api(self, time_limit: float) -> dict[str, StreamStatus]:
        """Check the API and return the streams go2rtc knows (raise on failure)."""

    def expected_streams(self) -> list[str]:
        """Return the names of the streams that should be registered."""

    async def async_register(self, name: str) -> None:
        """Register stream `name` (again)."""

    async def async_restart(self) -> None:
        """Restart the managed process and register every stream (raise on failure)."""

    async def async_probe_camera(self, name: str, time_limit: float) -> bool:
        """Return True if the camera behind stream `name` answers."""

    def log_tail(self, count: int) -> list[str]:
        """Return go2rtc's last log lines (redacted)."""

    def health_changed(self, health: Go2RtcHealth) -> None:
        """Tell the engine's listeners."""


@dataclass(slots=True)
class _StreamWatch:
    since: float  # last (re-)registration or go2rtc start: the grace period starts here
    bytes_recv: int = -1  # -1: no baseline (not connected at the last check)
    failures: int = 0
    last_register: float = float("-inf")


class Go2RtcWatchdog:
    """Runs the checks in one background task; owns the repair issues and the health state."""

    def __init__(
        self,
        hass: HomeAssistant,
        target: WatchdogTarget,
        *,
        mode: str,
        display_url: str,
        timings: HealthTimings,
        health: Go2RtcHealth,
        clock: Callable[[], float] = time.monotonic,
        issues: IssueNaming | None = None,
    ) -> None:
        """Prepare; `async_start` runs it."""
        self._hass = hass
        self._issues = issues or IssueNaming()
        self._target = target
        self._mode = mode
        self._url = display_url
        self._t = timings
        self._clock = clock
        self._policy = RestartPolicy(timings, clock)
        self._health = health
        self._task: asyncio.Task[None] | None = None
        self._api_failures = 0
        self._streams: dict[str, _StreamWatch] = {}
        self._gave_up = False
        self._unreachable = False
        self._healthy_since: float | None = clock()
        self._last_restart: float | None = None

    @property
    def health(self) -> Go2RtcHealth:
        """Return the current health."""
        return self._health

    def update(self, **changes: object) -> None:
        """Change the health state and tell listeners if anything changed."""
        # `last_error` becomes a state attribute every user can read: no URL login may get there.
        if isinstance(error := changes.get("last_error"), str):
            changes["last_error"] = redact_url(error)
        new = replace(self._health, **changes)  # type: ignore[arg-type]
        if new != self._health:
            old, self._health = self._health, new
            if self._mode == MODE_EXTERNAL and new.version != old.version:
                self._check_external_version(new.version)
            self._target.health_changed(new)

    # ----- lifecycle --------------------------------------------------------------------------

    def async_start(self, *, reachable: bool = True, detail: str = "") -> None:
        """Start checking. An external go2rtc found unreachable at start is reported at once."""
        if not reachable:
            self._api_failures = self._t.failures_to_act
            self._report_unreachable(detail)
        self._task = self._hass.async_create_background_task(
            self._run(), "lightnvr go2rtc watchdog"
        )

    async def async_stop(self) -> None:
        """Stop checking; withdraw the issues only a running watchdog can clear.

        `go2rtc_port_in_use` stays: it is raised by a failed start, which stops nothing.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for issue in (ISSUE_KEEPS_FAILING, ISSUE_UNREACHABLE, ISSUE_INSECURE_VERSION):
            ir.async_delete_issue(self._hass, DOMAIN, self._issues.issue_id(issue))

    def stream_registered(self, name: str) -> None:
        """Give a stream the engine just (re-)registered its grace period."""
        self._streams[name] = _StreamWatch(since=self._clock())

    def stream_removed(self, name: str) -> None:
        """Forget a removed stream."""
        self._streams.pop(name, None)

    # ----- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._sleep(self._t.interval)
            try:
                await self.async_check()
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("go2rtc health check failed unexpectedly")

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the managed process exits."""
        exited = self._target.process_exited
        if exited is None or exited.is_set():
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await exited.wait()

    async def async_check(self) -> None:
        """Run one round of checks (and whatever repair they call for)."""
        managed = self._mode == MODE_MANAGED
        if managed and not self._target.process_running():
            await self._recover("go2rtc is not running")
            return
        try:
            statuses = await self._target.async_check_api(self._t.request_timeout)
        except Exception as err:  # noqa: BLE001 - any failure counts, the reason is reported
            self._api_failures += 1
            detail = str(err) or type(err).__name__
            _LOGGER.debug(
                "go2rtc API check failed (%d/%d): %s",
                self._api_failures,
                self._t.failures_to_act,
                detail,
            )
            if self._api_failures >= self._t.failures_to_act:
                if managed:
                    await self._recover(f"the API does not answer: {detail}")
                else:
                    self._report_unreachable(detail)
            return
        self._api_failures = 0
        if self._unreachable:
            self._unreachable = False
            ir.async_delete_issue(self._hass, DOMAIN, self._issues.issue_id(ISSUE_UNREACHABLE))
            _LOGGER.info("go2rtc at %s answers again", self._url)
        if await self._check_streams(statuses):
            self._report_healthy()

    # ----- streams ----------------------------------------------------------------------------

    async def _check_streams(self, statuses: dict[str, StreamStatus]) -> bool:
        """Judge every stream; return False when go2rtc itself was found broken."""
        now = self._clock()
        expected = self._target.expected_streams()
        for name in [n for n in self._streams if n not in expected]:
            del self._streams[name]
        suspects: list[str] = []
        failing: list[str] = []
        for name in expected:
            watch = self._streams.setdefault(name, _StreamWatch(since=now))
            status = statuses.get(name)
            if status is None:
                # go2rtc lost it (an external go2rtc restarted, someone deleted it): re-add.
                _LOGGER.info("go2rtc lost stream %s; registering it again", name)
                await self._register(name, watch, now)
                continue
            flowing = status.receiving and (
                watch.bytes_recv < 0 or status.bytes_recv != watch.bytes_recv
            )
            watch.bytes_recv = status.bytes_recv if status.receiving else -1
            if flowing:
                watch.failures = 0
                continue
            if now - watch.since < self._t.stream_grace:
                continue
            watch.failures += 1
            suspects.append(name)
            if watch.failures >= self._t.failures_to_act:
                failing.append(name)
        total = len(expected)
        if failing and len(suspects) * 2 > total and len(failing) < len(suspects):
            return True  # many going bad together: let the consensus decide next round
        if len(failing) >= 2 and len(failing) * 2 > total:
            probes = await asyncio.gather(
                *(self._target.async_probe_camera(n, self._t.probe_timeout) for n in failing)
            )
            answering = sum(1 for ok in probes if ok)
            if go2rtc_at_fault(len(failing), total, answering):
                reason = (
                    f"{len(failing)} of {total} streams stopped while "
                    f"{answering} of their cameras answer"
                )
                if self._mode == MODE_MANAGED:
                    await self._recover(reason)
                    return False
                self.update(healthy=False, last_error=reason)
                _LOGGER.warning("External go2rtc at %s: %s", self._url, reason)
                await self._reregister(failing, now)
                return False
        await self._reregister(failing, now)
        return True

    async def _reregister(self, failing: list[str], now: float) -> None:
        """Register failing streams again, each at most once per cool-down."""
        for name in failing:
            watch = self._streams[name]
            if now - watch.last_register >= self._t.reregister_cooldown:
                _LOGGER.info("Stream %s gets no data from go2rtc; registering it again", name)
                await self._register(name, watch, now)
                self.update(reregistrations=self._health.reregistrations + 1)

    async def _register(self, name: str, watch: _StreamWatch, now: float) -> None:
        watch.since = now
        watch.failures = 0
        watch.bytes_recv = -1
        watch.last_register = now
        try:
            await self._target.async_register(name)
        except Exception as err:  # noqa: BLE001 - logged; the next round tries again
            _LOGGER.warning("Cannot register stream %s with go2rtc: %s", name, redact_url(str(err)))

    # ----- recovery ---------------------------------------------------------------------------

    async def _recover(self, reason: str) -> None:
        """Restart the managed go2rtc, within the back-off and rate limit."""
        self._healthy_since = None
        self.update(healthy=False, last_error=reason)
        if not self._policy.allowed():
            if not self._gave_up:
                self._gave_up = True
                restarts = self._policy.recent
                _LOGGER.error(
                    "go2rtc keeps failing (%s; %d restarts in %.0f min); not restarting it "
                    "until the limit allows",
                    reason,
                    restarts,
                    self._t.restart_window / 60,
                )
                ir.async_create_issue(
                    self._hass,
                    DOMAIN,
                    self._issues.issue_id(ISSUE_KEEPS_FAILING),
                    is_fixable=False,
                    severity=ir.IssueSeverity.ERROR,
                    translation_key=ISSUE_KEEPS_FAILING,
                    translation_placeholders={
                        "restarts": str(restarts),
                        "log": "\n".join(self._target.log_tail(ISSUE_LOG_LINES)) or "(no output)",
                    },
                )
            return
        delay = self._policy.next_delay()
        _LOGGER.warning("Restarting go2rtc in %.1f s: %s", delay, reason)
        await asyncio.sleep(delay)
        self._policy.record()
        self._last_restart = self._clock()
        self.update(restart_count=self._health.restart_count + 1)
        try:
            await self._target.async_restart()
        except Go2RtcPortInUseError as err:
            self.update(last_error=str(err))
            report_port_in_use(self._hass, err)
            return
        except Go2RtcProcessError as err:
            _LOGGER.warning("go2rtc restart failed: %s", err)
            self.update(last_error=str(err))
            return
        ir.async_delete_issue(self._hass, DOMAIN, ISSUE_PORT_IN_USE)
        self._api_failures = 0
        now = self._clock()
        for watch in self._streams.values():
            watch.since = now
            watch.failures = 0
            watch.bytes_recv = -1
        _LOGGER.info("go2rtc restarted")

    def _report_healthy(self) -> None:
        now = self._clock()
        if self._healthy_since is None:
            self._healthy_since = now
        if self._gave_up:
            self._gave_up = False
            ir.async_delete_issue(self._hass, DOMAIN, self._issues.issue_id(ISSUE_KEEPS_FAILING))
            _LOGGER.info("go2rtc works again")
        if now - self._healthy_since >= self._t.stable_after:
            self._policy.reset_backoff()
        self.update(healthy=True)

    def _check_external_version(self, version: str | None) -> None:
        """Raise or clear `go2rtc_insecure_version` for the version the external go2rtc reports.

        We do not write an external go2rtc's config, so it is not refused: it works, and the
        user is told that its API is open to local programs until it is updated.
        """
        if not version or parse_version_tuple(version) >= SECURITY_MIN_VERSION:
            ir.async_delete_issue(self._hass, DOMAIN, self._issues.issue_id(ISSUE_INSECURE_VERSION))
            return
        minimum = ".".join(str(n) for n in SECURITY_MIN_VERSION)
        _LOGGER.warning(
            "go2rtc at %s is version %s: before %s its API cannot require a login from local "
            "programs (api.local_auth), so every program on its machine can use it",
            self._url,
            version,
            minimum,
        )
        ir.async_create_issue(
            self._hass,
            DOMAIN,
            self._issues.issue_id(ISSUE_INSECURE_VERSION),
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_INSECURE_VERSION,
            translation_placeholders={"url": self._url, "version": version, "minimum": minimum},
        )

    def _report_unreachable(self, detail: str) -> None:
        self.update(healthy=False, last_error=f"unreachable: {detail}")
        if self._unreachable:
            return
        self._unreachable = True
        _LOGGER.warning("Cannot reach go2rtc at %s: %s", self._url, detail)
        ir.async_create_issue(
            self._hass,
            DOMAIN,
            self._issues.issue_id(ISSUE_UNREACHABLE),
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key=self._issues.unreachable_key,
            # The detail may quote the URL: only ever without its login.
            translation_placeholders={
                **self._issues.extra(),
                "url": self._url,
                "detail": redact_url(detail),
            },
        )


def report_port_in_use(hass: HomeAssistant, err: Go2RtcPortInUseError) -> None:
    """Raise the `go2rtc_port_in_use` repair issue."""
    _LOGGER.error("go2rtc cannot open its %s port: %s", err.listener, err.detail)
    ir.async_create_issue(
        hass,
        DOMAIN,
        ISSUE_PORT_IN_USE,
        is_fixable=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=ISSUE_PORT_IN_USE,
        translation_placeholders={"detail": f"{err.listener}: {err.detail}"},
    )
