"""PTZ: the ONVIF PTZ client against the double, and `lightnvr.ptz` / preset buttons in HA."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.lightnvr.button import PRESET_REFRESH
from custom_components.lightnvr.const import (
    CONF_ONVIF_HOST,
    CONF_ONVIF_PORT,
    CONF_ONVIF_PROFILE,
    CONF_ONVIF_PTZ,
    CONF_ONVIF_SUB_PROFILE,
    DOMAIN,
)
from custom_components.lightnvr.onvif.client import OnvifError
from custom_components.lightnvr.onvif.ptz import OnvifPtz

from .conftest import camera_subentry, hub_entry_data
from .infra.rtsp import RtspServer
from .onvif_double import OnvifDouble, PtzCall, StreamProfile
from .onvif_double.fixtures import *  # noqa: F403 - fixtures (until conftest imports them)
from .onvif_double.fixtures import OnvifDoubleFactory

PTZ_CAMERA = "camera.garden"
PLAIN_CAMERA = "camera.porch"
PROFILES = [
    StreamProfile("main", "Main", "rtsp://192.0.2.10/main", ptz=True),
    StreamProfile("sub", "Sub", "rtsp://192.0.2.10/sub", width=640, height=360),
]


def _ptz(hass: HomeAssistant, double: OnvifDouble, token: str = "main") -> OnvifPtz:
    return OnvifPtz(hass, double.host, double.port, double.username, double.password, token)


async def _wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


# ----- the client ----------------------------------------------------------------------------


async def test_move_then_stop(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """ContinuousMove with the velocities asked for, then Stop once the duration is over."""
    double = onvif_double_factory(PROFILES)
    ptz = _ptz(hass, double)
    try:
        await ptz.async_move(0.5, -0.25, 0.0, 0.2)
        assert double.ptz_calls == [
            PtzCall("ContinuousMove", "main", pan=0.5, tilt=-0.25),
            PtzCall("Stop", "main"),
        ]
        double.ptz_calls.clear()
        await ptz.async_move(0.0, 0.0, 1.0, None)  # zoom only, no timed stop
        assert double.ptz_calls == [PtzCall("ContinuousMove", "main", zoom=1.0)]
        await ptz.async_stop()
        assert double.ptz_calls[-1] == PtzCall("Stop", "main")
    finally:
        await ptz.async_close()


async def test_newer_move_is_not_stopped_by_older_timer(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """A move started while another one waits for its stop keeps going until its own stop."""
    double = onvif_double_factory(PROFILES)
    ptz = _ptz(hass, double)
    try:
        first = asyncio.create_task(ptz.async_move(1.0, 0.0, 0.0, 0.3))
        await _wait_until(lambda: len(double.ptz_calls) == 1)
        await ptz.async_move(-1.0, 0.0, 0.0, None)
        await first
        assert [c.operation for c in double.ptz_calls] == ["ContinuousMove", "ContinuousMove"]
        assert double.ptz_calls[-1].pan == -1.0
    finally:
        await ptz.async_close()


async def test_presets(hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory) -> None:
    """Presets are listed (token, name); GotoPreset reaches the camera, with a speed if given."""
    double = onvif_double_factory(PROFILES, presets=[("1", "Door"), ("7", "")])
    ptz = _ptz(hass, double)
    try:
        assert await ptz.async_presets() == [("1", "Door"), ("7", "7")]
        assert ptz.presets == (("1", "Door"), ("7", "7"))
        await ptz.async_goto_preset("7")
        await ptz.async_goto_preset("1", speed=0.3)
        assert double.ptz_calls == [
            PtzCall("GotoPreset", "main", preset="7"),
            PtzCall("GotoPreset", "main", preset="1", speed=0.3),
        ]
        with pytest.raises(OnvifError):
            await ptz.async_goto_preset("no-such-preset")
    finally:
        await ptz.async_close()


async def test_ptz_with_camera_clock_off(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """PTZ signs with the camera's time too: its clock a day off, commands still work."""
    double = onvif_double_factory(PROFILES, clock_offset=-86400.0)
    ptz = _ptz(hass, double)
    try:
        await ptz.async_move(0.0, 0.5, 0.0, None)
        assert double.ptz_calls == [PtzCall("ContinuousMove", "main", pan=0.0, tilt=0.5)]
        assert double.refused == []
    finally:
        await ptz.async_close()


