"""Review card: click → first recorded frame, timeline answers for many cameras, memory.

Three measurements from the review issue, each with its goal:

1. Click on the timeline → first recorded frame decoded in the browser, median of 10 (goal
   ≤ 1.0 s on loopback). HA's real frontend in headless Chromium shows a dashboard with one
   `custom:lightnvr-camera-card` of a real RTSP camera recording in 3 s files (about 45 s of
   them, and one detection clip). A real mouse click (DevTools input events) lands on the
   card's timeline; the time runs from the click's `pointerdown` to the first frame the
   recorded `<video>` presents (`requestVideoFrameCallback`) at the clicked instant. Clicks go
   back in time by a few files (a new playlist: `card.playback.url` changes) or a few seconds
   forward in the loaded playlist (a seek); both kinds are reported. The first click, from the
   live view, loads the player's code: it is shown on its own and not counted.
   Compared, in the same run, with what the Media panel does for the same hour: the hour's
   media-source id resolved over the websocket (`media_source/resolve_media`) and played in
   HA's own `ha-hls-player`, from creating the element to its first frame, median of 10.
2. Timeline answer (`lightnvr/timeline` round trip, in-process websocket client) for 30 days
   × 1 camera and for 7 days × 16 cameras (goal ≤ 200 ms server time). The synthetic day
   indexes of `bench.timeline` (one-minute files, an hour missing every day, clips with
   snapshots): one camera with 30 days, fifteen more with 7 days at the same clip density.
   The 16 cameras are asked one at a time (per camera) and all at once over one connection,
   as a card with 16 rows asks (total until the last answer).
3. Memory of the card after scrubbing (goal: no growth beyond 50 MB): JS heap in use after a
   forced garbage collection, DOM nodes and event listeners of the page, and the proportional
   memory of all Chromium processes (video buffers live outside the JS heap), before and after
   `LIGHTNVR_BENCH_SCRUB_MINUTES` (default 10) of scrubbing: a click at a random recorded
   instant every 1–2 s, zoom or pan now and then.

Chromium missing is a failure (run scripts/setup), never a skip.

Run: .venv/bin/python -m bench.review
     LIGHTNVR_BENCH_SCRUB_MINUTES=1 .venv/bin/python -m bench.review   (a quick run)
"""

from __future__ import annotations

if __name__ == "__main__":  # run through pytest before anything imports Home Assistant
    from bench._harness import run

    raise SystemExit(run(__file__))

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
import json
import os
from pathlib import Path
import random
import time
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.lightnvr.const import (
    CONF_MIN_FREE_GB,
    CONF_RETENTION_DAYS,
    CONF_SEGMENT_SECONDS,
    DOMAIN,
)
from tests.conftest import camera_subentry, hub_entry_data
from tests.infra.browser import (
    KEEP_ICE_ON_LOOPBACK,
    SETUP_HINT,
    Browser,
    Page,
    deep_query,
    find_chromium,
)
from tests.infra.rtsp import RtspServer
from tests.test_browser import _describe_page, login_script, serve_frontend
from tests.test_hls_views import SEGMENT_SECONDS, camera_id_of, wait_segments

from . import timeline
from .timeline import _fill, _stats, _time

GOAL_CLICK_S = 1.0
GOAL_ANSWER_MS = 200.0
GOAL_GROWTH_MB = 50.0
RUNS = 10  # clicks, and Media panel players
ANSWER_RUNS = 30
CAMERAS = 16
WEEK_DAYS = 7
SCRUB_MINUTES = float(os.environ.get("LIGHTNVR_BENCH_SCRUB_MINUTES", "10"))

