"""Detection in Home Assistant: motion and object sensors, `lightnvr_detection`, automations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from homeassistant.components import automation
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.lightnvr.const import DOMAIN, EVENT_DETECTION

from .conftest import camera_subentry, hub_entry_data
from .detection_helpers import DeepStackServer
from .infra.media import make_motion_clip
from .infra.rtsp import RtspServer

MOTION = "binary_sensor.yard_motion"
PERSON = "binary_sensor.yard_person"


@pytest.fixture
def motion_camera(media_cache: Path, socket_enabled: None) -> Iterator[RtspServer]:
    """A camera whose picture is still for 5 s, then shows a moving box (looping)."""
    clip = make_motion_clip(media_cache / "motion_5s_static.mp4", seconds=10, static_seconds=5)
    server = RtspServer({"yard": clip})
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def deepstack(socket_enabled: None) -> AsyncIterator[DeepStackServer]:
    """A local server speaking the DeepStack API that always sees a person."""
    server = DeepStackServer()
    await server.start()
    yield server
    await server.stop()


async def _setup(
    hass: HomeAssistant, camera: RtspServer, tmp_path: Path, **hub: object
) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), **hub},
        subentries_data=[
            camera_subentry(
                "Yard", camera.url("yard"), detect_motion=True, motion_off_delay=1, record=False
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def _state(hass: HomeAssistant, entity_id: str, wanted: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (state := hass.states.get(entity_id)) is None or state.state != wanted:
            await asyncio.sleep(0.1)


async def test_motion_turns_sensor_on_fires_event_and_runs_automation(
    hass: HomeAssistant, motion_camera: RtspServer, tmp_path: Path
) -> None:
    """Moving box → motion on → event and a real automation; still again → off."""
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "alias": "Yard light",
                "triggers": {"trigger": "state", "entity_id": MOTION, "to": "on"},
                "actions": {
                    "event": "yard_light_on",
                    "event_data": {"by": "{{ trigger.entity_id }}"},
                },
            }
        },
    )
    events = async_capture_events(hass, EVENT_DETECTION)
    ran = async_capture_events(hass, "yard_light_on")
    entry = await _setup(hass, motion_camera, tmp_path)
    assert hass.states.get("switch.yard_detection").state == STATE_ON
    assert hass.states.get(PERSON) is None  # no object server configured: no label sensors

    await _state(hass, MOTION, STATE_ON)
    await hass.async_block_till_done()
    assert ran
    assert ran[0].data == {"by": MOTION}
    motion_events = [e for e in events if e.data["label"] == "motion"]
    assert motion_events
    assert motion_events[0].data["camera_entity_id"] == "camera.yard"
    assert motion_events[0].data["box"] is not None
    # The loop starts with 5 still seconds again: motion ends (after the 1 s off-delay).
    await _state(hass, MOTION, STATE_OFF)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_detection_switch_stops_detection(
    hass: HomeAssistant, motion_camera: RtspServer, tmp_path: Path
) -> None:
    """Switched off: the motion sensor is unavailable and nothing is detected."""
    entry = await _setup(hass, motion_camera, tmp_path)
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": "switch.yard_detection"}, blocking=True
    )
    pipeline = next(iter(entry.runtime_data.detection.values()))
    assert not pipeline.enabled
    assert hass.states.get(MOTION).state == "unavailable"
    await hass.services.async_call(
        "switch", "turn_on", {"entity_id": "switch.yard_detection"}, blocking=True
    )
    await _state(hass, MOTION, STATE_ON)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_person_from_detection_server(
    hass: HomeAssistant, motion_camera: RtspServer, deepstack: DeepStackServer, tmp_path: Path
) -> None:
    """The object server sees a person while there is motion: sensor on, event with box."""
    events = async_capture_events(hass, EVENT_DETECTION)
    entry = await _setup(
        hass,
        motion_camera,
        tmp_path,
        object_url=deepstack.url,
        object_api_key="secret-key-123",
        object_labels=["person", "car"],
    )
    assert hass.states.get("binary_sensor.yard_car") is not None
    await _state(hass, PERSON, STATE_ON)
    person = hass.states.get(PERSON)
    assert person.attributes["confidence"] == pytest.approx(0.91)
    assert person.attributes["box"]["x_min"] == pytest.approx(0.25, abs=0.01)
    await hass.async_block_till_done()
    people = [e for e in events if e.data["label"] == "person"]
    assert people
    assert people[0].data["camera_entity_id"] == "camera.yard"
    assert people[0].data["confidence"] == pytest.approx(0.91)
    assert deepstack.requests
    assert deepstack.requests[0].api_key == "secret-key-123"
    assert hass.states.get("binary_sensor.yard_car").state == STATE_OFF
    assert "secret-key-123" not in str(hass.states.get(PERSON).attributes)
    assert await hass.config_entries.async_unload(entry.entry_id)
