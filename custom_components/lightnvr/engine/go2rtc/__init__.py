"""The go2rtc engine: find the binary, run or reach go2rtc, supervise it.

Entry points for `engine/__init__.py`'s create_engine:

* `async_find_usable_binary(hass, configured)` → BinaryCheck (`usable`, `path`, `version`,
  `problem`, `detail`, `issue_key`, `issue_placeholders`);
* `async_create_go2rtc_engine(hass, options, config_dir, mode=...)` → Go2RtcEngine (not started);
* `async_report_binary_issue(hass, check)` / `async_clear_binary_issues(hass)` for the
  `go2rtc_binary_missing` / `go2rtc_binary_unusable` repair issues (a go2rtc older than 1.9.12
  is unusable for the managed mode: no `api.local_auth`);
* `check_source(name, url)`: raises `UnsafeConfigValueError` (a ValueError) for a source go2rtc
  would expand `${…}` in. `write_config` refuses such a file, so an engine start or restart
  with such a camera fails with that error (a Go2RtcStartError): check earlier to refuse just
  that camera.

The watchdog raises `go2rtc_insecure_version` for an external go2rtc older than 1.9.12.
"""

from __future__ import annotations

from pathlib import Path

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from ...const import DOMAIN
from ...models import HubOptions
from .binary import (
    ISSUE_BINARY_MISSING,
    ISSUE_BINARY_UNUSABLE,
    BinaryCheck,
    BinaryProblem,
    find_usable_binary,
)
from .config import Go2RtcSettings, IceServer, UnsafeConfigValueError, check_source
from .engine import Go2RtcEngine, stream_name
from .health import (
    ISSUE_CAMERA_UNREACHABLE,
    ISSUE_INSECURE_VERSION,
    ISSUE_UNREACHABLE,
    MODE_EXTERNAL,
    MODE_MANAGED,
    Go2RtcHealth,
    HealthTimings,
    IssueNaming,
)
from .process import Go2RtcPortInUseError, Go2RtcProcessError, Go2RtcStartError

__all__ = [
    "ISSUE_CAMERA_UNREACHABLE",
    "ISSUE_INSECURE_VERSION",
    "ISSUE_UNREACHABLE",
    "MODE_EXTERNAL",
    "MODE_MANAGED",
    "BinaryCheck",
    "BinaryProblem",
    "Go2RtcEngine",
    "Go2RtcHealth",
    "Go2RtcPortInUseError",
    "Go2RtcProcessError",
    "Go2RtcSettings",
    "Go2RtcStartError",
    "Go2RtcUnavailableError",
    "HealthTimings",
    "IceServer",
    "IssueNaming",
    "UnsafeConfigValueError",
    "async_clear_binary_issues",
    "async_create_go2rtc_engine",
    "async_find_usable_binary",
    "async_report_binary_issue",
    "check_source",
    "stream_name",
]


class Go2RtcUnavailableError(Exception):
    """The go2rtc engine cannot be built here (no usable binary, or no URL)."""

    def __init__(self, message: str, check: BinaryCheck | None = None) -> None:
        """Keep the binary verdict, if that is the reason."""
        super().__init__(message)
        self.check = check


async def async_find_usable_binary(hass: HomeAssistant, configured: str | None) -> BinaryCheck:
    """Look for a usable go2rtc: configured path, PATH, the install script's folder."""
    return await hass.async_add_executor_job(find_usable_binary, configured)


def async_report_binary_issue(hass: HomeAssistant, check: BinaryCheck) -> None:
    """Raise the repair issue that explains why `check`'s binary cannot be used."""
    key = check.issue_key
    if key is None:
        async_clear_binary_issues(hass)
        return
    other = ISSUE_BINARY_UNUSABLE if key == ISSUE_BINARY_MISSING else ISSUE_BINARY_MISSING
    ir.async_delete_issue(hass, DOMAIN, other)
    ir.async_create_issue(
        hass,
        DOMAIN,
        key,
        is_fixable=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=key,
        translation_placeholders=check.issue_placeholders,
    )


def async_clear_binary_issues(hass: HomeAssistant) -> None:
    """Remove both binary repair issues (a usable binary was found, or go2rtc is not wanted)."""
    for key in (ISSUE_BINARY_MISSING, ISSUE_BINARY_UNUSABLE):
        ir.async_delete_issue(hass, DOMAIN, key)


def default_settings(hass: HomeAssistant) -> Go2RtcSettings:
    """Return settings built from HA's own WebRTC configuration (its ICE servers)."""
    servers = tuple(
        IceServer(
            urls=tuple([server.urls] if isinstance(server.urls, str) else server.urls),
            username=server.username,
            credential=server.credential,
        )
        for server in hass.config.webrtc.ice_servers
    )
    return Go2RtcSettings(ice_servers=servers)


async def async_create_go2rtc_engine(
    hass: HomeAssistant,
    options: HubOptions,
    config_dir: Path,
    *,
    mode: str,
    binary: BinaryCheck | None = None,
    settings: Go2RtcSettings | None = None,
    timings: HealthTimings | None = None,
) -> Go2RtcEngine:
    """Build (not start) the go2rtc engine for mode "managed" or "external".

    Managed: uses `binary` if given (e.g. from the `auto` engine's search), else searches; an
    unusable one raises the matching repair issue and Go2RtcUnavailableError. `config_dir` is
    the integration's own folder for go2rtc.yaml and its state. External: `options.go2rtc_url`.
    """
    settings = settings or default_settings(hass)
    if mode == MODE_EXTERNAL:
        if not options.go2rtc_url:
            raise Go2RtcUnavailableError("the external go2rtc engine needs a go2rtc URL")
        return Go2RtcEngine(
            hass,
            mode=MODE_EXTERNAL,
            url=options.go2rtc_url,
            settings=settings,
            timings=timings,
            limits=options.viewer_limits,
        )
    if mode != MODE_MANAGED:
        raise ValueError(f"unknown go2rtc mode {mode!r}")
    if binary is None:
        binary = await async_find_usable_binary(hass, options.go2rtc_binary)
    if not binary.usable:
        async_report_binary_issue(hass, binary)
        raise Go2RtcUnavailableError(f"go2rtc cannot be used: {binary.detail}", binary)
    async_clear_binary_issues(hass)
    return Go2RtcEngine(
        hass,
        mode=MODE_MANAGED,
        config_dir=config_dir,
        binary=binary,
        settings=settings,
        timings=timings,
        limits=options.viewer_limits,
    )
