"""Plain configuration objects built from the hub entry and its camera subentries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME

from .const import (
    CONF_CAMERA_RETENTION_DAYS,
    CONF_DETECT_MOTION,
    CONF_ENGINE,
    CONF_GO2RTC_BINARY,
    CONF_GO2RTC_URL,
    CONF_MAX_STORAGE_GB,
    CONF_MIN_FREE_GB,
    CONF_RECORD,
    CONF_RETENTION_DAYS,
    CONF_SEGMENT_SECONDS,
    CONF_STORAGE_PATH,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_URL,
    DEFAULT_ENGINE,
    DEFAULT_MAX_STORAGE_GB,
    DEFAULT_MIN_FREE_GB,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_SEGMENT_SECONDS,
)
from .source import CameraSource


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """One camera, from its subentry. `camera_id` is the subentry id (stable across renames)."""

    camera_id: str
    name: str
    source: CameraSource
    substream: CameraSource | None
    record: bool
    detect_motion: bool
    retention_days: float | None = None  # overrides the hub's retention for this camera

    @classmethod
    def from_subentry(cls, subentry_id: str, data: Mapping[str, Any]) -> CameraConfig:
        """Build from subentry data."""
        username = data.get(CONF_USERNAME) or None
        password = data.get(CONF_PASSWORD) or None
        substream_url = data.get(CONF_SUBSTREAM_URL) or None
        return cls(
            camera_id=subentry_id,
            name=data[CONF_NAME],
            source=CameraSource(data[CONF_STREAM_URL], username, password),
            substream=(CameraSource(substream_url, username, password) if substream_url else None),
            record=bool(data.get(CONF_RECORD, True)),
            detect_motion=bool(data.get(CONF_DETECT_MOTION, False)),
            retention_days=(
                float(data[CONF_CAMERA_RETENTION_DAYS])
                if data.get(CONF_CAMERA_RETENTION_DAYS)
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class HubOptions:
    """Hub-wide settings (entry data overridden by entry options)."""

    engine: str
    go2rtc_binary: str | None
    go2rtc_url: str | None
    storage_path: Path
    retention_days: int
    min_free_gb: float
    max_storage_gb: float = DEFAULT_MAX_STORAGE_GB  # 0: no cap
    segment_seconds: int = DEFAULT_SEGMENT_SECONDS

    @classmethod
    def from_entry(cls, data: Mapping[str, Any], options: Mapping[str, Any]) -> HubOptions:
        """Build from the hub entry."""
        merged = {**data, **options}
        return cls(
            engine=merged.get(CONF_ENGINE, DEFAULT_ENGINE),
            go2rtc_binary=merged.get(CONF_GO2RTC_BINARY) or None,
            go2rtc_url=merged.get(CONF_GO2RTC_URL) or None,
            storage_path=Path(merged[CONF_STORAGE_PATH]),
            retention_days=int(merged.get(CONF_RETENTION_DAYS, DEFAULT_RETENTION_DAYS)),
            min_free_gb=float(merged.get(CONF_MIN_FREE_GB, DEFAULT_MIN_FREE_GB)),
            max_storage_gb=float(merged.get(CONF_MAX_STORAGE_GB, DEFAULT_MAX_STORAGE_GB)),
            segment_seconds=int(merged.get(CONF_SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS)),
        )
