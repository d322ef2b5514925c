"""Config flow: one LightNVR hub, one subentry per camera."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
import tempfile
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_NAME, CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from .camera_flow_onvif import OnvifCameraSteps
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
    CONF_EVENT_RETENTION_DAYS,
    CONF_EXCLUDE_ZONES,
    CONF_GO2RTC_BINARY,
    CONF_GO2RTC_CANDIDATES,
    CONF_GO2RTC_URL,
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
    CONF_OBJECT_URL,
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
    DEFAULT_OBJECT_MIN_CONFIDENCE,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_SEGMENT_SECONDS,
    DEFAULT_STORAGE_DIR,
    DOMAIN,
    ENGINE_AUTO,
    ENGINE_EXTERNAL,
    ENGINE_GO2RTC,
    PROBE_TIMEOUT,
    SUBENTRY_CAMERA,
)
from .engine.go2rtc import async_find_usable_binary
from .flow_schemas import camera_schema, hub_schema
from .models import parse_zones
from .reachability import camera_address
from .source import (
    REASON_CANNOT_CONNECT,
    CameraSource,
    SourceError,
    normalized_url,
    probe_source,
    redact_url,
    split_credentials,
    validate_url,
)

_LOGGER = logging.getLogger(__name__)

GO2RTC_CHECK_TIMEOUT = 5.0
ONVIF_PREFIX = "onvif_"  # the subentry keys of a camera added through ONVIF


def default_storage_path(hass: HomeAssistant) -> str:
    """Return the default recordings folder: under HA's media folder (Media panel, backups)."""
    media_dirs = getattr(hass.config, "media_dirs", None) or {}
    base = media_dirs.get("local") or hass.config.path("media")
    return str(Path(base) / DEFAULT_STORAGE_DIR)


def _check_storage(path: str) -> None:
    """Create the storage folder and prove we can write to it. Blocking."""
    folder = Path(path)
    if not folder.is_absolute():
        raise ValueError("relative path")
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".lightnvr-write-test"
    probe.write_bytes(b"")
    probe.unlink()
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(path)


def _check_archive(path: str, storage: str) -> str | None:
    """Return the error of an archive folder, None when it is usable. Blocking.

    Unlike the storage folder it is not created: a missing folder usually is a NAS share that
    is not mounted, and writing into the empty mount point would fill the local disk.
    """
    folder = Path(path)
    if not folder.is_absolute() or not folder.is_dir():
        return "archive_not_usable"
    archive = Path(os.path.realpath(folder))
    main = Path(os.path.realpath(storage))
    # Either inside the other: the mover would move files into the folder it reads (or the
    # recorder's retention would delete the archive).
    if archive == main or main in archive.parents or archive in main.parents:
        return "archive_inside_storage"
    try:
        with tempfile.NamedTemporaryFile(dir=archive, prefix=".lightnvr-write-test"):
            pass
    except OSError:
        return "archive_not_usable"
    return None


def _valid_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


async def _check_go2rtc_server(
    hass: HomeAssistant, url: str, field: str, errors: dict[str, str]
) -> str:
    """Check a go2rtc server's URL (the hub's or a camera's); return a detail for the form.

    Errors go on `field`: `invalid_go2rtc_url` or `go2rtc_unreachable`.
    """
    if not _valid_http_url(url):
        errors[field] = "invalid_go2rtc_url"
        return ""
    session = async_get_clientsession(hass)
    try:
        async with asyncio.timeout(GO2RTC_CHECK_TIMEOUT):
            response = await session.get(url.rstrip("/") + "/api")
            response.raise_for_status()
            info = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as err:
        errors[field] = "go2rtc_unreachable"
        return redact_url(str(err) or type(err).__name__)
    return f"go2rtc {info.get('version', '?')}" if isinstance(info, dict) else ""