ENTITY_ID = "camera.porch"
VIEW_PATH = "review"
DASHBOARD = {
    "title": "LightNVR",
    "views": [
        {
            "title": "Review",
            "path": VIEW_PATH,
            "cards": [{"type": "custom:lightnvr-camera-card", "entity": ENTITY_ID, "range": "10m"}],
        }
    ],
}
# Finished 3 s files before the browser opens: the clicks below walk back through ten of them.
RECORDED_FILES = 15
# A seek lands this far after the new playlist's clicked instant (three files on), well ahead
# of where the video plays by then, so a frame of the old position cannot pass for the target.
SEEK_AHEAD_S = 8.0
# A frame counts as the clicked instant's when its wall time is within this window of it: a
# player may show the keyframe before the instant (the camera's keyframes are 1 s apart), but
# not the playlist's first frame (clicks aim 2 s into a file, see `_click_instants`).
FRAME_EARLY_S = 1.5
FRAME_LATE_S = 1.5
CLICK_TIMEOUT_S = 20.0
PAUSE_AFTER_FRAME_S = 0.5
SCRUB_PAUSE_S = (1.0, 2.0)
ZOOM_PAN_SHARE = 0.2  # of scrubbing actions
SAMPLE_EVERY_S = 60.0

# ----- page scripts --------------------------------------------------------------------------

FIND_CARD = deep_query("lightnvr-camera-card")

# `window.__review`: finds the card through the shadow roots, notes every frame a recorded
# <video> presents (with the playback the card showed then) and the card's pointerdowns, and
# answers where an instant is on the first row's track. Installed once the card is drawn.
PROBE = """
(() => {
  if (window.__review) return true;
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) {
    throw new Error("this Chromium has no requestVideoFrameCallback");
  }
  const find = () => FIND_CARD;
  const KEEP = 400;
  const review = {
    element: null, frames: [], downs: [], armed: null, lastError: null, running: true,
    videos: 0, watched: new WeakSet(), listened: new WeakSet(),
  };
  window.__review = review;
  review.card = () => {
    if (!review.element || !review.element.isConnected) review.element = find();
    const card = review.element;
    if (card && !review.listened.has(card)) {
      review.listened.add(card);
      // Capture on the host: the track's own handlers run after, so this is the click's start.
      card.addEventListener("pointerdown", (event) => {
        review.downs.push(event.timeStamp);
        if (review.downs.length > 50) review.downs.shift();
      }, true);
    }
    return card;
  };
  const watch = () => {
    if (!review.running) return;
    const card = review.card();
    if (!card) return;
    let video = null;
    try {
      video = card.recordedVideo();
    } catch (err) {
      review.lastError = String(err);
    }
    if (!video || review.watched.has(video)) return;
    review.watched.add(video);
    const id = ++review.videos;
    const onFrame = (now, meta) => {
      if (!review.running) return;
      const playback = card.playback;
      review.frames.push({
        video: id, now, presented: meta.presentationTime, media: meta.mediaTime,
        url: playback ? playback.url : null, start: playback ? playback.start : null,
      });
      if (review.frames.length > KEEP) review.frames.splice(0, review.frames.length - KEEP);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  // A new recorded <video> is watched within 20 ms: far less than it takes to load a playlist.
  review.timer = setInterval(watch, 20);
  review.stop = () => {
    review.running = false;
    clearInterval(review.timer);
    review.frames = [];
  };
  review.track = () => review.card().shadowRoot.querySelector(".row .track");
  review.point = (time) => {
    const card = review.card();
    let box = review.track().getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) {
      review.track().scrollIntoView({block: "center"});
      box = review.track().getBoundingClientRect();
    }
    const x = card.xOf(time);
    return {
      x, y: box.top + box.height / 2, left: box.left, right: box.right,
      at: card.timeAt(x), view: card.view,
    };
  };
  review.show = async (time, start, end) => {
    const card = review.card();
    const view = card.view;
    if (!(view.start < time && time < view.end)) {
      card.setView(start, end);
      await card.whenTimelineReady();
    }
    return true;
  };
  review.zoomTo = async (start, end) => {
    review.card().setView(start, end);
    await review.card().whenTimelineReady();
    return true;
  };
  review.arm = (time) => {
    const card = review.card();
    const point = review.point(time);
    const playback = card.playback;
    review.armed = {before: performance.now(), at: point.at, url: playback ? playback.url : null};
    return point;
  };
  review.result = (early, late) => {
    const armed = review.armed;
    const playback = review.card().playback;
    // A new playlist's URL is null until the server answers: the old video may still play.
    if (!armed || !playback || !playback.url) return null;
    const down = review.downs.find((t) => t >= armed.before && t < armed.before + 60000);
    const clicked = down === undefined ? armed.before : down;
    for (const frame of review.frames) {
      if (frame.presented < clicked || frame.url !== playback.url || frame.start === null) {
        continue;
      }
      const wall = frame.start + frame.media;
      if (wall < armed.at - early || wall > armed.at + late) continue;
      return {
        ms: frame.presented - clicked, changed: playback.url !== armed.url, wall, at: armed.at,
        fromPointerdown: down !== undefined,
      };
    }
    return null;
  };
  review.describe = () => {
    const card = review.card();
    if (!card) return {card: null};
    let video = null;
    try {
      video = card.recordedVideo();
    } catch (err) {
      review.lastError = String(err);
    }
    return {
      mode: card.mode, view: card.view, playback: card.playback, armed: review.armed,
      frames: review.frames.slice(-5), downs: review.downs.slice(-3), lastError: review.lastError,
      video: video && {
        currentTime: video.currentTime, readyState: video.readyState, paused: video.paused,
        seeking: video.seeking, error: video.error && video.error.message, src: video.currentSrc,
      },
    };
  };
  review.recorded = () => {
    const card = review.card();
    const view = card.view;
    const row = card.shadowRoot.querySelector(".row");
    const spans = [];
    for (const span of row ? row.querySelectorAll(".span[data-start][data-end]") : []) {
      const start = Math.max(Number(span.dataset.start), view.start);
      const end = Math.min(Number(span.dataset.end), view.end);
      if (end - start > 1) spans.push([start, end]);
    }
    const playback = card.playback;
    return {view, spans, url: playback ? playback.url : null};
  };
  review.button = (selector) => {
    const button = review.card().shadowRoot.querySelector(selector);
    if (!button) return null;
    const box = button.getBoundingClientRect();
    return {x: box.left + box.width / 2, y: box.top + box.height / 2};
  };
  review.ready = () => review.card().whenTimelineReady().then(() => true);
  return true;
})()
""".replace("FIND_CARD", FIND_CARD)

