/*
 * LightNVR camera card.
 *
 * Live view through Home Assistant's own camera stream element (so WebRTC works as in any other
 * camera card) and, under it, a timeline of one or more cameras: recorded spans, gaps and
 * detection markers, from the `lightnvr/timeline` websocket command. A click or drag on the
 * timeline asks `lightnvr/playback` for a signed recorded playlist and plays it in Home
 * Assistant's own HLS player, from that instant.
 *
 * Plain Web Components: no build step, nothing loaded from the network but Home Assistant. The
 * integration serves this file and adds it to every dashboard, so there is nothing to install.
 */

const CARD_TAG = "lightnvr-camera-card";
const EDITOR_TAG = "lightnvr-camera-card-editor";

// Visible timeline widths, narrowest first: 10 minutes to 7 days.
const RANGES = [
  ["10m", 600],
  ["30m", 1800],
  ["1h", 3600],
  ["3h", 10800],
  ["6h", 21600],
  ["12h", 43200],
  ["1d", 86400],
  ["3d", 259200],
  ["7d", 604800],
];
const DEFAULT_RANGE = "3h";
const SPEEDS = [1, 2, 4, 8];
// One timeline answer holds at most this many items; a few pages cover any 7-day view.
const PAGE_LIMIT = 2000;
const MAX_PAGES = 10;
// Data for a little more than the view, so a short pan draws at once.
const FETCH_MARGIN = 0.25;
const LOAD_DELAY_MS = 150;
const REFRESH_MS = 30000;
// Arrow keys seek this far in playback (Shift: a minute) and pan a tenth of the view in live.
const SEEK_STEP_S = 10;
const SEEK_STEP_LONG_S = 60;
// This close to a playlist's end, playback goes on with the next recording.
const END_SLACK_S = 0.25;
// A drag shorter than this is a click.
const DRAG_PX = 4;
// The now-line is this far from the right edge when following the present.
const NOW_MARGIN = 0.05;
// Tick spacings for the axis; the smallest giving labels at least this far apart is used.
const TICK_STEPS = [60, 300, 600, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const MIN_TICK_PX = 70;
// Labels a detector commonly reports; others get a colour from their name.
const LABEL_COLORS = {
  motion: "#ff9800",
  person: "#e53935",
  car: "#1e88e5",
  vehicle: "#1e88e5",
  truck: "#3949ab",
  bicycle: "#00897b",
  dog: "#8e24aa",
  cat: "#d81b60",
  bird: "#7cb342",
  package: "#6d4c41",
};
const GAP_TEXT = {
  not_kept: "Nothing kept",
  recording_off: "Recording off",
  recording_paused: "Recording paused",
  camera_offline: "Camera offline",
  camera_removed: "Camera removed",
  in_progress: "Recording now",
};

function labelColor(label) {
  if (LABEL_COLORS[label]) return LABEL_COLORS[label];
  let hash = 0;
  for (const char of String(label)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360}, 60%, 48%)`;
}

function rangeSeconds(name) {
  const found = RANGES.find(([key]) => key === name);
  return found ? found[1] : null;
}

function rangeName(seconds) {
  const found = RANGES.find(([, value]) => value === seconds);
  return found ? found[0] : `${Math.round(seconds / 60)}m`;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function nowSeconds() {
  return Date.now() / 1000;
}

function localMidnight(epochSeconds) {
  const day = new Date(epochSeconds * 1000);
  day.setHours(0, 0, 0, 0);
  return day.getTime() / 1000;
}

function dateInputValue(epochSeconds) {
  const day = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${day.getFullYear()}-${pad(day.getMonth() + 1)}-${pad(day.getDate())}`;
}

/** The entities a config names, whichever form it uses. */
function configEntities(config) {
  if (Array.isArray(config.entities) && config.entities.length) {
    return config.entities.map((item) => (typeof item === "string" ? item : item.entity));
  }
  return config.entity ? [config.entity] : [];
}

/**
 * Make sure Home Assistant's camera stream and HLS player elements are defined.
 *
 * The frontend loads them with the cards that use them; building a picture-entity card (never
 * shown) pulls them in on a dashboard that has no such card.
 */
let haElementsLoading = null;
function loadHaElements(entityId) {
  if (customElements.get("ha-camera-stream") && customElements.get("ha-hls-player")) {
    return Promise.resolve();
  }
  if (!haElementsLoading) {
    haElementsLoading = (async () => {
      if (window.loadCardHelpers) {
        const helpers = await window.loadCardHelpers();
        helpers.createCardElement({ type: "picture-entity", entity: entityId, camera_view: "live" });
      }
      await Promise.all([
        customElements.whenDefined("ha-camera-stream"),
        customElements.whenDefined("ha-hls-player"),
      ]);
    })();
  }
  return haElementsLoading;
}

/**
 * Make sure Home Assistant's form element is defined (the card editor dialog has it; elsewhere,
 * an entities card's editor brings it).
 */
let haFormLoading = null;
function loadHaForm() {
  if (customElements.get("ha-form")) return Promise.resolve();
  if (!haFormLoading) {
    haFormLoading = (async () => {
      const helpers = await window.loadCardHelpers?.();
      const entities = helpers?.createCardElement({ type: "entities", entities: [] });
      await entities?.constructor.getConfigElement?.();
      await customElements.whenDefined("ha-form");
    })();
  }
  return haFormLoading;
}

