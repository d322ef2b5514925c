"""Headless Chromium for real-browser tests, driven over the Chrome DevTools Protocol (CDP).

Debian's ``chromium`` runs as a subprocess in its own process group with a fresh profile; the
tests talk to it through one websocket (aiohttp) inside pytest's event loop, so no thread and no
node process is involved. Everything started here is stopped when the ``async with`` block ends:
the browser is asked to close, its process group is killed if it does not, and the profile is
deleted.

Typical use::

    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.add_init_script(TRACK_PEER_CONNECTIONS)
        await page.goto("http://127.0.0.1:8123/")
        title = await page.evaluate("document.title")
        png = await page.screenshot()

WebRTC helpers: :data:`KEEP_ICE_ON_LOOPBACK` keeps the page's WebRTC traffic on 127.0.0.1;
:data:`TRACK_PEER_CONNECTIONS` keeps every ``RTCPeerConnection`` a page makes in
``window.__peerConnections``; :func:`webrtc_media` then reads what those connections received
(``getStats()``) and which tracks a ``<video>`` element plays.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
import contextlib
from dataclasses import dataclass, field
import itertools
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Self

import aiohttp

__all__ = [
    "CHROMIUM_FLAGS",
    "KEEP_ICE_ON_LOOPBACK",
    "TRACK_PEER_CONNECTIONS",
    "Browser",
    "BrowserError",
    "ChromiumNotFoundError",
    "MediaReport",
    "Page",
    "deep_query",
    "find_chromium",
    "webrtc_media",
]

# The real binary first: Debian's /usr/bin/chromium is a shell wrapper that execs it (and prints
# a harmless warning from /etc/chromium.d on every start).
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in a container
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--disable-breakpad",
    "--disable-crash-reporter",
    # Resolve no host name: the tests' servers are all addressed as 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # WebRTC: offer plain host candidates (no mDNS names) and play without a user gesture.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
)
SETUP_HINT = "run scripts/setup (scripts/setup_browser installs Debian's chromium)"

_START_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 5.0
_POLL_S = 0.05

# Install with Page.add_init_script before the page's own scripts run.
TRACK_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || window.__peerConnections) return;
  const all = [];
  window.__peerConnections = all;
  class TrackedRTCPeerConnection extends Native {
    constructor(...args) {
      super(...args);
      all.push(this);
    }
  }
  window.RTCPeerConnection = TrackedRTCPeerConnection;
  window.webkitRTCPeerConnection = TrackedRTCPeerConnection;
})();
"""

# Install with Page.add_init_script: keeps every WebRTC connection of the page on 127.0.0.1, the
# browser's side of the tests' ``webrtc_loopback`` fixture. STUN/TURN servers are removed from the
# configuration (HA hands the frontend public STUN servers by default) and local candidates are
# signalled as 127.0.0.1: Chromium gathers no loopback candidates, but its UDP sockets listen on
# every address, so the same port answers on 127.0.0.1. Candidates it cannot map (IPv6, TCP,
# non-host) are dropped. ``window.__iceOnLoopback`` lists what was rewritten and dropped.
KEEP_ICE_ON_LOOPBACK = """
(() => {
  const Base = window.RTCPeerConnection;
  if (!Base || window.__iceOnLoopback) return;
  const log = {rewritten: [], dropped: []};
  window.__iceOnLoopback = log;
  // "candidate:<foundation> <component> <protocol> <priority> <address> <port> typ <type> ..."
  const toLoopback = (candidate) => {
    if (!candidate || !candidate.candidate) return candidate;  // end of candidates
    const parts = candidate.candidate.split(" ");
    const address = parts[4] || "";
    if (address.startsWith("127.")) return candidate;
    const ipv4 = /^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$/.test(address);
    if (!ipv4 || (parts[2] || "").toLowerCase() !== "udp" || parts[7] !== "host") {
      log.dropped.push(candidate.candidate);
      return undefined;
    }
    parts[4] = "127.0.0.1";
    const text = parts.join(" ");
    log.rewritten.push(text);
    return new RTCIceCandidate({
      candidate: text,
      sdpMid: candidate.sdpMid,
      sdpMLineIndex: candidate.sdpMLineIndex,
      usernameFragment: candidate.usernameFragment,
    });
  };
  const filtered = (event) => {
    const candidate = toLoopback(event.candidate);
    if (candidate === undefined) return null;
    if (candidate === event.candidate) return event;
    return new RTCPeerConnectionIceEvent("icecandidate", {candidate, url: event.url});
  };
  const handlers = new WeakMap();
  const wrappers = new WeakMap();
  class LoopbackRTCPeerConnection extends Base {
    constructor(configuration, ...rest) {
      super({...(configuration || {}), iceServers: []}, ...rest);
      wrappers.set(this, new Map());
      super.addEventListener("icecandidate", (event) => {
        const handler = handlers.get(this);
        const kept = handler && filtered(event);
        if (kept) handler.call(this, kept);
      });
    }
    get onicecandidate() {
      return handlers.get(this) || null;
    }
    set onicecandidate(handler) {
      if (typeof handler === "function") handlers.set(this, handler);
      else handlers.delete(this);
    }
    addEventListener(type, listener, options) {
      if (type !== "icecandidate" || typeof listener !== "function") {
        return super.addEventListener(type, listener, options);
      }
      const map = wrappers.get(this);
      if (!map.has(listener)) {
        map.set(listener, (event) => {
          const kept = filtered(event);
          if (kept) listener.call(this, kept);
        });
      }
      return super.addEventListener(type, map.get(listener), options);
    }
    removeEventListener(type, listener, options) {
      const map = wrappers.get(this);
      const wrapped = type === "icecandidate" && map && map.get(listener);
      return super.removeEventListener(type, wrapped || listener, options);
    }
    setConfiguration(configuration) {
      return super.setConfiguration({...(configuration || {}), iceServers: []});
    }
  }
  window.RTCPeerConnection = LoopbackRTCPeerConnection;
  window.webkitRTCPeerConnection = LoopbackRTCPeerConnection;
})();
"""