# Installed before the page's scripts: the page's uncaught errors and rejections as text with
# their place (DevTools reports a rejected non-Error value only as "Object").
PAGE_ERRORS = """
(() => {
  const errors = [];
  window.__pageErrors = errors;
  const text = (value) => {
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    try {
      return JSON.stringify(value);
    } catch (err) {
      return String(value);
    }
  };
  window.addEventListener("error", (event) => {
    errors.push(`${text(event.error || event.message)} at ${event.filename}:${event.lineno}`);
  });
  window.addEventListener("unhandledrejection", (event) => {
    errors.push(`unhandled rejection: ${text(event.reason)}`);
  });
})();
"""

CARD_READY = """
(() => {
  const find = () => FIND_CARD;
  const card = find();
  return Boolean(card && card.shadowRoot && card.shadowRoot.querySelector(".timeline[data-ready]"));
})()
""".replace("FIND_CARD", FIND_CARD)

# Whether the card's module ran (it lists itself for the card picker) and whether the page's
# registry knows the element: a module that runs before the frontend installs its scoped
# registry defines the element where the frontend does not look.
CARD_DEFINED = """
({
  moduleRan: (window.customCards || []).some((card) => card.type === "lightnvr-camera-card"),
  defined: Boolean(customElements.get("lightnvr-camera-card")),
})
"""

# The Media panel's way to the camera's hours: browse the camera, its newest day, then take
# the hour item (`vod/<camera>/<start>-<end>`) covering the most time.
FIND_HOUR = """
async (cameraId) => {
  const hass = document.querySelector("home-assistant").hass;
  const browse = (id) => hass.callWS({type: "media_source/browse_media", media_content_id: id});
  const camera = await browse(`media-source://lightnvr/${cameraId}`);
  const day = camera.children.find((child) => child.can_expand);
  const items = (await browse(day.media_content_id)).children;
  const length = (item) => {
    const [start, end] = item.media_content_id.split("/").pop().split("-").map(Number);
    return end - start;
  };
  const hours = items.filter((item) => item.title.includes("hour"));
  hours.sort((a, b) => length(b) - length(a));
  return hours[0].media_content_id;
}
"""

