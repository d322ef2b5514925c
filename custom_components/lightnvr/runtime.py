"""Everything a loaded hub entry owns, kept in `entry.runtime_data`."""

from __future__ import annotations

from dataclasses import dataclass, field

from homeassistant.config_entries import ConfigEntry

from .engine.base import StreamEngine
from .models import CameraConfig, HubOptions


@dataclass(slots=True)
class LightNvrRuntime:
    """The running pieces of one LightNVR hub."""

    options: HubOptions
    engine: StreamEngine
    cameras: dict[str, CameraConfig] = field(default_factory=dict)


type LightNvrConfigEntry = ConfigEntry[LightNvrRuntime]
