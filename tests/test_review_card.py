"""The review card as a user meets it: HA's frontend in headless Chromium, a dashboard with it.

The camera records in 3 s files, with a gap (recording switched off for 5 s) and two event clips
(a detection with a snapshot and a saved clip), as in the websocket API's test. The card's
timeline, read from its shadow DOM, shows what `lightnvr/timeline` answers: two spans around the
gap and two markers. A real mouse click at an instant plays the recording from there (the
`<video>`'s time, counted from the playlist's start, is that instant within 1 s, and it
advances), playing on into the next file; "Live" goes back to HA's WebRTC player.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import json
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.card import CARD_URL_PATH
from custom_components.lightnvr.const import DOMAIN

from .conftest import camera_subentry, hub_entry_data
from .infra.browser import (
    KEEP_ICE_ON_LOOPBACK,
    SETUP_HINT,
    Browser,
    Page,
    deep_query,
    find_chromium,
)
from .infra.rtsp import RtspServer
from .test_browser import frontend_url, login_script  # noqa: F401 - pytest finds fixtures by name
from .test_hls_views import SEGMENT_SECONDS
from .test_websocket_api import ENTITY_ID, _record_with_gap_and_clips

CARD_TYPE = "lightnvr-camera-card"
VIEW_PATH = "review"
CARD_CONFIG = {"type": f"custom:{CARD_TYPE}", "entity": ENTITY_ID, "range": "10m"}

FIND_CARD = deep_query(CARD_TYPE)
# What the card draws, as the DOM has it (times are the data attributes, epoch seconds).
TIMELINE = f"""
(() => {{
  const card = {FIND_CARD};
  const timeline = card && card.shadowRoot.querySelector(".timeline[data-ready]");
  if (!timeline) return null;
  const items = (selector, keys) => [...timeline.querySelectorAll(selector)].map(
    (el) => Object.fromEntries(keys.map((key) => [key, el.dataset[key]])));
  const track = timeline.querySelector(".row .track").getBoundingClientRect();
  return {{
    spans: items(".span", ["start", "end"]),
    gaps: items(".gap", ["start", "end", "reason"]),
    markers: items(".marker", ["time", "label"]),
    view: card.view,
    track: {{left: track.left, top: track.top, width: track.width, height: track.height}},
  }};
}})()
"""
# The recorded player's state: wall-clock time = the playlist's start + the video's time.
PLAYBACK = f"""
(() => {{
  const card = {FIND_CARD};
  const video = card && card.recordedVideo();
  const playback = card && card.playback;
  if (!video || !playback || !playback.url || video.readyState < 2) return null;
  return {{
    mode: card.mode,
    wall: playback.start + video.currentTime,
    currentTime: video.currentTime,
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    paused: video.paused,
    url: playback.url,
  }};
}})()
"""
LIVE_VIDEO = f"""
(() => {{
  const card = {FIND_CARD};
  let el = card && card.shadowRoot.querySelector(".live ha-camera-stream");
  for (const selector of ["ha-web-rtc-player", "video"]) {{
    el = el && el.shadowRoot && el.shadowRoot.querySelector(selector);
  }}
  if (!el) return null;
  return {{
    mode: card.mode,
    frames: el.getVideoPlaybackQuality().totalVideoFrames,
    recorded: card.shadowRoot.querySelector("ha-hls-player") !== null,
  }};
}})()
"""
# The card's own state, for failure messages.
CARD_STATE = f"""
(() => {{
  const card = {FIND_CARD};
  if (!card) return {{card: null, defined: !!customElements.get("{CARD_TYPE}")}};
  return {{
    mode: card.mode,
    view: card.view,
    playback: card.playback,
    errors: [...card._data.values()].map((d) => d.error),
    message: card.shadowRoot.querySelector(".message")?.textContent,
  }};
}})()
"""


@pytest.fixture
def dashboard() -> dict[str, Any]:
    """A dashboard with the LightNVR card over the camera."""
    return {
        "title": "Review",
        # A panel view: the card as wide as the screen, as on a review dashboard.
        "views": [{"title": "Review", "path": VIEW_PATH, "panel": True, "cards": [CARD_CONFIG]}],
    }


@pytest.fixture
async def card_entry(
    hass: HomeAssistant,
    frontend_url: str,  # noqa: F811 - the imported fixture
    rtsp_camera: RtspServer,
    tmp_path: Path,
) -> AsyncIterator[MockConfigEntry]:
    """A hub recording the RTSP camera ("Porch") in 3 s files, set up after the frontend."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={**hub_entry_data(tmp_path / "rec"), "segment_seconds": SEGMENT_SECONDS},
        subentries_data=[camera_subentry("Porch", rtsp_camera.url("cam"))],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def _click_selector(page: Page, selector: str) -> None:
    """Click the middle of an element of the card's shadow DOM with the mouse."""
    rect = await page.evaluate(
        f"(() => {{ const r = {FIND_CARD}.shadowRoot.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect(); return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
    )
    await page.click(rect["x"], rect["y"])