const STYLE = `
  :host { display: block; }
  ha-card { overflow: hidden; container-type: inline-size; }
  .header { padding: 12px 16px 4px; font-size: 1.2em; color: var(--primary-text-color); }
  .stage { position: relative; background: #000; aspect-ratio: 16 / 9; }
  .stage.hidden { display: none; }
  .stage > .live, .stage > .recorded { position: absolute; inset: 0; }
  .stage ha-camera-stream, .stage ha-hls-player { width: 100%; height: 100%; display: block; }
  .stage [hidden] { display: none; }
  .badge {
    position: absolute; left: 8px; top: 8px; padding: 2px 8px; border-radius: 4px;
    font-size: 12px; font-weight: 500; color: #fff; background: rgba(0, 0, 0, 0.55);
    pointer-events: none; font-variant-numeric: tabular-nums;
  }
  .badge.live { background: var(--error-color, #db4437); }
  .message {
    position: absolute; left: 0; right: 0; bottom: 8px; text-align: center; color: #fff;
    font-size: 13px; pointer-events: none; text-shadow: 0 0 4px #000;
  }
  .controls {
    display: flex; flex-wrap: wrap; align-items: center; gap: 4px; padding: 6px 8px 0;
  }
  .controls .spacer { flex: 1 1 auto; }
  button, input.date {
    font: inherit; font-size: 13px; min-width: 32px; height: 30px; padding: 0 8px;
    border-radius: 15px; border: 1px solid var(--divider-color, #ccc);
    background: var(--card-background-color, #fff); color: var(--primary-text-color);
    cursor: pointer;
  }
  input.date { border-radius: 6px; padding: 0 4px; color-scheme: light dark; }
  button:hover { background: var(--secondary-background-color, #eee); }
  button:focus-visible, input.date:focus-visible, .timeline:focus-visible {
    outline: 2px solid var(--primary-color); outline-offset: 1px;
  }
  button.active { background: var(--primary-color); color: var(--text-primary-color, #fff); }
  button:disabled { opacity: 0.4; cursor: default; }
  button ha-icon { --mdc-icon-size: 18px; display: flex; }
  button:has(ha-icon) { display: inline-flex; align-items: center; justify-content: center;
    padding: 0 6px; }
  .zoom-label { min-width: 32px; text-align: center; font-size: 13px;
    color: var(--secondary-text-color); }
  .timeline { position: relative; padding: 4px 8px 10px; outline: none; user-select: none;
    touch-action: pan-y; }
  .axis { position: relative; height: 22px; margin-left: var(--name-width); cursor: grab;
    touch-action: none; }
  .axis.dragging { cursor: grabbing; }
  .tick { position: absolute; bottom: 0; height: 6px; border-left: 1px solid var(--divider-color); }
  .tick span { position: absolute; bottom: 7px; transform: translateX(-50%); white-space: nowrap;
    font-size: 11px; color: var(--secondary-text-color); }
  .tick.day span { font-weight: 600; color: var(--primary-text-color); }
  .row { display: flex; align-items: center; height: 30px; margin-top: 4px; }
  .name { width: var(--name-width); flex: none; overflow: hidden; text-overflow: ellipsis;
    white-space: nowrap; font-size: 12px; color: var(--secondary-text-color); cursor: pointer; }
  .row.selected .name { color: var(--primary-text-color); font-weight: 600; }
  .track { position: relative; flex: 1 1 auto; height: 100%; border-radius: 4px; cursor: pointer;
    background: var(--secondary-background-color, rgba(127, 127, 127, 0.12)); overflow: hidden;
    touch-action: none; }
  .span, .gap { position: absolute; top: 6px; bottom: 6px; min-width: 1px; }
  .span { background: var(--lightnvr-recorded-color, var(--primary-color)); opacity: 0.75;
    border-radius: 2px; }
  .gap { top: 12px; bottom: 12px; opacity: 0.6; }
  .gap[data-reason="not_kept"] { display: none; }
  .gap[data-reason="recording_off"], .gap[data-reason="recording_paused"] {
    background: repeating-linear-gradient(45deg, var(--disabled-text-color, #999) 0 3px,
      transparent 3px 6px); }
  .gap[data-reason="camera_offline"], .gap[data-reason="camera_removed"] {
    background: var(--error-color, #db4437); }
  .gap[data-reason="in_progress"] { top: 6px; bottom: 6px; opacity: 0.35;
    background: var(--lightnvr-recorded-color, var(--primary-color)); }
  .marker { position: absolute; top: 2px; bottom: 2px; width: 4px; margin-left: -2px;
    border-radius: 2px; box-shadow: 0 0 0 1px var(--card-background-color, #fff); }
  .marker:hover { top: 0; bottom: 0; width: 6px; margin-left: -3px; }
  .playhead, .scrub { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px;
    background: var(--accent-color, #ff9800); pointer-events: none; }
  .scrub { background: var(--primary-text-color); opacity: 0.6; }
  .playhead[hidden], .scrub[hidden] { display: none; }
  .error { position: absolute; inset: 0; display: flex; align-items: center; padding: 0 8px;
    font-size: 12px; color: var(--error-color, #db4437); }
  .tooltip { position: absolute; z-index: 2; pointer-events: none; padding: 4px; border-radius: 4px;
    background: var(--card-background-color, #fff); color: var(--primary-text-color);
    box-shadow: var(--ha-card-box-shadow, 0 2px 6px rgba(0, 0, 0, 0.3)); font-size: 12px;
    white-space: nowrap; transform: translateX(-50%); }
  .tooltip[hidden] { display: none; }
  .tooltip img { display: block; width: 160px; border-radius: 2px; margin-bottom: 4px; }
  .tooltip img[hidden] { display: none; }
  .legend { display: flex; flex-wrap: wrap; gap: 8px; margin: 6px 0 0 var(--name-width);
    font-size: 11px; color: var(--secondary-text-color); }
  .legend i { display: inline-block; width: 8px; height: 8px; border-radius: 2px;
    margin-right: 3px; vertical-align: middle; }
  .timeline { --name-width: 88px; }
  @container (max-width: 480px) {
    .timeline { --name-width: 0px; }
    .row { flex-direction: column; align-items: stretch; height: auto; }
    .name { width: auto; padding: 2px 0; }
    .track { height: 30px; }
    .controls .spacer { display: none; }
  }
`;

