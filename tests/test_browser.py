"""The live view as a user sees it: HA's own frontend in headless Chromium.

HA core serves its real frontend on a 127.0.0.1 port; a logged-in Chromium opens a dashboard with
a picture-entity card (``camera_view: live``) showing the LightNVR camera, and the test reads the
card's ``<video>`` element through the frontend's shadow DOMs: it must play. Chromium missing is a
failure telling to run scripts/setup, never a skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import importlib.util
import json
from pathlib import Path
import socket
import time
from typing import Any

from homeassistant.components.onboarding import STORAGE_KEY as ONBOARDING_KEY, STORAGE_VERSION
from homeassistant.components.onboarding.const import STEPS
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.lightnvr.const import DOMAIN

from .conftest import CAMERA_PASSWORD, CAMERA_USER, camera_subentry, hub_entry_data
from .infra.browser import (
    KEEP_ICE_ON_LOOPBACK,
    SETUP_HINT,
    TRACK_PEER_CONNECTIONS,
    Browser,
    MediaReport,
    Page,
    find_chromium,
    webrtc_media,
)
from .infra.cameras import CameraMatrix

ENTITY_ID = "camera.front_door"
SOURCE_SIZE = (1280, 720)  # both browser cameras (the transcode keeps 1280 px)
VIEW_PATH = "cameras"
DASHBOARD = {
    "title": "LightNVR",
    "views": [
        {
            "title": "Cameras",
            "path": VIEW_PATH,
            "cards": [
                {
                    "type": "picture-entity",
                    "entity": ENTITY_ID,
                    "camera_view": "live",
                    "show_name": True,
                    "show_state": True,
                }
            ],
        }
    ],
}

# The card's <video>: hui-picture-entity-card > hui-image > ha-camera-stream > ha-web-rtc-player,
# each behind a shadow root. The card itself is found by walking every shadow root of the page.
FIND_VIDEO = """
(() => {
  const find = (root, selector) => {
    const hit = root.querySelector(selector);
    if (hit) return hit;
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) {
        const inner = find(el.shadowRoot, selector);
        if (inner) return inner;
      }
    }
    return null;
  };
  let el = find(document, "hui-picture-entity-card");
  for (const selector of ["hui-image", "ha-camera-stream", "ha-web-rtc-player", "video"]) {
    el = el && el.shadowRoot && el.shadowRoot.querySelector(selector);
  }
  return el;
})()
"""
VIDEO_STATE = f"""
(() => {{
  const video = {FIND_VIDEO};
  if (!video) return null;
  const quality = video.getVideoPlaybackQuality();
  return {{
    currentTime: video.currentTime,
    frames: quality.totalVideoFrames,
    dropped: quality.droppedVideoFrames,
    width: video.videoWidth,
    height: video.videoHeight,
    paused: video.paused,
  }};
}})()
"""
# What the page shows where the video should be, for failure messages.
CARD_TEXT = """
(() => {
  const texts = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (["HA-ALERT", "HUI-WARNING", "HA-CAMERA-STREAM"].includes(el.tagName)) {
        texts.push(`${el.tagName}: ${el.textContent.trim().slice(0, 200)}`);
      }
    }
  };
  walk(document);
  return {url: location.href, texts};
})()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def dashboard() -> dict[str, Any]:
    """The default dashboard's config (a test module may override this fixture)."""
    return DASHBOARD


async def serve_frontend(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    dashboard: dict[str, Any],
    *extra_domains: str,
) -> str:
    """Serve HA's real frontend on a free 127.0.0.1 port, onboarded, with `dashboard`.

    ``http`` is set up first with our host and port (the integration depends on it and would
    otherwise bring it up with defaults); setting up ``frontend`` starts the server, because
    ``http`` starts when ``frontend`` is set up or HA starts, whichever comes first, and the
    harness's HA is already running. HA's stop at teardown stops the server. Set up LightNVR
    after this: it adds its card to the frontend's modules when the frontend is there.
    """
    if importlib.util.find_spec("hass_frontend") is None:
        pytest.fail(f"home-assistant-frontend is not installed: {SETUP_HINT}")
    # Onboarding done, or the frontend redirects to /onboarding.html.
    hass_storage[ONBOARDING_KEY] = {
        "version": STORAGE_VERSION,
        "minor_version": 1,
        "key": ONBOARDING_KEY,
        "data": {"done": list(STEPS)},
    }
    # The default dashboard in storage mode, as the dashboard editor saves it.
    hass_storage["lovelace"] = {
        "version": 1,
        "minor_version": 1,
        "key": "lovelace",
        "data": {"config": dashboard},
    }
    port = _free_port()
    assert await async_setup_component(
        hass, "http", {"http": {"server_host": "127.0.0.1", "server_port": port}}
    )
    for domain in ("camera", "lovelace", "frontend", *extra_domains):
        assert await async_setup_component(hass, domain, {})
    await hass.async_block_till_done()
    assert hass.http.site is not None, "the HTTP server did not start"
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def frontend_url(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    dashboard: dict[str, Any],
    socket_enabled: None,
) -> str:
    """HA's real frontend served on a free 127.0.0.1 port, with the test's dashboard."""
    return await serve_frontend(hass, hass_storage, dashboard)