async def _check_go2rtc(
    hass: HomeAssistant, user_input: dict[str, Any], errors: dict[str, str]
) -> str:
    """Check the chosen go2rtc (binary or server); return a detail for the form."""
    engine = user_input[CONF_ENGINE]
    if engine == ENGINE_EXTERNAL:
        url = (user_input.get(CONF_GO2RTC_URL) or "").strip()
        return await _check_go2rtc_server(hass, url, CONF_GO2RTC_URL, errors)
    configured = (user_input.get(CONF_GO2RTC_BINARY) or "").strip() or None
    if engine == ENGINE_GO2RTC or (engine == ENGINE_AUTO and configured):
        check = await async_find_usable_binary(hass, configured)
        if not check.usable:
            errors[CONF_GO2RTC_BINARY if configured else CONF_ENGINE] = "go2rtc_not_usable"
            return check.detail or ""
    return ""


async def _validate_hub(
    hass: HomeAssistant, user_input: dict[str, Any], placeholders: dict[str, str] | None = None
) -> dict[str, str]:
    errors: dict[str, str] = {}
    detail = await _check_go2rtc(hass, user_input, errors)
    if placeholders is not None:
        placeholders["detail"] = detail if errors else ""
    try:
        await hass.async_add_executor_job(_check_storage, user_input[CONF_STORAGE_PATH])
    except (OSError, ValueError):
        errors[CONF_STORAGE_PATH] = "storage_not_writable"
    object_url = (user_input.get(CONF_OBJECT_URL) or "").strip()
    if object_url and not _valid_http_url(object_url):
        errors[CONF_OBJECT_URL] = "invalid_object_url"
    if archive := (user_input.get(CONF_ARCHIVE_PATH) or "").strip():
        error = await hass.async_add_executor_job(
            _check_archive, archive, user_input[CONF_STORAGE_PATH]
        )
        if error is not None:
            errors[CONF_ARCHIVE_PATH] = error
        if not user_input.get(CONF_ARCHIVE_AFTER_DAYS) and not user_input.get(
            CONF_ARCHIVE_AT_PERCENT
        ):
            errors[CONF_ARCHIVE_AFTER_DAYS] = "archive_no_rule"
    return errors


def _clean_hub_input(user_input: dict[str, Any]) -> dict[str, Any]:
    data = dict(user_input)
    data[CONF_RETENTION_DAYS] = int(data[CONF_RETENTION_DAYS])
    data[CONF_MIN_FREE_GB] = float(data[CONF_MIN_FREE_GB])
    data[CONF_MAX_STORAGE_GB] = float(data.get(CONF_MAX_STORAGE_GB, DEFAULT_MAX_STORAGE_GB))
    data[CONF_SEGMENT_SECONDS] = int(data.get(CONF_SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS))
    data[CONF_OBJECT_LABELS] = sorted(
        {label.strip().lower() for label in data.get(CONF_OBJECT_LABELS, []) if label.strip()}
    )
    data[CONF_OBJECT_MIN_CONFIDENCE] = float(
        data.get(CONF_OBJECT_MIN_CONFIDENCE, DEFAULT_OBJECT_MIN_CONFIDENCE)
    )
    data[CONF_EVENT_RETENTION_DAYS] = int(
        data.get(CONF_EVENT_RETENTION_DAYS, DEFAULT_EVENT_RETENTION_DAYS)
    )
    data[CONF_MAX_VIEWERS_PER_CAMERA] = int(
        data.get(CONF_MAX_VIEWERS_PER_CAMERA, DEFAULT_MAX_VIEWERS_PER_CAMERA)
    )
    data[CONF_MAX_VIEWERS] = int(data.get(CONF_MAX_VIEWERS, DEFAULT_MAX_VIEWERS))
    # Always stored, "" for none: options override the entry's data key by key, so a cleared
    # archive folder must be written, not left out.
    data[CONF_ARCHIVE_PATH] = (data.get(CONF_ARCHIVE_PATH) or "").strip()
    for key in (CONF_ARCHIVE_AFTER_DAYS, CONF_ARCHIVE_AT_PERCENT, CONF_ARCHIVE_RETENTION_DAYS):
        data[key] = int(data.get(key) or 0)
    for key in (CONF_ARCHIVE_MAX_MBPS, CONF_ARCHIVE_MAX_GB):
        data[key] = float(data.get(key) or 0)
    if data.get(CONF_OBJECT_URL):
        data[CONF_OBJECT_URL] = data[CONF_OBJECT_URL].strip()
    if data.get(CONF_GO2RTC_WEBRTC_PORT):
        data[CONF_GO2RTC_WEBRTC_PORT] = int(data[CONF_GO2RTC_WEBRTC_PORT])
    for key in (
        CONF_GO2RTC_BINARY,
        CONF_GO2RTC_URL,
        CONF_GO2RTC_WEBRTC_PORT,
        CONF_GO2RTC_CANDIDATES,
        CONF_OBJECT_URL,
        CONF_OBJECT_API_KEY,
    ):
        if not data.get(key):
            data.pop(key, None)
    return data


