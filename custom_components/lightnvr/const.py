"""Constants shared across the LightNVR integration."""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "lightnvr"
MANUFACTURER: Final = "LightNVR"

# Hub entry options.
CONF_ENGINE: Final = "engine"
CONF_GO2RTC_BINARY: Final = "go2rtc_binary"
CONF_GO2RTC_URL: Final = "go2rtc_url"
CONF_STORAGE_PATH: Final = "storage_path"
CONF_RETENTION_DAYS: Final = "retention_days"
CONF_MIN_FREE_GB: Final = "min_free_gb"
CONF_MAX_STORAGE_GB: Final = "max_storage_gb"
CONF_GO2RTC_WEBRTC_LAN: Final = "go2rtc_webrtc_lan"
CONF_GO2RTC_WEBRTC_PORT: Final = "go2rtc_webrtc_port"
CONF_GO2RTC_CANDIDATES: Final = "go2rtc_candidates"
CONF_SEGMENT_SECONDS: Final = "segment_seconds"

ENGINE_AUTO: Final = "auto"
ENGINE_EMBEDDED: Final = "embedded"
ENGINE_GO2RTC: Final = "go2rtc"
ENGINE_EXTERNAL: Final = "external"
ENGINES: Final = (ENGINE_AUTO, ENGINE_EMBEDDED, ENGINE_GO2RTC, ENGINE_EXTERNAL)

DEFAULT_ENGINE: Final = ENGINE_AUTO
DEFAULT_STORAGE_DIR: Final = "lightnvr"
DEFAULT_RETENTION_DAYS: Final = 7
DEFAULT_MIN_FREE_GB: Final = 2.0
DEFAULT_MAX_STORAGE_GB: Final = 0.0  # no cap: age and free space rule
DEFAULT_SEGMENT_SECONDS: Final = 60

# Archive tier (hub options): older recordings move from the storage folder to a second,
# bigger/slower one (a NAS mount). Every 0 means "off" / "no limit"; no path means no archive.
CONF_ARCHIVE_PATH: Final = "archive_path"
CONF_ARCHIVE_AFTER_DAYS: Final = "archive_after_days"  # move recordings older than this
CONF_ARCHIVE_AT_PERCENT: Final = "archive_at_percent"  # move when storage passes % of its cap
CONF_ARCHIVE_MAX_MBPS: Final = "archive_max_mbps"  # the mover's bandwidth limit, MB/s
CONF_ARCHIVE_RETENTION_DAYS: Final = "archive_retention_days"  # 0: the camera/hub retention
CONF_ARCHIVE_MAX_GB: Final = "archive_max_gb"  # cap on the archive's size

# Object detection (hub options) and event clips.
CONF_OBJECT_URL: Final = "object_url"
CONF_OBJECT_API_KEY: Final = "object_api_key"
CONF_OBJECT_LABELS: Final = "object_labels"
CONF_OBJECT_MIN_CONFIDENCE: Final = "object_min_confidence"
CONF_OBJECT_ONLY_WHILE_MOTION: Final = "object_only_while_motion"
CONF_EVENT_CLIPS: Final = "event_clips"
CONF_EVENT_RETENTION_DAYS: Final = "event_retention_days"
DEFAULT_OBJECT_LABELS: Final = ("person",)
COMMON_OBJECT_LABELS: Final = (
    "person", "car", "truck", "bicycle", "motorcycle", "bus", "dog", "cat", "bird", "horse",
)  # fmt: skip
DEFAULT_OBJECT_MIN_CONFIDENCE: Final = 0.6
DEFAULT_EVENT_RETENTION_DAYS: Final = 30

EVENT_DETECTION: Final = "lightnvr_detection"
# Fired once the event clip of a detection is finished (same `event_id` as its detection).
EVENT_CLIP_READY: Final = "lightnvr_clip_ready"
LABEL_MOTION: Final = "motion"

# Camera subentries.
SUBENTRY_CAMERA: Final = "camera"
CONF_STREAM_URL: Final = "stream_url"
CONF_SUBSTREAM_URL: Final = "substream_url"
# A sub-stream's own login (often the same camera: then the main stream's is used).
CONF_SUBSTREAM_USERNAME: Final = "substream_username"
CONF_SUBSTREAM_PASSWORD: Final = "substream_password"  # noqa: S105 - a key, not a password
CONF_RECORD: Final = "record"
CONF_DETECT_MOTION: Final = "detect_motion"
CONF_CAMERA_RETENTION_DAYS: Final = "retention_days"  # per-camera override of the hub's days
CONF_MOTION_SENSITIVITY: Final = "motion_sensitivity"
CONF_MOTION_MIN_AREA: Final = "motion_min_area"  # percent of the picture
CONF_MOTION_OFF_DELAY: Final = "motion_off_delay"
CONF_EXCLUDE_ZONES: Final = "exclude_zones"
CONF_DETECT_KEYFRAMES_ONLY: Final = "detect_keyframes_only"
CONF_TRANSCODE_FULL_SIZE: Final = "transcode_full_size"
# A go2rtc server of the camera's own, instead of the hub's stream engine (same key as the hub's).
CONF_CAMERA_GO2RTC_URL: Final = "go2rtc_url"
# Cameras added through ONVIF: where the camera answers, and its chosen media profiles.
CONF_ONVIF_HOST: Final = "onvif_host"
CONF_ONVIF_PORT: Final = "onvif_port"
CONF_ONVIF_PROFILE: Final = "onvif_profile"  # token of the main (recorded) profile
CONF_ONVIF_SUB_PROFILE: Final = "onvif_sub_profile"  # token of the sub-stream profile
CONF_ONVIF_PTZ: Final = "onvif_ptz"  # the main profile can pan, tilt or zoom
CONF_ONVIF_MANUFACTURER: Final = "onvif_manufacturer"
CONF_ONVIF_MODEL: Final = "onvif_model"
CONF_ONVIF_SERIAL: Final = "onvif_serial"
CONF_ONVIF_FIRMWARE: Final = "onvif_firmware"
CONF_ONVIF_SNAPSHOT_URI: Final = "onvif_snapshot_uri"
DEFAULT_ONVIF_PORT: Final = 80
DEFAULT_MOTION_SENSITIVITY: Final = 50
DEFAULT_MOTION_MIN_AREA: Final = 0.5
DEFAULT_MOTION_OFF_DELAY: Final = 5

# Source probing (config flow) limits, in seconds.
PROBE_TIMEOUT: Final = 15.0

# Stream hub tuning.
HUB_OPEN_TIMEOUT: Final = 10.0
HUB_READ_TIMEOUT: Final = 5.0
HUB_BACKOFF_INITIAL: Final = 1.0
HUB_BACKOFF_MAX: Final = 60.0

# Live view sessions open at once (either engine); offers past a limit get a clear error. A
# dashboard opens one per camera card, so a household's tablets and phones stay well below.
CONF_MAX_VIEWERS_PER_CAMERA: Final = "max_viewers_per_camera"
CONF_MAX_VIEWERS: Final = "max_viewers"
DEFAULT_MAX_VIEWERS_PER_CAMERA: Final = 10
DEFAULT_MAX_VIEWERS: Final = 50
# A viewer whose connection is not up by then is closed (its sockets and timers freed): an
# offer that never sends candidates, a browser tab closed mid-negotiation.
VIEWER_CONNECT_TIMEOUT: Final = 30.0

# How long a decoded snapshot may be reused before decoding a newer keyframe.
SNAPSHOT_CACHE_SECONDS: Final = 2.0
