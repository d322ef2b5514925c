"""The notification blueprint (`blueprints/automation/lightnvr/notify.yaml`) in a real automation.

The phone is the boundary: a companion app device in the device registry whose notify action
(`notify.mobile_app_<device>`, as the app registers it) records each call instead of pushing.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
import shutil
from typing import Any
from urllib.parse import unquote

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.config import AUTOMATION_BLUEPRINT_SCHEMA
from homeassistant.components.blueprint import models as blueprint_models
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util, yaml as yaml_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

from custom_components.lightnvr.const import EVENT_CLIP_READY, EVENT_DETECTION

BLUEPRINT = Path(__file__).parents[1] / "blueprints" / "automation" / "lightnvr" / "notify.yaml"
CAMERA = "camera.yard"
IMAGE = "image.yard_last_detection"
CLIP = "media-source://lightnvr/events/cam01/2026-06-01/12-00-00_person.mp4"


@pytest.fixture
async def phone(hass: HomeAssistant, tmp_path: Path) -> tuple[dr.DeviceEntry, list[ServiceCall]]:
    """A companion app device ("Pixel of Ann") and the calls of its notify action."""
    hass.config.config_dir = str(tmp_path)  # the blueprint goes to this config's blueprints/
    await hass.config.async_set_time_zone("UTC")
    entry = MockConfigEntry(domain="mobile_app", title="Pixel of Ann")
    entry.add_to_hass(hass)
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={("mobile_app", "phone-1")},
        manufacturer="Google",
        model="Pixel",
        name="Pixel of Ann",
    )
    # A name given on HA's device page does not rename the app's notify action.
    dr.async_get(hass).async_update_device(device.id, name_by_user="Ann's phone")
    calls = async_mock_service(hass, "notify", "mobile_app_pixel_of_ann")
    return device, calls


def _pushes(calls: list[ServiceCall]) -> list[dict[str, Any]]:
    return [dict(call.data) for call in calls]


async def _setup_automation(hass: HomeAssistant, device: dr.DeviceEntry, **inputs: Any) -> None:
    target = Path(hass.config.path("blueprints", "automation", "lightnvr"))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(BLUEPRINT, target / "notify.yaml")
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "id": "lightnvr_notify",
                "alias": "LightNVR notify",
                "use_blueprint": {
                    "path": "lightnvr/notify.yaml",
                    "input": {"cameras": [CAMERA], "notify_device": device.id, **inputs},
                },
            }
        },
    )
    await hass.async_block_till_done()
    state = hass.states.get("automation.lightnvr_notify")
    assert state is not None
    assert state.state == "on"


def _detection(event_id: str, label: str = "person", camera: str = CAMERA) -> dict[str, Any]:
    return {
        "camera_entity_id": camera,
        "label": label,
        "confidence": 0.91,
        "box": {"x_min": 0.25, "y_min": 0.2, "x_max": 0.5, "y_max": 0.8},
        "time": dt_util.utcnow().isoformat(),
        "event_id": event_id,
        "snapshot": IMAGE,
    }


async def _spin() -> None:
    """Let the automation's runs take every step they can take now.

    Not `async_block_till_done` (it would wait for a run waiting for its clip or cool-down),
    nor a sleep: the freezer holds the loop's clock too.
    """
    for _ in range(100):
        await asyncio.sleep(0)


async def _fire(hass: HomeAssistant, event_type: str, data: dict[str, Any]) -> None:
    hass.bus.async_fire(event_type, data)
    await _spin()


def _running(hass: HomeAssistant) -> int:
    state = hass.states.get("automation.lightnvr_notify")
    assert state is not None
    return int(state.attributes["current"])


async def _later(hass: HomeAssistant, freezer: FrozenDateTimeFactory, delta: timedelta) -> None:
    """Move the clock on; the timers due by then (a wait's timeout, a delay) run."""
    await _spin()
    freezer.tick(delta)
    async_fire_time_changed(hass)
    await _spin()


def test_blueprint_is_valid() -> None:
    """The file is an automation blueprint HA accepts, with the inputs the README names."""
    blueprint = blueprint_models.Blueprint(
        yaml_util.load_yaml_dict(BLUEPRINT),
        expected_domain="automation",
        schema=AUTOMATION_BLUEPRINT_SCHEMA,
    )
    assert set(blueprint.inputs) >= {
        "cameras",
        "labels",
        "notify_device",
        "cooldown",
        "quiet_start",
        "quiet_end",
    }
    assert blueprint.metadata["source_url"].endswith("blueprints/automation/lightnvr/notify.yaml")


async def test_snapshot_then_clip_cooldown_and_quiet_hours(
    hass: HomeAssistant,
    phone: tuple[dr.DeviceEntry, list[ServiceCall]],
    freezer: FrozenDateTimeFactory,
) -> None:
    """Snapshot at once, the clip under the same tag, nothing in the cool-down or quiet hours."""
    freezer.move_to(datetime(2026, 6, 1, 12, 0, tzinfo=dt_util.UTC))
    hass.states.async_set(CAMERA, "idle", {"friendly_name": "Yard"})
    device, calls = phone
    await _setup_automation(
        hass, device, cooldown=5, quiet_start="22:00:00", quiet_end="06:00:00", clip_timeout=3
    )

    # Not chosen: another label, another camera.
    await _fire(hass, EVENT_DETECTION, _detection("E0", label="car"))
    await _fire(hass, EVENT_DETECTION, _detection("E0", camera="camera.street"))
    assert _pushes(calls) == []

    # A person: the picture at once, tagged with the detection's id.
    await _fire(hass, EVENT_DETECTION, _detection("E1"))
    first = _pushes(calls)[0]
    assert first["title"] == "Yard: person"
    assert first["message"] == "Person at 12:00:00 (91 %)"
    assert first["data"]["tag"] == "E1"
    assert first["data"]["image"] == f"/api/image_proxy/{IMAGE}"

    # Another detection's clip changes nothing; this one's updates the same notification.
    await _fire(hass, EVENT_CLIP_READY, {"event_id": "E9", "media_content_id": CLIP})
    assert len(calls) == 1
    freezer.tick(timedelta(seconds=20))
    await _fire(
        hass,
        EVENT_CLIP_READY,
        {
            "camera_entity_id": CAMERA,
            "event_id": "E1",
            "labels": ["person"],
            "media_content_id": CLIP,
            "start": "2026-06-01T11:59:55+00:00",
            "end": "2026-06-01T12:00:20+00:00",
        },
    )
    second = _pushes(calls)[1]
    assert second["title"] == "Yard: person"
    assert second["message"] == "Person at 12:00:00 (91 %) – clip ready"
    assert second["data"]["tag"] == "E1"
    assert second["data"]["image"] == f"/api/image_proxy/{IMAGE}"
    link = second["data"]["url"]
    assert second["data"]["clickAction"] == link
    assert link.startswith("/media-browser/browser/")
    # The Media panel's path: "<type>,<media id>" per level, each URI-encoded.
    levels = [unquote(part) for part in link.removeprefix("/media-browser/browser/").split("/")]
    assert levels == [
        ",media-source://lightnvr",
        ",media-source://lightnvr/events/cam01/2026-06-01",
    ]

    # Inside the cool-down: nothing.
    freezer.tick(timedelta(minutes=2))
    await _fire(hass, EVENT_DETECTION, _detection("E2"))
    assert len(calls) == 2

    # After it: notified again; no clip comes this time, the run gives up waiting for it.
    await _later(hass, freezer, timedelta(minutes=4))
    assert _running(hass) == 0
    await _fire(hass, EVENT_DETECTION, _detection("E3"))
    assert _pushes(calls)[2]["data"]["tag"] == "E3"
    await _later(hass, freezer, timedelta(minutes=3))  # the clip wait times out
    assert _running(hass) == 1  # in its cool-down
    await _later(hass, freezer, timedelta(minutes=2))
    assert _running(hass) == 0
    assert len(calls) == 3

    # Quiet hours (over midnight): nothing at 23:30, nor at 05:59; again at 06:00.
    freezer.move_to(datetime(2026, 6, 1, 23, 30, tzinfo=dt_util.UTC))
    await _fire(hass, EVENT_DETECTION, _detection("E4"))
    freezer.move_to(datetime(2026, 6, 2, 5, 59, tzinfo=dt_util.UTC))
    await _fire(hass, EVENT_DETECTION, _detection("E5"))
    assert len(calls) == 3
    freezer.move_to(datetime(2026, 6, 2, 6, 0, tzinfo=dt_util.UTC))
    await _fire(hass, EVENT_DETECTION, _detection("E6"))
    assert [push["data"]["tag"] for push in _pushes(calls)] == ["E1", "E1", "E3", "E6"]
    await hass.services.async_call(
        "automation", "turn_off", {"entity_id": "automation.lightnvr_notify"}, blocking=True
    )


async def test_motion_label_by_default_without_quiet_hours(
    hass: HomeAssistant,
    phone: tuple[dr.DeviceEntry, list[ServiceCall]],
    freezer: FrozenDateTimeFactory,
) -> None:
    """Default inputs: person and motion are notified, at any hour, without a snapshot too."""
    freezer.move_to(datetime(2026, 6, 1, 23, 30, tzinfo=dt_util.UTC))
    device, calls = phone
    await _setup_automation(hass, device, cooldown=0)
    data = _detection("M1", label="motion")
    data["snapshot"] = None  # the image entity is disabled: the text alone still goes out
    data["confidence"] = None
    await _fire(hass, EVENT_DETECTION, data)
    pushes = _pushes(calls)
    assert len(pushes) == 1
    assert pushes[0]["title"] == f"{CAMERA}: motion"
    assert pushes[0]["data"]["tag"] == "M1"
    assert not pushes[0]["data"].get("image")
    await hass.services.async_call(
        "automation", "turn_off", {"entity_id": "automation.lightnvr_notify"}, blocking=True
    )
