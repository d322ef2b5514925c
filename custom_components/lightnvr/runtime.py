"""Everything a loaded hub entry owns, kept in `entry.runtime_data`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
import logging
from typing import TYPE_CHECKING, Any, Protocol

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.dispatcher import async_dispatcher_send

from .const import DOMAIN, EVENT_CLIP_READY
from .detection.events import DetectionEvents
from .detection.pipeline import DetectionOptions, DetectionPipeline
from .engine.router import EngineRouter
from .hub import StreamHub
from .media.fragments import CameraFragments
from .models import CameraConfig, HubOptions
from .onvif.ptz import OnvifPtz
from .ptz import async_setup_camera_ptz
from .recorder.clips import ClipError, ClipHandle, ClipManager, EventClip
from .recorder.manager import RecorderManager
from .stream_uri import StreamUriWatch

if TYPE_CHECKING:
    from .exports import ExportManager

_LOGGER = logging.getLogger(__name__)

type CameraEntityFactory = Callable[[CameraConfig], None]


class HlsServiceLike(Protocol):
    """The runtime's view of its HLS service (hls.views.HlsService; hls imports runtime)."""

    async def async_stop(self) -> None:
        """Stop every live stream and join every thread."""


def camera_removed_signal(camera_id: str) -> str:
    """Return the dispatcher signal that tells a camera's entities to go away."""
    return f"{DOMAIN}_camera_removed_{camera_id}"


