"""Cameras over several engines: the hub's engine, plus a go2rtc of some cameras' own.

A camera may name its own go2rtc server (`CameraConfig.go2rtc_url`), for example a go2rtc next
to the cameras of an outbuilding. The router is the one `StreamEngine` the rest of LightNVR
talks to: it keeps the hub's engine (embedded, managed or external go2rtc) and one external
`Go2RtcEngine` per distinct camera go2rtc URL, and sends every per-camera call to the engine of
that camera. Each go2rtc has its own watchdog and repair issues (ids suffixed per server, texts
naming it without its login), so one server going down makes only its cameras unavailable: the
cameras elsewhere keep streaming and recording.

A camera go2rtc is started by the first camera that names it and stopped with its last one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import hashlib
import logging
from typing import TYPE_CHECKING, ClassVar

from homeassistant.components.camera import WebRTCError, WebRTCSendMessage
from homeassistant.core import HomeAssistant
from webrtc_models import RTCIceCandidateInit

from ..hub import StreamHub
from ..models import CameraConfig, ViewerLimits
from ..source import redact_url
from .base import StreamEngine
from .go2rtc import (
    ISSUE_CAMERA_UNREACHABLE,
    MODE_EXTERNAL,
    Go2RtcEngine,
    Go2RtcHealth,
    Go2RtcSettings,
    HealthTimings,
    IssueNaming,
)

_LOGGER = logging.getLogger(__name__)


def engine_key(url: str) -> str:
    """Return the key of a go2rtc URL: cameras naming the same server share one engine."""
    return url.strip().rstrip("/")


def issue_suffix(key: str) -> str:
    """Return the repair issue id suffix of a camera go2rtc.

    A hash of the URL without its login: stable across restarts, different per server, and no
    secret can be guessed from it (issue ids are visible to every user).
    """
    return "_" + hashlib.sha256(redact_url(key).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class CameraEngineInfo:
    """One camera go2rtc, for diagnostics: its URL without login, health and cameras."""

    url: str
    health: Go2RtcHealth
    camera_ids: tuple[str, ...]


class EngineRouter:
    """The hub's engine plus one go2rtc engine per camera go2rtc URL, routed per camera."""

    # Watchdog timings of the camera go2rtc engines (None: the defaults). Tests shrink them.
    timings: ClassVar[HealthTimings | None] = None

    def __init__(
        self,
        hass: HomeAssistant,
        default: StreamEngine,
        *,
        settings: Go2RtcSettings,
        limits: ViewerLimits,
        hub_go2rtc_url: str | None = None,
    ) -> None:
        """Wrap the hub's engine; camera engines are made as cameras need them.

        `hub_go2rtc_url` is the hub's own external go2rtc, if that is its engine: a camera
        naming that server is simply carried by the hub's engine.
        """
        self._hass = hass
        self.default = default
        # The hub's engine's name (cameras with a go2rtc of their own: `engine_name`).
        self.name = default.name
        self._settings = settings
        self._limits = limits
        self._hub_key = engine_key(hub_go2rtc_url) if hub_go2rtc_url else None
        self._engines: dict[str, Go2RtcEngine] = {}  # camera go2rtc key → its engine
        self._camera_keys: dict[str, str] = {}  # camera id → key (absent: the hub's engine)
        self._camera_names: dict[str, str] = {}
        self._sessions: dict[str, str] = {}  # WebRTC session id → camera id
        # Adding and removing cameras of one go2rtc must not start or stop it twice.
        self._lock = asyncio.Lock()

    # ----- which engine ---------------------------------------------------------------------

    def engine_for(self, camera_id: str) -> StreamEngine:
        """Return the engine of a camera (the hub's for cameras it does not know)."""
        key = self._camera_keys.get(camera_id)
        return self.default if key is None else self._engines[key]

    def engine_name(self, camera_id: str) -> str:
        """Return the name of the engine carrying a camera."""
        return self.engine_for(camera_id).name

    def go2rtc_health(self, camera_id: str) -> Go2RtcHealth | None:
        """Return the health of the go2rtc carrying a camera, None for the built-in engine."""
        engine = self.engine_for(camera_id)
        return engine.health if isinstance(engine, Go2RtcEngine) else None

    def camera_engines(self) -> list[CameraEngineInfo]:
        """Return every camera go2rtc: URL without login, health, the cameras it carries."""
        return [
            CameraEngineInfo(
                url=engine.api_url,
                health=engine.health,
                camera_ids=tuple(c for c, k in self._camera_keys.items() if k == key),
            )
            for key, engine in self._engines.items()
        ]

    def _key(self, camera: CameraConfig) -> str | None:
        if not camera.go2rtc_url:
            return None
        key = engine_key(camera.go2rtc_url)
        return None if key == self._hub_key else key

    def _issue_placeholders(self, key: str) -> dict[str, str]:
        names = sorted(self._camera_names[c] for c, k in self._camera_keys.items() if k == key)
        return {"cameras": ", ".join(names) or "-"}

    # ----- lifecycle ------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Start the hub's engine (camera go2rtc engines start with their first camera)."""
        await self.default.async_start()

    async def async_stop(self) -> None:
        """Stop every camera go2rtc engine, then the hub's engine."""
        async with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
            self._camera_keys.clear()
            self._camera_names.clear()
            self._sessions.clear()
            await asyncio.gather(*(engine.async_stop() for engine in engines))
        await self.default.async_stop()

    async def async_add_camera(self, camera: CameraConfig) -> StreamHub:
        """Start carrying a camera on its engine, starting its go2rtc engine if it is the first."""
        key = self._key(camera)
        if key is None:
            return await self.default.async_add_camera(camera)
        async with self._lock:
            # Known before the engine starts: its unreachable issue lists this camera.
            self._camera_keys[camera.camera_id] = key
            self._camera_names[camera.camera_id] = camera.name
            engine = self._engines.get(key)
            try:
                if engine is None:
                    engine = await self._async_start_engine(key)
                return await engine.async_add_camera(camera)
            except BaseException:
                await self._async_forget(camera.camera_id)
                raise

    async def _async_start_engine(self, key: str) -> Go2RtcEngine:
        engine = Go2RtcEngine(
            self._hass,
            mode=MODE_EXTERNAL,
            url=key,
            settings=self._settings,
            timings=self.timings,
            limits=self._limits,
            issues=IssueNaming(
                suffix=issue_suffix(key),
                unreachable_key=ISSUE_CAMERA_UNREACHABLE,
                placeholders=lambda: self._issue_placeholders(key),
            ),
        )
        self._engines[key] = engine
        _LOGGER.debug("Starting the go2rtc engine at %s for cameras of its own", engine.api_url)
        # An unreachable server does not raise: its watchdog reports it and keeps checking.
        await engine.async_start()
        return engine

    async def async_remove_camera(self, camera_id: str) -> None:
        """Stop carrying a camera; stop its go2rtc engine when no camera uses it any more."""
        for session_id in [s for s, c in self._sessions.items() if c == camera_id]:
            del self._sessions[session_id]
        if camera_id not in self._camera_keys:
            await self.default.async_remove_camera(camera_id)
            return
        async with self._lock:
            key = self._camera_keys.get(camera_id)
            if key is None:  # removed while we waited for the lock
                return
            try:
                await self._engines[key].async_remove_camera(camera_id)
            finally:
                await self._async_forget(camera_id)

    async def _async_forget(self, camera_id: str) -> None:
        """Drop a camera's routing; stop its go2rtc engine if it was the last camera. Locked."""
        key = self._camera_keys.pop(camera_id, None)
        self._camera_names.pop(camera_id, None)
        if key is None or key in self._camera_keys.values():
            return
        if (engine := self._engines.pop(key, None)) is not None:
            _LOGGER.debug("No camera uses the go2rtc at %s any more: stopping", engine.api_url)
            await engine.async_stop()  # also withdraws its repair issues

    # ----- per camera -----------------------------------------------------------------------

    def hub(self, camera_id: str) -> StreamHub:
        """Return the hub of a camera added before."""
        return self.engine_for(camera_id).hub(camera_id)

    def substream_hub(self, camera_id: str) -> StreamHub | None:
        """Return the hub of the camera's sub-stream, if it has one."""
        return self.engine_for(camera_id).substream_hub(camera_id)

    def live_view_path(self, camera_id: str) -> str:
        """Return how the camera's viewers are served now."""
        return self.engine_for(camera_id).live_view_path(camera_id)

    async def async_stream_source(self, camera_id: str) -> str | None:
        """Return a URL other programs may open for the camera."""
        return await self.engine_for(camera_id).async_stream_source(camera_id)

    async def async_handle_offer(
        self,
        camera_id: str,
        session_id: str,
        offer_sdp: str,
        send_message: WebRTCSendMessage,
    ) -> None:
        """Hand the offer to the camera's engine (past the limit on live views in all)."""
        if self._engines:
            # Each engine counts only its own viewers: the limit in all is kept here.
            refusal = self._limits.refusal(0, self.viewer_count)
            if refusal is not None:
                send_message(WebRTCError("webrtc_offer_failed", refusal))
                return
        self._sessions[session_id] = camera_id
        await self.engine_for(camera_id).async_handle_offer(
            camera_id, session_id, offer_sdp, send_message
        )

    async def async_on_candidate(
        self, camera_id: str, session_id: str, candidate: RTCIceCandidateInit
    ) -> None:
        """Trickle a viewer's candidate to the engine serving its session."""
        await self.engine_for(camera_id).async_on_candidate(camera_id, session_id, candidate)

    def close_session(self, session_id: str) -> None:
        """Close a viewer's session on the engine serving it."""
        camera_id = self._sessions.pop(session_id, None)
        if camera_id is not None:
            self.engine_for(camera_id).close_session(session_id)
            return
        # Unknown here (its camera went meanwhile): every engine forgets it, if it knew it.
        for engine in (self.default, *self._engines.values()):
            engine.close_session(session_id)

    @property
    def viewer_count(self) -> int:
        """Return the number of open WebRTC sessions, on every engine."""
        return self.default.viewer_count + sum(e.viewer_count for e in self._engines.values())

    async def async_snapshot(
        self, camera_id: str, width: int | None, height: int | None
    ) -> bytes | None:
        """Return a JPEG of the camera's newest picture from its engine."""
        return await self.engine_for(camera_id).async_snapshot(camera_id, width, height)


if TYPE_CHECKING:
    # mypy proves the router is an engine to everything that uses one.
    def _conforms(router: EngineRouter) -> StreamEngine:
        return router