# What the Media panel does on a click: resolve the item, then play it in HA's own player.
# Timed from creating the player to its first presented frame; the resolve on its own.
MEDIA_PANEL_PLAY = """
async (mediaId, timeoutMs) => {
  await customElements.whenDefined("ha-hls-player");
  const hass = document.querySelector("home-assistant").hass;
  const asked = performance.now();
  const resolved = await hass.callWS({type: "media_source/resolve_media",
                                      media_content_id: mediaId});
  const created = performance.now();
  const player = document.createElement("ha-hls-player");
  player.hass = hass;
  player.url = resolved.url;
  player.autoPlay = true;
  player.muted = true;
  player.playsInline = true;
  player.controls = true;  // as the Media panel's dialog shows it
  // On screen (a browser may leave an off-screen video undrawn), over the paused card.
  player.style.cssText = "position: fixed; top: 0; left: 0; width: 640px; z-index: 10000";
  document.body.appendChild(player);
  try {
    const deadline = created + timeoutMs;
    let video = null;
    while (!(video = player.shadowRoot && player.shadowRoot.querySelector("video"))) {
      if (performance.now() > deadline) throw new Error("ha-hls-player made no <video>");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const meta = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(
        `no frame: readyState ${video.readyState}, error ${video.error && video.error.message}`
      )), Math.max(0, deadline - performance.now()));
      video.requestVideoFrameCallback((now, frame) => {
        clearTimeout(timer);
        resolve(frame);
      });
    });
    return {resolveMs: created - asked, playerMs: meta.presentationTime - created,
            media: meta.mediaTime};
  } finally {
    player.remove();
  }
}
"""


# ----- 2: timeline answers, 30 days × 1 camera and 7 days × 16 cameras ----------------------


def _fill_week(entry: MockConfigEntry, camera_id: str, now: float) -> None:
    """Index 7 days of `timeline._fill`'s files and clips (same clip density) for a camera."""
    clips = timeline.CLIPS * WEEK_DAYS // timeline.DAYS
    _fill(entry, now, camera_id=camera_id, days=WEEK_DAYS, clips=clips)