async def test_ptz_wrong_password(
    hass: HomeAssistant, onvif_double_factory: OnvifDoubleFactory
) -> None:
    """A refused login is an OnvifError, and nothing moves."""
    double = onvif_double_factory(PROFILES)
    ptz = OnvifPtz(hass, double.host, double.port, double.username, "wrong", "main")
    with pytest.raises(OnvifError) as err:
        await ptz.async_move(0.5, 0.0, 0.0, None)
    assert err.value.reason == "invalid_auth"
    assert double.ptz_calls == []
    await ptz.async_close()


# ----- Home Assistant: services and preset buttons --------------------------------------------


def _onvif_subentry(name: str, rtsp: RtspServer, double: OnvifDouble) -> ConfigSubentryData:
    """A camera subentry as the ONVIF path of the camera flow stores it."""
    return camera_subentry(
        name,
        rtsp.auth_url("cam", credentials=False),
        **{
            CONF_USERNAME: rtsp.user,
            CONF_PASSWORD: rtsp.password,
            CONF_ONVIF_HOST: double.host,
            CONF_ONVIF_PORT: double.port,
            CONF_ONVIF_PROFILE: "main",
            CONF_ONVIF_SUB_PROFILE: "sub",
            CONF_ONVIF_PTZ: True,
        },
    )


