"""The review card: its JavaScript module, served by the integration and loaded on every dashboard.

The file is served as a static path and added to the frontend's extra modules with a version
taken from its content, so a browser fetches it again exactly when it changed (the static path
itself may be cached for a month). Nothing to install: the card is in the card picker once the
integration is set up. Without the frontend (a headless setup), there is nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Final

from homeassistant.components.frontend import add_extra_js_url
from homeassistant.components.http import StaticPathConfig
from homeassistant.core import HomeAssistant

_LOGGER = logging.getLogger(__name__)

CARD_FILE: Final = Path(__file__).parent / "cards" / "lightnvr-camera-card.js"
CARD_URL_PATH: Final = "/lightnvr/cards/lightnvr-camera-card.js"
_VERSION_CHARS: Final = 12


def _card_version() -> str:
    """Return a short hash of the card's file (blocking: reads it)."""
    return hashlib.sha256(CARD_FILE.read_bytes()).hexdigest()[:_VERSION_CHARS]


async def async_register_card(hass: HomeAssistant) -> str | None:
    """Serve the card and load it on every dashboard; return its versioned URL.

    None when the frontend is not set up (nothing would load the module).
    """
    if "frontend" not in hass.config.components:
        _LOGGER.debug("Frontend not loaded: the LightNVR card is not registered")
        return None
    version = await hass.async_add_executor_job(_card_version)
    await hass.http.async_register_static_paths(
        [StaticPathConfig(CARD_URL_PATH, str(CARD_FILE), cache_headers=True)]
    )
    url = f"{CARD_URL_PATH}?v={version}"
    add_extra_js_url(hass, url)
    return url