@pytest.fixture
async def many_cameras(
    hass: HomeAssistant, bench_camera: RtspServer, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A loaded hub with 16 cameras, recording off, retention and free-space floor off."""
    assert await async_setup_component(hass, "http", {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            **hub_entry_data(tmp_path / "rec"),
            # Nothing may delete the synthetic files from the index while measuring.
            CONF_RETENTION_DAYS: 0,
            CONF_MIN_FREE_GB: 0,
        },
        subentries_data=[
            camera_subentry(f"Bench {number:02d}", bench_camera.url("cam"), record=False)
            for number in range(1, CAMERAS + 1)
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


def _camera_entities(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, str]:
    """Camera id (subentry) → camera entity id."""
    return {
        entity.config_subentry_id: entity.entity_id
        for entity in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        if entity.domain == "camera" and entity.config_subentry_id is not None
    }


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "not met"


@pytest.mark.timeout(600)
async def bench_timeline_answers(
    hass: HomeAssistant, many_cameras: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    """Print the table of timeline answers."""
    now = time.time()
    entities = _camera_entities(hass, many_cameras)
    assert len(entities) == CAMERAS, entities
    month_camera = next(iter(many_cameras.subentries))  # the one `_fill` fills
    _fill(many_cameras, now)
    for camera_id in many_cameras.subentries:
        if camera_id != month_camera:
            _fill_week(many_cameras, camera_id, now)
    ws = await hass_ws_client(hass)

    async def timeline_of(entity_id: str, days: int) -> Any:
        await ws.send_json_auto_id(
            {
                "type": "lightnvr/timeline",
                "entity_id": entity_id,
                "start": now - days * 86400,
                "end": now,
            }
        )
        reply = await ws.receive_json()
        assert reply["success"], reply
        return reply["result"]

    async def all_at_once() -> list[Any]:
        """Send the 16 requests before reading any answer, as the card's rows ask."""
        asked: dict[int, str] = {}
        for entity_id in entities.values():
            message: dict[str, Any] = {
                "type": "lightnvr/timeline",
                "entity_id": entity_id,
                "start": now - WEEK_DAYS * 86400,
                "end": now,
            }
            await ws.send_json_auto_id(message)
            asked[message["id"]] = entity_id  # the client numbered the message
        answers = []
        while asked:
            reply = await ws.receive_json()
            assert reply["success"], reply
            asked.pop(reply["id"])
            answers.append(reply["result"])
        return answers

    def shown(answer: Any) -> str:
        return (
            f"{len(answer['spans'])} spans, {len(answer['gaps'])} gaps, "
            f"{len(answer['events'])} events"
        )

    month_entity = entities[month_camera]
    await timeline_of(month_entity, timeline.DAYS)  # warm up
    month, answer = await _time(partial(timeline_of, month_entity, timeline.DAYS), ANSWER_RUNS)
    month_shown = shown(answer)

    per_camera: list[float] = []
    week_shown = ""
    for entity_id in entities.values():
        await timeline_of(entity_id, WEEK_DAYS)
        trips, answer = await _time(partial(timeline_of, entity_id, WEEK_DAYS), ANSWER_RUNS)
        per_camera += trips
        if entity_id != month_entity:
            week_shown = shown(answer)
    await all_at_once()
    together, answers = await _time(all_at_once, ANSWER_RUNS)
    assert len(answers) == CAMERAS

    rows = [
        (f"{timeline.DAYS} d × 1 camera", month, month_shown),
        (f"{WEEK_DAYS} d × {CAMERAS} cameras, per camera", per_camera, f"each: {week_shown}"),
        (f"{WEEK_DAYS} d × {CAMERAS} cameras, all at once", together, "total until the last"),
    ]
    print()
    print(
        f"Timeline answers (`lightnvr/timeline` round trip, ms): one-minute files, an hour "
        f"missing daily, {timeline.CLIPS} clips per {timeline.DAYS} days; {ANSWER_RUNS} runs "
        f"each ({ANSWER_RUNS} per camera)"
    )
    print("| case                            | median | p90    | goal (p90)  | verdict | answer")
    print("|---------------------------------|--------|--------|-------------|---------|--------")
    for name, times, answer_shown in rows:
        median, p90 = _stats(times)
        print(
            f"| {name:<31} | {median:>6.1f} | {p90:>6.1f} | ≤ {GOAL_ANSWER_MS:g} ms    "
            f"| {_verdict(p90, GOAL_ANSWER_MS):<7} | {answer_shown}"
        )


# ----- 1 and 3: the card in Chromium --------------------------------------------------------


@pytest.fixture
async def card_frontend(
    hass: HomeAssistant, hass_storage: dict[str, Any], socket_enabled: None
) -> str:
    """HA's real frontend with the card's dashboard, and `media_source` for the Media panel.

    All before the hub, which adds its card to the frontend's modules when it is there.
    """
    return await serve_frontend(hass, hass_storage, DASHBOARD, "media_source")


@pytest.fixture
async def recording_entry(
    hass: HomeAssistant, card_frontend: str, bench_camera: RtspServer, tmp_path: Path
) -> AsyncIterator[MockConfigEntry]:
    """A hub recording the camera ("Porch") in 3 s files; set up after the frontend."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="LightNVR",
        data={**hub_entry_data(tmp_path / "rec"), CONF_SEGMENT_SECONDS: SEGMENT_SECONDS},
        subentries_data=[camera_subentry("Porch", bench_camera.url("cam"))],
    )
    entry.add_to_hass(hass)
    # Through the config entry, so the integration's async_setup registers the HLS views.
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def _record(entry: MockConfigEntry) -> None:
    """Let the camera record RECORDED_FILES files, with one person detection (a marker)."""
    camera_id = camera_id_of(entry)
    runtime = entry.runtime_data
    await wait_segments(entry, 2)
    jpeg = await runtime.engine.async_snapshot(camera_id, None, None)
    handle = runtime.clips.async_trigger(
        camera_id, "person", confidence=0.87, box=(0.1, 0.2, 0.3, 0.4), snapshot=jpeg
    )
    runtime.clips.async_release(camera_id, "person")
    assert await handle.wait() is not None  # after the post-roll
    await wait_segments(entry, RECORDED_FILES, timeout=120)


async def _click(page: Page, x: float, y: float) -> None:
    """A user's left click: move there, press, release."""
    await page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
    for kind, buttons in (("mousePressed", 1), ("mouseReleased", 0)):
        await page.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1},
        )