def _pixel_time(timeline: dict[str, Any], x: float) -> float:
    """The instant under a page x on the track, from the view and the track's box."""
    view, track = timeline["view"], timeline["track"]
    return float(
        view["start"] + (x - track["left"]) / track["width"] * (view["end"] - view["start"])
    )


async def _wait(page: Page, expression: str, timeout: float, shot: Path) -> Any:
    """Wait for a JS condition; on timeout, fail with what the page showed and a screenshot."""
    try:
        return await page.wait_for(expression, timeout=timeout)
    except TimeoutError as err:
        shot.write_bytes(await page.screenshot())
        card = await page.evaluate(CARD_STATE)
        raise AssertionError(
            f"{err}\ncard: {card}\nconsole: {page.console[-15:]}\nerrors: {page.errors[-5:]}"
            f"\nscreenshot: {shot}"
        ) from err


async def _key(page: Page, key: str, code: str, key_code: int) -> None:
    """Press and release a key, as a keyboard does (to the focused element)."""
    for kind in ("keyDown", "keyUp"):
        await page.send(
            "Input.dispatchKeyEvent",
            {"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code},
        )


async def _card_value(page: Page, expression: str) -> Any:
    """Evaluate an expression over the card (`card`) and its shadow root (`root`)."""
    return await page.evaluate(
        f"(() => {{ const card = {FIND_CARD}; const root = card.shadowRoot; "
        f"return {expression}; }})()"
    )


async def _controls_keyboard_and_markers(
    page: Page, events: list[dict[str, Any]], shot: Path
) -> None:
    """Speed, space and arrows while playing; a marker's thumbnail on hover, its clip on click."""
    # The click on the track left the focus on the timeline: Space pauses, ← goes 10 s back.
    await _key(page, " ", "Space", 32)
    await _wait(page, f"(() => {{ const p = {PLAYBACK}; return p && p.paused; }})()", 10, shot)
    at = (await page.evaluate(PLAYBACK))["wall"]
    await _key(page, "ArrowLeft", "ArrowLeft", 37)
    requested = await _card_value(page, "card.playback.requested")
    assert requested == pytest.approx(at - 10, abs=0.5)
    await _wait(
        page, f"(() => {{ const p = {PLAYBACK}; return p && !p.paused && p; }})()", 20, shot
    )
    await _click_selector(page, 'button.speed[data-rate="4"]')
    assert await _card_value(page, "card.recordedVideo().playbackRate") == 4
    await _click_selector(page, 'button.speed[data-rate="1"]')

    # Hovering the detection's marker shows its snapshot (signed URL, loaded by the browser);
    # clicking it plays its clip's time from the start.
    detection = next(event for event in events if event["thumbnail"])
    marker = await _card_value(
        page,
        f"(() => {{ const r = root.querySelector('.marker[data-time=\"{detection['time']}\"]')"
        ".getBoundingClientRect(); return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()",
    )
    await page.hover(marker["x"], marker["y"])
    thumbnail = await _wait(
        page,
        f"(() => {{ const img = {FIND_CARD}.shadowRoot.querySelector('.tooltip img');"
        " return img && !img.hidden && img.complete && img.naturalWidth > 0 && img.src; })()",
        15,
        shot,
    )
    assert thumbnail.split("?")[0].endswith(detection["thumbnail"].split("?")[0])
    shot.with_name("review-card-marker.png").write_bytes(await page.screenshot())
    await page.click(marker["x"], marker["y"])
    await _wait(
        page,
        f"(() => {{ const c = {FIND_CARD}; return c.playback && "
        f"Math.abs(c.playback.requested - {detection['start']}) < 0.01; }})()",
        15,
        shot,
    )

    # Zoom out: the next width up.
    await _click_selector(page, "button.zoom-out")
    view = await _card_value(page, "card.view")
    assert view["end"] - view["start"] == pytest.approx(1800)
    assert await _card_value(page, "root.querySelector('.zoom-label').textContent") == "30m"


# The card's editor as the dashboard editor uses it: HA's form over the card's config; a change
# in the form comes back as the `config-changed` event the dashboard editor saves.
EDITOR = f"""
(async () => {{
  const card = customElements.get("{CARD_TYPE}");
  const editor = card.getConfigElement();
  editor.hass = document.querySelector("home-assistant").hass;
  editor.setConfig({json.dumps(CARD_CONFIG)});
  document.body.append(editor);
  const deadline = Date.now() + 20000;
  while (!editor.querySelector("ha-form")?.shadowRoot?.childElementCount) {{
    if (Date.now() > deadline) return {{error: editor.innerHTML.slice(0, 300)}};
    await new Promise((resolve) => setTimeout(resolve, 100));
  }}
  const form = editor.querySelector("ha-form");
  const changed = new Promise((resolve) =>
    editor.addEventListener("config-changed", (ev) => resolve(ev.detail.config), {{once: true}}));
  form.dispatchEvent(new CustomEvent("value-changed", {{
    detail: {{value: {{...form.data, range: "1h", title: "Porch review"}}}},
  }}));
  const config = await changed;
  editor.remove();
  return {{
    data: form.data,
    fields: form.schema.map((field) => field.name),
    config,
    stub: card.getStubConfig(document.querySelector("home-assistant").hass),
  }};
}})()
"""


async def _visual_editor(page: Page, shot: Path) -> None:
    """The card's visual editor shows its config in HA's form and hands back the edited one."""
    editor = await page.evaluate(EDITOR)
    if "error" in editor:
        shot.write_bytes(await page.screenshot())
        raise AssertionError(f"the editor did not render its form: {editor}")
    assert editor["fields"] == ["entities", "title", "range", "show_live", "muted"]
    assert editor["data"]["entities"] == [ENTITY_ID]
    assert editor["config"] == {
        "type": f"custom:{CARD_TYPE}",
        "entity": ENTITY_ID,
        "range": "1h",
        "title": "Porch review",
        "show_live": True,
        "muted": True,
    }
    # What the card picker puts in a new card: the first LightNVR camera.
    assert editor["stub"] == {"entity": ENTITY_ID, "range": "3h"}


@pytest.mark.usefixtures("webrtc_loopback")
@pytest.mark.timeout(300)
async def test_review_card_timeline_playback_and_live(
    hass: HomeAssistant,
    frontend_url: str,  # noqa: F811 - the imported fixture
    card_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    tmp_path: Path,
) -> None:
    """Spans, gap and markers as the API answers; a click plays from there, on; Live is WebRTC."""
    if find_chromium() is None:
        pytest.fail(f"Chromium is not installed: {SETUP_HINT}")
    camera_id, _ = await _record_with_gap_and_clips(hass, card_entry)
    segments = card_entry.runtime_data.recorder.index.segments(camera_id)
    ws = await hass_ws_client(hass)
    await ws.send_json_auto_id(
        {
            "type": "lightnvr/timeline",
            "entity_id": ENTITY_ID,
            "start": segments[0].start - 60,
            "end": segments[-1].end + 1,
        }
    )
    answer = (await ws.receive_json())["result"]
    assert len(answer["spans"]) == 2, answer["spans"]  # 3 s files merge; the pause splits them
    first_span = answer["spans"][0]

    shot = tmp_path / "review-card.png"
    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.set_viewport(1280, 960)
        await page.add_init_script(KEEP_ICE_ON_LOOPBACK)
        await page.add_init_script(await login_script(hass, frontend_url))
        await page.goto(f"{frontend_url}/lovelace/{VIEW_PATH}", timeout=60)

        # The module is the integration's, versioned, and the card is in the card picker.
        picker = await _wait(page, "window.customCards", 45, shot)
        assert any(card["type"] == CARD_TYPE for card in picker)
        module = await page.evaluate(
            "performance.getEntriesByType('resource').map((entry) => entry.name)"
            f".find((url) => url.includes({json.dumps(CARD_URL_PATH)}))"
        )
        assert module is not None
        assert "?v=" in module

        timeline = await _wait(page, TIMELINE, 45, shot)
        assert len(timeline["spans"]) == 2, timeline
        assert [float(span["start"]) for span in timeline["spans"]] == pytest.approx(
            [span["start"] for span in answer["spans"]], abs=0.01
        )
        assert len(timeline["markers"]) == 2, timeline
        assert {marker["label"] for marker in timeline["markers"]} == {
            event["label"] for event in answer["events"]
        }
        pause = [gap for gap in timeline["gaps"] if gap["reason"] == "recording_off"]
        assert any(
            float(gap["start"]) == pytest.approx(first_span["end"], abs=0.01) for gap in pause
        ), timeline["gaps"]

        # Click 1.5 s before the end of a file of the first span (the one farthest from the
        # markers: a click on a marker plays its event): it plays from there and on into the
        # next file. The pointer rests on the track first, as a user's does (the view stops
        # following the present under it).
        marks = [event["time"] for event in answer["events"]]
        boundary = max(
            (
                segment.end
                for segment in segments
                if first_span["start"] + 1.5 < segment.end < first_span["end"] - 1.5
            ),
            key=lambda end: min(abs(end - 1.5 - mark) for mark in marks),
        )
        track_y = timeline["track"]["top"] + timeline["track"]["height"] / 2
        await page.hover(timeline["track"]["left"] + 5, track_y)
        timeline = await page.evaluate(TIMELINE)
        x = round(
            timeline["track"]["left"]
            + (boundary - 1.5 - timeline["view"]["start"])
            / (timeline["view"]["end"] - timeline["view"]["start"])
            * timeline["track"]["width"]
        )
        clicked = _pixel_time(timeline, x)
        assert first_span["start"] < clicked < boundary
        await page.click(x, track_y)
        started = await _wait(
            page, f"(() => {{ const p = {PLAYBACK}; return p && p.frames > 0 && p; }})()", 45, shot
        )
        assert started["mode"] == "playback"
        assert started["wall"] == pytest.approx(clicked, abs=1.0), (started, clicked)
        crossed = await _wait(
            page,
            f"(() => {{ const p = {PLAYBACK}; return p && p.wall > {boundary + 1.0} && "
            f"p.frames > {started['frames']} + 10 && !p.paused && p; }})()",
            30,
            shot,
        )
        assert crossed["url"] == started["url"]  # the same playlist: no reload at the file's end
        shot.write_bytes(await page.screenshot())

        # From the end of the first span, playback goes on with the next one (the gap skipped).
        second_span = answer["spans"][1]
        x = round(
            timeline["track"]["left"]
            + (first_span["end"] - 1.0 - timeline["view"]["start"])
            / (timeline["view"]["end"] - timeline["view"]["start"])
            * timeline["track"]["width"]
        )
        await page.click(x, track_y)
        after_gap = await _wait(
            page,
            f"(() => {{ const p = {PLAYBACK}; return p && p.wall > {second_span['start'] + 1.0}"
            " && !p.paused && p; })()",
            30,
            shot,
        )
        assert after_gap["url"] != crossed["url"]
        await _controls_keyboard_and_markers(page, answer["events"], shot)

        # Back to live: HA's WebRTC player plays in the card again, the recorded player is gone.
        await _click_selector(page, "button.live")
        live = await _wait(
            page,
            f"(() => {{ const l = {LIVE_VIDEO}; return l && l.frames > 5 && l; }})()",
            45,
            shot,
        )
        assert live["mode"] == "live"
        assert not live["recorded"]

        # A phone's width: the card fits the screen, every control and the track inside it.
        await page.set_viewport(360, 800, mobile=True)
        phone = await _wait(
            page,
            f"(() => {{ const root = {FIND_CARD}.shadowRoot;"
            " const card = root.querySelector('ha-card').getBoundingClientRect();"
            " const parts = [...root.querySelectorAll('button, input.date, .track')].map("
            "   (el) => [el.className, el.getBoundingClientRect().left, "
            "            el.getBoundingClientRect().right]);"
            " return card.width <= 360 && {card: [card.left, card.right], parts}; })()",
            15,
            shot,
        )
        left, right = phone["card"]
        outside = [part for part in phone["parts"] if part[1] < left - 0.5 or part[2] > right + 0.5]
        assert not outside, phone
        track = next(part for part in phone["parts"] if part[0] == "track")
        assert track[2] - track[1] >= (right - left) * 0.8
        await _visual_editor(page, shot)
    print(f"\nscreenshot: {shot}")  # noqa: T201 - for a person to look at
