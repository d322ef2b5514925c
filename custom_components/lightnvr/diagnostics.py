"""Diagnostics: settings and live counters, with every secret removed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant

from .const import CONF_OBJECT_API_KEY, CONF_SUBSTREAM_PASSWORD, CONF_SUBSTREAM_USERNAME
from .engine.go2rtc import Go2RtcEngine
from .runtime import LightNvrConfigEntry
from .source import Redactor

TO_REDACT = {
    CONF_PASSWORD,
    CONF_USERNAME,
    CONF_OBJECT_API_KEY,
    CONF_SUBSTREAM_PASSWORD,
    CONF_SUBSTREAM_USERNAME,
}
# Values hidden wherever they show up, not only under their own key (usernames are no secret).
SECRET_KEYS = (CONF_PASSWORD, CONF_OBJECT_API_KEY, CONF_SUBSTREAM_PASSWORD)


def _redact(data: Any) -> dict[str, Any]:
    return async_redact_data(dict(data), TO_REDACT)


def _redactor(entry: LightNvrConfigEntry) -> Redactor:
    """Return a Redactor that knows every password and key of the hub and its cameras."""
    redactor = Redactor()
    settings = (entry.data, entry.options, *(sub.data for sub in entry.subentries.values()))
    for data in settings:
        redactor.add(*(value for key in SECRET_KEYS if isinstance(value := data.get(key), str)))
    return redactor


def _scrub(value: Any, redact: Redactor) -> Any:
    """Redact every string of a diagnostics tree (dict keys are our own names and ids)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: _scrub(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, redact) for item in value]
    return value


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
            camera["engine"] = engine.engine_name(camera_id)
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
        if (fragments := runtime.fragments.get(camera_id)) is not None:
            camera["muxer"] = asdict(fragments.stats())
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
    # Every string goes through the one redaction, URLs in settings as much as error texts
    # (recorder, go2rtc and detection errors may quote a URL or an answer that holds a secret).
    diagnostics = {
        "entry": {"data": _redact(entry.data), "options": _redact(entry.options)},
        "engine": {
            "name": engine.name,
            "configured": runtime.options.engine,
            **(
                {"go2rtc": asdict(engine.default.health)}
                if isinstance(engine.default, Go2RtcEngine)
                else {}
            ),
            # Cameras' own go2rtc servers, if any (URLs without login; _scrub redacts anyway).
            **(
                {
                    "camera_go2rtc": [
                        {
                            "url": own.url,
                            "cameras": list(own.camera_ids),
                            "go2rtc": asdict(own.health),
                        }
                        for own in own_engines
                    ]
                }
                if (own_engines := engine.camera_engines())
                else {}
            ),
        },
        "cameras": cameras,
        "storage": {
            key: value
            for key, value in asdict(runtime.recorder.storage_status()).items()
            if key != "path"  # a path of this machine says nothing useful and may say too much
        },
    }
    scrubbed: dict[str, Any] = _scrub(diagnostics, _redactor(entry))
    return scrubbed
