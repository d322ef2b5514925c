"""Cameras added through ONVIF follow their stream addresses when the camera changes them.

After a firmware update a camera may serve its streams under a new path, and the stored URL
then answers 404 (or another 4xx, such as RTSP's 454). After `MISSES_BEFORE_ASKING` such
answers in a row the camera is asked once, over ONVIF, for its profiles' stream URIs; a changed
URI is written into the camera's subentry, which restarts just that camera, and a log line says
so. The camera is asked again only after it streamed in between, so a camera whose path is
really gone is not asked at every reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
from urllib.parse import urlsplit

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback

from .const import CONF_STREAM_URL, CONF_SUBSTREAM_URL
from .hub import HubState, StreamHub
from .models import CameraConfig, OnvifAccess
from .onvif.client import OnvifError, async_stream_uri
from .source import (
    REASON_STREAM_NOT_FOUND,
    SourceError,
    redact_url,
    split_credentials,
    validate_url,
)

_LOGGER = logging.getLogger(__name__)

MISSES_BEFORE_ASKING = 3
RTSP_SCHEMES = ("rtsp", "rtsps")


class StreamUriWatch:
    """Watches one ONVIF camera's hub for "no stream here" and asks the camera for its URIs."""

    def __init__(
        self, hass: HomeAssistant, entry: ConfigEntry, camera: CameraConfig, hub: StreamHub
    ) -> None:
        """Watch `hub`, the main stream of `camera` (added through ONVIF)."""
        assert camera.onvif is not None
        self._hass = hass
        self._entry = entry
        self._camera = camera
        self._onvif: OnvifAccess = camera.onvif
        self._hub = hub
        self._misses = 0
        self._asked = False

    @callback
    def start(self) -> Callable[[], None]:
        """Start watching; return the remover."""
        return self._hub.add_listener(self._on_hub_state)

    @callback
    def _on_hub_state(self) -> None:
        if self._hub.state is HubState.STREAMING:
            self._misses = 0
            self._asked = False
            return
        if self._hub.state is not HubState.RECONNECTING:
            return
        if self._hub.last_error != REASON_STREAM_NOT_FOUND:
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= MISSES_BEFORE_ASKING and not self._asked:
            self._asked = True
            self._hass.async_create_background_task(
                self._async_ask_camera(), f"LightNVR stream URIs of {self._camera.name}"
            )

    async def _async_ask_camera(self) -> None:
        """Ask the camera for its profiles' URIs; store the ones that changed."""
        onvif, source = self._onvif, self._camera.source
        wanted = {CONF_STREAM_URL: onvif.main_profile}
        if onvif.sub_profile is not None:
            wanted[CONF_SUBSTREAM_URL] = onvif.sub_profile
        changed: dict[str, str] = {}
        subentry = self._entry.subentries.get(self._camera.camera_id)
        if subentry is None:
            return
        for key, token in wanted.items():
            try:
                uri = await async_stream_uri(
                    self._hass, onvif.host, onvif.port, source.username, source.password, token
                )
            except OnvifError as err:
                _LOGGER.warning(
                    "%s: its stream is gone (%s) and ONVIF did not say where it is now: %s",
                    self._camera.name,
                    redact_url(source.url),
                    redact_url(err.detail),
                )
                return
            try:
                # An ONVIF answer is not signed: it gets the checks a typed URL gets, and
                # only an RTSP stream is taken from it.
                uri, _user, _password = split_credentials(validate_url(uri))
            except SourceError as err:
                _LOGGER.warning(
                    "%s: ignoring the stream address ONVIF gave: %s",
                    self._camera.name,
                    redact_url(err.detail),
                )
                return
            if urlsplit(uri).scheme.lower() not in RTSP_SCHEMES:
                _LOGGER.warning(
                    "%s: ignoring the stream address ONVIF gave: not RTSP (%s)",
                    self._camera.name,
                    redact_url(uri),
                )
                return
            if uri != subentry.data.get(key):
                changed[key] = uri
        if not changed:
            _LOGGER.debug("%s: ONVIF gives the same stream addresses", self._camera.name)
            return
        for key, uri in changed.items():
            _LOGGER.warning(
                "%s: the camera moved its %s from %s to %s (ONVIF): using the new address",
                self._camera.name,
                "stream" if key == CONF_STREAM_URL else "sub-stream",
                redact_url(str(subentry.data.get(key) or "")),
                redact_url(uri),
            )
        # The entry's update listener restarts this camera alone with the new addresses.
        self._hass.config_entries.async_update_subentry(
            self._entry, subentry, data={**subentry.data, **changed}
        )
