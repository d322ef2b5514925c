"""Why a gap happened: when each camera's recording was switched off, and when it was away.

The indexes know what was recorded, not why the rest was not. Every camera has a recording
switch (`<camera_id>_recording`) and a camera entity (`<camera_id>_camera`) that is unavailable
while the camera sends no video; their state changes are watched from Home Assistant's start
(before the hub is set up, so the first states are seen too) and kept in memory as intervals,
a bounded number per camera. Gaps older than this run of Home Assistant have no known reason.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import math
from typing import Final

from homeassistant.const import EVENT_STATE_CHANGED, STATE_OFF, STATE_UNAVAILABLE
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.util.hass_dict import HassKey

from ..const import DOMAIN
from .timeline import GapHistory

# Intervals kept per camera and kind: a camera that flaps every minute for a week fits.
MAX_INTERVALS: Final = 10_000
_RECORDING_SUFFIX: Final = "_recording"
_CAMERA_SUFFIX: Final = "_camera"


@dataclass(slots=True)
class _Intervals:
    """Closed intervals, and the start of the open one (if the condition holds now)."""

    closed: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_INTERVALS))
    since: float | None = None

    def update(self, holds: bool, moment: float) -> None:
        if holds and self.since is None:
            self.since = moment
        elif not holds and self.since is not None:
            self.closed.append((self.since, moment))
            self.since = None

    def snapshot(self) -> tuple[tuple[float, float], ...]:
        if self.since is None:
            return tuple(self.closed)
        return (*self.closed, (self.since, math.inf))


class StateJournal:
    """Recording-off and camera-away intervals per camera, since Home Assistant started."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Create an empty journal; `async_start` begins watching."""
        self._hass = hass
        self._off: dict[str, _Intervals] = {}
        self._away: dict[str, _Intervals] = {}

    @callback
    def async_start(self) -> None:
        """Watch state changes for the rest of the run."""
        self._hass.bus.async_listen(
            EVENT_STATE_CHANGED, self._on_state, event_filter=self._relevant
        )

    @callback
    def _relevant(self, data: EventStateChangedData) -> bool:
        return data["entity_id"].startswith(("switch.", "camera."))

    @callback
    def _on_state(self, event: Event[EventStateChangedData]) -> None:
        entity_id = event.data["entity_id"]
        entry = er.async_get(self._hass).async_get(entity_id)
        if entry is None or entry.platform != DOMAIN:
            return
        state = event.data["new_state"]
        moment = (state.last_changed if state is not None else event.time_fired).timestamp()
        value = state.state if state is not None else STATE_UNAVAILABLE
        if entry.domain == "switch" and entry.unique_id.endswith(_RECORDING_SUFFIX):
            camera_id = entry.unique_id.removesuffix(_RECORDING_SUFFIX)
            if value != STATE_UNAVAILABLE:  # unavailable: the camera is away, not switched
                self._off.setdefault(camera_id, _Intervals()).update(value == STATE_OFF, moment)
        elif entry.domain == "camera" and entry.unique_id.endswith(_CAMERA_SUFFIX):
            camera_id = entry.unique_id.removesuffix(_CAMERA_SUFFIX)
            away = value == STATE_UNAVAILABLE
            self._away.setdefault(camera_id, _Intervals()).update(away, moment)

    @callback
    def history(self, camera_id: str) -> GapHistory:
        """Return a camera's intervals as they stand (a copy, safe to use in a thread)."""
        off = self._off.get(camera_id)
        away = self._away.get(camera_id)
        return GapHistory(
            recording_off=off.snapshot() if off is not None else (),
            camera_away=away.snapshot() if away is not None else (),
        )


DATA_JOURNAL: HassKey[StateJournal] = HassKey(f"{DOMAIN}_review_journal")


@callback
def async_get_journal(hass: HomeAssistant) -> StateJournal:
    """Return the run's journal, started on first use (idempotent)."""
    if (journal := hass.data.get(DATA_JOURNAL)) is None:
        journal = hass.data[DATA_JOURNAL] = StateJournal(hass)
        journal.async_start()
    return journal
