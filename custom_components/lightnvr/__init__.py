"""LightNVR: a light network video recorder inside Home Assistant."""

from __future__ import annotations

import logging

from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ConfigEntryError, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from .card import async_register_card
from .const import DOMAIN, SUBENTRY_CAMERA
from .engine import EngineUnavailableError, async_create_engine
from .engine.go2rtc import Go2RtcStartError
from .entity import async_remove_stale_entities
from .exports import ExportManager, async_register_export_services, async_track_export_retention
from .hls import HlsService, async_register_hls_views
from .models import CameraConfig, HubOptions
from .recorder.clips import ClipManager
from .recorder.manager import RecorderManager
from .runtime import LightNvrConfigEntry, LightNvrRuntime
from .source import redact_url
from .views import async_register_views
from .websocket_api import async_setup_websocket_api

_LOGGER = logging.getLogger(__name__)

PLATFORMS: list[Platform] = [
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.CAMERA,
    Platform.EVENT,
    Platform.IMAGE,
    Platform.SENSOR,
    Platform.SWITCH,
]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the HTTP views once (they look up the loaded hub on each request), the card."""
    async_register_views(hass)
    async_register_hls_views(hass)
    async_setup_websocket_api(hass)
    async_register_export_services(hass)
    await async_register_card(hass)
    return True


def _wanted_cameras(entry: LightNvrConfigEntry) -> dict[str, CameraConfig]:
    return {
        subentry_id: CameraConfig.from_subentry(subentry_id, subentry.data)
        for subentry_id, subentry in entry.subentries.items()
        if subentry.subentry_type == SUBENTRY_CAMERA
    }


async def async_setup_entry(hass: HomeAssistant, entry: LightNvrConfigEntry) -> bool:
    """Start the engine, one hub per camera subentry, and the platforms."""
    options = HubOptions.from_entry(entry.data, entry.options)
    try:
        engine = await async_create_engine(hass, options)
    except EngineUnavailableError as err:
        # Shown on the integration's card; an external go2rtc's URL may carry a login.
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="engine_unavailable",
            translation_placeholders={"error": redact_url(str(err))},
        ) from err
    recorder = RecorderManager(
        hass,
        options,
        segment_seconds=options.segment_seconds,
        max_size_gb=options.max_storage_gb or None,
    )
    clips = ClipManager(hass, options.storage_path, retention_days=options.event_retention_days)
    recorder.retention_peer = clips.retention_peer
    runtime = LightNvrRuntime(
        hass=hass, options=options, engine=engine, recorder=recorder, clips=clips, entry=entry
    )
    try:
        await engine.async_start()
    except Go2RtcStartError as err:  # port taken, not ready in time: HA retries with back-off
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="go2rtc_not_started",
            translation_placeholders={"error": redact_url(str(err))},
        ) from err
    try:
        await recorder.async_start()
        await clips.async_start()
        await runtime.async_apply_cameras(_wanted_cameras(entry))
    except Exception:
        await runtime.async_stop()
        raise
    entry.runtime_data = runtime
    runtime.hls = HlsService(hass, runtime)
    exports = runtime.exports = ExportManager(hass, options.storage_path, recorder.index)
    recorder.reserved_bytes = exports.total_size
    entry.async_on_unload(await async_track_export_retention(hass, exports))
    entry.async_on_unload(exports.async_cancel_all)
    entry.async_on_unload(entry.add_update_listener(_async_entry_updated))

    async def _async_on_hass_stop(_event: Event) -> None:
        # HA does not unload entries when it stops: finish the files being written and close
        # the camera connections now, or a clean stop would look like a crash next time.
        await runtime.async_begin_close()
        await runtime.async_stop()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_on_hass_stop))
    _LOGGER.debug(
        "LightNVR started with the %s engine and %d camera(s)", engine.name, len(runtime.cameras)
    )
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    if removed := async_remove_stale_entities(hass, entry.entry_id):
        _LOGGER.debug("Removed entities LightNVR no longer provides: %s", ", ".join(removed))
    return True


async def async_unload_entry(hass: HomeAssistant, entry: LightNvrConfigEntry) -> bool:
    """Unload the platforms, then stop viewers, hubs and engine.

    A camera being restarted (its subentry edited, its stream moved) is finished first, and
    no camera starts after this.
    """
    runtime = entry.runtime_data
    await runtime.async_begin_close()
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await runtime.async_stop()
    else:
        runtime.closing = False  # still running: camera changes apply again
    return unloaded


async def _async_entry_updated(hass: HomeAssistant, entry: LightNvrConfigEntry) -> None:
    """Hub settings changed: reload. Only cameras changed: start or stop just those."""
    runtime = entry.runtime_data
    if HubOptions.from_entry(entry.data, entry.options) != runtime.options:
        await hass.config_entries.async_reload(entry.entry_id)
        return
    await runtime.async_apply_cameras(_wanted_cameras(entry))
