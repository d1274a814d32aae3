// The study viewer page: the series of the study (thumbnails), the patient's
// prior studies, one or two viewports, the toolbar and the keyboard. Every
// read goes through DICOMweb with the session cookie (the visibility rule and
// the audit are the node's); pixels are windowed here, in the browser.

import { api, messageOf, showMessage } from "../api.js";
import { FrameCache } from "./frames.js";
import { TAGS, parseFrame, value, values } from "./render.js";
import { DICOMWEB, Viewport, dicomDate, seriesPath } from "./viewport.js";

// window presets (width, centre in Hounsfield units for CT); key 1 is the data set's own
export const PRESETS = [
  { key: "1", name: "Data set", window: null },
  { key: "2", name: "Soft tissue", window: { width: 400, center: 40 } },
  { key: "3", name: "Lung", window: { width: 1500, center: -600 } },
  { key: "4", name: "Bone", window: { width: 1800, center: 400 } },
  { key: "5", name: "Brain", window: { width: 80, center: 40 } },
];
const TOOLS = { w: "window", p: "pan", z: "zoom", m: "measure" };
const TIMINGS_KEPT = 2000;

const root = document.getElementById("viewer");
const studyUid = root.dataset.studyUid;
const cache = new FrameCache({ parse: (bytes, entry) => parseFrame(bytes, entry.info) });
const viewportsArea = document.getElementById("viewports");
const seriesList = document.getElementById("series-list");
const priorsList = document.getElementById("priors-list");
const presetSelect = document.getElementById("preset");
const fpsInput = document.getElementById("fps");
const playButton = document.getElementById("play");
const closeButton = document.getElementById("close-second");
const help = document.getElementById("shortcuts");
const viewports = [];
let active = null;

// what the browser tests and bench/viewer_scroll.py read: key press (or wheel)
// to frame drawn, and to the next paint after it
const timings = [];
window.dicomNodeViewer = {
  timings,
  cache,
  get active() { return active; },
  get idle() { return cache.idle; },
};

function recordTiming(viewport, index, started, cached) {
  const drawn = performance.now();
  // cached: the frame was here when asked for (prefetched), else fetched then
  const entry = { viewport: viewport.number, index, cached, drawn: drawn - started };
  timings.push(entry);
  if (timings.length > TIMINGS_KEPT) timings.shift();
  requestAnimationFrame(() => { entry.painted = performance.now() - started; });
}

function makeViewport() {
  const viewport = new Viewport(viewportsArea, cache, {
    number: viewports.length + 1,
    onChange: (changed) => { if (changed === active) syncToolbar(); },
    onTiming: (index, started, cached) => recordTiming(viewport, index, started, cached),
  });
  viewport.root.addEventListener("focusin", () => activate(viewport));
  viewport.root.addEventListener("pointerdown", () => activate(viewport));
  viewports.push(viewport);
  viewportsArea.dataset.count = String(viewports.length);
  return viewport;
}

function activate(viewport) {
  if (active === viewport) return;
  active = viewport;
  for (const v of viewports) v.root.classList.toggle("active", v === viewport);
  renderSeries(viewport);
  syncToolbar();
}

function syncToolbar() {
  if (!active) return;
  playButton.textContent = active.playing ? "Pause" : "Play";
  playButton.setAttribute("aria-pressed", String(active.playing));
  if (document.activeElement !== fpsInput) fpsInput.value = String(active.fps);
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.setAttribute("aria-pressed", String(button.dataset.tool === active.tool));
  }
  closeButton.hidden = viewports.length < 2;
}

// ------------------------------------------------------------------ series

function seriesLabel(series) {
  const number = value(series, TAGS.seriesNumber, "");
  const modality = value(series, TAGS.modality, "");
  const description = value(series, TAGS.seriesDescription, "");
  const count = value(series, "00201209", "");
  return [`Series ${number}`, modality, description, count !== "" ? `(${count} ${Number(count) === 1 ? "image" : "images"})` : ""].filter(Boolean).join(" ");
}

function renderSeries(viewport) {
  seriesList.replaceChildren();
  for (const series of viewport.series || []) {
    const uid = value(series, TAGS.seriesUid);
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "series-button";
    button.dataset.series = uid;
    button.setAttribute("aria-pressed", String(uid === viewport.seriesUid));
    const thumbnail = document.createElement("img");
    thumbnail.alt = "";
    thumbnail.width = 96;
    thumbnail.height = 96;
    thumbnail.loading = "lazy";
    thumbnail.src = `${seriesPath(viewport.studyUid, uid)}/thumbnail?viewport=96,96`;
    const label = document.createElement("span");
    label.textContent = seriesLabel(series);
    button.append(thumbnail, label);
    button.addEventListener("click", () => openSeries(viewport, uid));
    item.append(button);
    seriesList.append(item);
  }
  document.getElementById("series-heading").textContent =
    viewport.number === 1 ? "Series of this study" : `Series of the study in viewport ${viewport.number}`;
}

async function openSeries(viewport, uid) {
  try {
    await viewport.openSeries(uid);
  } catch (error) {
    showMessage(messageOf(error));
  }
  for (const button of seriesList.querySelectorAll(".series-button")) {
    button.setAttribute("aria-pressed", String(button.dataset.series === viewport.seriesUid));
  }
}

async function openStudy(viewport, uid) {
  const series = await viewport.openStudy(uid);
  activate(viewport);
  renderSeries(viewport);
  if (series.length) await openSeries(viewport, value(series[0], TAGS.seriesUid));
  else viewport.setMessage("This study has no series the node holds.");
}

