"""The go2rtc engine: go2rtc carries the video, LightNVR supervises it.

go2rtc holds the one connection to each camera. Each camera's StreamHub (recorder, detection,
snapshot fall-back) reads go2rtc's RTSP restream of it, viewers get WebRTC straight from go2rtc
(the offer forwarded over its WebSocket API, candidates trickled both ways), snapshots come
from `/api/frame.jpeg`. Viewers go2rtc cannot serve (an H.265 camera and a viewer that does not
decode H.265, camera audio a browser does not play) are served by LightNVR itself from the
restream, with the built-in engine's rules (`..viewers`).

Two modes: **managed** (LightNVR runs the go2rtc binary with its own private config and restarts
it when needed) and **external** (a go2rtc someone else runs, reached by URL; same checks, no
restarts). The watchdog in health.py does the checking and healing; the managed process itself
(config file, pid file, start, stop) is kept by managed.py, and snapshots are taken by
snapshots.py, so this module is left with the cameras, the viewers and the watchdog's view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
import logging
from pathlib import Path
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from homeassistant.components.camera import WebRTCError, WebRTCSendMessage
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import CALLBACK_TYPE, Event, HomeAssistant
from homeassistant.helpers import issue_registry as ir
from webrtc_models import RTCIceCandidateInit, RTCIceServer

from ...const import DOMAIN
from ...hub import StreamHub
from ...models import CameraConfig, ViewerLimits
from ...reachability import camera_address
from ...source import CameraSource, Redactor, url_secrets
from ..base import StreamEngine
from ..viewers import LocalViewers, plays_as_is
from ..webrtc import offered_codecs
from .binary import MIN_VERSION, BinaryCheck, parse_version_tuple
from .client import Go2RtcApiError, Go2RtcClient, StreamStatus
from .config import Go2RtcSettings, UnsafeConfigValueError, check_source
from .health import (
    ISSUE_PORT_IN_USE,
    MODE_EXTERNAL,
    MODE_MANAGED,
    Go2RtcHealth,
    Go2RtcWatchdog,
    HealthTimings,
    IssueNaming,
    report_port_in_use,
)
from .managed import ManagedGo2Rtc
from .process import READY_TIMEOUT, STOP_TIMEOUT, Go2RtcPortInUseError
from .snapshots import async_snapshot
from .viewers import ForwardedViewers

_LOGGER = logging.getLogger(__name__)

STREAM_PREFIX = "lightnvr_"
# go2rtc is local: a hub that lost its restream may retry it often.
RESTREAM_BACKOFF_MAX = 5.0
PROBE_PING_TIMEOUT = 2.0
GO2RTC_RTSP_PORT = 8554


def stream_name(camera_id: str) -> str:
    """Return the go2rtc stream name of a camera: stable (the subentry id) and URL-safe."""
    return STREAM_PREFIX + re.sub(r"[^a-z0-9_]", "_", camera_id.lower())


class Go2RtcEngine:
    """Stream engine backed by a go2rtc process (managed) or server (external)."""

    name = "go2rtc"

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        mode: str,
        config_dir: Path | None = None,
        binary: BinaryCheck | None = None,
        url: str | None = None,
        settings: Go2RtcSettings | None = None,
        timings: HealthTimings | None = None,
        ready_timeout: float = READY_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        limits: ViewerLimits | None = None,
        issues: IssueNaming | None = None,
    ) -> None:
        """Prepare the engine; `async_start` starts (or contacts) go2rtc.

        `issues` names the repair issues of a go2rtc that is not the hub's engine.
        """
        if mode == MODE_MANAGED:
            if binary is None or not binary.usable or config_dir is None:
                raise ValueError("managed mode needs a usable binary and a config folder")
        elif mode == MODE_EXTERNAL:
            if not url:
                raise ValueError("external mode needs the go2rtc URL")
        else:
            raise ValueError(f"unknown go2rtc mode {mode!r}")
        self._hass = hass
        self.mode = mode
        self._settings = settings or Go2RtcSettings()
        self._timings = timings or HealthTimings()
        self._redact = Redactor()
        self._cameras: dict[str, CameraConfig] = {}
        self._names: dict[str, str] = {}
        self._hubs: dict[str, StreamHub] = {}
        # Sub-streams are read straight from the camera (not registered with go2rtc).
        self._substreams: dict[str, StreamHub] = {}
        self._forwarded = ForwardedViewers(hass, self._redact)
        self._local = LocalViewers(hass)
        self._limits = limits or ViewerLimits()
        self._listeners: list[Callable[[], None]] = []
        self._client: Go2RtcClient | None = None
        self._managed = ManagedGo2Rtc(
            hass,
            config_dir=config_dir,
            binary=binary,
            settings=self._settings,
            redact=self._redact,
            ready_timeout=ready_timeout,
            stop_timeout=stop_timeout,
        )
        self._restart_lock = asyncio.Lock()
        self._unsub_stop: CALLBACK_TYPE | None = None
        # External mode: API base URL without userinfo, credentials apart, restream location.
        self._url = url or ""
        self._api_user: str | None = None
        self._api_password: str | None = None
        self._rtsp_host = "127.0.0.1"
        self._rtsp_port = GO2RTC_RTSP_PORT
        version = binary.version if binary is not None else None
        self._watchdog = Go2RtcWatchdog(
            hass,
            self,
            mode=mode,
            display_url=self._redact(url or "go2rtc"),
            timings=self._timings,
            health=Go2RtcHealth(mode=mode, healthy=False, version=version),
            issues=issues,
        )

    # ----- health (for the hub's entities and diagnostics) ------------------------------------

    @property
    def health(self) -> Go2RtcHealth:
        """Return go2rtc's health (healthy, restart_count, last_error, mode, version)."""
        return self._watchdog.health

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` (in the event loop) whenever `health` changes; return a remover."""
        self._listeners.append(listener)

        def _remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return _remove

    def health_changed(self, health: Go2RtcHealth) -> None:
        """Tell listeners (called by the watchdog)."""
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                _LOGGER.exception("Error in a go2rtc health listener")

    @property
    def process_pid(self) -> int | None:
        """Return the managed go2rtc's pid while it runs."""
        process = self._managed.process
        return process.pid if process is not None else None

    @property
    def api_url(self) -> str:
        """Return the API URL (without credentials)."""
        return self._client.display_url if self._client is not None else self._redact(self._url)

    # ----- lifecycle --------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Start go2rtc (managed) or contact it (external); then start the watchdog.

        Managed: raises Go2RtcPortInUseError or Go2RtcStartError when go2rtc does not start
        (nothing is left running then). External: never raises for an unreachable server; the
        watchdog reports it with a repair issue and keeps checking.
        """
        if self.mode == MODE_MANAGED:
            await self._async_start_managed()
            # HA does not unload config entries when it stops: stop go2rtc ourselves.
            self._unsub_stop = self._hass.bus.async_listen_once(
                EVENT_HOMEASSISTANT_STOP, self._async_hass_stopping
            )
            self._watchdog.async_start()
        else:
            reachable, detail = await self._async_start_external()
            self._watchdog.async_start(reachable=reachable, detail=detail)

    async def _async_start_managed(self) -> None:
        config = await self._managed.async_write_first_config(self._stream_sources)
        self._redact.add(*config.secrets())
        self._rtsp_port = config.rtsp_port
        self._client = Go2RtcClient(
            config.api_url,
            unix_socket=config.api_socket,
            username=config.api_username,
            password=config.api_password,
            redact=self._redact,
        )
        try:
            await self._async_launch()
        except Go2RtcPortInUseError as err:
            report_port_in_use(self._hass, err)
            await self._async_close_client()
            raise
        except BaseException:
            await self._async_close_client()
            raise
        ir.async_delete_issue(self._hass, DOMAIN, ISSUE_PORT_IN_USE)

    async def _async_launch(self) -> None:
        """Start a new go2rtc process from the current config and register every stream."""
        process = await self._managed.async_launch(self._async_ready_probe)
        try:
            await self._async_sync_streams()
        except Go2RtcApiError as err:
            # Started but already failing again: the watchdog's next round sees it.
            _LOGGER.warning("Cannot register the streams with go2rtc: %s", err)
        self._watchdog.update(pid=process.pid, healthy=True)

    async def _async_ready_probe(self) -> bool:
        assert self._client is not None
        await self._client.async_info(PROBE_PING_TIMEOUT)
        return True

    async def _async_start_external(self) -> tuple[bool, str]:
        parts = urlsplit(self._url)
        self._api_user = unquote(parts.username) if parts.username else None
        self._api_password = unquote(parts.password) if parts.password else None
        self._redact.add(self._api_password)
        host = parts.hostname or "127.0.0.1"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self._rtsp_host = host
        self._client = Go2RtcClient(
            base, username=self._api_user, password=self._api_password, redact=self._redact
        )
        try:
            info = await self._client.async_info(self._timings.request_timeout)
        except Go2RtcApiError as err:
            _LOGGER.debug("External go2rtc at %s is not reachable yet: %s", self.api_url, err)
            return False, str(err)
        self._apply_info(info)
        await self._async_sync_streams()
        self._watchdog.update(healthy=True)
        return True, ""

    def _apply_info(self, info: dict[str, object]) -> None:
        version = str(info.get("version") or "") or None
        self._watchdog.update(version=version)
        if version and parse_version_tuple(version) < MIN_VERSION:
            _LOGGER.warning(
                "go2rtc at %s is version %s; 1.9 or newer is needed", self.api_url, version
            )
        rtsp = info.get("rtsp")
        listen = str(rtsp.get("listen", "")) if isinstance(rtsp, dict) else ""
        port = listen.rpartition(":")[2].split("/")[0]
        if port.isdigit():
            self._rtsp_port = int(port)
        else:
            _LOGGER.warning(
                "go2rtc at %s has no RTSP server; cameras cannot be restreamed", self.api_url
            )

    async def _async_hass_stopping(self, _event: Event) -> None:
        self._unsub_stop = None
        await self._watchdog.async_stop()
        await self._managed.async_stop()

    async def async_stop(self) -> None:
        """Stop the watchdog, viewers, hubs and (managed) go2rtc. Leaves nothing running."""
        if self._unsub_stop is not None:
            self._unsub_stop()
            self._unsub_stop = None
        await self._watchdog.async_stop()
        await self._local.async_stop()
        await self._forwarded.async_stop()
        hubs = [*self._hubs.values(), *self._substreams.values()]
        self._hubs.clear()
        self._substreams.clear()
        await asyncio.gather(*(hub.async_stop() for hub in hubs))
        await self._managed.async_stop()
        await self._async_close_client()
        self._watchdog.update(healthy=False, pid=None)

    async def _async_close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.async_close()

    # ----- cameras ----------------------------------------------------------------------------

    def _stream_sources(self) -> dict[str, str]:
        """Return the sources for go2rtc.yaml: every camera go2rtc would read literally."""
        return {
            self._names[camera_id]: camera.source.connect_url()
            for camera_id, camera in self._cameras.items()
            if self._safe_source(camera_id)
        }

    def _safe_source(self, camera_id: str) -> bool:
        """Return False (and log an error) for a camera whose source go2rtc would expand.

        go2rtc replaces `${NAME}` with its host's environment and credential files: such a
        camera is never registered, and the others keep working.
        """
        name = self._names[camera_id]
        try:
            check_source(name, self._cameras[camera_id].source.connect_url())
        except UnsafeConfigValueError as err:
            _LOGGER.error("%s is not given to go2rtc: %s", self._cameras[camera_id].name, err)
            return False
        return True

    def _restream_source(self, name: str) -> CameraSource:
        if (config := self._managed.config) is not None:
            return CameraSource(
                config.restream_url(name), config.rtsp_username, config.rtsp_password
            )
        return CameraSource(
            f"rtsp://{self._rtsp_host}:{self._rtsp_port}/{name}",
            self._api_user,
            self._api_password,
        )

    async def async_add_camera(self, camera: CameraConfig) -> StreamHub:
        """Register the camera with go2rtc and start a hub on its restream."""
        name = stream_name(camera.camera_id)
        self._cameras[camera.camera_id] = camera
        self._names[camera.camera_id] = name
        self._redact.add(camera.source.password, *url_secrets(camera.source.url))
        # An external go2rtc known to be down is not asked (each try would wait for its
        # timeout while HA sets up): the watchdog registers the stream once it answers.
        reachable = self.mode == MODE_MANAGED or self.health.healthy
        if self._client is not None and reachable:
            try:
                await self._async_register_camera(camera.camera_id)
            except Go2RtcApiError as err:
                # The watchdog finds the stream missing and registers it once go2rtc answers.
                _LOGGER.warning("Cannot register %s with go2rtc yet: %s", camera.name, err)
        self._watchdog.stream_registered(name)
        hub = StreamHub(
            camera.name,
            self._restream_source(name),
            self._hass.loop,
            backoff_max=RESTREAM_BACKOFF_MAX,
        )
        self._hubs[camera.camera_id] = hub
        hub.start()
        substream = None
        if camera.substream is not None:
            substream = StreamHub(f"{camera.name} (substream)", camera.substream, self._hass.loop)
            self._substreams[camera.camera_id] = substream
            substream.start()
        self._local.add_camera(
            camera.camera_id, hub, substream, transcode_full_size=camera.transcode_full_size
        )
        return hub

    async def async_remove_camera(self, camera_id: str) -> None:
        """Close the camera's viewers, stop its hub and remove its go2rtc stream."""
        await self._local.async_remove_camera(camera_id)
        camera = self._cameras.pop(camera_id, None)
        name = self._names.pop(camera_id, None)
        hub = self._hubs.pop(camera_id, None)
        substream = self._substreams.pop(camera_id, None)
        self._forwarded.close_camera(camera_id)
        if name is not None:
            self._watchdog.stream_removed(name)
            if self._client is not None:
                try:
                    await self._client.async_remove_stream(name, self._timings.request_timeout)
                except Go2RtcApiError as err:
                    _LOGGER.debug(
                        "Cannot remove stream of %s from go2rtc: %s",
                        camera.name if camera is not None else camera_id,
                        err,
                    )
        if hub is not None:
            await hub.async_stop()
        if substream is not None:
            await substream.async_stop()

    def hub(self, camera_id: str) -> StreamHub:
        """Return a camera's hub."""
        return self._hubs[camera_id]

    def live_view_path(self, camera_id: str) -> str:
        """Return how this camera's viewers are served now.

        The way LightNVR serves viewers go2rtc cannot serve, if any; else "go2rtc" while go2rtc
        serves one; else "idle".
        """
        if (local := self._local.path(camera_id)) is not None:
            return local
        return "go2rtc" if self._forwarded.count_for(camera_id) else "idle"

    def substream_hub(self, camera_id: str) -> StreamHub | None:
        """Return the hub reading the camera's sub-stream, if it has one."""
        return self._substreams.get(camera_id)

    async def async_stream_source(self, camera_id: str) -> str | None:
        """Return go2rtc's RTSP restream of the camera (credentials included)."""
        name = self._names.get(camera_id)
        return self._restream_source(name).connect_url() if name is not None else None

    async def _async_register_camera(self, camera_id: str) -> None:
        assert self._client is not None
        camera = self._cameras[camera_id]
        if self._safe_source(camera_id):
            await self._client.async_add_stream(self._names[camera_id], camera.source.connect_url())

    async def _async_sync_streams(self) -> None:
        """Register every camera go2rtc does not know (after a start or restart)."""
        if self._client is None or not self._cameras:
            return
        known = await self._client.async_streams(self._timings.request_timeout)
        for camera_id, name in list(self._names.items()):
            if name not in known:
                await self._async_register_camera(camera_id)
            self._watchdog.stream_registered(name)

    # ----- the watchdog's view (WatchdogTarget) -----------------------------------------------

    @property
    def process_exited(self) -> asyncio.Event | None:
        """Return the managed process's exit event."""
        process = self._managed.process
        return process.exited if process is not None else None

    def process_running(self) -> bool:
        """Return True while the managed process runs (always True in external mode)."""
        if self.mode == MODE_EXTERNAL:
            return True
        process = self._managed.process
        return process is not None and process.running

    async def async_check_api(self, time_limit: float) -> dict[str, StreamStatus]:
        """GET /api and GET /api/streams."""
        if self._client is None:
            raise Go2RtcApiError("no API client")
        info = await self._client.async_info(time_limit)
        if self.mode == MODE_EXTERNAL and info.get("version") != self.health.version:
            self._apply_info(info)
        return await self._client.async_streams(time_limit)

    def expected_streams(self) -> list[str]:
        """Return the stream names of the cameras."""
        return list(self._names.values())

    async def async_register(self, name: str) -> None:
        """Register stream `name` again (replaces it in go2rtc)."""
        for camera_id, known in self._names.items():
            if known == name:
                await self._async_register_camera(camera_id)
                return

    async def async_restart(self) -> None:
        """Restart the managed go2rtc with the same ports and register every stream."""
        async with self._restart_lock:
            await self._managed.async_replace_failed(self._stream_sources)
            await self._async_launch()

    async def async_probe_camera(self, name: str, time_limit: float) -> bool:
        """Return True if the camera behind stream `name` accepts a TCP connection."""
        camera = next(
            (self._cameras[c] for c, n in self._names.items() if n == name and c in self._cameras),
            None,
        )
        if camera is None:
            return False
        address = camera_address(camera.source.url)
        if address is None:
            return False
        try:
            async with asyncio.timeout(time_limit):
                _, writer = await asyncio.open_connection(*address)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def log_tail(self, count: int) -> list[str]:
        """Return the managed go2rtc's last log lines (redacted), or a dead one's."""
        return self._managed.log_tail(count)

    # ----- live view --------------------------------------------------------------------------

    def _ice_servers(self) -> list[RTCIceServer]:
        return [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in self._settings.ice_servers
        ]

    async def async_handle_offer(
        self,
        camera_id: str,
        session_id: str,
        offer_sdp: str,
        send_message: WebRTCSendMessage,
    ) -> None:
        """Forward the offer to go2rtc over its WebSocket; relay answer, candidates, errors.

        A viewer go2rtc cannot serve as the camera sends (see `plays_as_is`) is answered here
        instead, from go2rtc's restream: go2rtc would refuse it, or leave it without sound.
        """
        refusal = self._limits.refusal(
            self._forwarded.count_for(camera_id) + self._local.count_for(camera_id),
            self.viewer_count,
        )
        if refusal is not None:
            send_message(WebRTCError("webrtc_offer_failed", refusal))
            return
        hub = self._hubs.get(camera_id)
        offered = offered_codecs(offer_sdp)
        if hub is not None and not plays_as_is(hub.info, offered):
            await self._local.async_handle_offer(
                camera_id, session_id, offer_sdp, offered, send_message
            )
            return
        name = self._names.get(camera_id)
        if name is None or self._client is None:
            send_message(WebRTCError("webrtc_offer_failed", "go2rtc is not running"))
            return
        await self._forwarded.async_forward_offer(
            self._client,
            name,
            offer_sdp,
            send_message,
            camera_id=camera_id,
            session_id=session_id,
            ice_servers=self._ice_servers(),
        )

    async def async_on_candidate(
        self, camera_id: str, session_id: str, candidate: RTCIceCandidateInit
    ) -> None:
        """Trickle a viewer's candidate to go2rtc (or to our own peer)."""
        if self._local.serves(session_id):
            await self._local.async_on_candidate(session_id, candidate)
        else:
            await self._forwarded.async_on_candidate(session_id, candidate)

    def close_session(self, session_id: str) -> None:
        """Close a viewer's session, whoever serves it."""
        self._local.close_session(session_id)
        self._forwarded.close_session(session_id)

    @property
    def viewer_count(self) -> int:
        """Return the number of open WebRTC sessions."""
        return self._forwarded.count + self._local.count

    # ----- snapshots --------------------------------------------------------------------------

    async def async_snapshot(
        self, camera_id: str, width: int | None, height: int | None
    ) -> bytes | None:
        """Return go2rtc's frame.jpeg, or decode the hub's newest keyframe when it has none."""
        name = self._names.get(camera_id)
        if name is None:
            return None
        return await async_snapshot(
            self._hass, self._client, name, self._hubs.get(camera_id), width=width, height=height
        )


if TYPE_CHECKING:
    # mypy proves the engine implements the interface every engine implements.
    def _conforms(engine: Go2RtcEngine) -> StreamEngine:
        return engine