const TEMPLATE = `
  <ha-card>
    <div class="header" hidden></div>
    <div class="stage">
      <div class="live"></div>
      <div class="recorded" hidden></div>
      <div class="badge"></div>
      <div class="message" hidden></div>
    </div>
    <div class="controls">
      <button class="live" title="Back to live (L)">Live</button>
      <button class="play-pause" title="Play or pause (Space)" disabled><ha-icon icon="mdi:play"></ha-icon></button>
      <span class="speeds">
        ${SPEEDS.map((rate) => `<button class="speed" data-rate="${rate}" title="Speed ${rate}×">${rate}×</button>`).join("")}
      </span>
      <span class="spacer"></span>
      <button class="pan-back" title="Earlier"><ha-icon icon="mdi:chevron-left"></ha-icon></button>
      <button class="now" title="Now">Now</button>
      <button class="pan-forward" title="Later"><ha-icon icon="mdi:chevron-right"></ha-icon></button>
      <button class="zoom-out" title="Zoom out (Down)"><ha-icon icon="mdi:magnify-minus-outline"></ha-icon></button>
      <span class="zoom-label"></span>
      <button class="zoom-in" title="Zoom in (Up)"><ha-icon icon="mdi:magnify-plus-outline"></ha-icon></button>
      <input class="date" type="date" title="Go to a day" />
    </div>
    <div class="timeline" tabindex="0">
      <div class="axis"></div>
      <div class="rows"></div>
      <div class="legend"></div>
      <div class="tooltip" hidden><img hidden alt="" /><div class="text"></div></div>
    </div>
  </ha-card>
`;