# (videoExpression) => what the page's peer connections received and what the video plays.
_MEDIA_REPORT_JS = """
async (video) => {
  const report = {peerConnections: [], inbound: [], candidatePairs: [], videoTracks: [],
                  audioTracks: []};
  const stream = video && video.srcObject;
  if (stream && typeof stream.getTracks === "function") {
    for (const track of stream.getVideoTracks()) report.videoTracks.push(track.readyState);
    for (const track of stream.getAudioTracks()) report.audioTracks.push(track.readyState);
  }
  for (const pc of window.__peerConnections || []) {
    report.peerConnections.push(pc.connectionState);
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    const byId = new Map();
    stats.forEach((s) => byId.set(s.id, s));
    stats.forEach((s) => {
      if (s.type === "inbound-rtp") {
        const codec = byId.get(s.codecId);
        report.inbound.push({
          kind: s.kind,
          packetsReceived: s.packetsReceived || 0,
          bytesReceived: s.bytesReceived || 0,
          codec: codec ? codec.mimeType : null,
        });
      } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        const local = byId.get(s.localCandidateId) || {};
        const remote = byId.get(s.remoteCandidateId) || {};
        report.candidatePairs.push({
          local: `${local.address}:${local.port} ${local.candidateType}`,
          remote: `${remote.address}:${remote.port} ${remote.candidateType}`,
        });
      }
    });
  }
  return report;
}
"""


def deep_query(selector: str) -> str:
    """Return a JS expression: the first element matching `selector` in the page or in any
    shadow root inside it (HA's frontend nests its elements in shadow roots), else null."""
    return f"""
(() => {{
  const find = (root) => {{
    const hit = root.querySelector({json.dumps(selector)});
    if (hit) return hit;
    for (const el of root.querySelectorAll("*")) {{
      if (el.shadowRoot) {{
        const inner = find(el.shadowRoot);
        if (inner) return inner;
      }}
    }}
    return null;
  }};
  return find(document);
}})()
"""


class BrowserError(RuntimeError):
    """Chromium failed, or a DevTools command or page script raised an error."""


class ChromiumNotFoundError(BrowserError):
    """No Chromium binary on this machine."""