async def _press(page: Page, selector: str) -> None:
    """Click one of the card's buttons where it is on screen."""
    point = await page.evaluate(f"__review.button({json.dumps(selector)})")
    if point is None:
        raise AssertionError(f"the card has no {selector}")
    await _click(page, point["x"], point["y"])


@dataclass(frozen=True)
class _Click:
    ms: float
    new_playlist: bool
    from_pointerdown: bool


async def _timed_click(page: Page, instant: float, view: tuple[float, float]) -> _Click:
    """Click the first row's track at `instant`; wait for the first frame showing it."""
    await page.evaluate(f"__review.show({instant}, {view[0]}, {view[1]})")
    point = await page.evaluate(f"__review.arm({instant})")
    if not point["left"] <= point["x"] <= point["right"]:
        raise AssertionError(f"{instant} is off the track: {point}")
    await _click(page, point["x"], point["y"])
    try:
        result = await page.wait_for(
            f"__review.result({FRAME_EARLY_S}, {FRAME_LATE_S})",
            timeout=CLICK_TIMEOUT_S,
            interval=0.05,
        )
    except TimeoutError as err:
        raise AssertionError(
            f"no frame at {point['at']:.1f} after the click: "
            f"{await page.evaluate('__review.describe()')}"
        ) from err
    return _Click(result["ms"], result["changed"], result["fromPointerdown"])


def _click_instants(starts: list[float]) -> list[float]:
    """Instants for RUNS clicks: a file further back each time (a new playlist), then a seek.

    A playlist starts with the file holding the clicked instant, so an earlier instant needs a
    new one, and an instant SEEK_AHEAD_S later is in the one just loaded.
    """
    instants = []
    for pair in range(RUNS // 2):
        first = starts[len(starts) - 4 - 2 * pair] + 2.0
        instants += [first, first + SEEK_AHEAD_S]
    return instants


async def _memory(page: Page, browser: Browser) -> dict[str, float]:
    """JS heap in use after a full garbage collection, DOM counters, Chromium's memory."""
    await page.send("HeapProfiler.collectGarbage")
    heap = await page.send("Runtime.getHeapUsage")
    dom = await page.send("Memory.getDOMCounters")
    return {
        "heap": heap["usedSize"] / 1e6,
        # Where hls.js keeps fetched segments: outside the heap's used size.
        "buffers": heap.get("backingStorageSize", 0) / 1e6,
        "nodes": dom["nodes"],
        "listeners": dom["jsEventListeners"],
        "chromium": await asyncio.to_thread(_chromium_pss_mb, browser.process.pid),
    }


def _chromium_pss_mb(session: int) -> float:
    """Proportional memory of every process in Chromium's session (browser, renderer, GPU…).

    Proportional, so pages the processes share are counted once; 0 where /proc says nothing.
    """
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # The session id: 6th field, the 4th after the command name (which may hold spaces).
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) != session:
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return total / 1000