class LightNvrCameraCard extends HTMLElement {
  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._config = null;
    this._hass = null;
    this._entities = [];
    this._selected = null;
    this._span = rangeSeconds(DEFAULT_RANGE);
    this._view = null;
    this._follow = true; // the view keeps the present in sight
    this._mode = "live";
    this._rate = 1;
    this._data = new Map(); // entity → {spans, gaps, events, error}
    this._fetched = null; // the range the data covers
    this._loadToken = 0;
    this._loadTimer = null;
    this._loadedAt = 0; // when the last timeline request went out (ms)
    this._loading = false;
    this._readyWaiters = [];
    this._playback = null;
    this._playToken = 0;
    this._player = null;
    this._liveShown = null; // the camera whose live stream is on the stage
    this._drag = null;
    this._hovering = false;
    this._panDrag = null;
    this._timer = null;
    this._built = false;
  }

  // ---- Lovelace API ----

  static getConfigElement() {
    return document.createElement(EDITOR_TAG);
  }

  static getStubConfig(hass) {
    const cameras = Object.values(hass.entities || {})
      .filter((entry) => entry.platform === "lightnvr" && entry.entity_id.startsWith("camera."))
      .map((entry) => entry.entity_id);
    return { entity: cameras[0] || "", range: DEFAULT_RANGE };
  }

  setConfig(config) {
    const entities = configEntities(config || {});
    if (!entities.length) throw new Error("Choose at least one LightNVR camera (entity)");
    for (const entity of entities) {
      if (typeof entity !== "string" || !entity.startsWith("camera.")) {
        throw new Error(`Not a camera entity: ${entity}`);
      }
    }
    if (config.range !== undefined && rangeSeconds(config.range) === null) {
      throw new Error(`range must be one of ${RANGES.map(([key]) => key).join(", ")}`);
    }
    this._config = { show_live: true, muted: true, ...config };
    this._entities = entities;
    if (!entities.includes(this._selected)) this._selected = entities[0];
    this._span = rangeSeconds(config.range || DEFAULT_RANGE);
    this._view = null;
    this._follow = true;
    this._data = new Map();
    this._fetched = null;
    if (this._built) this._buildRows();
  }

  set hass(hass) {
    const first = !this._hass;
    this._hass = hass;
    if (!this._built) this._build();
    if (first) this._start();
    const live = this.shadowRoot.querySelector(".live ha-camera-stream");
    if (live) {
      live.hass = hass;
      live.stateObj = hass.states[this._selected];
    }
    if (this._player) this._player.hass = hass;
  }

  get hass() {
    return this._hass;
  }

  getCardSize() {
    return (this._config?.show_live ? 6 : 1) + 1 + this._entities.length;
  }

  getGridOptions() {
    return { columns: 12, min_columns: 4, rows: "auto" };
  }

  connectedCallback() {
    if (this._hass && !this._timer) this._start();
  }

  disconnectedCallback() {
    clearInterval(this._timer);
    this._timer = null;
    clearTimeout(this._loadTimer);
    // A hidden dashboard should not keep a stream or a recorded player running; it comes
    // back live.
    this._playToken += 1;
    this._mode = "live";
    this._playback = null;
    this._removePlayer();
    this.shadowRoot.querySelector(".live")?.replaceChildren();
    this._liveShown = null;
  }

  // ---- what tests, benchmarks and scripts may use ----

  get view() {
    return { ...this._view };
  }

  get mode() {
    return this._mode;
  }

  get playback() {
    return this._playback ? { ...this._playback } : null;
  }

  recordedVideo() {
    return this._player?.shadowRoot?.querySelector("video") || null;
  }

  timeAt(clientX) {
    const rect = this._trackRect();
    const { start, end } = this._view;
    return start + ((clientX - rect.left) / rect.width) * (end - start);
  }

  xOf(epoch) {
    const rect = this._trackRect();
    const { start, end } = this._view;
    return rect.left + ((epoch - start) / (end - start)) * rect.width;
  }

  setView(start, end) {
    this._span = end - start;
    this._follow = false;
    this._view = { start, end };
    this._viewChanged();
  }

  whenTimelineReady() {
    if (!this._loading && this._loadTimer === null && this._fetched) return Promise.resolve();
    return new Promise((resolve) => this._readyWaiters.push(resolve));
  }

  // ---- building ----

  _build() {
    this._built = true;
    const root = this.shadowRoot;
    root.innerHTML = `<style>${STYLE}</style>${TEMPLATE}`;
    const $ = (selector) => root.querySelector(selector);
    $(".live").addEventListener("click", () => this.shadowRoot.querySelector(".timeline").focus());
    $("button.live").addEventListener("click", () => this.goLive());
    $("button.play-pause").addEventListener("click", () => this._togglePlay());
    for (const button of root.querySelectorAll("button.speed")) {
      button.addEventListener("click", () => this._setRate(Number(button.dataset.rate)));
    }
    $("button.pan-back").addEventListener("click", () => this._pan(-0.5));
    $("button.pan-forward").addEventListener("click", () => this._pan(0.5));
    $("button.now").addEventListener("click", () => this._showNow());
    $("button.zoom-in").addEventListener("click", () => this._zoom(-1));
    $("button.zoom-out").addEventListener("click", () => this._zoom(1));
    $("input.date").addEventListener("change", (ev) => this._goToDate(ev.target.value));
    const timeline = $(".timeline");
    $("ha-card").addEventListener("keydown", (ev) => this._onKey(ev));
    timeline.addEventListener("wheel", (ev) => this._onWheel(ev), { passive: false });
    const axis = $(".axis");
    axis.addEventListener("pointerdown", (ev) => this._axisDown(ev));
    axis.addEventListener("pointermove", (ev) => this._axisMove(ev));
    axis.addEventListener("pointerup", (ev) => this._axisUp(ev));
    axis.addEventListener("pointercancel", (ev) => this._axisUp(ev));
    this._buildRows();
  }

  _buildRows() {
    const root = this.shadowRoot;
    const header = root.querySelector(".header");
    header.hidden = !this._config?.title;
    header.textContent = this._config?.title || "";
    root.querySelector(".stage").classList.toggle("hidden", !this._config?.show_live);
    const rows = root.querySelector(".rows");
    rows.replaceChildren();
    for (const entity of this._entities) {
      const row = document.createElement("div");
      row.className = "row";
      row.dataset.entity = entity;
      row.innerHTML = `<div class="name"></div><div class="track"><div class="items"></div><div class="scrub" hidden></div><div class="playhead" hidden></div></div>`;
      row.querySelector(".name").addEventListener("click", () => this._select(entity));
      const track = row.querySelector(".track");
      track.addEventListener("pointerdown", (ev) => this._trackDown(ev, entity));
      track.addEventListener("pointermove", (ev) => this._trackMove(ev, entity));
      track.addEventListener("pointerup", (ev) => this._trackUp(ev, entity));
      track.addEventListener("pointercancel", () => this._endScrub());
      // The view stops following the present while the pointer is over a track, so what is
      // under it does not slide away before the click.
      track.addEventListener("pointerenter", () => {
        this._hovering = true;
      });
      track.addEventListener("pointerleave", () => {
        this._hovering = false;
        if (!this._drag) this._hideTooltip();
      });
      rows.append(row);
    }
    this._updateNames();
    this._updateSelection();
    if (this._hass) {
      this._ensureView();
      this._draw();
      this._scheduleLoad(0);
      this._showStage();
    }
  }

  _start() {
    this._ensureView();
    this._draw();
    this._scheduleLoad(0);
    this._showStage();
    clearInterval(this._timer);
    this._timer = setInterval(() => this._tick(), 1000);
  }

  _ensureView() {
    if (this._view) return;
    const end = nowSeconds() + this._span * NOW_MARGIN;
    this._view = { start: end - this._span, end };
  }

  _trackRect() {
    const track = this.shadowRoot.querySelector(".track");
    return track.getBoundingClientRect();
  }

  _updateNames() {
    for (const row of this.shadowRoot.querySelectorAll(".row")) {
      const state = this._hass?.states[row.dataset.entity];
      const name = state?.attributes.friendly_name || row.dataset.entity;
      const label = row.querySelector(".name");
      label.textContent = name;
      label.title = `${name}: show this camera`;
    }
  }

  _updateSelection() {
    for (const row of this.shadowRoot.querySelectorAll(".row")) {
      row.classList.toggle("selected", row.dataset.entity === this._selected);
    }
  }

  _select(entity) {
    if (entity === this._selected) return;
    this._selected = entity;
    this._updateSelection();
    if (this._mode === "live") this._showStage();
    else this.playAt(entity, this._currentTime() ?? nowSeconds());
  }

  // ---- the clock: the now-line, the playhead, refreshing the present ----

  _tick() {
    const now = nowSeconds();
    if (this._follow && this._mode === "live" && !this._drag && !this._hovering) {
      const end = now + this._span * NOW_MARGIN;
      if (end - this._view.end > this._span / 200) {
        this._view = { start: end - this._span, end };
        this._draw();
      }
    }
    this._drawPlayhead();
    this._updateBadge();
    const idle = !this._loading && this._loadTimer === null;
    if (idle && this._view.end > now - 60 && Date.now() - this._loadedAt > REFRESH_MS) {
      this._scheduleLoad(0);
    }
  }

  // ---- loading the timeline ----

  _viewChanged() {
    this._draw();
    const fetched = this._fetched;
    const inside = fetched && this._view.start >= fetched.start && this._view.end <= fetched.end;
    const sameScale = fetched && fetched.span === this._span;
    if (!inside || !sameScale) this._scheduleLoad(LOAD_DELAY_MS);
  }

  _scheduleLoad(delay) {
    clearTimeout(this._loadTimer);
    this.shadowRoot.querySelector(".timeline")?.removeAttribute("data-ready");
    this._loadTimer = setTimeout(() => {
      this._loadTimer = null;
      this._load();
    }, delay);
  }

  async _load() {
    if (!this._hass || !this._view) return;
    const token = ++this._loadToken;
    this._loading = true;
    this._loadedAt = Date.now();
    const margin = this._span * FETCH_MARGIN;
    const start = this._view.start - margin;
    const end = Math.min(this._view.end + margin, nowSeconds() + 60);
    const answers = await Promise.all(
      this._entities.map((entity) => this._fetchTimeline(entity, start, Math.max(end, start + 1))),
    );
    if (token !== this._loadToken) return;
    this._data = new Map(this._entities.map((entity, i) => [entity, answers[i]]));
    this._fetched = { start, end: this._view.end + margin, span: this._span };
    this._loadedAt = Date.now();
    this._loading = false;
    this._draw();
    if (this._loadTimer === null) {
      this.shadowRoot.querySelector(".timeline").setAttribute("data-ready", "");
      for (const resolve of this._readyWaiters.splice(0)) resolve();
    }
  }

  async _fetchTimeline(entity, start, end) {
    const result = { spans: [], gaps: [], events: [], error: null };
    let cursor = null;
    try {
      for (let page = 0; page < MAX_PAGES; page += 1) {
        const answer = await this._hass.callWS({
          type: "lightnvr/timeline",
          entity_id: entity,
          start,
          end,
          limit: PAGE_LIMIT,
          ...(cursor ? { cursor } : {}),
        });
        result.spans.push(...answer.spans);
        result.gaps.push(...answer.gaps);
        result.events.push(...answer.events);
        cursor = answer.cursor;
        if (!cursor) break;
      }
    } catch (err) {
      result.error = err?.message || String(err);
    }
    return result;
  }

  // ---- drawing ----

  _draw() {
    if (!this._view || !this._built) return;
    const { start, end } = this._view;
    const width = end - start;
    const percent = (t) => ((clamp(t, start, end) - start) / width) * 100;
    const labels = new Set();
    for (const row of this.shadowRoot.querySelectorAll(".row")) {
      const data = this._data.get(row.dataset.entity);
      const items = document.createDocumentFragment();
      const place = (el, from, to) => {
        el.style.left = `${percent(from)}%`;
        el.style.width = `${percent(to) - percent(from)}%`;
        el.dataset.start = String(from);
        el.dataset.end = String(to);
      };
      if (data?.error) {
        const error = document.createElement("div");
        error.className = "error";
        error.textContent = data.error;
        items.append(error);
      }
      for (const gap of data?.gaps || []) {
        if (gap.end < start || gap.start > end) continue;
        const el = document.createElement("div");
        el.className = "gap";
        el.dataset.reason = gap.reason || "";
        el.title = [GAP_TEXT[gap.reason] || "No recording", gap.detail].filter(Boolean).join(": ");
        place(el, gap.start, gap.end);
        items.append(el);
      }
      for (const span of data?.spans || []) {
        if (span.end < start || span.start > end) continue;
        const el = document.createElement("div");
        el.className = "span";
        place(el, span.start, span.end);
        items.append(el);
      }
      (data?.events || []).forEach((event, index) => {
        if (event.time < start || event.time > end) return;
        const el = document.createElement("div");
        el.className = "marker";
        el.style.left = `${percent(event.time)}%`;
        el.style.background = labelColor(event.label);
        el.dataset.time = String(event.time);
        el.dataset.label = event.label;
        el.dataset.index = String(index);
        labels.add(event.label);
        items.append(el);
      });
      row.querySelector(".items").replaceChildren(items);
    }
    this._drawAxis();
    this._drawLegend(labels);
    this._drawPlayhead();
    this.shadowRoot.querySelector(".zoom-label").textContent = rangeName(this._span);
    this.shadowRoot.querySelector("input.date").value = dateInputValue((start + end) / 2);
  }

  _drawAxis() {
    const axis = this.shadowRoot.querySelector(".axis");
    const { start, end } = this._view;
    const width = axis.getBoundingClientRect().width || 300;
    const secondsPerPx = (end - start) / width;
    const step = TICK_STEPS.find((s) => s / secondsPerPx >= MIN_TICK_PX) || 86400;
    const language = this._hass?.locale?.language;
    const timeFormat = new Intl.DateTimeFormat(language, { hour: "2-digit", minute: "2-digit" });
    const dayFormat = new Intl.DateTimeFormat(language, { weekday: "short", day: "numeric" });
    const ticks = document.createDocumentFragment();
    // Ticks on local whole steps: from local midnight before the view.
    const origin = localMidnight(start);
    for (let t = origin + Math.ceil((start - origin) / step) * step; t <= end; t += step) {
      const tick = document.createElement("div");
      const midnight = Math.abs(localMidnight(t + 1) - t) < 1;
      tick.className = midnight ? "tick day" : "tick";
      tick.style.left = `${((t - start) / (end - start)) * 100}%`;
      const label = document.createElement("span");
      const date = new Date(t * 1000);
      label.textContent = midnight ? dayFormat.format(date) : timeFormat.format(date);
      tick.append(label);
      ticks.append(tick);
    }
    axis.replaceChildren(ticks);
  }

  _drawLegend(labels) {
    const legend = this.shadowRoot.querySelector(".legend");
    const entries = [...labels].sort().map((label) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = labelColor(label);
      item.append(swatch, label);
      return item;
    });
    legend.replaceChildren(...entries);
  }

  _currentTime() {
    if (this._mode === "playback") {
      const video = this.recordedVideo();
      if (this._playback && video && video.readyState > 0) {
        return this._playback.start + video.currentTime;
      }
      return this._playback?.time ?? null;
    }
    return null;
  }

  _drawPlayhead() {
    const { start, end } = this._view;
    const at = this._mode === "playback" ? this._currentTime() : nowSeconds();
    for (const row of this.shadowRoot.querySelectorAll(".row")) {
      const head = row.querySelector(".playhead");
      const shown = at !== null && at >= start && at <= end &&
        (this._mode === "live" || row.dataset.entity === this._selected);
      head.hidden = !shown;
      if (shown) head.style.left = `${((at - start) / (end - start)) * 100}%`;
    }
  }

  _updateBadge() {
    const badge = this.shadowRoot.querySelector(".badge");
    if (this._mode === "live") {
      badge.className = "badge live";
      badge.textContent = "LIVE";
      return;
    }
    const at = this._currentTime();
    const format = new Intl.DateTimeFormat(this._hass?.locale?.language, {
      weekday: "short", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    badge.className = "badge";
    badge.textContent = at === null ? "…" : `${format.format(new Date(at * 1000))} · ${this._rate}×`;
  }

  _message(text) {
    const message = this.shadowRoot.querySelector(".message");
    message.hidden = !text;
    message.textContent = text || "";
  }

  // ---- live ----

  goLive() {
    this._playToken += 1;
    this._mode = "live";
    this._playback = null;
    this._removePlayer();
    this._message(null);
    this._showStage();
    this._showNow();
  }

  _showStage() {
    this._renderStage().catch((err) => this._message(err?.message || String(err)));
  }

  async _renderStage() {
    const root = this.shadowRoot;
    root.querySelector("button.live").classList.toggle("active", this._mode === "live");
    root.querySelector("button.play-pause").disabled = this._mode !== "playback";
    for (const button of root.querySelectorAll("button.speed")) {
      button.classList.toggle("active", Number(button.dataset.rate) === this._rate);
      button.disabled = this._mode !== "playback";
    }
    this._updateBadge();
    this._drawPlayhead();
    const liveBox = root.querySelector(".live");
    root.querySelector(".recorded").hidden = this._mode !== "playback";
    liveBox.hidden = this._mode !== "live";
    if (this._mode !== "live" || !this._config?.show_live) {
      liveBox.replaceChildren();
      this._liveShown = null;
      return;
    }
    if (this._liveShown === this._selected) return;
    const entity = this._selected;
    this._liveShown = entity;
    await loadHaElements(entity);
    if (this._mode !== "live" || this._liveShown !== entity) return;
    const stream = document.createElement("ha-camera-stream");
    stream.hass = this._hass;
    stream.stateObj = this._hass.states[entity];
    stream.muted = this._config.muted;
    stream.controls = false;
    liveBox.replaceChildren(stream);
  }

  _showNow() {
    this._follow = true;
    const end = nowSeconds() + this._span * NOW_MARGIN;
    this._view = { start: end - this._span, end };
    this._viewChanged();
  }

  // ---- recorded playback ----

  /** Play a camera's recording from an instant (epoch seconds); resolves once it is asked for. */
  async playAt(entityId, epoch) {
    const token = ++this._playToken;
    if (entityId !== this._selected) {
      this._selected = entityId;
      this._updateSelection();
    }
    const wasLive = this._mode === "live";
    this._mode = "playback";
    this._follow = false;
    this._message(null);
    const loaded = this._playback;
    const video = this.recordedVideo();
    if (
      !wasLive && loaded && video && loaded.entity_id === entityId &&
      epoch >= loaded.start && epoch < loaded.end - 0.5
    ) {
      // Inside the playlist already playing: a seek, no new request.
      loaded.time = epoch;
      loaded.requested = epoch;
      video.currentTime = epoch - loaded.start;
      video.play().catch(() => {});
      this._showStage();
      return;
    }
    this._playback = {
      entity_id: entityId, time: epoch, start: epoch, end: epoch, offset: 0, url: null,
      requested: epoch,
    };
    this._showStage();
    let answer;
    try {
      answer = await this._hass.callWS({ type: "lightnvr/playback", entity_id: entityId, time: epoch });
    } catch (err) {
      if (token !== this._playToken) return;
      this._message(err?.code === "not_found" ? "Nothing recorded after this time" : (err?.message || String(err)));
      return;
    }
    if (token !== this._playToken) return;
    this._playback = { ...answer, entity_id: entityId, requested: epoch };
    await this._startPlayer(answer, token);
  }

  async _startPlayer(answer, token) {
    await loadHaElements(this._selected);
    if (token !== this._playToken) return;
    this._removePlayer();
    const player = document.createElement("ha-hls-player");
    player.className = "recorded";
    player.hass = this._hass;
    player.url = answer.url;
    player.posterUrl = ""; // unset, the player would ask for ".../undefined"
    player.autoPlay = true;
    player.muted = this._config.muted;
    player.playsInline = true;
    player.controls = false;
    this._player = player;
    this.shadowRoot.querySelector(".recorded").replaceChildren(player);
    await player.updateComplete;
    const video = player.shadowRoot?.querySelector("video");
    if (!video || token !== this._playToken) return;
    let seeked = false;
    const seek = () => {
      if (seeked) return;
      seeked = true;
      video.currentTime = answer.offset;
      video.defaultPlaybackRate = this._rate;
      video.playbackRate = this._rate;
      video.play().catch(() => {});
    };
    video.addEventListener("loadedmetadata", seek);
    if (video.readyState > 0) seek();
    // The playlist's media lasts until its last file ends; a player may stop a frame short of
    // that without an `ended` event, so being that close counts as the end.
    const nearEnd = () => {
      const length = Math.min(answer.end - answer.start, video.duration || Infinity);
      return video.currentTime >= length - END_SLACK_S;
    };
    video.addEventListener("timeupdate", () => {
      if (this._playback) this._playback.time = this._currentTime();
      this._drawPlayhead();
      this._updateBadge();
      this._keepPlayheadInView();
      if (nearEnd()) this._continueAfter(player, answer);
    });
    video.addEventListener("waiting", () => {
      if (nearEnd()) this._continueAfter(player, answer);
    });
    video.addEventListener("play", () => this._updatePlayButton());
    video.addEventListener("pause", () => this._updatePlayButton());
    video.addEventListener("ended", () => this._continueAfter(player, answer));
  }

  /** At a playlist's end: play the next recording (after the span's end, or the next file). */
  _continueAfter(player, answer) {
    if (player !== this._player || this._mode !== "playback" || player.continued) return;
    player.continued = true;
    this.playAt(this._selected, answer.end + 0.01);
  }

  _removePlayer() {
    if (!this._player) return;
    const video = this.recordedVideo();
    if (video) {
      video.pause();
      video.removeAttribute("src");
    }
    this._player.remove();
    this._player = null;
  }

  _keepPlayheadInView() {
    const at = this._currentTime();
    if (at === null || this._drag) return;
    const { start, end } = this._view;
    if (at > end - (end - start) * NOW_MARGIN || at < start) {
      this._view = { start: at - (end - start) * 0.2, end: at + (end - start) * 0.8 };
      this._viewChanged();
    }
  }

  _togglePlay() {
    const video = this.recordedVideo();
    if (this._mode !== "playback" || !video) return;
    if (video.paused) video.play().catch(() => {});
    else video.pause();
  }

  _updatePlayButton() {
    const video = this.recordedVideo();
    const button = this.shadowRoot.querySelector("button.play-pause");
    button.querySelector("ha-icon").icon = video && !video.paused ? "mdi:pause" : "mdi:play";
  }

  _setRate(rate) {
    this._rate = rate;
    const video = this.recordedVideo();
    if (video) {
      video.defaultPlaybackRate = rate;
      video.playbackRate = rate;
    }
    this._showStage();
  }

  _seekBy(seconds) {
    const at = this._currentTime();
    if (at !== null) this.playAt(this._selected, at + seconds);
  }

  // ---- zoom and pan ----

  _zoom(direction, anchor = null) {
    const index = RANGES.findIndex(([, seconds]) => seconds >= this._span);
    const next = clamp((index < 0 ? RANGES.length - 1 : index) + direction, 0, RANGES.length - 1);
    const span = RANGES[next][1];
    if (span === this._span) return;
    const { start, end } = this._view;
    const playing = this._currentTime();
    const at = anchor ?? (playing !== null && playing >= start && playing <= end ? playing : null);
    if (this._follow && at === null) {
      this._span = span;
      this._showNow();
      return;
    }
    const pivot = at ?? (start + end) / 2;
    const share = (pivot - start) / (end - start);
    this._span = span;
    this._view = { start: pivot - share * span, end: pivot + (1 - share) * span };
    this._viewChanged();
  }

  _pan(share) {
    const shift = this._span * share;
    const now = nowSeconds();
    let end = this._view.end + shift;
    // Nothing is recorded in the future: stop with now in sight.
    end = Math.min(end, now + this._span * NOW_MARGIN);
    this._follow = end >= now;
    this._view = { start: end - this._span, end };
    this._viewChanged();
  }

  _goToDate(value) {
    if (!value) return;
    const [year, month, day] = value.split("-").map(Number);
    const midnight = new Date(year, month - 1, day).getTime() / 1000;
    this._span = 86400;
    this._follow = false;
    this._view = { start: midnight, end: midnight + 86400 };
    this._viewChanged();
  }

  _onWheel(ev) {
    if (ev.ctrlKey || ev.metaKey) {
      ev.preventDefault();
      this._zoom(ev.deltaY > 0 ? 1 : -1, this.timeAt(ev.clientX));
    } else if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) {
      ev.preventDefault();
      const delta = ev.shiftKey ? ev.deltaY : ev.deltaX;
      this._pan(clamp(delta / 500, -0.5, 0.5));
    }
  }

  _onKey(ev) {
    const keys = {
      " ": () => this._togglePlay(),
      ArrowLeft: () => (this._mode === "playback"
        ? this._seekBy(-(ev.shiftKey ? SEEK_STEP_LONG_S : SEEK_STEP_S)) : this._pan(-0.1)),
      ArrowRight: () => (this._mode === "playback"
        ? this._seekBy(ev.shiftKey ? SEEK_STEP_LONG_S : SEEK_STEP_S) : this._pan(0.1)),
      ArrowUp: () => this._zoom(-1),
      ArrowDown: () => this._zoom(1),
      "+": () => this._zoom(-1),
      "-": () => this._zoom(1),
      l: () => this.goLive(),
    };
    const action = keys[ev.key];
    if (!action || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    // A focused button or the date field keeps its own keys (Space presses a button).
    const target = ev.composedPath()[0];
    if (target?.tagName === "INPUT" || (target?.tagName === "BUTTON" && ev.key === " ")) return;
    ev.preventDefault();
    action();
  }

  // ---- pointer: click or drag on a track plays from there; drag the axis to pan ----

  _trackDown(ev, entity) {
    if (ev.button !== 0) return;
    ev.currentTarget.setPointerCapture(ev.pointerId);
    const marker = ev.target.closest(".marker");
    this._drag = { entity, x: ev.clientX, moved: false, marker };
    this._showScrub(entity, ev.clientX);
  }

  _trackMove(ev, entity) {
    if (this._drag && this._drag.entity === entity) {
      if (Math.abs(ev.clientX - this._drag.x) > DRAG_PX) this._drag.moved = true;
      this._showScrub(entity, ev.clientX);
      return;
    }
    const marker = ev.target.closest?.(".marker");
    this._showTooltip(entity, ev.clientX, marker);
  }

  _trackUp(ev, entity) {
    const drag = this._drag;
    if (!drag || drag.entity !== entity) return;
    this._endScrub();
    this.shadowRoot.querySelector(".timeline").focus({ preventScroll: true });
    if (drag.marker && !drag.moved) {
      const event = this._data.get(entity)?.events[Number(drag.marker.dataset.index)];
      if (event) {
        this.playAt(entity, event.start);
        return;
      }
    }
    this.playAt(entity, this.timeAt(ev.clientX));
  }

  _showScrub(entity, clientX) {
    const row = this.shadowRoot.querySelector(`.row[data-entity="${CSS.escape(entity)}"]`);
    const scrub = row?.querySelector(".scrub");
    if (!scrub) return;
    const rect = row.querySelector(".track").getBoundingClientRect();
    scrub.hidden = false;
    scrub.style.left = `${clamp(clientX - rect.left, 0, rect.width)}px`;
    this._showTooltip(entity, clientX, null);
  }

  _endScrub() {
    this._drag = null;
    for (const scrub of this.shadowRoot.querySelectorAll(".scrub")) scrub.hidden = true;
    this._hideTooltip();
  }

  _showTooltip(entity, clientX, marker) {
    const root = this.shadowRoot;
    const tooltip = root.querySelector(".tooltip");
    const image = tooltip.querySelector("img");
    const text = tooltip.querySelector(".text");
    const timeline = root.querySelector(".timeline").getBoundingClientRect();
    const row = root.querySelector(`.row[data-entity="${CSS.escape(entity)}"]`);
    const rowRect = row.getBoundingClientRect();
    const format = new Intl.DateTimeFormat(this._hass?.locale?.language, {
      weekday: "short", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    const event = marker ? this._data.get(entity)?.events[Number(marker.dataset.index)] : null;
    if (event) {
      const confidence = event.confidence ? ` ${Math.round(event.confidence * 100)}%` : "";
      text.textContent = `${event.label}${confidence} · ${format.format(new Date(event.time * 1000))}`;
      if (event.thumbnail) {
        if (image.getAttribute("src") !== event.thumbnail) image.src = event.thumbnail;
        image.hidden = false;
      } else {
        image.hidden = true;
      }
    } else {
      text.textContent = format.format(new Date(this.timeAt(clientX) * 1000));
      image.hidden = true;
    }
    tooltip.hidden = false;
    const half = (event?.thumbnail ? 168 : 90) / 2;
    tooltip.style.left = `${clamp(clientX - timeline.left, half, timeline.width - half)}px`;
    tooltip.style.bottom = `${timeline.bottom - rowRect.top + 4}px`;
  }

  _hideTooltip() {
    const tooltip = this.shadowRoot.querySelector(".tooltip");
    tooltip.hidden = true;
    // Drop the thumbnail so a long session keeps no decoded images around.
    tooltip.querySelector("img").removeAttribute("src");
  }

  _axisDown(ev) {
    if (ev.button !== 0) return;
    ev.currentTarget.setPointerCapture(ev.pointerId);
    ev.currentTarget.classList.add("dragging");
    this._panDrag = { x: ev.clientX, view: { ...this._view } };
  }

  _axisMove(ev) {
    const drag = this._panDrag;
    if (!drag) return;
    const rect = ev.currentTarget.getBoundingClientRect();
    const shift = ((drag.x - ev.clientX) / rect.width) * (drag.view.end - drag.view.start);
    const limit = nowSeconds() + this._span * NOW_MARGIN;
    const end = Math.min(drag.view.end + shift, limit);
    this._follow = false;
    this._view = { start: end - this._span, end };
    this._draw();
  }

  _axisUp(ev) {
    if (!this._panDrag) return;
    ev.currentTarget.classList.remove("dragging");
    this._panDrag = null;
    this._follow = this._view.end >= nowSeconds();
    this._viewChanged();
  }
}

/** The visual editor: cameras, title, range, live view and sound, with Home Assistant's form. */
class LightNvrCameraCardEditor extends HTMLElement {
  constructor() {
    super();
    this._config = {};
    this._hass = null;
    this._form = null;
  }

  setConfig(config) {
    this._config = config;
    this._update();
  }

  set hass(hass) {
    this._hass = hass;
    this._update();
  }

  _update() {
    this._render().catch((err) => {
      this.textContent = `The editor could not load: ${err?.message || err}`;
    });
  }

  async _render() {
    if (!this._hass) return;
    await loadHaForm();
    if (!this._form) {
      this._form = document.createElement("ha-form");
      this._form.computeLabel = (field) => EDITOR_LABELS[field.name] || field.name;
      this._form.addEventListener("value-changed", (ev) => this._changed(ev.detail.value));
      this.append(this._form);
    }
    this._form.hass = this._hass;
    this._form.schema = EDITOR_SCHEMA;
    const { entity, ...rest } = this._config;
    this._form.data = {
      range: DEFAULT_RANGE,
      show_live: true,
      muted: true,
      ...rest,
      entities: configEntities(this._config),
    };
  }

  _changed(value) {
    const config = { ...this._config, ...value };
    delete config.entity;
    if (config.entities?.length === 1) {
      config.entity = config.entities[0];
      delete config.entities;
    }
    if (!config.title) delete config.title;
    this._config = config;
    this.dispatchEvent(new CustomEvent("config-changed", { detail: { config }, bubbles: true, composed: true }));
  }
}

const EDITOR_SCHEMA = [
  {
    name: "entities",
    required: true,
    selector: { entity: { multiple: true, filter: { domain: "camera", integration: "lightnvr" } } },
  },
  { name: "title", selector: { text: {} } },
  {
    name: "range",
    selector: { select: { mode: "dropdown", options: RANGES.map(([key]) => ({ value: key, label: key })) } },
  },
  { name: "show_live", selector: { boolean: {} } },
  { name: "muted", selector: { boolean: {} } },
];
const EDITOR_LABELS = {
  entities: "Cameras",
  title: "Title",
  range: "Timeline width",
  show_live: "Show the live view",
  muted: "Muted",
};

function defineElements() {
  if (!customElements.get(CARD_TAG)) customElements.define(CARD_TAG, LightNvrCameraCard);
  if (!customElements.get(EDITOR_TAG)) customElements.define(EDITOR_TAG, LightNvrCameraCardEditor);
}

// The frontend imports this module alongside its own app, and the app may then replace
// `window.customElements` with a registry of its own (a scoped-registry polyfill) that does not
// know what was defined before: define again there once the app is in.
const REGISTRY_WATCH_MS = 50;
const REGISTRY_WATCH_LIMIT = 600;
function watchRegistry(registry, checks) {
  if (window.customElements !== registry) {
    defineElements();
  } else if (!registry.get("home-assistant") && checks < REGISTRY_WATCH_LIMIT) {
    setTimeout(() => watchRegistry(registry, checks + 1), REGISTRY_WATCH_MS);
  }
}
defineElements();
watchRegistry(window.customElements, 0);

window.customCards = window.customCards || [];
if (!window.customCards.some((card) => card.type === CARD_TAG)) {
  window.customCards.push({
    type: CARD_TAG,
    name: "LightNVR camera",
    description: "Live view and a timeline of recordings and detections; click to play back.",
    preview: true,
    documentationURL: "https://github.com/lightnvr/lightnvr-homeassistant#review-card",
  });
}
