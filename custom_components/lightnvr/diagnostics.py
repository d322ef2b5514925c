"""Diagnostics: settings and live counters, with every secret removed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant

from .const import CONF_GO2RTC_URL, CONF_STREAM_URL, CONF_SUBSTREAM_URL
from .runtime import LightNvrConfigEntry
from .source import redact_url

TO_REDACT = {CONF_PASSWORD, CONF_USERNAME}
URL_KEYS = (CONF_STREAM_URL, CONF_SUBSTREAM_URL, CONF_GO2RTC_URL)


def _redact(data: Any) -> dict[str, Any]:
    redacted = async_redact_data(dict(data), TO_REDACT)
    for key in URL_KEYS:
        if isinstance(redacted.get(key), str):
            redacted[key] = redact_url(redacted[key])
    return redacted


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: LightNvrConfigEntry
) -> dict[str, Any]:
    """Return the hub's settings, cameras and stream counters."""
    runtime = entry.runtime_data
    engine = runtime.engine
    cameras: dict[str, Any] = {}
    for camera_id, subentry in entry.subentries.items():
        camera: dict[str, Any] = {"title": subentry.title, "data": _redact(subentry.data)}
        if camera_id in runtime.cameras:
            hub = engine.hub(camera_id)
            stats = asdict(hub.stats())
            info = hub.info
            camera["stream"] = stats
            camera["video"] = (
                {
                    "codec": info.video_codec,
                    "width": info.width,
                    "height": info.height,
                    "fps": info.fps,
                    "audio_codec": info.audio_codec,
                }
                if info
                else None
            )
        cameras[camera_id] = camera
    return {
        "entry": {"data": _redact(entry.data), "options": _redact(entry.options)},
        "engine": {"name": engine.name, "configured": runtime.options.engine},
        "cameras": cameras,
    }
