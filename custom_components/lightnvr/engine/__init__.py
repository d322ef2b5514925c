"""Stream engines: what carries video from the cameras to viewers."""

from __future__ import annotations

import logging

from homeassistant.core import HomeAssistant

from ..const import ENGINE_AUTO, ENGINE_EMBEDDED
from ..models import HubOptions
from .base import StreamEngine
from .embedded import EmbeddedEngine

_LOGGER = logging.getLogger(__name__)


class EngineUnavailableError(Exception):
    """The configured engine cannot run on this installation."""


def create_engine(hass: HomeAssistant, options: HubOptions) -> StreamEngine:
    """Build the engine the hub options ask for."""
    if options.engine in (ENGINE_AUTO, ENGINE_EMBEDDED):
        return EmbeddedEngine(hass)
    raise EngineUnavailableError(f"the {options.engine} engine is not available yet")
