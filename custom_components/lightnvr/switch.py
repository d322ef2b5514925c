"""Switches of a camera: continuous recording on or off (restored after a restart)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.restore_state import RestoreEntity

from .detection.pipeline import DetectionPipeline
from .entity import LightNvrCameraEntity
from .models import CameraConfig
from .runtime import LightNvrConfigEntry, LightNvrRuntime

# Entities read in-memory state (no I/O per update): no limit needed.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the recording switch of every camera, and its detection switch if it detects."""
    runtime = entry.runtime_data

    def add_camera(camera: CameraConfig) -> None:
        entities: list[SwitchEntity] = [RecordingSwitch(runtime, camera)]
        if (pipeline := runtime.detection.get(camera.camera_id)) is not None:
            entities.append(DetectionSwitch(runtime, camera, pipeline))
        async_add_entities(entities, config_subentry_id=camera.camera_id)

    runtime.entity_factories.append(add_camera)
    for camera in runtime.cameras.values():
        add_camera(camera)


class RecordingSwitch(LightNvrCameraEntity, SwitchEntity, RestoreEntity):
    """`switch.<camera>_recording`: record this camera continuously."""

    _attr_translation_key = "recording"

    def __init__(self, runtime: LightNvrRuntime, camera: CameraConfig) -> None:
        """Create the switch."""
        super().__init__(runtime, camera)
        self._attr_unique_id = f"{camera.camera_id}_recording"
        self._recorder = runtime.recorder

    @property
    def available(self) -> bool:
        """The switch works whether or not the camera is reachable right now."""
        return True

    @property
    def is_on(self) -> bool:
        """Return True when recording is enabled."""
        return self._recorder.is_recording_enabled(self._camera.camera_id)

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Say why an enabled recorder is not writing (storage full, write error …)."""
        state = self._recorder.camera_state(self._camera.camera_id)
        if state is None:
            return {}
        return {
            "recording_now": state.recording,
            "paused_reason": state.pause_reason if state.paused else None,
        }

    async def async_added_to_hass(self) -> None:
        """Restore the user's last choice, then follow the recorder's state."""
        await super().async_added_to_hass()
        last = await self.async_get_last_state()
        if last is not None and last.state in (STATE_ON, STATE_OFF):
            self._recorder.set_recording(self._camera.camera_id, last.state == STATE_ON)
        self.async_on_remove(self._recorder.add_listener(self.async_write_ha_state))

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Start recording."""
        self._recorder.set_recording(self._camera.camera_id, True)
        self.async_write_ha_state()

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Stop recording (the segment being written is finished and kept)."""
        self._recorder.set_recording(self._camera.camera_id, False)
        self.async_write_ha_state()


class DetectionSwitch(LightNvrCameraEntity, SwitchEntity, RestoreEntity):
    """`switch.<camera>_detection`: run motion and object detection for this camera."""

    _attr_translation_key = "detection"

    def __init__(
        self, runtime: LightNvrRuntime, camera: CameraConfig, pipeline: DetectionPipeline
    ) -> None:
        """Create the switch."""
        super().__init__(runtime, camera)
        self._attr_unique_id = f"{camera.camera_id}_detection"
        self._pipeline = pipeline

    @property
    def available(self) -> bool:
        """The switch works whether or not the camera is reachable right now."""
        return True

    @property
    def is_on(self) -> bool:
        """Return True while detection runs."""
        return self._pipeline.enabled

    async def async_added_to_hass(self) -> None:
        """Restore the user's last choice, then follow the pipeline."""
        await super().async_added_to_hass()
        last = await self.async_get_last_state()
        if last is not None and last.state == STATE_OFF:
            await self._pipeline.async_set_enabled(False)
        self.async_on_remove(self._pipeline.async_add_state_listener(self.async_write_ha_state))

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Start detecting."""
        await self._pipeline.async_set_enabled(True)
        self.async_write_ha_state()

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Stop detecting (no decoding at all while off)."""
        await self._pipeline.async_set_enabled(False)
        self.async_write_ha_state()
