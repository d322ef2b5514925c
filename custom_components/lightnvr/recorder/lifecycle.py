"""What the recordings store and the event clips store do alike when they open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
import logging

from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers.event import async_track_time_interval

_LOGGER = logging.getLogger(__name__)


async def async_open_store(
    hass: HomeAssistant,
    *,
    what: str,
    load: Callable[[], int],
    opened: Callable[[], None],
    retention: Callable[[], Awaitable[object]],
    interval: timedelta,
) -> CALLBACK_TYPE:
    """Open a store: recover and index it, apply retention now and then on a timer.

    `load` scans the folder and recovers files a crash left unfinished (blocking: run in the
    executor) and returns how many it recovered; `opened` marks the store usable before the
    first retention pass. Returns the timer's remover.
    """
    recovered = await hass.async_add_executor_job(load)
    if recovered:
        _LOGGER.info("Recovered %d %s left unfinished by a crash", recovered, what)
    opened()
    await retention()

    async def _tick(_now: datetime) -> None:
        await retention()

    return async_track_time_interval(
        hass, _tick, interval, name=f"LightNVR {what} retention", cancel_on_shutdown=True
    )