@dataclass(slots=True)
class LightNvrRuntime:
    """The running pieces of one LightNVR hub.

    Cameras can come and go while the hub runs (subentries added, removed, reconfigured):
    only the camera concerned is stopped or started, so the others keep streaming and recording.
    """

    hass: HomeAssistant
    options: HubOptions
    # Routes each camera to its engine: the hub's, or a go2rtc of the camera's own.
    engine: EngineRouter
    recorder: RecorderManager
    clips: ClipManager
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    # One per entity platform: creates that platform's entities for a camera.
    entity_factories: list[CameraEntityFactory] = field(default_factory=list)
    detection: dict[str, DetectionPipeline] = field(default_factory=dict)
    detection_events: dict[str, DetectionEvents] = field(default_factory=dict)
    # Per camera, its one muxer: recorder, event clips and live HLS share its fragments.
    fragments: dict[str, CameraFragments] = field(default_factory=dict)
    # Live and recorded HLS (hls.views.HlsService): set once the recorder runs.
    hls: HlsServiceLike | None = None
    # Exports of time ranges (exports.ExportManager): set once the recorder runs.
    exports: ExportManager | None = None
    # Per running event clip: (event_id, camera entity id) of each detection it covers, told
    # in `lightnvr_clip_ready` once the clip is finished.
    clip_detections: dict[ClipHandle, list[tuple[str, str | None]]] = field(default_factory=dict)
    # The hub entry (set by setup): cameras added through ONVIF update their subentry when the
    # camera moves its streams (stream_uri.StreamUriWatch, one remover per camera).
    entry: ConfigEntry | None = None
    stream_uri_watches: dict[str, Callable[[], None]] = field(default_factory=dict)
    # Pan, tilt, zoom and presets of the cameras added through ONVIF that have PTZ.
    ptz: dict[str, OnvifPtz] = field(default_factory=dict)
    stopped: bool = False
    # Camera changes (a subentry edited, a stream moved) and the hub's unload or stop take
    # turns: a camera being restarted is finished first, and none is started after them (it
    # would run on, with entities on unloaded platforms).
    cameras_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing: bool = False

    def detection_options(self, camera: CameraConfig) -> DetectionOptions:
        """Combine the hub's object settings with the camera's motion settings."""
        return DetectionOptions(
            sensitivity=camera.motion_sensitivity,
            min_area=camera.motion_min_area / 100,
            off_delay=camera.motion_off_delay,
            exclude=camera.exclude_zones,
            keyframes_only=camera.detect_keyframes_only,
            object_url=self.options.object_url,
            api_key=self.options.object_api_key,
            labels=self.options.object_labels,
            min_confidence=self.options.object_min_confidence,
            only_while_motion=self.options.object_only_while_motion,
        )

    @property
    def object_labels(self) -> tuple[str, ...]:
        """Return the labels that get a binary sensor (none without a detection server)."""
        return self.options.object_labels if self.options.object_url else ()

    async def _async_start_detection(self, camera: CameraConfig, hub: StreamHub) -> None:
        """Run detection on the substream when there is one (the engine reads it)."""
        hub = self.engine.substream_hub(camera.camera_id) or hub
        pipeline = DetectionPipeline(
            self.hass, camera.camera_id, hub, self.detection_options(camera), name=camera.name
        )
        await pipeline.async_start()
        self.detection[camera.camera_id] = pipeline
        self.detection_events[camera.camera_id] = DetectionEvents(
            self.hass, camera.camera_id, pipeline, self._on_detection
        )

    def _on_detection(
        self,
        camera_id: str,
        label: str,
        started: bool,
        data: dict[str, Any],
        snapshot: bytes | None,
    ) -> None:
        """Start or end the event clip of a detection (pre-roll comes from memory)."""
        if not self.options.event_clips:
            return
        try:
            if started:
                handle = self.clips.async_trigger(
                    camera_id,
                    label,
                    confidence=data.get("confidence"),
                    box=data.get("box"),
                    snapshot=snapshot,
                )
                if (event_id := data.get("event_id")) is not None:
                    self._note_clip_detection(handle, event_id, data.get("camera_entity_id"))
            else:
                self.clips.async_release(camera_id, label)
        except ClipError as err:
            _LOGGER.warning("No event clip for %s: %s", label, err)

    def _note_clip_detection(
        self, handle: ClipHandle, event_id: str, camera_entity_id: str | None
    ) -> None:
        """Remember that `handle`'s clip covers this detection; wait for the clip once."""
        detections = self.clip_detections.get(handle)
        if detections is not None:  # a detection extending the running clip
            detections.append((event_id, camera_entity_id))
            return
        self.clip_detections[handle] = [(event_id, camera_entity_id)]
        self.hass.async_create_background_task(
            self._async_clip_ready(handle), f"lightnvr clip ready {handle.camera_id}"
        )

    async def _async_clip_ready(self, handle: ClipHandle) -> None:
        """Fire `lightnvr_clip_ready` for each detection of a finished clip.

        One event per detection, each with its own `event_id`: a notification about any of
        them can be updated (by tag) with the clip that shows it.
        """
        try:
            clip = await handle.wait()
        finally:
            detections = self.clip_detections.pop(handle, [])
        if clip is None:  # nothing could be written: no clip to show
            return
        for event_id, camera_entity_id in detections:
            self.hass.bus.async_fire(
                EVENT_CLIP_READY, self.clip_ready_data(clip, event_id, camera_entity_id)
            )

    def clip_ready_data(
        self, clip: EventClip, event_id: str, camera_entity_id: str | None
    ) -> dict[str, Any]:
        """Return the `lightnvr_clip_ready` event data of a finished clip."""
        return {
            "camera_entity_id": camera_entity_id,
            "event_id": event_id,
            "labels": list(clip.labels),
            "media_content_id": f"media-source://{DOMAIN}/{self.clips.relative(clip.path)}",
            "start": datetime.fromtimestamp(clip.start, UTC).isoformat(),
            "end": datetime.fromtimestamp(clip.end, UTC).isoformat(),
        }

    async def _async_stop_detection(self, camera_id: str) -> None:
        if (events := self.detection_events.pop(camera_id, None)) is not None:
            events.detach()
        if (pipeline := self.detection.pop(camera_id, None)) is not None:
            await pipeline.async_stop()

    async def async_add_camera(self, camera: CameraConfig) -> None:
        """Start a camera and its recorder, and create its entities on every loaded platform."""
        hub = await self.engine.async_add_camera(camera)
        fragments = CameraFragments(camera.camera_id, hub)
        fragments.start()  # muxes only while a recorder, a clip or a live viewer wants it
        self.fragments[camera.camera_id] = fragments
        await self.recorder.async_add_camera(
            camera, fragments, retention_days=camera.retention_days
        )
        await self.clips.async_add_camera(camera.camera_id, fragments)
        if camera.detect_motion:
            await self._async_start_detection(camera, hub)
        if camera.onvif is not None and self.entry is not None:
            watch = StreamUriWatch(self.hass, self.entry, camera, hub)
            self.stream_uri_watches[camera.camera_id] = watch.start()
        if (ptz := await async_setup_camera_ptz(self.hass, camera)) is not None:
            self.ptz[camera.camera_id] = ptz
        self.cameras[camera.camera_id] = camera
        for factory in self.entity_factories:
            factory(camera)

    async def async_remove_camera(self, camera_id: str) -> None:
        """Remove a camera's entities and stop it."""
        if self.cameras.pop(camera_id, None) is None:
            return
        async_dispatcher_send(self.hass, camera_removed_signal(camera_id))
        if (stop_watching := self.stream_uri_watches.pop(camera_id, None)) is not None:
            stop_watching()
        if (ptz := self.ptz.pop(camera_id, None)) is not None:
            await ptz.async_close()
        await self._async_stop_detection(camera_id)
        await self._async_stop_fragments(camera_id)
        await self.clips.async_remove_camera(camera_id)
        await self.recorder.async_remove_camera(camera_id)
        await self.engine.async_remove_camera(camera_id)

    async def _async_stop_fragments(self, camera_id: str) -> None:
        """Stop a camera's muxer: what is queued is muxed and handed to its consumers first."""
        if (fragments := self.fragments.pop(camera_id, None)) is not None:
            await self.hass.async_add_executor_job(fragments.stop)

    async def async_stop(self) -> None:
        """Stop the muxers and recording first (they read the hubs), then the engine.

        Idempotent. Each muxer hands what is queued to the recorder and clips before they stop.
        """
        if self.stopped:
            return
        self.stopped = True
        if self.exports is not None:
            # HA stopping does not unload the entry: an export must not hold up the shutdown.
            self.exports.async_cancel_all()
        for camera_id in list(self.detection):
            await self._async_stop_detection(camera_id)
        for camera_id in list(self.ptz):
            await self.ptz.pop(camera_id).async_close()
        if self.hls is not None:
            await self.hls.async_stop()  # live viewers let go of the muxers
        for camera_id in list(self.fragments):
            await self._async_stop_fragments(camera_id)
        await self.clips.async_stop()
        await self.recorder.async_stop()
        await self.engine.async_stop()

    async def async_begin_close(self) -> None:
        """Refuse camera changes from now on; wait for one in progress to finish."""
        self.closing = True
        async with self.cameras_lock:
            pass

    async def async_apply_cameras(self, wanted: dict[str, CameraConfig]) -> None:
        """Bring the running cameras in line with the subentries (not once closing)."""
        async with self.cameras_lock:
            if self.closing or self.stopped:
                return
            for camera_id in [c for c in self.cameras if c not in wanted]:
                _LOGGER.debug("Camera %s removed", self.cameras[camera_id].name)
                await self.async_remove_camera(camera_id)
            for camera_id, camera in wanted.items():
                current = self.cameras.get(camera_id)
                if current == camera:
                    continue
                if current is not None:
                    _LOGGER.debug("Camera %s changed: restarting it", camera.name)
                    await self.async_remove_camera(camera_id)
                await self.async_add_camera(camera)


type LightNvrConfigEntry = ConfigEntry[LightNvrRuntime]