async def _scrub(page: Page, browser: Browser, seconds: float) -> dict[str, Any]:
    """Click random recorded instants every 1–2 s, zoom or pan now and then; sample memory."""
    rng = random.Random(20261205)  # the same actions in every run
    clicks = zoom_pans = returns = 0
    playlists: set[str] = set()  # the card's playlists seen between actions: clicks played
    samples = [await _memory(page, browser)]
    started = time.monotonic()
    next_sample = started + SAMPLE_EVERY_S
    while time.monotonic() - started < seconds:
        await asyncio.sleep(rng.uniform(*SCRUB_PAUSE_S))
        if time.monotonic() >= next_sample:
            samples.append(await _memory(page, browser))
            next_sample += SAMPLE_EVERY_S
        recorded = await page.evaluate("__review.recorded()")
        if recorded["url"]:
            playlists.add(recorded["url"])
        view = recorded["view"]
        width = view["end"] - view["start"]
        if rng.random() < ZOOM_PAN_SHARE:
            # Keep the view between about a minute and a day: spans stay clickable.
            choices = ["button.pan-back", "button.pan-forward"]
            choices.append("button.zoom-in" if width > 120 else "button.zoom-out")
            choices.append("button.zoom-out" if width < 86400 else "button.zoom-in")
            await _press(page, rng.choice(choices))
            await page.evaluate("__review.ready()")
            zoom_pans += 1
            continue
        if not recorded["spans"]:  # panned away from the recordings: back to now
            await _press(page, "button.now")
            await page.evaluate("__review.ready()")
            returns += 1
            continue
        spans = recorded["spans"]
        start, end = rng.choices(spans, weights=[e - s for s, e in spans])[0]
        point = await page.evaluate(f"__review.point({rng.uniform(start, end)})")
        await _click(page, point["x"], point["y"])
        clicks += 1
    samples.append(await _memory(page, browser))
    return {
        "samples": samples,
        "clicks": clicks,
        "zoom_pans": zoom_pans,
        "returns": returns,
        "playlists": len(playlists),
    }


NAME_WIDTH = 48


def _row(name: str, times: list[float], goal: str = "", verdict: str = "") -> str:
    if not times:
        return f"| {name:<{NAME_WIDTH}} | {0:>4} | {'–':>6} | {'–':>6} | {goal:<16} | {verdict}"
    median, p90 = _stats(times)
    return (
        f"| {name:<{NAME_WIDTH}} | {len(times):>4} | {median:>6.0f} | {p90:>6.0f} "
        f"| {goal:<16} | {verdict}"
    )