def find_chromium() -> str | None:
    """Path of the Chromium binary, or None when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        path = shutil.which(candidate)
        if path is not None:
            return path
    return None


@dataclass
class _Event:
    method: str
    params: dict[str, Any]


class _Connection:
    """One CDP websocket: commands matched to answers by id, events routed by session."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Callable[[_Event], None]]] = {}
        self._closed_reason: str | None = None
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    async def open(cls, url: str) -> _Connection:
        session = aiohttp.ClientSession()
        try:
            # Screenshots arrive as one large base64 message: no size limit.
            ws = await session.ws_connect(url, max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    def listen(self, session_id: str, callback: Callable[[_Event], None]) -> None:
        self._listeners.setdefault(session_id, []).append(callback)

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        if self._closed_reason is not None:
            raise BrowserError(f"{method}: DevTools connection closed ({self._closed_reason})")
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self._ws.send_str(json.dumps(message))
            async with asyncio.timeout(timeout):
                answer = await future
        finally:
            self._pending.pop(msg_id, None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message', answer['error'])}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def _read(self) -> None:
        reason = "browser closed the connection"
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "id" in data:
                    future = self._pending.get(data["id"])
                    if future is not None and not future.done():
                        future.set_result(data)
                    continue
                event = _Event(data.get("method", ""), data.get("params", {}))
                for callback in list(self._listeners.get(data.get("sessionId", ""), ())):
                    callback(event)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
        finally:
            self._closed_reason = reason
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError(f"DevTools connection closed ({reason})"))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()


@dataclass
class Page:
    """One browser tab, attached over CDP in flat session mode."""

    _connection: _Connection
    target_id: str
    session_id: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._connection.listen(self.session_id, self._on_event)

    def _on_event(self, event: _Event) -> None:
        if event.method == "Runtime.consoleAPICalled":
            args = event.params.get("args", [])
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in args)
            self.console.append(f"{event.params.get('type')}: {text}")
        elif event.method == "Runtime.exceptionThrown":
            details = event.params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            where = f" at {details.get('url', '')}:{details.get('lineNumber', '')}"
            text = exception.get("description") or details.get("text", "")
            if exception.get("type") == "object" and exception.get("preview"):
                text = f"{text} {exception['preview'].get('properties')}"
            self.errors.append(f"{text}{where}")
        for method, future in list(self._waiters):
            if method == event.method and not future.done():
                future.set_result(event.params)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send a CDP command to this tab."""
        return await self._connection.send(
            method, params, session_id=self.session_id, timeout=timeout
        )

    async def add_init_script(self, source: str) -> None:
        """Run `source` in every document this tab loads, before the document's own scripts."""
        await self.send("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    async def goto(self, url: str, *, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter = ("Page.loadEventFired", future)
        self._waiters.append(waiter)
        try:
            result = await self.send("Page.navigate", {"url": url}, timeout=timeout)
            if result.get("errorText"):
                raise BrowserError(f"navigating to {url}: {result['errorText']}")
            async with asyncio.timeout(timeout):
                await future
        finally:
            self._waiters.remove(waiter)

    async def evaluate(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Evaluate a JavaScript expression (promises are awaited) and return its JSON value."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description", details.get("text"))
            raise BrowserError(f"script failed: {description}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self, expression: str, *, timeout: float = 30.0, interval: float = 0.25
    ) -> Any:
        """Evaluate `expression` until it is truthy; return that value.

        On timeout, raises TimeoutError naming the last value seen, which usually tells why.
        """
        last: Any = None
        deadline = time.monotonic() + timeout
        while True:
            last = await self.evaluate(expression, timeout=max(timeout, 5.0))
            if last:
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expression!r} still {last!r} after {timeout} s")
            await asyncio.sleep(interval)

    async def hover(self, x: float, y: float) -> None:
        """Move the mouse to a point of the viewport."""
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    async def click(self, x: float, y: float) -> None:
        """Click the left mouse button at a point of the viewport, as a user would."""
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
            )

    async def set_viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Lay the page out at this size (a phone: 360 px wide, with mobile emulation)."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    async def screenshot(self) -> bytes:
        """The tab's viewport as PNG bytes."""
        result = await self.send("Page.captureScreenshot", {"format": "png"}, timeout=60.0)
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        """Close the tab."""
        with contextlib.suppress(BrowserError):
            await self._connection.send("Target.closeTarget", {"targetId": self.target_id})


