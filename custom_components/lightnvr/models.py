"""Plain configuration objects built from the hub entry and its camera subentries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME

from .const import (
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
    CONF_ONVIF_FIRMWARE,
    CONF_ONVIF_HOST,
    CONF_ONVIF_MANUFACTURER,
    CONF_ONVIF_MODEL,
    CONF_ONVIF_PORT,
    CONF_ONVIF_PROFILE,
    CONF_ONVIF_PTZ,
    CONF_ONVIF_SERIAL,
    CONF_ONVIF_SUB_PROFILE,
    CONF_RECORD,
    CONF_RETENTION_DAYS,
    CONF_SEGMENT_SECONDS,
    CONF_STORAGE_PATH,
    CONF_STREAM_URL,
    CONF_SUBSTREAM_PASSWORD,
    CONF_SUBSTREAM_URL,
    CONF_SUBSTREAM_USERNAME,
    CONF_TRANSCODE_FULL_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_EVENT_RETENTION_DAYS,
    DEFAULT_MAX_STORAGE_GB,
    DEFAULT_MAX_VIEWERS,
    DEFAULT_MAX_VIEWERS_PER_CAMERA,
    DEFAULT_MIN_FREE_GB,
    DEFAULT_MOTION_MIN_AREA,
    DEFAULT_MOTION_OFF_DELAY,
    DEFAULT_MOTION_SENSITIVITY,
    DEFAULT_OBJECT_LABELS,
    DEFAULT_OBJECT_MIN_CONFIDENCE,
    DEFAULT_ONVIF_PORT,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_SEGMENT_SECONDS,
)
from .detection import Box
from .reachability import camera_address
from .source import CameraSource, redacted_repr


@dataclass(frozen=True, slots=True)
class OnvifAccess:
    """How a camera added through ONVIF is reached again (its login is the camera's own)."""

    host: str
    port: int
    main_profile: str  # media profile token of the recorded stream
    sub_profile: str | None = None  # media profile token of the sub-stream
    ptz: bool = False  # the main profile has a PTZ configuration
    # What the camera says of itself (GetDeviceInformation): the HA device's fields.
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None

    @classmethod
    def from_subentry(cls, data: Mapping[str, Any]) -> OnvifAccess | None:
        """Build from subentry data; None for a camera added by its stream URL."""
        host = str(data.get(CONF_ONVIF_HOST) or "").strip()
        if not host or not data.get(CONF_ONVIF_PROFILE):
            return None
        return cls(
            host=host,
            port=int(data.get(CONF_ONVIF_PORT) or DEFAULT_ONVIF_PORT),
            main_profile=str(data[CONF_ONVIF_PROFILE]),
            sub_profile=str(data.get(CONF_ONVIF_SUB_PROFILE) or "") or None,
            ptz=bool(data.get(CONF_ONVIF_PTZ, False)),
            manufacturer=data.get(CONF_ONVIF_MANUFACTURER) or None,
            model=data.get(CONF_ONVIF_MODEL) or None,
            serial=data.get(CONF_ONVIF_SERIAL) or None,
            firmware=data.get(CONF_ONVIF_FIRMWARE) or None,
        )


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
    motion_sensitivity: int = DEFAULT_MOTION_SENSITIVITY  # 1..100
    motion_min_area: float = DEFAULT_MOTION_MIN_AREA  # percent of the picture
    motion_off_delay: float = DEFAULT_MOTION_OFF_DELAY  # seconds
    exclude_zones: tuple[Box, ...] = ()
    # Decode only keyframes for detection: ~10x cheaper on a big main stream, 1 fps at most.
    detect_keyframes_only: bool = False
    # A live view that must be transcoded (H.265 camera, viewer without H.265, no H.264
    # sub-stream) keeps the camera's size instead of at most 1280 px wide: sharper, more CPU.
    transcode_full_size: bool = False
    # The camera's own go2rtc server (may hold a login): None → the hub's stream engine.
    go2rtc_url: str | None = None
    # Set for cameras added through ONVIF: their streams can be asked for again, PTZ used.
    onvif: OnvifAccess | None = None

    def __repr__(self) -> str:
        """Return a repr fit for logs: the go2rtc URL may hold a login."""
        return redacted_repr(self)

    @classmethod
    def from_subentry(cls, subentry_id: str, data: Mapping[str, Any]) -> CameraConfig:
        """Build from subentry data."""
        username = data.get(CONF_USERNAME) or None
        password = data.get(CONF_PASSWORD) or None
        substream_url = data.get(CONF_SUBSTREAM_URL) or None
        substream = None
        if substream_url:
            # Its own login if one was given; else the main stream's, for the same host only.
            if data.get(CONF_SUBSTREAM_USERNAME):
                substream = CameraSource(
                    substream_url,
                    data[CONF_SUBSTREAM_USERNAME],
                    data.get(CONF_SUBSTREAM_PASSWORD) or None,
                )
            elif camera_address(substream_url) == camera_address(data[CONF_STREAM_URL]):
                substream = CameraSource(substream_url, username, password)
            else:
                substream = CameraSource(substream_url)
        return cls(
            camera_id=subentry_id,
            name=data[CONF_NAME],
            source=CameraSource(data[CONF_STREAM_URL], username, password),
            substream=substream,
            record=bool(data.get(CONF_RECORD, True)),
            detect_motion=bool(data.get(CONF_DETECT_MOTION, False)),
            retention_days=(
                float(data[CONF_CAMERA_RETENTION_DAYS])
                if data.get(CONF_CAMERA_RETENTION_DAYS)
                else None
            ),
            motion_sensitivity=int(data.get(CONF_MOTION_SENSITIVITY, DEFAULT_MOTION_SENSITIVITY)),
            motion_min_area=float(data.get(CONF_MOTION_MIN_AREA, DEFAULT_MOTION_MIN_AREA)),
            motion_off_delay=float(data.get(CONF_MOTION_OFF_DELAY, DEFAULT_MOTION_OFF_DELAY)),
            exclude_zones=parse_zones(data.get(CONF_EXCLUDE_ZONES)),
            detect_keyframes_only=bool(data.get(CONF_DETECT_KEYFRAMES_ONLY, False)),
            transcode_full_size=bool(data.get(CONF_TRANSCODE_FULL_SIZE, False)),
            go2rtc_url=str(data.get(CONF_CAMERA_GO2RTC_URL) or "").strip() or None,
            onvif=OnvifAccess.from_subentry(data),
        )


@dataclass(frozen=True, slots=True)
class ViewerLimits:
    """How many live view sessions may be open at once, per camera and in all."""

    per_camera: int = DEFAULT_MAX_VIEWERS_PER_CAMERA
    total: int = DEFAULT_MAX_VIEWERS

    def refusal(self, camera_sessions: int, all_sessions: int) -> str | None:
        """Return why one more viewer cannot be served, None when it can."""
        if all_sessions >= self.total:
            return f"Too many live views: {self.total} are open, the limit in LightNVR's options"
        if camera_sessions >= self.per_camera:
            return (
                f"Too many live views of this camera: {self.per_camera} are open, the limit "
                "in LightNVR's options"
            )
        return None


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
    object_url: str | None = None  # DeepStack / CodeProject.AI compatible server
    object_api_key: str | None = field(default=None, repr=False)
    object_labels: tuple[str, ...] = DEFAULT_OBJECT_LABELS
    object_min_confidence: float = DEFAULT_OBJECT_MIN_CONFIDENCE
    object_only_while_motion: bool = True
    event_clips: bool = True
    event_retention_days: int = DEFAULT_EVENT_RETENTION_DAYS
    # go2rtc's WebRTC port on every interface, so viewers on other machines can connect.
    go2rtc_webrtc_lan: bool = True
    go2rtc_webrtc_port: int | None = None
    go2rtc_candidates: tuple[str, ...] = ()
    viewer_limits: ViewerLimits = field(default_factory=ViewerLimits)
    # Archive tier: None → no archive. Every 0 below means "off" or "no limit".
    archive_path: Path | None = None
    archive_after_days: float = 0.0  # move recordings older than this many days
    archive_at_percent: int = 0  # move the oldest when storage passes this % of max_storage_gb
    archive_max_mbps: float = 0.0  # the mover's bandwidth limit in MB/s
    archive_retention_days: float = 0.0  # 0: the camera's / hub's retention applies in the archive
    archive_max_gb: float = 0.0  # cap on the archive's size

    def __repr__(self) -> str:
        """Return a repr fit for logs: the go2rtc and detection server URLs may hold logins."""
        return redacted_repr(self)

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
            object_url=merged.get(CONF_OBJECT_URL) or None,
            object_api_key=merged.get(CONF_OBJECT_API_KEY) or None,
            object_labels=tuple(merged.get(CONF_OBJECT_LABELS, DEFAULT_OBJECT_LABELS)),
            object_min_confidence=float(
                merged.get(CONF_OBJECT_MIN_CONFIDENCE, DEFAULT_OBJECT_MIN_CONFIDENCE)
            ),
            object_only_while_motion=bool(merged.get(CONF_OBJECT_ONLY_WHILE_MOTION, True)),
            event_clips=bool(merged.get(CONF_EVENT_CLIPS, True)),
            go2rtc_webrtc_lan=bool(merged.get(CONF_GO2RTC_WEBRTC_LAN, True)),
            go2rtc_webrtc_port=int(merged[CONF_GO2RTC_WEBRTC_PORT])
            if merged.get(CONF_GO2RTC_WEBRTC_PORT)
            else None,
            go2rtc_candidates=tuple(
                c.strip()
                for c in str(merged.get(CONF_GO2RTC_CANDIDATES) or "").split(",")
                if c.strip()
            ),
            event_retention_days=int(
                merged.get(CONF_EVENT_RETENTION_DAYS, DEFAULT_EVENT_RETENTION_DAYS)
            ),
            viewer_limits=ViewerLimits(
                per_camera=int(
                    merged.get(CONF_MAX_VIEWERS_PER_CAMERA, DEFAULT_MAX_VIEWERS_PER_CAMERA)
                ),
                total=int(merged.get(CONF_MAX_VIEWERS, DEFAULT_MAX_VIEWERS)),
            ),
            archive_path=(
                Path(merged[CONF_ARCHIVE_PATH]) if merged.get(CONF_ARCHIVE_PATH) else None
            ),
            archive_after_days=float(merged.get(CONF_ARCHIVE_AFTER_DAYS) or 0),
            archive_at_percent=int(merged.get(CONF_ARCHIVE_AT_PERCENT) or 0),
            archive_max_mbps=float(merged.get(CONF_ARCHIVE_MAX_MBPS) or 0),
            archive_retention_days=float(merged.get(CONF_ARCHIVE_RETENTION_DAYS) or 0),
            archive_max_gb=float(merged.get(CONF_ARCHIVE_MAX_GB) or 0),
        )


def parse_zones(text: str | None) -> tuple[Box, ...]:
    """Parse exclusion zones written as `x1,y1,x2,y2; …` in 0..1 of the picture.

    Raises ValueError with a readable message on anything else.
    """
    zones: list[Box] = []
    for part in (text or "").replace("\n", ";").split(";"):
        if not part.strip():
            continue
        try:
            values = [float(v) for v in part.split(",")]
        except ValueError as err:
            raise ValueError(f"not numbers: {part.strip()!r}") from err
        if len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"need four numbers from 0 to 1: {part.strip()!r}")
        x1, y1, x2, y2 = values
        if x1 == x2 or y1 == y2:
            raise ValueError(f"empty zone: {part.strip()!r}")
        zones.append(Box.clamped(x1, y1, x2, y2))
    return tuple(zones)