@pytest.fixture
async def ptz_entry(
    hass: HomeAssistant, rtsp_camera: RtspServer, onvif_camera: OnvifDouble, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A hub with an ONVIF PTZ camera ("Garden") and a stream-URL camera ("Porch")."""
    plain = camera_subentry("Porch", rtsp_camera.url("cam"))
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="LightNVR",
        data=hub_entry_data(tmp_path / "recordings"),
        subentries_data=[_onvif_subentry("Garden", rtsp_camera, onvif_camera), plain],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    for entity_id in (PTZ_CAMERA, PLAIN_CAMERA):
        await _wait_until(
            lambda e=entity_id: (
                (s := hass.states.get(e)) is not None and s.state != STATE_UNAVAILABLE
            )
        )
    yield entry
    if entry.state.recoverable:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


def _subentry_id(entry: MockConfigEntry, title: str) -> str:
    return next(sid for sid, sub in entry.subentries.items() if sub.title == title)


def _buttons(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, str]:
    """Preset buttons of the entry: unique id → entity id."""
    registry = er.async_get(hass)
    return {
        e.unique_id: e.entity_id
        for e in er.async_entries_for_config_entry(registry, entry.entry_id)
        if e.domain == "button"
    }


async def test_ptz_service_moves_the_camera(
    hass: HomeAssistant, ptz_entry: MockConfigEntry, onvif_camera: OnvifDouble
) -> None:
    """`lightnvr.ptz` pan right at speed 0.5: ContinuousMove x=+0.5, then Stop."""
    await hass.services.async_call(
        DOMAIN,
        "ptz",
        {"entity_id": PTZ_CAMERA, "pan": "right", "speed": 0.5, "duration": 0.2},
        blocking=True,
    )
    assert onvif_camera.ptz_calls == [
        PtzCall("ContinuousMove", "main", pan=0.5, tilt=0.0),
        PtzCall("Stop", "main"),
    ]
    onvif_camera.ptz_calls.clear()
    await hass.services.async_call(
        DOMAIN,
        "ptz",
        {"entity_id": PTZ_CAMERA, "tilt": "down", "zoom": "in", "speed": 1, "duration": 0.1},
        blocking=True,
    )
    assert onvif_camera.ptz_calls == [
        PtzCall("ContinuousMove", "main", pan=0.0, tilt=-1.0, zoom=1.0),
        PtzCall("Stop", "main"),
    ]


async def test_ptz_preset_service(
    hass: HomeAssistant, ptz_entry: MockConfigEntry, onvif_camera: OnvifDouble
) -> None:
    """`lightnvr.ptz_preset` lists the presets (with a response) and goes to one."""
    response = await hass.services.async_call(
        DOMAIN, "ptz_preset", {"entity_id": PTZ_CAMERA}, blocking=True, return_response=True
    )
    assert response == {
        PTZ_CAMERA: {"presets": [{"token": "1", "name": "Door"}, {"token": "2", "name": "Gate"}]}
    }
    await hass.services.async_call(
        DOMAIN, "ptz_preset", {"entity_id": PTZ_CAMERA, "preset": "2"}, blocking=True
    )
    await hass.services.async_call(
        DOMAIN, "ptz", {"entity_id": PTZ_CAMERA, "preset": "1"}, blocking=True
    )
    assert [(c.operation, c.preset) for c in onvif_camera.ptz_calls] == [
        ("GotoPreset", "2"),
        ("GotoPreset", "1"),
    ]
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, "ptz_preset", {"entity_id": PTZ_CAMERA, "preset": "99"}, blocking=True
        )
    assert err.value.translation_key == "ptz_failed"


async def test_preset_buttons(
    hass: HomeAssistant, ptz_entry: MockConfigEntry, onvif_camera: OnvifDouble
) -> None:
    """One button per preset of the PTZ camera, none for the other; pressing goes there."""
    garden = _subentry_id(ptz_entry, "Garden")
    buttons = _buttons(hass, ptz_entry)
    assert set(buttons) == {f"{garden}_preset_1", f"{garden}_preset_2"}
    door = buttons[f"{garden}_preset_1"]
    state = hass.states.get(door)
    assert state is not None
    assert state.state != STATE_UNAVAILABLE
    await hass.services.async_call("button", "press", {"entity_id": door}, blocking=True)
    assert onvif_camera.ptz_calls == [PtzCall("GotoPreset", "main", preset="1")]


async def test_preset_buttons_follow_the_cameras_presets(
    hass: HomeAssistant,
    ptz_entry: MockConfigEntry,
    onvif_camera: OnvifDouble,
) -> None:
    """A preset made in the camera's app gets a button, a deleted one loses it: at the next
    listing of the presets, and by the hourly read without anyone asking."""
    garden = _subentry_id(ptz_entry, "Garden")
    gate = _buttons(hass, ptz_entry)[f"{garden}_preset_2"]
    onvif_camera.presets = [("1", "Door"), ("3", "Drive")]
    await hass.services.async_call(
        DOMAIN, "ptz_preset", {"entity_id": PTZ_CAMERA}, blocking=True, return_response=True
    )
    await hass.async_block_till_done()
    buttons = _buttons(hass, ptz_entry)
    assert set(buttons) == {f"{garden}_preset_1", f"{garden}_preset_3"}
    assert hass.states.get(gate) is None
    drive = buttons[f"{garden}_preset_3"]
    await hass.services.async_call("button", "press", {"entity_id": drive}, blocking=True)
    assert onvif_camera.ptz_calls[-1] == PtzCall("GotoPreset", "main", preset="3")

    onvif_camera.presets = [("3", "Drive"), ("4", "Shed")]
    async_fire_time_changed(hass, dt_util.utcnow() + PRESET_REFRESH)
    await _wait_until(lambda: f"{garden}_preset_4" in _buttons(hass, ptz_entry))
    await hass.async_block_till_done()
    assert set(_buttons(hass, ptz_entry)) == {f"{garden}_preset_3", f"{garden}_preset_4"}


async def test_camera_without_ptz_refuses(hass: HomeAssistant, ptz_entry: MockConfigEntry) -> None:
    """A stream-URL camera has no PTZ: both services say so clearly."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("ptz", {"entity_id": PLAIN_CAMERA, "pan": "left"}),
        ("ptz_preset", {"entity_id": PLAIN_CAMERA, "preset": "1"}),
    ]
    for service, data in calls:
        with pytest.raises(ServiceValidationError) as err:
            await hass.services.async_call(DOMAIN, service, data, blocking=True)
        assert err.value.translation_key == "ptz_not_supported"