class LightNvrConfigFlow(ConfigFlow, domain=DOMAIN):
    """The hub flow. `single_config_entry` in the manifest keeps it to one hub."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose the engine and where recordings go."""
        errors: dict[str, str] = {}
        placeholders = {"detail": ""}
        defaults: dict[str, Any] = {
            CONF_ENGINE: DEFAULT_ENGINE,
            CONF_STORAGE_PATH: default_storage_path(self.hass),
            CONF_RETENTION_DAYS: DEFAULT_RETENTION_DAYS,
            CONF_MIN_FREE_GB: DEFAULT_MIN_FREE_GB,
        }
        if user_input is not None:
            errors = await _validate_hub(self.hass, user_input, placeholders)
            if not errors:
                return self.async_create_entry(title="LightNVR", data=_clean_hub_input(user_input))
            defaults.update(user_input)
        return self.async_show_form(
            step_id="user",
            data_schema=hub_schema(defaults),
            errors=errors,
            description_placeholders=placeholders,
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Hub options: the same settings, changeable later (the entry reloads)."""
        return LightNvrOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Cameras are subentries of the hub."""
        return {SUBENTRY_CAMERA: CameraSubentryFlow}


class LightNvrOptionsFlow(OptionsFlow):
    """Change the hub's settings."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show and validate the hub settings."""
        errors: dict[str, str] = {}
        placeholders = {"detail": ""}
        current = {**self.config_entry.data, **self.config_entry.options}
        defaults = {
            CONF_ENGINE: current.get(CONF_ENGINE, DEFAULT_ENGINE),
            CONF_GO2RTC_BINARY: current.get(CONF_GO2RTC_BINARY),
            CONF_GO2RTC_URL: current.get(CONF_GO2RTC_URL),
            CONF_STORAGE_PATH: current[CONF_STORAGE_PATH],
            CONF_RETENTION_DAYS: current.get(CONF_RETENTION_DAYS, DEFAULT_RETENTION_DAYS),
            CONF_MIN_FREE_GB: current.get(CONF_MIN_FREE_GB, DEFAULT_MIN_FREE_GB),
            CONF_MAX_STORAGE_GB: current.get(CONF_MAX_STORAGE_GB, DEFAULT_MAX_STORAGE_GB),
            CONF_SEGMENT_SECONDS: current.get(CONF_SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS),
            **{k: v for k, v in current.items() if k != CONF_OBJECT_API_KEY},
        }
        if user_input is not None:
            if not user_input.get(CONF_OBJECT_API_KEY) and current.get(CONF_OBJECT_API_KEY):
                # Never echoed back in the form: left empty means "keep the stored key".
                user_input = {**user_input, CONF_OBJECT_API_KEY: current[CONF_OBJECT_API_KEY]}
            errors = await _validate_hub(self.hass, user_input, placeholders)
            if not errors:
                return self.async_create_entry(data=_clean_hub_input(user_input))
            defaults.update(user_input)
        return self.async_show_form(
            step_id="init",
            data_schema=hub_schema(defaults),
            errors=errors,
            description_placeholders=placeholders,
        )


def _kept_password(
    current: dict[str, Any], url_key: str, password_key: str, url: str
) -> str | None:
    """Return the stored password if `url` still points at the host it was stored for."""
    stored = current.get(password_key)
    old_url = current.get(url_key)
    if not stored or not old_url:
        return None
    return stored if camera_address(old_url) == camera_address(url) else None


class CameraSubentryFlow(OnvifCameraSteps, ConfigSubentryFlow):
    """Add or reconfigure a camera; the source is probed before it is saved.

    Adding starts with a menu (`camera_flow_onvif.py`): ONVIF, a network search, or this
    module's stream URL form.
    """

    async def async_step_stream_url(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Add a camera by its stream URL."""
        return await self._async_camera_step("stream_url", user_input, None)

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change a camera's settings."""
        subentry = self._get_reconfigure_subentry()
        return await self._async_camera_step("reconfigure", user_input, subentry.subentry_id)

    async def _async_camera_step(
        self, step_id: str, user_input: dict[str, Any] | None, editing: str | None
    ) -> SubentryFlowResult:
        entry = self._get_entry()
        current: dict[str, Any] = (
            dict(entry.subentries[editing].data) if editing is not None else {}
        )
        errors: dict[str, str] = {}
        placeholders = {"detail": ""}
        if user_input is not None:
            data, errors, detail = await self._async_validate_camera(user_input, current, editing)
            placeholders["detail"] = detail
            if not errors:
                # A camera added through ONVIF stays one (profiles, PTZ, device fields) while
                # its stream stays on that device; pointed elsewhere, it is a URL camera.
                if camera_address(data[CONF_STREAM_URL]) == camera_address(
                    str(current.get(CONF_STREAM_URL) or "")
                ):
                    data.update({k: v for k, v in current.items() if k.startswith(ONVIF_PREFIX)})
                if editing is None:
                    return self.async_create_entry(title=data[CONF_NAME], data=data)
                return self.async_update_and_abort(
                    entry, entry.subentries[editing], title=data[CONF_NAME], data=data
                )
            current = {**current, **{k: v for k, v in user_input.items() if k != CONF_PASSWORD}}
        return self.async_show_form(
            step_id=step_id,
            data_schema=camera_schema(current),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _async_validate_camera(
        self, user_input: dict[str, Any], current: dict[str, Any], editing: str | None
    ) -> tuple[dict[str, Any], dict[str, str], str]:
        """Return (data to store, errors, error detail)."""
        entry = self._get_entry()
        errors: dict[str, str] = {}
        try:
            url = validate_url(user_input[CONF_STREAM_URL])
        except SourceError as err:
            return {}, {CONF_STREAM_URL: err.reason}, err.detail
        url, url_user, url_password = split_credentials(url)
        username = user_input.get(CONF_USERNAME) or url_user or None
        # An empty password field while editing keeps the stored one (we never echo it back),
        # but only for the same host: a stored password is never sent to another address.
        kept = _kept_password(current, CONF_STREAM_URL, CONF_PASSWORD, url) if editing else None
        password = user_input.get(CONF_PASSWORD) or url_password or kept
        if editing and not password and current.get(CONF_PASSWORD) and kept is None:
            return {}, {CONF_PASSWORD: "password_required"}, ""
        substream = (user_input.get(CONF_SUBSTREAM_URL) or "").strip() or None
        sub_user = sub_password = None
        if substream:
            try:
                substream, sub_user, sub_password = split_credentials(validate_url(substream))
            except SourceError as err:
                return {}, {CONF_SUBSTREAM_URL: err.reason}, err.detail
            if not sub_user and editing:
                # A login typed into the sub-stream URL before: kept while its host is the same.
                sub_user = current.get(CONF_SUBSTREAM_USERNAME)
                sub_password = _kept_password(
                    current, CONF_SUBSTREAM_URL, CONF_SUBSTREAM_PASSWORD, substream
                )
                if sub_user and not sub_password and current.get(CONF_SUBSTREAM_PASSWORD):
                    sub_user = None  # its host changed: type the login into the URL again

        try:
            parse_zones(user_input.get(CONF_EXCLUDE_ZONES))
        except ValueError as err:
            return {}, {CONF_EXCLUDE_ZONES: "invalid_zones"}, str(err)

        # The camera's own go2rtc: checked like the hub's external one, before the camera.
        if go2rtc_url := (user_input.get(CONF_CAMERA_GO2RTC_URL) or "").strip():
            detail = await _check_go2rtc_server(
                self.hass, go2rtc_url, CONF_CAMERA_GO2RTC_URL, errors
            )
            if errors:
                return {}, errors, detail

        wanted = normalized_url(url)
        for subentry in entry.subentries.values():
            if subentry.subentry_id == editing or subentry.subentry_type != SUBENTRY_CAMERA:
                continue
            if normalized_url(subentry.data[CONF_STREAM_URL]) == wanted:
                return {}, {CONF_STREAM_URL: "duplicate_url"}, subentry.title

        source = CameraSource(url, username, password)
        # A camera with a go2rtc of its own may sit where only that go2rtc reaches it (another
        # network): unreachable from here is no verdict then. A camera that answers with a
        # refused login or no video is still refused.
        unreachable: str | None = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT + 5):
                await self.hass.async_add_executor_job(probe_source, source, PROBE_TIMEOUT)
        except SourceError as err:
            if not go2rtc_url or err.reason != REASON_CANNOT_CONNECT:
                return {}, {"base": err.reason}, err.detail
            unreachable = err.detail
        except TimeoutError:
            if not go2rtc_url:
                return {}, {"base": REASON_CANNOT_CONNECT}, "timed out"
            unreachable = "timed out"
        if unreachable is not None:
            _LOGGER.debug(
                "%s is not reachable from here (%s); its go2rtc will connect to it",
                redact_url(url),
                redact_url(unreachable),
            )

        data: dict[str, Any] = {
            CONF_NAME: user_input[CONF_NAME].strip(),
            CONF_STREAM_URL: url,
            CONF_RECORD: user_input.get(CONF_RECORD, True),
            CONF_DETECT_MOTION: user_input.get(CONF_DETECT_MOTION, False),
        }
        if substream:
            data[CONF_SUBSTREAM_URL] = substream
            if sub_user:
                data[CONF_SUBSTREAM_USERNAME] = sub_user
                if sub_password:
                    data[CONF_SUBSTREAM_PASSWORD] = sub_password
        if user_input.get(CONF_CAMERA_RETENTION_DAYS):
            data[CONF_CAMERA_RETENTION_DAYS] = int(user_input[CONF_CAMERA_RETENTION_DAYS])
        data[CONF_MOTION_SENSITIVITY] = int(
            user_input.get(CONF_MOTION_SENSITIVITY, DEFAULT_MOTION_SENSITIVITY)
        )
        data[CONF_MOTION_MIN_AREA] = float(
            user_input.get(CONF_MOTION_MIN_AREA, DEFAULT_MOTION_MIN_AREA)
        )
        data[CONF_MOTION_OFF_DELAY] = float(
            user_input.get(CONF_MOTION_OFF_DELAY, DEFAULT_MOTION_OFF_DELAY)
        )
        if zones := (user_input.get(CONF_EXCLUDE_ZONES) or "").strip():
            data[CONF_EXCLUDE_ZONES] = zones
        data[CONF_DETECT_KEYFRAMES_ONLY] = bool(user_input.get(CONF_DETECT_KEYFRAMES_ONLY, False))
        data[CONF_TRANSCODE_FULL_SIZE] = bool(user_input.get(CONF_TRANSCODE_FULL_SIZE, False))
        if go2rtc_url:
            data[CONF_CAMERA_GO2RTC_URL] = go2rtc_url
        if username:
            data[CONF_USERNAME] = username
        if password:
            data[CONF_PASSWORD] = password
        return data, errors, ""
