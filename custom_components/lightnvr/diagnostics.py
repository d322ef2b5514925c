"""Diagnostics: settings and live counters, with every secret removed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant

from .const import (
    CONF_GO2RTC_URL,
    CONF_OBJECT_API_KEY,
    CONF_OBJECT_URL,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_URL,
)
from .engine.go2rtc import Go2RtcEngine
from .runtime import LightNvrConfigEntry
from .source import redact_url

TO_REDACT = {CONF_PASSWORD, CONF_USERNAME, CONF_OBJECT_API_KEY}
URL_KEYS = (CONF_STREAM_URL, CONF_SUBSTREAM_URL, CONF_GO2RTC_URL, CONF_OBJECT_URL)


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
            camera["live_view"] = engine.live_view_path(camera_id)
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
        if (recording := runtime.recorder.camera_state(camera_id)) is not None:
            camera["recording"] = {
                "enabled": recording.enabled,
                "recording": recording.recording,
                "paused_reason": recording.pause_reason if recording.paused else None,
                "segments_written": recording.segments_written,
                "timestamp_repairs": recording.timestamp_repairs,
                "dropped_packets": recording.dropped_packets,
                "last_error": recording.last_error,
            }
        if (pipeline := runtime.detection.get(camera_id)) is not None:
            camera["detection"] = asdict(pipeline.stats())
        cameras[camera_id] = camera
    return {
        "entry": {"data": _redact(entry.data), "options": _redact(entry.options)},
        "engine": {
            "name": engine.name,
            "configured": runtime.options.engine,
            **({"go2rtc": asdict(engine.health)} if isinstance(engine, Go2RtcEngine) else {}),
        },
        "cameras": cameras,
        "storage": {
            key: value
            for key, value in asdict(runtime.recorder.storage_status()).items()
            if key != "path"  # a path of this machine says nothing useful and may say too much
        },
    }