@pytest.mark.usefixtures("webrtc_loopback")  # the card starts in live view (WebRTC)
@pytest.mark.timeout(900 + SCRUB_MINUTES * 60)
async def bench_card(
    hass: HomeAssistant, card_frontend: str, recording_entry: MockConfigEntry, tmp_path: Path
) -> None:
    """Print the tables of click → first frame and of the card's memory."""
    if find_chromium() is None:
        pytest.fail(f"Chromium is not installed: {SETUP_HINT}")
    await _record(recording_entry)
    camera_id = camera_id_of(recording_entry)
    segments = recording_entry.runtime_data.recorder.index.segments(camera_id)
    starts = [segment.start for segment in segments]
    view = (starts[0] - 10, segments[-1].end + 10)
    init_script = await login_script(hass, card_frontend)
    screenshot = tmp_path / "review.png"
    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.add_init_script(KEEP_ICE_ON_LOOPBACK)
        await page.add_init_script(init_script)
        await page.add_init_script(PAGE_ERRORS)
        try:
            await page.goto(f"{card_frontend}/lovelace/{VIEW_PATH}", timeout=60)
            await page.wait_for(CARD_READY, timeout=60)
            await page.evaluate(PROBE)

            # The first click, from live view, also loads the player's code: not counted.
            cold = await _timed_click(page, starts[-1] + 2.0, view)
            await asyncio.sleep(PAUSE_AFTER_FRAME_S)
            # Counted clicks on the recorded minute spread over the whole track (finer aim).
            await page.evaluate(f"__review.zoomTo({view[0]}, {view[1]})")
            clicks: list[_Click] = []
            for instant in _click_instants(starts):
                clicks.append(await _timed_click(page, instant, view))
                await asyncio.sleep(PAUSE_AFTER_FRAME_S)

            # The Media panel's player for the same hour, with the card's video paused.
            await page.evaluate("__review.card().recordedVideo()?.pause()")
            hour = await page.evaluate(f"({FIND_HOUR})({json.dumps(camera_id)})")
            panel = [
                await page.evaluate(
                    f"({MEDIA_PANEL_PLAY})({json.dumps(hour)}, {CLICK_TIMEOUT_S * 1000})",
                    timeout=CLICK_TIMEOUT_S + 10,
                )
                for _ in range(RUNS)
            ]

            # Scrubbing: the probe's frame log stops first, so it does not count as the card's.
            await page.evaluate("__review.stop()")
            await page.send("HeapProfiler.enable")
            errors_before = await page.evaluate("window.__pageErrors.length")
            scrub = await _scrub(page, browser, SCRUB_MINUTES * 60)
            errors = (await page.evaluate("window.__pageErrors"))[errors_before:]
            screenshot.write_bytes(await page.screenshot())
        except (AssertionError, TimeoutError, RuntimeError) as err:
            screenshot.write_bytes(await page.screenshot())
            raise AssertionError(
                f"{err}\n{await _describe_page(page)}\n"
                f"page errors: {await page.evaluate('window.__pageErrors')}\n"
                f"card module: {await page.evaluate(CARD_DEFINED)}\n"
                f"screenshot: {screenshot}\nchromium: {browser.log_tail(5)}"
            ) from err

    all_ms = [click.ms for click in clicks]
    seeks = [click.ms for click in clicks if not click.new_playlist]
    new = [click.ms for click in clicks if click.new_playlist]
    goal = f"≤ {GOAL_CLICK_S * 1000:g} ms median"
    verdict = _verdict(_stats(all_ms)[0], GOAL_CLICK_S * 1000)
    print()
    print(
        f"Click on the timeline → first recorded frame in Chromium (ms), 3 s files, "
        f"{len(segments)} recorded; Media panel player for the same hour ({hour})"
    )
    print(f"| {'case':<{NAME_WIDTH}} | runs | median | p90    | {'goal':<16} | verdict")
    print(f"|{'-' * (NAME_WIDTH + 2)}|------|--------|--------|{'-' * 18}|--------")
    print(_row("card click, all", all_ms, goal, verdict))
    print(_row("card click, seek in the loaded playlist", seeks))
    print(_row("card click, new playlist", new))
    print(_row("card first click from live (cold, not counted)", [cold.ms]))
    print(_row("Media panel player: creation → first frame", [p["playerMs"] for p in panel]))
    resolved = [p["resolveMs"] + p["playerMs"] for p in panel]
    print(_row("Media panel: resolve + creation → first frame", resolved))
    if not all(click.from_pointerdown for click in [cold, *clicks]):
        print("(some clicks timed from just before dispatching: no pointerdown reached the card)")

    first, last = scrub["samples"][0], scrub["samples"][-1]
    peak = max(sample["heap"] for sample in scrub["samples"])
    growth = last["heap"] - first["heap"]
    print()
    print(
        f"Card memory over {SCRUB_MINUTES:g} min of scrubbing: {scrub['clicks']} clicks, "
        f"{scrub['playlists']} playlists seen, {scrub['zoom_pans']} zooms/pans, "
        f"{scrub['returns']} returns to now; "
        f"{len(errors)} page errors"
    )
    print("| measure                          | start  | end    | growth | goal       | verdict")
    print("|----------------------------------|--------|--------|--------|------------|--------")
    print(
        f"| JS heap used after GC (MB)       | {first['heap']:>6.1f} | {last['heap']:>6.1f} "
        f"| {growth:>+6.1f} | ≤ {GOAL_GROWTH_MB:g} MB    | {_verdict(growth, GOAL_GROWTH_MB)}"
    )
    for name, key, digits in (
        ("ArrayBuffer backing stores (MB)", "buffers", 1),
        ("DOM nodes", "nodes", 0),
        ("JS event listeners", "listeners", 0),
        ("Chromium processes, PSS (MB)", "chromium", 1),
    ):
        print(
            f"| {name:<32} | {first[key]:>6.{digits}f} | {last[key]:>6.{digits}f} "
            f"| {last[key] - first[key]:>+6.{digits}f} |            |"
        )
    print(f"JS heap peak {peak:.1f} MB; samples every {SAMPLE_EVERY_S:g} s: ", end="")
    print(", ".join(f"{sample['heap']:.1f}" for sample in scrub["samples"]))
    for error in errors[:5]:
        print(f"page error: {error.splitlines()[0]}")
    print(f"screenshot: {screenshot}")
