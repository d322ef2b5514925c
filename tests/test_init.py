"""Setup, unload, reload and camera removal: no thread, task or session outlives them."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
import threading

from homeassistant.config_entries import ConfigEntryState, ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.lightnvr.const import DOMAIN

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer


async def _setup_garden(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> MockConfigEntry:
    """Set up a hub with one camera, "Garden", on the test camera."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path),
        subentries_data=[camera_subentry("Garden", rtsp_camera.url("cam"))],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return entry


def _hub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lightnvr-hub-")]


async def test_setup_creates_devices_and_unload_stops_everything(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """Two cameras: two devices and entities, one reader each; unload stops both readers."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path),
        subentries_data=[
            camera_subentry("Garden", rtsp_camera.url("cam")),
            camera_subentry("Garage", rtsp_camera.url("cam") + "?second"),
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED

    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert sorted(d.name for d in devices) == ["Garage", "Garden", "LightNVR"]
    registry = er.async_get(hass)
    for subentry_id in entry.subentries:
        entity_id = registry.async_get_entity_id("camera", DOMAIN, f"{subentry_id}_camera")
        assert entity_id is not None
        assert registry.async_get(entity_id).config_subentry_id == subentry_id
    assert len(_hub_threads()) == 2
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.connected_clients == 2)

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert _hub_threads() == []
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.connected_clients == 0)


async def test_reload_restarts_readers(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """A reload stops the old reader before the new one starts: one camera connection."""
    entry = await _setup_garden(hass, tmp_path, rtsp_camera)
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.connected_clients == 1)
    first_runtime = entry.runtime_data
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.runtime_data is not first_runtime
    assert len(_hub_threads()) == 1
    await rtsp_camera.async_wait_for(
        lambda: rtsp_camera.total_connections == 2 and rtsp_camera.connected_clients == 1
    )
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_unload_while_a_camera_restarts_leaves_nothing_running(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """A camera being restarted (its subentry edited, or its stream moved) when the hub
    unloads: the restart finishes first and the unload then stops it; nothing is started after
    the unload (no reader, no muxer, no entity on an unloaded platform)."""
    entry = await _setup_garden(hass, tmp_path, rtsp_camera)
    await hass.async_block_till_done()
    runtime = entry.runtime_data
    camera_id, camera = next(iter(runtime.cameras.items()))
    changed = {camera_id: dataclasses.replace(camera, name="Garden gate")}
    restart = hass.async_create_task(runtime.async_apply_cameras(changed))
    await asyncio.sleep(0)  # the restart is under way
    assert await hass.config_entries.async_unload(entry.entry_id)
    await restart
    await hass.async_block_till_done()
    assert runtime.stopped
    assert _hub_threads() == []
    assert [t for t in threading.enumerate() if t.name.startswith("lightnvr-mux-")] == []
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.connected_clients == 0)
    # A change arriving after the unload is not applied: nothing starts.
    await runtime.async_apply_cameras({camera_id: dataclasses.replace(camera, name="Door")})
    assert runtime.cameras[camera_id].name == "Garden gate"
    assert _hub_threads() == []


async def test_removing_a_camera_removes_its_device(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """Deleting a camera subentry removes its device and entity and stops its reader."""
    entry = await _setup_garden(hass, tmp_path, rtsp_camera)
    await hass.async_block_till_done()
    subentry_id = next(iter(entry.subentries))
    assert hass.states.get("camera.garden") is not None

    assert hass.config_entries.async_remove_subentry(entry, subentry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.cameras == {}
    assert hass.states.get("camera.garden") is None
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert [d.name for d in devices] == ["LightNVR"]  # only the hub's own device is left
    assert _hub_threads() == []
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_unreachable_camera_does_not_block_setup(
    hass: HomeAssistant, tmp_path: Path, socket_enabled: None
) -> None:
    """A camera that is down at start: setup completes, the entity is unavailable."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path),
        subentries_data=[camera_subentry("Shed", "rtsp://127.0.0.1:9/none")],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    hub = entry.runtime_data.engine.hub(next(iter(entry.subentries)))
    for _ in range(50):
        if hass.states.get("camera.shed").state == "unavailable":
            break
        await hass.async_add_executor_job(threading.Event().wait, 0.1)
    assert hass.states.get("camera.shed").state == "unavailable"
    assert hub.last_error == "cannot_connect"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_adding_a_camera_leaves_the_others_running(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """A new subentry starts only the new camera: the first one's connection is untouched."""
    entry = await _setup_garden(hass, tmp_path, rtsp_camera)
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.connected_clients == 1)
    garden_id = next(iter(entry.subentries))
    garden_hub = entry.runtime_data.engine.hub(garden_id)

    new = camera_subentry("Garage", rtsp_camera.url("cam") + "?garage")
    hass.config_entries.async_add_subentry(entry, ConfigSubentry(**new))
    await hass.async_block_till_done()
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.connected_clients == 2)
    assert rtsp_camera.total_connections == 2  # nobody reconnected
    assert entry.runtime_data.engine.hub(garden_id) is garden_hub
    assert hass.states.get("camera.garage") is not None
    assert hass.states.get("camera.garden") is not None

    # Renaming the garage restarts the garage only; its entity keeps its id.
    garage = next(s for s in entry.subentries.values() if s.title == "Garage")
    hass.config_entries.async_update_subentry(
        entry, garage, title="Car port", data={**garage.data, "name": "Car port"}
    )
    await hass.async_block_till_done()
    await rtsp_camera.async_wait_for(lambda: rtsp_camera.total_connections == 3)
    assert entry.runtime_data.engine.hub(garden_id) is garden_hub
    assert entry.runtime_data.cameras[garage.subentry_id].name == "Car port"
    assert hass.states.get("camera.garage") is not None
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, garage.subentry_id)})
    assert device is not None
    assert device.name == "Car port"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_stream_sensor_follows_the_camera(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """`binary_sensor.<camera>_stream` is on while video comes, off (not unavailable) without."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path),
        subentries_data=[camera_subentry("Garden", rtsp_camera.url("cam"), record=False)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    hub = entry.runtime_data.engine.hub(next(iter(entry.subentries)))
    await rtsp_camera.async_wait_for(lambda: hub.available, timeout=20)
    await hass.async_block_till_done()
    sensor = er.async_get(hass).async_get("binary_sensor.garden_stream")
    assert sensor is not None
    assert sensor.entity_category is er.EntityCategory.DIAGNOSTIC
    assert hass.states.get("binary_sensor.garden_stream").state == "on"
    await hass.async_add_executor_job(rtsp_camera.stop)
    await rtsp_camera.async_wait_for(lambda: not hub.available, timeout=20)
    # The reader thread tells the loop just after it changes the hub's state: the sensor's
    # state follows a moment later.
    await rtsp_camera.async_wait_for(
        lambda: hass.states.get("binary_sensor.garden_stream").state == "off", timeout=5
    )
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_entities_no_longer_provided_leave_the_registry(
    hass: HomeAssistant, tmp_path: Path, rtsp_camera: RtspServer
) -> None:
    """Another engine, detection switched off: their entities do not stay behind."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path),
        subentries_data=[
            camera_subentry("Garden", rtsp_camera.url("cam"), record=False, detect_motion=True)
        ],
    )
    entry.add_to_hass(hass)
    registry = er.async_get(hass)
    # Left by an earlier go2rtc engine: the built-in engine has no go2rtc health sensor.
    leftover = registry.async_get_or_create(
        "binary_sensor", DOMAIN, f"{entry.entry_id}_engine_problem", config_entry=entry
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert registry.async_get(leftover.entity_id) is None
    assert registry.async_get("binary_sensor.garden_motion") is not None

    garden = next(iter(entry.subentries.values()))
    hass.config_entries.async_update_subentry(
        entry, garden, data={**garden.data, "detect_motion": False}
    )
    await hass.async_block_till_done()
    assert registry.async_get("binary_sensor.garden_motion") is None
    assert registry.async_get("binary_sensor.garden_stream") is not None
    assert registry.async_get("camera.garden") is not None
    assert await hass.config_entries.async_unload(entry.entry_id)
