"""The forms of the config flow: the hub's settings and a camera's (`config_flow.py`)."""

from __future__ import annotations

from typing import Any

from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME
from homeassistant.helpers import selector
import voluptuous as vol

from .const import (
    COMMON_OBJECT_LABELS,
    CONF_ARCHIVE_AFTER_DAYS,
    CONF_ARCHIVE_AT_PERCENT,
    CONF_ARCHIVE_MAX_GB,
    CONF_ARCHIVE_MAX_MBPS,
    CONF_ARCHIVE_PATH,
    CONF_ARCHIVE_RETENTION_DAYS,
    CONF_CAMERA_GO2RTC_URL,
    CONF_CAMERA_RETENTION_DAYS,
    CONF_DETECT_KEYFRAMES_ONLY,
    CONF_DETECT_MOTION,
    CONF_ENGINE,
    CONF_EVENT_CLIPS,
    CONF_EVENT_RETENTION_DAYS,
    CONF_EXCLUDE_ZONES,
    CONF_GO2RTC_BINARY,
    CONF_GO2RTC_CANDIDATES,
    CONF_GO2RTC_URL,
    CONF_GO2RTC_WEBRTC_LAN,
    CONF_GO2RTC_WEBRTC_PORT,
    CONF_MAX_STORAGE_GB,
    CONF_MAX_VIEWERS,
    CONF_MAX_VIEWERS_PER_CAMERA,
    CONF_MIN_FREE_GB,
    CONF_MOTION_MIN_AREA,
    CONF_MOTION_OFF_DELAY,
    CONF_MOTION_SENSITIVITY,
    CONF_OBJECT_API_KEY,
    CONF_OBJECT_LABELS,
    CONF_OBJECT_MIN_CONFIDENCE,
    CONF_OBJECT_ONLY_WHILE_MOTION,
    CONF_OBJECT_URL,
    CONF_RECORD,
    CONF_RETENTION_DAYS,
    CONF_SEGMENT_SECONDS,
    CONF_STORAGE_PATH,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_URL,
    CONF_TRANSCODE_FULL_SIZE,
    DEFAULT_EVENT_RETENTION_DAYS,
    DEFAULT_MAX_STORAGE_GB,
    DEFAULT_MAX_VIEWERS,
    DEFAULT_MAX_VIEWERS_PER_CAMERA,
    DEFAULT_MOTION_MIN_AREA,
    DEFAULT_MOTION_OFF_DELAY,
    DEFAULT_MOTION_SENSITIVITY,
    DEFAULT_OBJECT_LABELS,
    DEFAULT_OBJECT_MIN_CONFIDENCE,
    DEFAULT_SEGMENT_SECONDS,
    ENGINES,
)


def box(low: float, high: float, step: float, unit: str) -> selector.NumberSelector:
    """Return a number box from `low` to `high` in `unit`."""
    return selector.NumberSelector(
        selector.NumberSelectorConfig(
            min=low,
            max=high,
            step=step,
            unit_of_measurement=unit,
            mode=selector.NumberSelectorMode.BOX,
        )
    )


