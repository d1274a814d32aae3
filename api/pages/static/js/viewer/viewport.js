// One viewport: a series (a stack of frames: every frame of every instance,
// in instance number order) drawn on a canvas, with its overlays, window,
// zoom, pan, measurement and cine. The page (viewer.js) routes the keyboard
// and the toolbar to the active viewport.

import { api } from "../api.js";
import { FrameError } from "./frames.js";
import { TAGS, defaultWindow, drawable, imageInfo, isGrey, parseFrame, renderInto, value } from "./render.js";
import { View, distance, dragWindow } from "./tools.js";

export const DICOMWEB = "/dicomweb";
// frames fetched ahead of the one shown, in the direction of reading, and behind
const AHEAD = 48;
const BEHIND = 12;

export function seriesPath(studyUid, seriesUid) {
  return `${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}`;
}

function instancePath(entry) {
  return `${seriesPath(entry.studyUid, entry.seriesUid)}/instances/${encodeURIComponent(entry.sopUid)}`;
}

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function personName(name) {
  return String(name || "").replaceAll("^", " ").trim();
}

export function dicomDate(date) {
  const d = String(date || "");
  return /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}` : d;
}

export class Viewport {
  constructor(container, cache, { number, onChange, onTiming }) {
    this.cache = cache;
    this.number = number;
    this.onChange = onChange || (() => {});
    this.onTiming = onTiming || (() => {});
    this.view = new View();
    this.stack = [];
    this.index = 0;
    this.window = null;
    this.invert = false;
    this.tool = "window";
    this.measure = null; // {a, b} in image pixels of the drawn frame
    this.playing = false;
    this.fps = 10;
    this.direction = 1;
    this.token = 0;
    this.root = element("div", "viewport");
    this.root.tabIndex = 0;
    this.root.dataset.viewport = String(number);
    this.root.setAttribute("role", "group");
    this.root.setAttribute("aria-label", `Viewport ${number}`);
    this.canvas = element("canvas", "viewport-canvas");
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "No image yet");
    this.patientOverlay = element("div", "overlay overlay-patient");
    this.imageOverlay = element("div", "overlay overlay-image");
    this.measureOverlay = element("div", "overlay overlay-measure");
    this.measureOverlay.setAttribute("aria-live", "polite");
    this.message = element("p", "viewport-message");
    this.root.append(this.canvas, this.patientOverlay, this.imageOverlay, this.measureOverlay, this.message);
    container.append(this.root);
    this.image = null; // ImageData of the frame drawn
    this.imageCanvas = document.createElement("canvas"); // the frame at its own size
    this.drawnFrame = null;
    this.bindPointer();
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.root);
  }

  destroy() {
    this.stop();
    this.resizer.disconnect();
    this.root.remove();
  }

  // ---------------------------------------------------------------- loading

  async openStudy(studyUid) {
    this.studyUid = studyUid;
    const [study] = await api(`${DICOMWEB}/studies?StudyInstanceUID=${encodeURIComponent(studyUid)}`) || [];
    this.study = study || {};
    this.patientOverlay.replaceChildren(
      element("span", "", personName(value(study, TAGS.patientName, ""))),
      element("span", "", `ID ${value(study, TAGS.patientId, "")}`),
      element("span", "", dicomDate(value(study, TAGS.studyDate, ""))),
      element("span", "", value(study, TAGS.studyDescription, "")),
    );
    const series = await api(`${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/series`) || [];
    series.sort((a, b) => Number(value(a, TAGS.seriesNumber, 0)) - Number(value(b, TAGS.seriesNumber, 0)));
    this.series = series;
    return series;
  }

  async openSeries(seriesUid) {
    const token = ++this.token;
    this.stop();
    this.seriesUid = seriesUid;
    this.root.dataset.series = seriesUid;
    this.setMessage("Loading the series…");
    const metadata = await api(`${seriesPath(this.studyUid, seriesUid)}/metadata`);
    if (token !== this.token) return;
    metadata.sort((a, b) => Number(value(a, TAGS.instanceNumber, 0)) - Number(value(b, TAGS.instanceNumber, 0)));
    const stack = [];
    for (const dataset of metadata) {
      const info = imageInfo(dataset);
      if (!info.rows) continue; // no pixel data: not an image (a structured report, a PR)
      const base = {
        studyUid: this.studyUid, seriesUid, sopUid: value(dataset, TAGS.sopUid),
        instanceNumber: value(dataset, TAGS.instanceNumber, ""), info,
      };
      for (let frame = 1; frame <= info.frames; frame++) stack.push({ ...base, frame });
    }
    for (const entry of stack) entry.url = `${instancePath(entry)}/frames/${entry.frame}`;
    this.stack = stack;
    this.index = 0;
    this.window = null;
    this.current = null;
    delete this.root.dataset.drawnFrame; // until this series' first image is drawn
    this.measure = null;
    this.measureText = "";
    this.view.reset();
    this.drawnFrame = null;
    if (!stack.length) {
      this.setMessage("This series has no images.");
      return;
    }
    const first = stack[0];
    this.fps = first.info.frameTime ? Math.round(1000 / first.info.frameTime) : 10;
    this.showRendered(first, token);
    await this.go(0);
  }

  // the node's rendering of the first image, drawn at once while its frame loads
  showRendered(entry, token) {
    const picture = new Image();
    picture.addEventListener("load", () => {
      if (token !== this.token || this.drawnFrame) return;
      this.imageCanvas.width = picture.naturalWidth;
      this.imageCanvas.height = picture.naturalHeight;
      this.imageCanvas.getContext("2d").drawImage(picture, 0, 0);
      this.placeholder = { columns: picture.naturalWidth, rows: picture.naturalHeight };
      this.paint();
    });
    picture.src = `${instancePath(entry)}/frames/${entry.frame}/rendered`;
  }

  // ---------------------------------------------------------------- frames

  parse(bytes, entry) {
    return parseFrame(bytes, entry.info);
  }

  async go(index, started = performance.now()) {
    if (!this.stack.length) return;
    index = Math.max(0, Math.min(this.stack.length - 1, index));
    if (index !== this.index) this.direction = index > this.index ? 1 : -1;
    this.index = index;
    const entry = this.stack[index];
    this.updateOverlay();
    this.prefetch();
    if (!drawable(entry.info)) {
      this.drawFallback(entry, started);
      return;
    }
    let frame = this.cache.peek(entry.url);
    const cached = Boolean(frame);
    if (!frame) {
      try {
        frame = await this.cache.get(entry.url, entry);
      } catch (error) {
        if (this.index === index) this.failed(entry, error);
        return;
      }
      if (this.index !== index) return; // the reader moved on meanwhile
    }
    this.draw(entry, frame, started, cached);
  }

  step(delta, started) {
    return this.go(this.index + delta, started);
  }

  prefetch() {
    const wanted = [];
    const add = (i) => {
      const entry = this.stack[i];
      if (entry && drawable(entry.info)) wanted.push([entry.url, entry]);
    };
    for (let d = 1; d <= AHEAD; d++) {
      add(this.index + d * this.direction);
      if (d <= BEHIND) add(this.index - d * this.direction);
    }
    this.cache.prefetch(wanted);
  }

  failed(entry, error) {
    this.setMessage(error instanceof FrameError ? `${error.message} Showing the node's rendering.` : "This image could not be shown.");
    this.drawFallback(entry);
  }

  // an image the browser does not draw itself (PALETTE COLOR...): the node's rendering
  drawFallback(entry, started = performance.now()) {
    const picture = new Image();
    const index = this.index;
    picture.addEventListener("load", () => {
      if (this.index !== index) return;
      this.imageCanvas.width = picture.naturalWidth;
      this.imageCanvas.height = picture.naturalHeight;
      this.imageCanvas.getContext("2d").drawImage(picture, 0, 0);
      this.current = { entry, frame: null };
      this.placeholder = null;
      this.drawnFrame = entry;
      this.paint();
      this.root.dataset.drawnFrame = String(index);
      this.onTiming(index, started, false);
    });
    picture.src = `${instancePath(entry)}/frames/${entry.frame}/rendered`;
  }

  draw(entry, frame, started, cached = true) {
    const { info } = entry;
    if (!this.window) this.window = defaultWindow(info, frame);
    if (!this.image || this.image.width !== info.columns || this.image.height !== info.rows) {
      this.image = new ImageData(info.columns, info.rows);
      this.imageCanvas.width = info.columns;
      this.imageCanvas.height = info.rows;
    }
    renderInto(this.image, frame, info, this.window, { invert: this.invert });
    this.imageCanvas.getContext("2d").putImageData(this.image, 0, 0);
    this.current = { entry, frame };
    this.placeholder = null;
    this.drawnFrame = entry;
    this.setMessage("");
    this.paint();
    this.updateOverlay();
    this.root.dataset.drawnFrame = String(this.index);
    this.onTiming(this.index, started, cached);
  }

  // re-map the frame on screen (a window, an inversion): no request
  redraw() {
    if (this.current && this.current.frame) this.draw(this.current.entry, this.current.frame, performance.now());
  }

  size() {
    if (this.placeholder) return this.placeholder;
    return { columns: this.imageCanvas.width, rows: this.imageCanvas.height };
  }

  // the frame onto the visible canvas, with the view's transform and the measurement
  paint() {
    const context = this.canvas.getContext("2d");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const { columns, rows } = this.size();
    if (!columns) return;
    context.imageSmoothingEnabled = this.view.zoom < 2;
    context.setTransform(...this.view.transform(this.canvas, columns, rows));
    context.drawImage(this.imageCanvas, 0, 0);
    context.setTransform(1, 0, 0, 1, 0, 0);
    if (this.measure) {
      const a = this.view.toCanvas(this.canvas, columns, rows, ...this.measure.a);
      const b = this.view.toCanvas(this.canvas, columns, rows, ...this.measure.b);
      context.strokeStyle = "#ffd24d";
      context.fillStyle = "#ffd24d";
      context.lineWidth = 2;
      context.beginPath();
      context.moveTo(...a);
      context.lineTo(...b);
      context.stroke();
      for (const p of [a, b]) context.fillRect(p[0] - 3, p[1] - 3, 6, 6);
    }
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.root.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.root.clientHeight * ratio));
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.paint();
    }
  }

  setMessage(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  updateOverlay() {
    const entry = this.stack[this.index];
    if (!entry) return;
    const parts = [`Image ${this.index + 1} / ${this.stack.length}`, `Instance ${entry.instanceNumber}`];
    if (entry.info.frames > 1) parts.push(`Frame ${entry.frame} / ${entry.info.frames}`);
    if (this.window && isGrey(entry.info)) parts.push(`W ${Math.round(this.window.width)} L ${Math.round(this.window.center)}`);
    parts.push(`Zoom ${Math.round(this.view.zoom * 100)}%`);
    if (this.playing) parts.push(`Cine ${this.fps} fps`);
    this.imageOverlay.textContent = parts.join(" · ");
    this.root.dataset.image = String(this.index + 1);
    this.canvas.setAttribute("aria-label", `Image ${this.index + 1} of ${this.stack.length}`);
    this.measureOverlay.textContent = this.measureText || "";
    this.onChange(this);
  }

  // ---------------------------------------------------------------- tools

  setWindow(window) {
    this.window = { center: window.center, width: Math.max(1, window.width) };
    this.redraw();
  }

  datasetWindow() {
    const current = this.current;
    if (!current || !current.frame) return null;
    return defaultWindow(current.entry.info, current.frame);
  }

  toggleInvert() {
    this.invert = !this.invert;
    this.redraw();
  }

  zoomBy(factor) {
    this.view.zoomBy(factor);
    this.paint();
    this.updateOverlay();
  }

  panBy(dx, dy) {
    this.view.panBy(dx, dy);
    this.paint();
  }

  resetView() {
    this.view.reset();
    this.measure = null;
    this.measureText = "";
    const fresh = this.datasetWindow();
    if (fresh) this.window = fresh;
    this.redraw();
    this.paint();
    this.updateOverlay();
  }

  bindPointer() {
    let last = null;
    this.canvas.addEventListener("pointerdown", (event) => {
      this.root.focus({ preventScroll: true });
      this.canvas.setPointerCapture(event.pointerId);
      last = [event.offsetX, event.offsetY];
      if (this.tool === "measure" && this.drawnFrame) {
        const { columns, rows } = this.size();
        const point = this.view.toImage(this.canvas, columns, rows, ...this.scaled(event));
        this.measure = { a: point, b: point };
      }
    });
    this.canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const dx = event.offsetX - last[0], dy = event.offsetY - last[1];
      last = [event.offsetX, event.offsetY];
      if (this.tool === "window" && this.window && this.current && this.current.frame) {
        this.setWindow(dragWindow(this.window, dx, dy));
      } else if (this.tool === "pan") {
        this.panBy(dx, dy);
      } else if (this.tool === "zoom") {
        this.zoomBy(Math.exp(-dy / 100));
      } else if (this.tool === "measure" && this.measure) {
        const { columns, rows } = this.size();
        this.measure.b = this.view.toImage(this.canvas, columns, rows, ...this.scaled(event));
        this.measureText = distance(this.measure.a, this.measure.b, this.drawnFrame.info.spacing).text;
        this.paint();
        this.updateOverlay();
      }
    });
    const end = () => { last = null; };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
    // a mouse notch (100 px in Chromium, 120 elsewhere, 3 lines) is one image;
    // a touchpad's many small deltas add up to one image per notch's worth
    let wheel = 0;
    this.root.addEventListener("wheel", (event) => {
      event.preventDefault();
      if (event.ctrlKey) {
        this.zoomBy(event.deltaY < 0 ? 1.1 : 1 / 1.1);
        return;
      }
      wheel += event.deltaMode === WheelEvent.DOM_DELTA_PIXEL ? event.deltaY : event.deltaY * 33;
      let steps = 0;
      while (Math.abs(wheel) >= 50) {
        steps += Math.sign(wheel);
        wheel -= Math.sign(wheel) * 100;
      }
      if (steps) this.step(steps, event.timeStamp);
    }, { passive: false });
  }

  scaled(event) {
    const ratio = window.devicePixelRatio || 1;
    return [event.offsetX * ratio, event.offsetY * ratio];
  }

  // ---------------------------------------------------------------- cine

  play() {
    if (this.playing || this.stack.length < 2) return;
    this.playing = true;
    let last = performance.now();
    const tick = (now) => {
      if (!this.playing) return;
      if (now - last >= 1000 / this.fps) {
        last = now;
        const next = (this.index + 1) % this.stack.length;
        // hold on a frame not yet here rather than skipping it
        if (this.cache.has(this.stack[next].url) || !drawable(this.stack[next].info)) {
          this.direction = 1;
          this.go(next);
        } else {
          this.prefetch();
        }
      }
      this.frameRequest = requestAnimationFrame(tick);
    };
    this.frameRequest = requestAnimationFrame(tick);
    this.root.dataset.playing = "true";
    this.updateOverlay();
  }

  stop() {
    this.playing = false;
    if (this.frameRequest) cancelAnimationFrame(this.frameRequest);
    if (this.root) delete this.root.dataset.playing;
  }

  togglePlay() {
    if (this.playing) this.stop(); else this.play();
    this.updateOverlay();
  }
}