class Browser:
    """A running headless Chromium; create it with ``async with Browser.launch() as browser``."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        profile: Path,
        log_path: Path,
        connection: _Connection,
        size: tuple[int, int],
    ) -> None:
        self.process = process
        self.profile = profile
        self.log_path = log_path
        self._connection = connection
        self._size = size
        self.pages: list[Page] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls,
        *,
        executable: str | None = None,
        size: tuple[int, int] = (1280, 800),
        extra_args: tuple[str, ...] = (),
    ) -> AsyncIterator[Self]:
        """Start Chromium with a new temporary profile; stop it and delete the profile on exit.

        Raises ChromiumNotFoundError (telling to run scripts/setup) when Chromium is missing.
        """
        executable = executable or find_chromium()
        if executable is None:
            raise ChromiumNotFoundError(f"Chromium is not installed: {SETUP_HINT}")
        profile = Path(tempfile.mkdtemp(prefix="lightnvr-chromium-"))
        log_path = profile / "chromium.log"
        width, height = size
        args = [
            executable,
            *CHROMIUM_FLAGS,
            f"--window-size={width},{height}",
            f"--user-data-dir={profile / 'profile'}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # Chromium picks a port and writes DevToolsActivePort
            *extra_args,
            "about:blank",
        ]
        process: subprocess.Popen[bytes] | None = None
        connection: _Connection | None = None
        try:
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as a whole
                )
            url = await _devtools_url(process, profile / "profile", log_path)
            connection = await _Connection.open(url)
            browser = cls(process, profile, log_path, connection, size)
            yield browser
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.send("Browser.close", timeout=_CLOSE_TIMEOUT_S)
                await connection.close()
            if process is not None:
                await _stop_process(process)
            shutil.rmtree(profile, ignore_errors=True)

    async def new_page(self) -> Page:
        """Open a blank tab."""
        width, height = self._size
        target = await self._connection.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._connection.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._connection, target["targetId"], attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.pages.append(page)
        return page

    def log_tail(self, lines: int = 30) -> str:
        """The end of Chromium's own output, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def _devtools_url(process: subprocess.Popen[bytes], profile: Path, log_path: Path) -> str:
    """Wait for Chromium to write DevToolsActivePort; return the browser's websocket URL."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")[-2000:]
            raise BrowserError(f"Chromium exited with {process.returncode} at start:\n{output}")
        with contextlib.suppress(OSError):
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"
        if time.monotonic() >= deadline:
            raise BrowserError(f"Chromium did not open its DevTools port in {_START_TIMEOUT_S} s")
        await asyncio.sleep(_POLL_S)


async def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Wait briefly for Chromium to exit, then kill its whole process group."""
    deadline = time.monotonic() + _CLOSE_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
    # Helpers (renderer, GPU, zygote) share the group; kill any that outlived the browser.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + _CLOSE_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)


@dataclass(frozen=True)
class MediaReport:
    """What a page's WebRTC connections received and what one ``<video>`` element plays."""

    peer_connections: list[str]  # connectionState of every RTCPeerConnection the page made
    inbound: list[dict[str, Any]]  # inbound-rtp stats: kind, packetsReceived, bytesReceived, codec
    candidate_pairs: list[dict[str, str]]  # the nominated, succeeded ICE pairs
    video_tracks: list[str]  # readyState of the video element's srcObject video tracks
    audio_tracks: list[str]

    def received(self, kind: str) -> tuple[int, int]:
        """Packets and bytes received over all connections for `kind` ("audio" or "video")."""
        streams = [s for s in self.inbound if s["kind"] == kind]
        return sum(s["packetsReceived"] for s in streams), sum(s["bytesReceived"] for s in streams)

    @property
    def has_audio(self) -> bool:
        """True when the stream carries audio with data and the video element plays it."""
        packets, size = self.received("audio")
        return packets > 0 and size > 0 and "live" in self.audio_tracks

    @property
    def has_video(self) -> bool:
        """True when video packets arrived and the video element has a live video track."""
        packets, size = self.received("video")
        return packets > 0 and size > 0 and "live" in self.video_tracks

    def describe(self) -> str:
        """One line for logs and assertion messages."""
        audio = self.received("audio")
        video = self.received("video")
        return (
            f"peer connections {self.peer_connections}; audio {audio[0]} packets/{audio[1]} bytes, "
            f"tracks {self.audio_tracks}; video {video[0]} packets/{video[1]} bytes, tracks "
            f"{self.video_tracks}; ICE pairs {self.candidate_pairs}"
        )


async def webrtc_media(page: Page, video_expression: str) -> MediaReport:
    """Read the page's WebRTC stats and the tracks of the video `video_expression` evaluates to.

    Needs :data:`TRACK_PEER_CONNECTIONS` installed before the page loaded.
    """
    raw = await page.evaluate(f"({_MEDIA_REPORT_JS})({video_expression})")
    if not isinstance(raw, dict):
        raise BrowserError(f"unexpected media report: {raw!r}")
    return MediaReport(
        peer_connections=raw["peerConnections"],
        inbound=raw["inbound"],
        candidate_pairs=raw["candidatePairs"],
        video_tracks=raw["videoTracks"],
        audio_tracks=raw["audioTracks"],
    )