def hub_schema(defaults: dict[str, Any]) -> vol.Schema:
    """Return the hub's form (setup and options), filled with `defaults`."""
    return vol.Schema(
        {
            vol.Required(CONF_ENGINE, default=defaults[CONF_ENGINE]): selector.SelectSelector(
                selector.SelectSelectorConfig(
                    options=list(ENGINES),
                    translation_key=CONF_ENGINE,
                    mode=selector.SelectSelectorMode.DROPDOWN,
                )
            ),
            vol.Optional(
                CONF_GO2RTC_BINARY,
                description={"suggested_value": defaults.get(CONF_GO2RTC_BINARY)},
            ): selector.TextSelector(),
            vol.Optional(
                CONF_GO2RTC_URL, description={"suggested_value": defaults.get(CONF_GO2RTC_URL)}
            ): selector.TextSelector(
                selector.TextSelectorConfig(type=selector.TextSelectorType.URL)
            ),
            vol.Required(
                CONF_GO2RTC_WEBRTC_LAN, default=defaults.get(CONF_GO2RTC_WEBRTC_LAN, True)
            ): bool,
            vol.Optional(
                CONF_GO2RTC_WEBRTC_PORT,
                description={"suggested_value": defaults.get(CONF_GO2RTC_WEBRTC_PORT)},
            ): box(1024, 65535, 1, ""),
            vol.Optional(
                CONF_GO2RTC_CANDIDATES,
                description={"suggested_value": defaults.get(CONF_GO2RTC_CANDIDATES)},
            ): str,
            vol.Required(CONF_STORAGE_PATH, default=defaults[CONF_STORAGE_PATH]): str,
            vol.Required(
                CONF_RETENTION_DAYS, default=defaults[CONF_RETENTION_DAYS]
            ): selector.NumberSelector(
                selector.NumberSelectorConfig(
                    min=1,
                    max=3650,
                    step=1,
                    unit_of_measurement="d",
                    mode=selector.NumberSelectorMode.BOX,
                )
            ),
            vol.Required(
                CONF_MIN_FREE_GB, default=defaults[CONF_MIN_FREE_GB]
            ): selector.NumberSelector(
                selector.NumberSelectorConfig(
                    min=0,
                    max=100000,
                    step=0.5,
                    unit_of_measurement="GB",
                    mode=selector.NumberSelectorMode.BOX,
                )
            ),
            vol.Required(
                CONF_MAX_STORAGE_GB,
                default=defaults.get(CONF_MAX_STORAGE_GB, DEFAULT_MAX_STORAGE_GB),
            ): box(0, 1000000, 1, "GB"),
            vol.Required(
                CONF_SEGMENT_SECONDS,
                default=defaults.get(CONF_SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS),
            ): box(10, 600, 1, "s"),
            vol.Optional(
                CONF_ARCHIVE_PATH, description={"suggested_value": defaults.get(CONF_ARCHIVE_PATH)}
            ): selector.TextSelector(),
            vol.Required(
                CONF_ARCHIVE_AFTER_DAYS, default=defaults.get(CONF_ARCHIVE_AFTER_DAYS, 0)
            ): box(0, 3650, 1, "d"),
            vol.Required(
                CONF_ARCHIVE_AT_PERCENT, default=defaults.get(CONF_ARCHIVE_AT_PERCENT, 0)
            ): box(0, 99, 1, "%"),
            vol.Required(
                CONF_ARCHIVE_MAX_MBPS, default=defaults.get(CONF_ARCHIVE_MAX_MBPS, 0)
            ): box(0, 10000, 0.5, "MB/s"),
            vol.Required(
                CONF_ARCHIVE_RETENTION_DAYS, default=defaults.get(CONF_ARCHIVE_RETENTION_DAYS, 0)
            ): box(0, 3650, 1, "d"),
            vol.Required(CONF_ARCHIVE_MAX_GB, default=defaults.get(CONF_ARCHIVE_MAX_GB, 0)): box(
                0, 1000000, 1, "GB"
            ),
            vol.Optional(
                CONF_OBJECT_URL, description={"suggested_value": defaults.get(CONF_OBJECT_URL)}
            ): selector.TextSelector(
                selector.TextSelectorConfig(type=selector.TextSelectorType.URL)
            ),
            vol.Optional(CONF_OBJECT_API_KEY): selector.TextSelector(
                selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
            ),
            vol.Required(
                CONF_OBJECT_LABELS,
                default=list(defaults.get(CONF_OBJECT_LABELS, DEFAULT_OBJECT_LABELS)),
            ): selector.SelectSelector(
                selector.SelectSelectorConfig(
                    options=list(COMMON_OBJECT_LABELS), multiple=True, custom_value=True
                )
            ),
            vol.Required(
                CONF_OBJECT_MIN_CONFIDENCE,
                default=defaults.get(CONF_OBJECT_MIN_CONFIDENCE, DEFAULT_OBJECT_MIN_CONFIDENCE),
            ): selector.NumberSelector(
                selector.NumberSelectorConfig(
                    min=0.1, max=1.0, step=0.05, mode=selector.NumberSelectorMode.SLIDER
                )
            ),
            vol.Required(
                CONF_OBJECT_ONLY_WHILE_MOTION,
                default=defaults.get(CONF_OBJECT_ONLY_WHILE_MOTION, True),
            ): bool,
            vol.Required(CONF_EVENT_CLIPS, default=defaults.get(CONF_EVENT_CLIPS, True)): bool,
            vol.Required(
                CONF_EVENT_RETENTION_DAYS,
                default=defaults.get(CONF_EVENT_RETENTION_DAYS, DEFAULT_EVENT_RETENTION_DAYS),
            ): box(1, 3650, 1, "d"),
            vol.Required(
                CONF_MAX_VIEWERS_PER_CAMERA,
                default=defaults.get(CONF_MAX_VIEWERS_PER_CAMERA, DEFAULT_MAX_VIEWERS_PER_CAMERA),
            ): box(1, 100, 1, ""),
            vol.Required(
                CONF_MAX_VIEWERS, default=defaults.get(CONF_MAX_VIEWERS, DEFAULT_MAX_VIEWERS)
            ): box(1, 500, 1, ""),
        }
    )


