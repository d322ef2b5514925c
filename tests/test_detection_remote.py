"""Remote object detection client against a real local DeepStack-compatible HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
import io
import logging
import socket

from aiohttp import web
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from PIL import Image
import pytest

from custom_components.lightnvr.const import DOMAIN
from custom_components.lightnvr.detection import Box
from custom_components.lightnvr.detection.remote import (
    ISSUE_SERVER_DOWN,
    MAX_RESPONSE_BYTES,
    RemoteDetector,
    RemoteError,
    RemoteOptions,
    endpoint_url,
    parse_predictions,
)

from .detection_helpers import PERSON_BOX, DeepStackServer

API_KEY = "very-secret-api-key-123"
WIDTH, HEIGHT = 640, 360


def jpeg(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 100, 110)).save(buffer, format="JPEG")
    return buffer.getvalue()


class FakeClock:
    """Back-off runs on this clock, so the tests decide when time passes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def server(socket_enabled: None) -> AsyncIterator[DeepStackServer]:
    srv = DeepStackServer()
    await srv.start()
    yield srv
    await srv.stop()


Handler = Callable[["RecordingServer", web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    """One request as a `RecordingServer` saw it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingServer:
    """A local HTTP server that records every request (any method, any path).

    `handler` answers; by default an empty detection answer.
    """

    handler: Handler | None = None
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    bytes_sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Received(request.method, request.path_qs, dict(request.headers), body))
        try:
            if self.handler is None:
                return web.json_response({"success": True, "predictions": []})
            return await self.handler(self, request)
        finally:
            self.done.set()


@pytest.fixture
async def servers(socket_enabled: None) -> AsyncIterator[Callable[..., Awaitable[RecordingServer]]]:
    started: list[RecordingServer] = []

    async def start(handler: Handler | None = None) -> RecordingServer:
        srv = RecordingServer(handler)
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


def assert_person_box(box: Box) -> None:
    for got, want in zip(box.as_list(), PERSON_BOX, strict=True):
        assert got == pytest.approx(want, abs=0.01)


@pytest.mark.parametrize("normalised", [False, True])
async def test_detects_a_person_with_relative_box(
    hass: HomeAssistant, server: DeepStackServer, normalised: bool
) -> None:
    """Pixel boxes (DeepStack) and normalised boxes both come out relative."""
    server.normalised = normalised
    client = RemoteDetector(
        async_get_clientsession(hass),
        RemoteOptions(server.url, api_key=API_KEY, min_confidence=0.6, labels=("person", "car")),
        hass=hass,
    )
    found = await client.async_detect(jpeg(), WIDTH, HEIGHT)
    assert found is not None
    assert [d.label for d in found] == ["person"]  # the 0.3 dog is below min_confidence
    assert found[0].confidence == pytest.approx(0.91)
    assert_person_box(found[0].box)
    request = server.requests[-1]
    assert request.image_size == (WIDTH, HEIGHT)
    assert request.min_confidence == "0.6"
    assert request.api_key == API_KEY
    assert client.available
    assert not client.down


async def test_labels_filter_and_no_api_key(hass: HomeAssistant, server: DeepStackServer) -> None:
    client = RemoteDetector(
        async_get_clientsession(hass),
        RemoteOptions(server.url + "/v1/vision/detection", min_confidence=0.2, labels=("dog",)),
    )
    found = await client.async_detect(jpeg(), WIDTH, HEIGHT)
    assert found is not None
    assert [d.label for d in found] == ["dog"]
    assert server.requests[-1].api_key is None
    every = RemoteDetector(
        async_get_clientsession(hass), RemoteOptions(server.url, min_confidence=0.2)
    )
    found = await every.async_detect(jpeg(), WIDTH, HEIGHT)
    assert found is not None
    assert [d.label for d in found] == ["person", "dog"]  # best first


@pytest.mark.parametrize(
    ("status", "payload", "detail"),
    [
        (500, None, "HTTP 500"),
        (401, None, "access denied"),
        (200, {"success": False, "error": "model not loaded"}, "the server reported failure"),
        (200, ["not", "an", "object"], "not a JSON object"),
    ],
)
async def test_bad_answers_are_failures_not_crashes(
    hass: HomeAssistant, server: DeepStackServer, status: int, payload: object, detail: str
) -> None:
    server.status = status
    server.payload = payload
    client = RemoteDetector(async_get_clientsession(hass), RemoteOptions(server.url))
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.last_error is not None
    assert detail in client.last_error
    assert not client.available


async def test_timeout_is_a_failure(hass: HomeAssistant, server: DeepStackServer) -> None:
    server.delay = 1.0
    client = RemoteDetector(async_get_clientsession(hass), RemoteOptions(server.url, timeout=0.2))
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.last_error is not None
    assert "no answer" in client.last_error


async def test_server_down_backs_off_raises_issue_and_recovers(
    hass: HomeAssistant, socket_enabled: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens: no crash, exponential back-off, a repair issue, cleared on recovery."""
    caplog.set_level(logging.DEBUG, logger="custom_components.lightnvr")
    port = free_port()
    clock = FakeClock()
    statuses: list[tuple[bool, str | None]] = []
    client = RemoteDetector(
        async_get_clientsession(hass),
        RemoteOptions(
            f"http://127.0.0.1:{port}",
            api_key=API_KEY,
            backoff_initial=1.0,
            backoff_max=8.0,
            down_after=20.0,
        ),
        hass=hass,
        on_status=lambda down, detail: statuses.append((down, detail)),
        clock=clock,
    )
    registry = ir.async_get(hass)

    # First failure: back-off starts; calls during it send nothing.
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.requests == 1
    assert client.last_error is not None
    assert "cannot connect" in client.last_error
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.requests == 1
    assert client.skipped == 1

    # The waits double up to the maximum: 1, 2, 4, 8, 8 ...
    waits = []
    for _ in range(5):
        waits.append(client.retry_in)
        clock.now += client.retry_in
        assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]

    # Down for more than `down_after`: the repair issue is raised (once), the key never shown.
    assert client.down
    assert statuses == [(True, client.last_error)]
    issue = registry.async_get_issue(DOMAIN, client.issue_id)
    assert issue is not None
    assert issue.translation_key == ISSUE_SERVER_DOWN
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["url"] == endpoint_url(f"http://127.0.0.1:{port}")
    assert "cannot connect" in issue.translation_placeholders["detail"]
    assert API_KEY not in str(issue.translation_placeholders)
    assert API_KEY not in caplog.text

    # The server comes back: the next request after the back-off succeeds and clears it.
    server = DeepStackServer(port=port)
    await server.start()
    try:
        clock.now += client.retry_in
        found = await client.async_detect(jpeg(), WIDTH, HEIGHT)
    finally:
        await server.stop()
    assert found is not None
    assert found[0].label == "person"
    assert not client.down
    assert client.available
    assert client.retry_in == 0.0
    assert registry.async_get_issue(DOMAIN, client.issue_id) is None
    assert statuses[-1] == (False, None)


async def test_short_outage_raises_no_issue(hass: HomeAssistant, socket_enabled: None) -> None:
    """Below the threshold nothing is reported; shutdown removes a raised issue."""
    clock = FakeClock()
    client = RemoteDetector(
        async_get_clientsession(hass),
        RemoteOptions(f"http://127.0.0.1:{free_port()}", backoff_initial=1.0, down_after=10.0),
        hass=hass,
        clock=clock,
    )
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    clock.now += 5.0
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert not client.down
    assert ir.async_get(hass).async_get_issue(DOMAIN, client.issue_id) is None
    clock.now += 10.0
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.down
    assert ir.async_get(hass).async_get_issue(DOMAIN, client.issue_id) is not None
    client.async_shutdown()
    assert ir.async_get(hass).async_get_issue(DOMAIN, client.issue_id) is None


def test_parse_pixels_and_normalised() -> None:
    pixels = {
        "success": True,
        "predictions": [
            {
                "label": "Car",
                "confidence": 0.7,
                "x_min": 64,
                "y_min": 36,
                "x_max": 320,
                "y_max": 180,
            }
        ],
    }
    (car,) = parse_predictions(pixels, 640, 360, 0.5, ())
    assert car.label == "car"
    assert car.box == Box(0.1, 0.1, 0.5, 0.5)
    normalised = {
        "predictions": [
            {
                "label": "person",
                "confidence": 80,
                "x_min": 0.1,
                "y_min": 0.2,
                "x_max": 0.3,
                "y_max": 1.0,
            }
        ]
    }
    (person,) = parse_predictions(normalised, 640, 360, 0.5, ("person",))
    assert person.confidence == pytest.approx(0.8)  # percent answers are scaled
    assert person.box == Box(0.1, 0.2, 0.3, 1.0)
    # Out-of-frame pixel boxes are clamped; malformed entries skipped; no predictions is fine.
    odd = {
        "success": True,
        "predictions": [
            {"label": "cat", "confidence": 0.9, "x_min": -5, "y_min": 0, "x_max": 700, "y_max": 90},
            {"label": "broken"},
        ],
    }
    (cat,) = parse_predictions(odd, 640, 360, 0.5, ())
    assert cat.box == Box(0.0, 0.0, 1.0, 0.25)
    assert parse_predictions({"success": True}, 640, 360, 0.5, ()) == []
    with pytest.raises(RemoteError):
        parse_predictions({"success": True, "predictions": "nope"}, 640, 360, 0.5, ())


def test_endpoint_url() -> None:
    assert endpoint_url("http://ai:32168") == "http://ai:32168/v1/vision/detection"
    assert endpoint_url("http://ai:32168/") == "http://ai:32168/v1/vision/detection"
    assert endpoint_url("http://ai/v1/vision/detection/") == "http://ai/v1/vision/detection"


# ----- hostile or broken servers ----------------------------------------------------------------

HUGE = 50 * 1024 * 1024
MARKER = "SERVER-TEXT-MARKER-7f3a"


@pytest.mark.parametrize("declare_length", [False, True], ids=["chunked", "content-length"])
async def test_huge_answer_is_refused_without_reading_it(
    hass: HomeAssistant,
    servers: Callable[..., Awaitable[RecordingServer]],
    declare_length: bool,
) -> None:
    """A 50 MB answer (valid JSON, so only its size is wrong) fails before it is all read."""
    head = b'{"success": true, "predictions": [], "pad": "'
    tail = b'"}'
    block = b"x" * (64 * 1024)

    async def huge(srv: RecordingServer, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declare_length:
            response.content_length = HUGE
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(head)
            srv.bytes_sent += len(head)
            pad = HUGE - len(head) - len(tail)
            while pad > 0:
                piece = block[: min(pad, len(block))]
                await response.write(piece)
                srv.bytes_sent += len(piece)
                pad -= len(piece)
            await response.write(tail)
            srv.bytes_sent += len(tail)
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up: what we expect
        return response

    srv = await servers(huge)
    client = RemoteDetector(async_get_clientsession(hass), RemoteOptions(srv.url, timeout=30))
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.last_error is not None
    assert "larger than 4 MB" in client.last_error
    await asyncio.wait_for(srv.done.wait(), 10)
    # Socket buffers hold a few MB at most; the client stopped long before the end.
    assert srv.bytes_sent < HUGE // 2
    assert MAX_RESPONSE_BYTES < HUGE // 2


@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_is_not_followed(
    hass: HomeAssistant,
    servers: Callable[..., Awaitable[RecordingServer]],
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """A redirect is a failure: nothing (and no API key) reaches the target, which is not named."""
    caplog.set_level(logging.DEBUG, logger="custom_components.lightnvr")
    elsewhere = await servers()
    location = f"{elsewhere.url}/v1/vision/detection?token=LOCATION-SECRET"

    async def redirect(srv: RecordingServer, request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location}, text=location)

    origin = await servers(redirect)
    client = RemoteDetector(
        async_get_clientsession(hass), RemoteOptions(origin.url, api_key=API_KEY)
    )
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert len(origin.requests) == 1
    assert API_KEY.encode() in origin.requests[0].body  # the configured server does get it
    assert elsewhere.requests == []
    assert client.last_error is not None
    assert f"redirected (HTTP {status})" in client.last_error
    assert "LOCATION-SECRET" not in client.last_error
    assert "LOCATION-SECRET" not in caplog.text
    assert API_KEY not in caplog.text


@pytest.mark.parametrize("answer", ["http_error", "failure_flag"])
async def test_server_text_never_reaches_the_repair_issue(
    hass: HomeAssistant,
    servers: Callable[..., Awaitable[RecordingServer]],
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    """Reason phrase, body and error message stay out of the issue and out of INFO+ logs.

    The server also echoes the API key and tries to forge a log line; the debug excerpt has
    neither.
    """
    caplog.set_level(logging.DEBUG, logger="custom_components.lightnvr")
    said = f"{MARKER} bad key {API_KEY}\nFORGED LOG LINE"

    async def bad(srv: RecordingServer, request: web.Request) -> web.StreamResponse:
        if answer == "http_error":
            return web.Response(status=500, reason=f"Oops {MARKER}", text=said)
        return web.json_response({"success": False, "error": said})

    srv = await servers(bad)
    clock = FakeClock()
    statuses: list[tuple[bool, str | None]] = []
    client = RemoteDetector(
        async_get_clientsession(hass),
        RemoteOptions(srv.url, api_key=API_KEY, backoff_initial=1.0, down_after=1.0),
        hass=hass,
        on_status=lambda down, detail: statuses.append((down, detail)),
        clock=clock,
    )
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    clock.now += client.retry_in
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    assert client.down
    issue = ir.async_get(hass).async_get_issue(DOMAIN, client.issue_id)
    assert issue is not None
    assert issue.translation_placeholders is not None
    assert MARKER not in str(issue.translation_placeholders)
    assert API_KEY not in str(issue.translation_placeholders)
    want = "HTTP 500 Internal Server Error" if answer == "http_error" else "reported failure"
    assert want in issue.translation_placeholders["detail"]
    assert client.last_error is not None
    assert MARKER not in client.last_error
    assert MARKER not in str(statuses)
    records = [r for r in caplog.records if r.name.startswith("custom_components.lightnvr")]
    assert not [r for r in records if r.levelno >= logging.INFO and MARKER in r.getMessage()]
    # What the server said is only at debug level, on one line, without the key.
    excerpts = [r.getMessage() for r in records if MARKER in r.getMessage()]
    assert excerpts
    assert all(r.levelno == logging.DEBUG for r in records if MARKER in r.getMessage())
    assert all("\n" not in text for text in excerpts)
    assert API_KEY not in caplog.text


async def test_query_secrets_are_not_shown(
    hass: HomeAssistant, socket_enabled: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A key written into the URL (user info or query) stays out of logs and the issue."""
    caplog.set_level(logging.DEBUG, logger="custom_components.lightnvr")
    clock = FakeClock()
    client = RemoteDetector(
        async_get_clientsession(hass),
        RemoteOptions(
            f"http://user:url-password@127.0.0.1:{free_port()}/?api_key=QUERY-SECRET",
            backoff_initial=1.0,
            down_after=1.0,
        ),
        hass=hass,
        clock=clock,
    )
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    clock.now += client.retry_in
    assert await client.async_detect(jpeg(), WIDTH, HEIGHT) is None
    issue = ir.async_get(hass).async_get_issue(DOMAIN, client.issue_id)
    assert issue is not None
    assert issue.translation_placeholders is not None
    assert "api_key=***" in issue.translation_placeholders["url"]
    for secret in ("QUERY-SECRET", "url-password"):
        assert secret not in str(issue.translation_placeholders)
        assert secret not in caplog.text


def test_excerpt_removes_secrets_even_when_cut() -> None:
    from custom_components.lightnvr.detection.remote import _excerpt

    key = "k3y-" + "s" * 20
    assert _excerpt(f"bad key {key} and url-encoded k3y%2D too", (key,)) == (
        "bad key *** and url-encoded k3y%2D too"
    )
    # A key cut by the server's chunking or by the excerpt's length: the partial key is dropped.
    assert _excerpt("error " + key[:15], (key,)) == "error"
    assert _excerpt("x" * 110 + key[:15], (key,)) == "x" * 110 + "…"
    assert _excerpt("line one\r\nline\ttwo\x1b[31m", ()) == "line one line two [31m"