// ------------------------------------------------------------------ priors

async function loadPriors(viewport) {
  const patientId = value(viewport.study, TAGS.patientId, "");
  const status = document.getElementById("priors-status");
  if (!patientId) {
    status.textContent = "No patient ID: prior studies cannot be found.";
    return;
  }
  const found = await api(`${DICOMWEB}/studies?PatientID=${encodeURIComponent(patientId)}` +
    "&includefield=00081030&includefield=00080061") || [];
  const priors = found.filter((study) => value(study, TAGS.studyUid) !== studyUid);
  priors.sort((a, b) => String(value(b, TAGS.studyDate, "")).localeCompare(String(value(a, TAGS.studyDate, ""))));
  status.textContent = priors.length ? "" : "No other study of this patient.";
  priorsList.replaceChildren();
  for (const study of priors) {
    const uid = value(study, TAGS.studyUid);
    const item = document.createElement("li");
    const text = document.createElement("span");
    const modalities = values(study, TAGS.modalities).join(", ");
    text.textContent = [dicomDate(value(study, TAGS.studyDate, "")) || "No date", modalities,
      value(study, TAGS.studyDescription, "")].filter(Boolean).join(" · ");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button secondary prior-open";
    button.dataset.study = uid;
    button.textContent = "Open beside";
    button.setAttribute("aria-label", `Open the study of ${text.textContent} beside this one`);
    button.addEventListener("click", () => openBeside(uid));
    item.append(text, button);
    priorsList.append(item);
  }
}

async function openBeside(uid) {
  const viewport = viewports[1] || makeViewport();
  try {
    await openStudy(viewport, uid);
    viewport.root.focus({ preventScroll: true });
  } catch (error) {
    showMessage(messageOf(error));
  }
  syncToolbar();
}

function closeSecond() {
  const second = viewports.pop();
  if (!second) return;
  second.destroy();
  viewportsArea.dataset.count = String(viewports.length);
  active = null;
  activate(viewports[0]);
  viewports[0].root.focus({ preventScroll: true });
}

// ------------------------------------------------------------------ toolbar and keys

function applyPreset(key) {
  const preset = PRESETS.find((p) => p.key === key);
  if (!preset || !active) return;
  presetSelect.value = key;
  const window = preset.window || active.datasetWindow();
  if (window) active.setWindow(window);
}

function setTool(tool) {
  if (!active) return;
  for (const v of viewports) v.tool = tool;
  syncToolbar();
}

function editing(target) {
  return target.closest && (target.closest("input, textarea, select, [contenteditable], .report-panel-slot, dialog"));
}

function onKey(event) {
  if (!active || event.altKey || event.metaKey || editing(event.target)) return;
  // Space and Enter on a button or link are that control's (Play would toggle twice)
  if ((event.key === " " || event.key === "Enter") && event.target.closest("button, a")) return;
  const started = event.timeStamp;
  const page = Math.max(1, Math.round(active.stack.length / 10));
  const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: page, PageUp: -page };
  let handled = true;
  if (event.key in moves && !event.ctrlKey) active.step(moves[event.key], started);
  else if (event.key === "Home") active.go(0, started);
  else if (event.key === "End") active.go(active.stack.length - 1, started);
  else if (event.ctrlKey) handled = false;
  else if (PRESETS.some((p) => p.key === event.key)) applyPreset(event.key);
  else if (event.key in TOOLS) setTool(TOOLS[event.key]);
  else if (event.key === "+" || event.key === "=") active.zoomBy(1.25);
  else if (event.key === "-") active.zoomBy(0.8);
  else if (event.key === "r") active.resetView();
  else if (event.key === "i") active.toggleInvert();
  else if (event.key === " ") active.togglePlay();
  else if (event.key === "Tab" || event.key === "Escape") handled = false;
  else if (event.key === "v" && viewports.length > 1) {
    const next = viewports[(viewports.indexOf(active) + 1) % viewports.length];
    next.root.focus({ preventScroll: true });
  } else if (event.key === "?") help.showModal();
  else handled = false;
  if (handled) event.preventDefault();
}

function bindToolbar() {
  for (const preset of PRESETS) {
    const option = document.createElement("option");
    option.value = preset.key;
    option.textContent = `${preset.name} (${preset.key})`;
    presetSelect.append(option);
  }
  presetSelect.addEventListener("change", () => applyPreset(presetSelect.value));
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.addEventListener("click", () => setTool(button.dataset.tool));
  }
  document.getElementById("zoom-in").addEventListener("click", () => active && active.zoomBy(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => active && active.zoomBy(0.8));
  document.getElementById("invert").addEventListener("click", () => active && active.toggleInvert());
  document.getElementById("reset").addEventListener("click", () => active && active.resetView());
  playButton.addEventListener("click", () => { if (active) { active.togglePlay(); syncToolbar(); } });
  fpsInput.addEventListener("change", () => {
    const fps = Math.round(Number(fpsInput.value));
    if (active && fps >= 1 && fps <= 60) active.fps = fps;
  });
  closeButton.addEventListener("click", closeSecond);
  document.getElementById("show-shortcuts").addEventListener("click", () => help.showModal());
  document.getElementById("close-shortcuts").addEventListener("click", () => help.close());
  document.addEventListener("keydown", onKey);
}

async function start() {
  bindToolbar();
  const main = makeViewport();
  try {
    await openStudy(main, studyUid);
    await loadPriors(main);
  } catch (error) {
    showMessage(messageOf(error));
  }
  root.dataset.ready = "true";
}

start();
