"""Stream engines: what carries video from the cameras to viewers.

`auto` prefers go2rtc (lowest latency, more codecs) when a usable binary is installed and falls
back to the built-in engine otherwise, so a plain Home Assistant always has live view. The hub's
engine is wrapped in an `EngineRouter`, which adds a go2rtc engine per camera go2rtc URL.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from homeassistant.core import HomeAssistant

from ..const import ENGINE_AUTO, ENGINE_EMBEDDED, ENGINE_EXTERNAL, ENGINE_GO2RTC
from ..models import HubOptions
from .base import StreamEngine
from .embedded import EmbeddedEngine
from .go2rtc import (
    MODE_EXTERNAL,
    MODE_MANAGED,
    Go2RtcUnavailableError,
    async_clear_binary_issues,
    async_create_go2rtc_engine,
    async_find_usable_binary,
    async_report_binary_issue,
    default_settings,
)
from .go2rtc.config import Go2RtcSettings
from .router import EngineRouter

_LOGGER = logging.getLogger(__name__)

__all__ = ["EngineRouter", "EngineUnavailableError", "StreamEngine", "async_create_engine"]


class EngineUnavailableError(Exception):
    """The configured engine cannot run on this installation (the user must act)."""


def go2rtc_config_dir(hass: HomeAssistant) -> Path:
    """Return the folder of the go2rtc we run (config, state, pid): HA's own storage."""
    return Path(hass.config.path(".storage", "lightnvr_go2rtc"))


def go2rtc_settings(hass: HomeAssistant, options: HubOptions) -> Go2RtcSettings:
    """Apply the hub options to go2rtc's defaults (HA's ICE servers)."""
    return dataclasses.replace(
        default_settings(hass),
        webrtc_listen_host="" if options.go2rtc_webrtc_lan else "127.0.0.1",
        webrtc_port=options.go2rtc_webrtc_port,
        candidates=options.go2rtc_candidates,
    )


async def async_create_engine(hass: HomeAssistant, options: HubOptions) -> EngineRouter:
    """Build (not start) the hub's engine, in the router that adds the cameras' own go2rtc."""
    return EngineRouter(
        hass,
        await _async_create_hub_engine(hass, options),
        settings=go2rtc_settings(hass, options),
        limits=options.viewer_limits,
        hub_go2rtc_url=options.go2rtc_url if options.engine == ENGINE_EXTERNAL else None,
    )


async def _async_create_hub_engine(hass: HomeAssistant, options: HubOptions) -> StreamEngine:
    """Build (not start) the engine the hub options ask for."""
    if options.engine == ENGINE_EMBEDDED:
        async_clear_binary_issues(hass)
        return EmbeddedEngine(hass, options.viewer_limits)
    settings = go2rtc_settings(hass, options)
    config_dir = go2rtc_config_dir(hass)
    try:
        if options.engine == ENGINE_EXTERNAL:
            return await async_create_go2rtc_engine(
                hass, options, config_dir, mode=MODE_EXTERNAL, settings=settings
            )
        check = await async_find_usable_binary(hass, options.go2rtc_binary)
        if options.engine == ENGINE_AUTO and not check.usable:
            if check.path is not None:  # a go2rtc is there but broken: worth telling
                async_report_binary_issue(hass, check)
            else:
                async_clear_binary_issues(hass)
            _LOGGER.info("No usable go2rtc (%s): using the built-in engine", check.detail)
            return EmbeddedEngine(hass, options.viewer_limits)
        if options.engine not in (ENGINE_AUTO, ENGINE_GO2RTC):
            raise EngineUnavailableError(f"unknown engine {options.engine!r}")
        return await async_create_go2rtc_engine(
            hass, options, config_dir, mode=MODE_MANAGED, binary=check, settings=settings
        )
    except Go2RtcUnavailableError as err:
        raise EngineUnavailableError(str(err)) from err
