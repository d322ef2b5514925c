"""The managed go2rtc process: its config file, pid file, start, stop and restart.

In managed mode LightNVR runs go2rtc itself. The process, the config it was started with, its pid
file and the last lines of one that died must change together, so they live here, apart from the
engine's cameras and viewers. Registering streams and reporting health after a start stay with
the engine: they need the API client and the watchdog. In external mode the engine still holds an
(unused) instance, so `config` and `process` read None there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from homeassistant.core import HomeAssistant

from ...source import Redactor
from .binary import BinaryCheck
from .config import CONFIG_FILE, Go2RtcConfig, Go2RtcSettings, write_config
from .health import report_port_in_use
from .process import (
    Go2RtcPortInUseError,
    Go2RtcProcess,
    ReadyProbe,
    kill_stale_process,
    remove_pid_file,
    write_pid_file,
)

# Called only when the config is written, so cameras added until then are in it.
type StreamSources = Callable[[], dict[str, str]]


class ManagedGo2Rtc:
    """The go2rtc process LightNVR runs (managed mode), with its config and pid file."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        config_dir: Path | None,
        binary: BinaryCheck | None,
        settings: Go2RtcSettings,
        redact: Redactor,
        ready_timeout: float,
        stop_timeout: float,
    ) -> None:
        """Prepare; nothing runs until `async_launch`."""
        self._hass = hass
        self._config_dir = config_dir
        self._binary = binary
        self._settings = settings
        self._redact = redact
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self.config: Go2RtcConfig | None = None
        self.process: Go2RtcProcess | None = None
        self._previous_log: list[str] = []  # the last lines of a go2rtc that has died

    async def async_write_first_config(self, streams: StreamSources) -> Go2RtcConfig:
        """Kill a go2rtc an earlier run left behind, then write a config with fresh ports."""
        assert self._config_dir is not None
        assert self._binary is not None
        version = self._binary.version_tuple
        await self._hass.async_add_executor_job(
            _kill_stale, self._config_dir, self._config_dir / CONFIG_FILE
        )
        config = await self._hass.async_add_executor_job(
            write_config, self._config_dir, self._settings, version, streams()
        )
        self.config = config
        return config

    async def async_launch(self, ready_probe: ReadyProbe) -> Go2RtcProcess:
        """Start a new go2rtc process from the current config and write its pid file."""
        assert self.config is not None
        assert self._binary is not None
        assert self._binary.path is not None
        process = Go2RtcProcess(
            self._binary.path,
            self.config.path,
            ready_probe=ready_probe,
            redact=self._redact,
            ready_timeout=self._ready_timeout,
            stop_timeout=self._stop_timeout,
        )
        self.process = process
        try:
            await process.async_start()
        except BaseException:
            self.process = None  # it stopped itself; nothing runs
            # Keep what it printed: the repair issue shows why go2rtc keeps failing.
            self._previous_log = process.log_tail() or self._previous_log
            raise
        if process.pid is not None:
            await self._hass.async_add_executor_job(
                write_pid_file, self.config.path.parent, process.pid
            )
        return process

    async def async_replace_failed(self, streams: StreamSources) -> None:
        """Stop the failed go2rtc and rewrite its config (same ports) for the next launch."""
        assert self._config_dir is not None
        assert self._binary is not None
        old = self.process
        if old is not None:
            old.dump_log()  # it failed: show what it said last
            self._previous_log = old.log_tail() or self._previous_log
            await old.async_stop()
            if old.port_conflict is not None:  # it lost a listener after start-up
                report_port_in_use(self._hass, Go2RtcPortInUseError(*old.port_conflict))
        self.process = None
        self.config = await self._hass.async_add_executor_job(
            _rewrite_config,
            self._config_dir,
            self._settings,
            self._binary,
            self.config,
            streams(),
        )

    async def async_stop(self) -> None:
        """Stop the process (if it runs) and remove its pid file."""
        process, self.process = self.process, None
        if process is not None:
            await process.async_stop()
            if self.config is not None:
                await self._hass.async_add_executor_job(remove_pid_file, self.config.path.parent)

    def log_tail(self, count: int) -> list[str]:
        """Return the running go2rtc's last log lines (redacted), or a dead one's."""
        lines = self.process.log_tail(count) if self.process is not None else []
        return lines or self._previous_log[-count:]


def _rewrite_config(
    folder: Path,
    settings: Go2RtcSettings,
    binary: BinaryCheck,
    previous: Go2RtcConfig | None,
    streams: dict[str, str],
) -> Go2RtcConfig:
    """Config for a restart: same ports and credentials, current streams. Blocking."""
    return write_config(
        folder,
        settings,
        binary.version_tuple,
        streams,
        refresh_ports=previous is None,
        previous=previous,
    )


def _kill_stale(folder: Path, config_path: Path) -> None:
    if folder.is_dir():
        kill_stale_process(folder, config_path)