def camera_schema(defaults: dict[str, Any]) -> vol.Schema:
    """Return a camera's stream URL form (add and reconfigure), filled with `defaults`."""

    def suggested(key: str) -> dict[str, Any]:
        return {"suggested_value": defaults.get(key)}

    return vol.Schema(
        {
            vol.Required(CONF_NAME, description=suggested(CONF_NAME)): str,
            vol.Required(CONF_STREAM_URL, description=suggested(CONF_STREAM_URL)): str,
            vol.Optional(CONF_SUBSTREAM_URL, description=suggested(CONF_SUBSTREAM_URL)): str,
            vol.Optional(CONF_USERNAME, description=suggested(CONF_USERNAME)): str,
            vol.Optional(CONF_PASSWORD): selector.TextSelector(
                selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
            ),
            vol.Required(CONF_RECORD, default=defaults.get(CONF_RECORD, True)): bool,
            vol.Required(CONF_DETECT_MOTION, default=defaults.get(CONF_DETECT_MOTION, False)): bool,
            vol.Optional(
                CONF_CAMERA_RETENTION_DAYS, description=suggested(CONF_CAMERA_RETENTION_DAYS)
            ): box(1, 3650, 1, "d"),
            vol.Required(
                CONF_MOTION_SENSITIVITY,
                default=defaults.get(CONF_MOTION_SENSITIVITY, DEFAULT_MOTION_SENSITIVITY),
            ): selector.NumberSelector(
                selector.NumberSelectorConfig(
                    min=1, max=100, step=1, mode=selector.NumberSelectorMode.SLIDER
                )
            ),
            vol.Required(
                CONF_MOTION_MIN_AREA,
                default=defaults.get(CONF_MOTION_MIN_AREA, DEFAULT_MOTION_MIN_AREA),
            ): box(0.01, 50, 0.01, "%"),
            vol.Required(
                CONF_MOTION_OFF_DELAY,
                default=defaults.get(CONF_MOTION_OFF_DELAY, DEFAULT_MOTION_OFF_DELAY),
            ): box(0, 3600, 1, "s"),
            vol.Optional(
                CONF_EXCLUDE_ZONES, description=suggested(CONF_EXCLUDE_ZONES)
            ): selector.TextSelector(selector.TextSelectorConfig(multiline=True)),
            vol.Required(
                CONF_DETECT_KEYFRAMES_ONLY,
                default=defaults.get(CONF_DETECT_KEYFRAMES_ONLY, False),
            ): bool,
            vol.Required(
                CONF_TRANSCODE_FULL_SIZE,
                default=defaults.get(CONF_TRANSCODE_FULL_SIZE, False),
            ): bool,
            vol.Optional(
                CONF_CAMERA_GO2RTC_URL, description=suggested(CONF_CAMERA_GO2RTC_URL)
            ): selector.TextSelector(
                selector.TextSelectorConfig(type=selector.TextSelectorType.URL)
            ),
        }
    )
