"""The recording switch (restored after restart) and the storage sensors, on a real recording."""

from __future__ import annotations

import asyncio
from pathlib import Path
import threading

from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant, State
from pytest_homeassistant_custom_component.common import MockConfigEntry, mock_restore_cache

from custom_components.lightnvr.const import DOMAIN

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer

SWITCH = "switch.porch_recording"


def _entry(rtsp_camera: RtspServer, tmp_path: Path, segment_seconds: int = 3) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": segment_seconds},
        subentries_data=[camera_subentry("Porch", rtsp_camera.url("cam"))],
    )


async def _until(predicate, timeout: float = 40) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.2)


async def test_switch_turns_recording_off_and_on(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """Off finishes the current file and writes no more; on starts a new one."""
    entry = _entry(rtsp_camera, tmp_path)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    recorder = entry.runtime_data.recorder
    camera_id = next(iter(entry.subentries))
    assert hass.states.get(SWITCH).state == STATE_ON
    await _until(lambda: len(recorder.index) >= 1)

    await _until(lambda: recorder.camera_state(camera_id).recording)
    before = recorder.camera_state(camera_id).segments_written
    await hass.services.async_call("switch", "turn_off", {"entity_id": SWITCH}, blocking=True)
    assert hass.states.get(SWITCH).state == STATE_OFF
    # The file that was open is finished and indexed; then nothing more is written.
    written = before + 1
    await _until(
        lambda: (
            recorder.camera_state(camera_id).segments_written == written
            and len(recorder.index) == written
        )
    )
    await asyncio.sleep(4)  # longer than a segment: nothing new may appear
    assert len(recorder.index) == written
    assert hass.states.get(SWITCH).attributes["recording_now"] is False

    await hass.services.async_call("switch", "turn_on", {"entity_id": SWITCH}, blocking=True)
    await _until(lambda: len(recorder.index) > written)

    # Storage sensors describe what is on disk.
    await hass.async_block_till_done()
    used = hass.states.get("sensor.lightnvr_storage_used")
    assert used is not None
    assert float(used.state) > 0
    assert hass.states.get("sensor.lightnvr_oldest_recording").state not in ("unknown", None)
    assert hass.states.get("sensor.porch_last_recording").state != "unknown"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_switch_state_is_restored(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """A camera switched off before a restart stays off after it."""
    mock_restore_cache(hass, [State(SWITCH, STATE_OFF)])
    entry = _entry(rtsp_camera, tmp_path)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    camera_id = next(iter(entry.subentries))
    assert hass.states.get(SWITCH).state == STATE_OFF
    assert not entry.runtime_data.recorder.is_recording_enabled(camera_id)
    await asyncio.sleep(4)
    assert len(entry.runtime_data.recorder.index) == 0
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reload_finishes_the_file_being_written(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """A reload mid-segment leaves a finished, indexed file: no `.part` stays behind."""
    entry = _entry(rtsp_camera, tmp_path, segment_seconds=60)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    camera_id = next(iter(entry.subentries))
    recorder = entry.runtime_data.recorder
    await _until(lambda: (recorder.camera_state(camera_id).bytes_written or 0) > 0)
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    files = list((tmp_path / "rec").rglob("*.mp4"))
    assert files
    assert entry.runtime_data.recorder.index.get(files[0]) is not None
    assert not [p for p in (tmp_path / "rec").rglob("*.part") if p not in _current(entry)]
    assert await hass.config_entries.async_unload(entry.entry_id)


def _current(entry: MockConfigEntry) -> list[Path]:
    recorder = entry.runtime_data.recorder
    return [
        state.current_path
        for camera_id in recorder.camera_ids
        if (state := recorder.camera_state(camera_id)) and state.current_path
    ]


async def test_home_assistant_stop_finishes_the_file(
    hass: HomeAssistant, rtsp_camera: RtspServer, tmp_path: Path
) -> None:
    """HA stops (entries are not unloaded then): the segment being written is finished."""
    entry = _entry(rtsp_camera, tmp_path, segment_seconds=60)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    camera_id = next(iter(entry.subentries))
    recorder = entry.runtime_data.recorder
    await _until(lambda: (recorder.camera_state(camera_id).bytes_written or 0) > 0)
    await hass.async_stop()
    assert list((tmp_path / "rec").rglob("*.mp4"))
    assert not list((tmp_path / "rec").rglob("*.part"))
    assert not [t for t in threading.enumerate() if t.name.startswith("lightnvr-")]
