"""Event and image entities of a camera through a real detection, and `lightnvr_clip_ready`.

A real RTSP camera whose picture moves (the motion clip of `test_detection_ha`), HA core's
`event` and `image` platforms, its image proxy over HTTP and the media source.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
import io
from pathlib import Path
from typing import Any

from homeassistant.components import media_source
from homeassistant.const import STATE_UNKNOWN
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.setup import async_setup_component
from PIL import Image
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.lightnvr.const import DOMAIN, EVENT_CLIP_READY, EVENT_DETECTION

from .conftest import camera_subentry, hub_entry_data
from .detection_helpers import DeepStackServer
from .infra.media import make_motion_clip
from .infra.rtsp import RtspServer

EVENT = "event.yard_detection"
IMAGE = "image.yard_last_detection"


async def _until[T](what: Callable[[], T | None], timeout: float = 60) -> T:
    async with asyncio.timeout(timeout):
        while (found := what()) is None:
            await asyncio.sleep(0.1)
    return found


@pytest.fixture
def yard(media_cache: Path, socket_enabled: None) -> Iterator[RtspServer]:
    """A camera still for 7 s, then moving for 3 s (looping).

    The quiet part outlasts the clips' 5 s post-roll, so event clips end.
    """
    clip = make_motion_clip(media_cache / "motion_7s_static.mp4", seconds=10, static_seconds=7)
    with RtspServer({"yard": clip}) as server:
        yield server


def _on(hass: HomeAssistant, entity_id: str) -> bool | None:
    state = hass.states.get(entity_id)
    return True if state is not None and state.state == "on" else None


async def test_detection_event_image_and_clip_ready(
    hass: HomeAssistant,
    yard: RtspServer,
    tmp_path: Path,
    hass_client: ClientSessionGenerator,
    hass_client_no_auth: ClientSessionGenerator,
) -> None:
    """Motion → event entity and snapshot image; its clip → `lightnvr_clip_ready`, same id."""
    assert await async_setup_component(hass, "media_source", {})
    detections: list[tuple[dict[str, Any], dict[str, Any], str]] = []
    ready: list[dict[str, Any]] = []

    @callback
    def _on_detection(event: Event) -> None:
        # The entities as an automation triggered by this event would read them.
        entity = hass.states.get(EVENT)
        image = hass.states.get(IMAGE)
        assert entity is not None
        assert image is not None
        detections.append((dict(event.data), dict(entity.attributes), image.state))

    hass.bus.async_listen(EVENT_DETECTION, _on_detection)
    hass.bus.async_listen(EVENT_CLIP_READY, lambda event: ready.append(dict(event.data)))

    entry = MockConfigEntry(
        domain=DOMAIN,
        data=hub_entry_data(tmp_path / "rec"),
        subentries_data=[
            camera_subentry(
                "Yard", yard.url("yard"), detect_motion=True, motion_off_delay=0, record=False
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await _until(lambda: _on(hass, "binary_sensor.yard_stream"))

    # Before any detection (7 still seconds): no event, no picture — states, not errors.
    event_state = hass.states.get(EVENT)
    image_state = hass.states.get(IMAGE)
    assert event_state is not None
    assert event_state.state == STATE_UNKNOWN
    assert event_state.attributes["event_types"] == ["motion"]
    assert image_state is not None
    assert image_state.state == STATE_UNKNOWN
    assert image_state.attributes["friendly_name"] == "Yard Last detection"

    await _until(lambda: detections or None)
    data, attributes, image_when = detections[0]
    assert data["label"] == "motion"
    assert data["camera_entity_id"] == "camera.yard"
    assert data["snapshot"] == IMAGE
    event_id = data["event_id"]
    assert isinstance(event_id, str)
    assert len(event_id) == 26  # a ULID
    # The entities hold this detection when its event fires.
    assert attributes["event_type"] == "motion"
    assert attributes["event_id"] == event_id
    assert attributes["confidence"] == data["confidence"]
    assert 0 < attributes["confidence"] <= 1
    assert attributes["box"] == data["box"]
    assert set(attributes["box"]) == {"x_min", "y_min", "x_max", "y_max"}
    assert image_when != STATE_UNKNOWN

    # HA's image proxy serves the snapshot (an authenticated client, as the apps are).
    client = await hass_client()
    response = await client.get(f"/api/image_proxy/{IMAGE}")
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    picture = Image.open(io.BytesIO(await response.read()))
    assert picture.format == "JPEG"
    assert picture.size == (640, 360)  # the camera's picture (not wider than 640)
    picture.verify()
    # The state's access token works without a login too (dashboards use it).
    token = hass.states.get(IMAGE).attributes["access_token"]
    anonymous = await hass_client_no_auth()
    assert (await anonymous.get(f"/api/image_proxy/{IMAGE}")).status == 403
    assert (await anonymous.get(f"/api/image_proxy/{IMAGE}?token={token}")).status == 200

    # The clip of that detection: same id, a media-source id the media source plays.
    finished = await _until(lambda: next((r for r in ready if r["event_id"] == event_id), None))
    assert finished["camera_entity_id"] == "camera.yard"
    assert finished["labels"][0] == "motion"
    assert finished["start"] < finished["end"]
    media_id = finished["media_content_id"]
    assert media_id.startswith(f"media-source://{DOMAIN}/events/")
    played = await media_source.async_resolve_media(hass, media_id, None)
    assert played.mime_type == "video/mp4"
    clips = entry.runtime_data.clips
    assert any(
        media_id.endswith(clips.relative(clip.path))
        for clip in clips.clips(next(iter(entry.subentries)))
    )
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.fixture
async def deepstack(socket_enabled: None) -> AsyncIterator[DeepStackServer]:
    """A local server speaking the DeepStack API that always sees a person."""
    server = DeepStackServer()
    await server.start()
    yield server
    await server.stop()


async def test_object_label_event_type(
    hass: HomeAssistant, yard: RtspServer, deepstack: DeepStackServer, tmp_path: Path
) -> None:
    """With a detection server, each configured label is an event type; a person fires one."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            "object_url": deepstack.url,
            "object_api_key": "secret-key-123",
            "object_labels": ["person", "car"],
        },
        subentries_data=[
            camera_subentry(
                "Yard", yard.url("yard"), detect_motion=True, motion_off_delay=0, record=False
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    state = hass.states.get(EVENT)
    assert state is not None
    assert state.attributes["event_types"] == ["motion", "person", "car"]

    def _person() -> dict[str, Any] | None:
        state = hass.states.get(EVENT)
        if state is None or state.attributes.get("event_type") != "person":
            return None
        return dict(state.attributes)

    attributes = await _until(_person)
    assert attributes["confidence"] == pytest.approx(0.91)
    assert attributes["box"]["x_min"] == pytest.approx(0.25, abs=0.01)
    assert len(attributes["event_id"]) == 26
    assert "secret-key-123" not in str(attributes)
    assert await hass.config_entries.async_unload(entry.entry_id)