# Cameras with sound: H.264 + AAC (audio as Opus) and H.265 + G.711 A-law (headless Chromium
# decodes no H.265: the shared H.264 transcode; the A-law audio as it is).
BROWSER_CAMERAS = ("h264_main_aac", "h265_pcma")


@pytest.fixture(params=BROWSER_CAMERAS)
async def camera_entry(  # noqa: PLR0917 - pytest fixtures
    request: pytest.FixtureRequest,
    hass: HomeAssistant,
    frontend_url: str,
    camera_matrix: CameraMatrix,
    tmp_path: Path,
    socket_enabled: None,
) -> AsyncIterator[MockConfigEntry]:
    """A loaded LightNVR hub with one camera ("Front door"), set up after the frontend."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="LightNVR",
        data=hub_entry_data(tmp_path / "recordings"),
        subentries_data=[
            camera_subentry(
                "Front door",
                camera_matrix.auth_url(request.param, credentials=False),
                **{CONF_USERNAME: CAMERA_USER, CONF_PASSWORD: CAMERA_PASSWORD},
            )
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    if entry.state.recoverable:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


async def login_script(hass: HomeAssistant, base_url: str) -> str:
    """A script that stores a logged-in session where the frontend looks for it.

    The frontend (home-assistant-js-websocket) reads ``localStorage.hassTokens`` and uses it when
    its ``hassUrl`` is this server; the access token is a real one for a new admin user.
    """
    user = await hass.auth.async_create_user("Browser test", group_ids=["system-admin"])
    refresh_token = await hass.auth.async_create_refresh_token(user, client_id=f"{base_url}/")
    access_token = hass.auth.async_create_access_token(refresh_token)
    expires_in = int(refresh_token.access_token_expiration.total_seconds())
    tokens = {
        "access_token": access_token,
        "refresh_token": refresh_token.token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "expires": int(time.time() * 1000) + expires_in * 1000,
        "hassUrl": base_url,
        "clientId": f"{base_url}/",
    }
    return (
        f"if (location.origin === {json.dumps(base_url)}) "
        f"localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))});"
    )


async def card_video_media(page: Page) -> MediaReport:
    """WebRTC media of the picture-entity card's live view: audio is reusable for the audio check.

    ``report.has_audio`` is True only when inbound audio RTP carried packets and bytes and the
    card's video element has a live audio track.
    """
    return await webrtc_media(page, FIND_VIDEO)


async def _describe_page(page: Page) -> str:
    try:
        shown = await page.evaluate(CARD_TEXT)
    except Exception as err:
        shown = f"(page not readable: {err})"
    return f"page: {shown}; console: {page.console[-15:]}; errors: {page.errors[-5:]}"


@pytest.mark.usefixtures("webrtc_loopback")
async def test_dashboard_live_view_plays_in_chromium(
    hass: HomeAssistant, frontend_url: str, camera_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """A logged-in user opens the dashboard: the camera card's video plays (WebRTC)."""
    if find_chromium() is None:
        pytest.fail(f"Chromium is not installed: {SETUP_HINT}")
    init_script = await login_script(hass, frontend_url)
    screenshot = tmp_path / "dashboard.png"
    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.add_init_script(TRACK_PEER_CONNECTIONS)
        await page.add_init_script(KEEP_ICE_ON_LOOPBACK)
        await page.add_init_script(init_script)
        await page.goto(f"{frontend_url}/lovelace/{VIEW_PATH}", timeout=60)
        try:
            first = await page.wait_for(
                f"(() => {{ const s = {VIDEO_STATE}; return s && s.frames > 0 && s; }})()",
                timeout=45,
            )
            # It keeps playing: time and decoded frames both advance.
            playing = await page.wait_for(
                f"(() => {{ const s = {VIDEO_STATE}; return s && "
                f"s.currentTime > {first['currentTime']} + 1 && "
                f"s.frames >= {first['frames']} + 10 && s; }})()",
                timeout=30,
            )
        except TimeoutError as err:
            screenshot.write_bytes(await page.screenshot())
            raise AssertionError(
                f"{err}\n{await _describe_page(page)}\nscreenshot: {screenshot}\n"
                f"chromium: {browser.log_tail()}"
            ) from err
        media = await card_video_media(page)
        ice = await page.evaluate("window.__iceOnLoopback")
        screenshot.write_bytes(await page.screenshot())

    print(f"\nscreenshot: {screenshot}")  # noqa: T201 - for a person to look at
    print(f"video: {playing}")  # noqa: T201
    print(f"WebRTC: {media.describe()}")  # noqa: T201
    print(f"browser ICE candidates: {ice}")  # noqa: T201
    assert (playing["width"], playing["height"]) == SOURCE_SIZE
    assert not playing["paused"]
    assert media.has_video, media.describe()
    assert media.candidate_pairs, media.describe()
    for pair in media.candidate_pairs:  # both ends on loopback: nothing left the machine
        assert pair["local"].startswith("127.0.0.1:"), media.describe()
        assert pair["remote"].startswith("127.0.0.1:"), media.describe()
    assert media.has_audio, media.describe()  # the camera's sound plays in the card
