"""The camera entity: WebRTC live view and snapshots through the engine."""

from __future__ import annotations

from homeassistant.auth.permissions.const import POLICY_CONTROL
from homeassistant.components.camera import Camera, CameraEntityFeature, WebRTCSendMessage
from homeassistant.core import HomeAssistant, ServiceResponse, SupportsResponse, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError, Unauthorized
from homeassistant.helpers import entity_platform
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
import voluptuous as vol
from webrtc_models import RTCIceCandidateInit

from .const import DOMAIN
from .entity import LightNvrCameraEntity
from .hub import HubState
from .models import CameraConfig
from .ptz import async_register_ptz_services
from .recorder.clips import ClipBusyError, ClipError
from .runtime import LightNvrConfigEntry, LightNvrRuntime

# Entities read in-memory state (no I/O per update): no limit needed.
PARALLEL_UPDATES = 0

SERVICE_SAVE_CLIP = "save_clip"
ATTR_DURATION = "duration"
ATTR_PRE_ROLL = "pre_roll"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: LightNvrConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one camera entity per camera subentry."""
    runtime = entry.runtime_data

    def add_camera(camera: CameraConfig) -> None:
        async_add_entities([LightNvrCamera(runtime, camera)], config_subentry_id=camera.camera_id)

    runtime.entity_factories.append(add_camera)
    platform = entity_platform.async_get_current_platform()
    async_register_ptz_services(platform)  # lightnvr.ptz, lightnvr.ptz_preset
    platform.async_register_entity_service(
        SERVICE_SAVE_CLIP,
        {
            vol.Optional(ATTR_DURATION, default=30): vol.All(
                vol.Coerce(float), vol.Range(min=1, max=600)
            ),
            vol.Optional(ATTR_PRE_ROLL, default=5): vol.All(
                vol.Coerce(float), vol.Range(min=0, max=30)
            ),
        },
        "async_save_clip",
        supports_response=SupportsResponse.OPTIONAL,
    )
    for camera in runtime.cameras.values():
        add_camera(camera)


class LightNvrCamera(LightNvrCameraEntity, Camera):
    """A camera that plays over WebRTC (native async API) and serves snapshots."""

    _attr_name = None  # the device's name
    _attr_supported_features = CameraEntityFeature.STREAM

    def __init__(self, runtime: LightNvrRuntime, camera: CameraConfig) -> None:
        """Create the camera entity."""
        LightNvrCameraEntity.__init__(self, runtime, camera)
        Camera.__init__(self)
        self._attr_unique_id = f"{camera.camera_id}_camera"
        self._engine = runtime.engine

    @property
    def is_streaming(self) -> bool:
        """Streaming while the hub gets video."""
        return self._hub.state is HubState.STREAMING

    async def async_camera_image(
        self, width: int | None = None, height: int | None = None
    ) -> bytes | None:
        """Return a JPEG of the newest keyframe."""
        return await self._engine.async_snapshot(self._camera.camera_id, width, height)

    async def stream_source(self) -> str | None:
        """Return the URL HA's own stream component (HLS) may open."""
        return await self._engine.async_stream_source(self._camera.camera_id)

    async def async_handle_async_webrtc_offer(
        self, offer_sdp: str, session_id: str, send_message: WebRTCSendMessage
    ) -> None:
        """Answer a viewer's WebRTC offer."""
        await self._engine.async_handle_offer(
            self._camera.camera_id, session_id, offer_sdp, send_message
        )

    async def async_on_webrtc_candidate(
        self, session_id: str, candidate: RTCIceCandidateInit
    ) -> None:
        """Add a viewer's ICE candidate."""
        await self._engine.async_on_candidate(self._camera.camera_id, session_id, candidate)

    async def async_save_clip(self, duration: float, pre_roll: float) -> ServiceResponse:
        """Save a clip now (`lightnvr.save_clip`): `pre_roll` of it from before the call.

        Admins only: clips take disk space. Automations and scripts (no user) may call it.
        """
        await self._async_check_admin()
        clips = self._runtime.clips
        try:
            path = await clips.async_save_clip(self._camera.camera_id, duration, pre_roll)
        except (ValueError, ClipBusyError) as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="clip_refused",
                translation_placeholders={"error": str(err)},
            ) from err
        except ClipError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="clip_failed",
                translation_placeholders={"camera": self._camera.name, "error": str(err)},
            ) from err
        return {"media_content_id": f"media-source://{DOMAIN}/{clips.relative(path)}"}

    async def _async_check_admin(self) -> None:
        """Raise Unauthorized unless the service call (its context) comes from an admin."""
        user_id = self._context.user_id if self._context is not None else None
        if user_id is None:
            return
        user = await self.hass.auth.async_get_user(user_id)
        if user is None or not user.is_admin:
            raise Unauthorized(context=self._context, permission=POLICY_CONTROL)

    @callback
    def close_webrtc_session(self, session_id: str) -> None:
        """Close a viewer's session."""
        self._engine.close_session(session_id)
