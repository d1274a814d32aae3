// Pixel data over WADO-RS: one frame per request, always as native
// little-endian samples (the node decodes a compressed frame, so the browser
// needs no codec), the multipart answer parsed here, and a cache of parsed
// frames bounded in bytes with a prefetch queue ordered by what the reader
// will want next.

const NATIVE = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
// parsed frames kept (raw samples: 2 bytes a CT pixel): a 500-image
// 512x512 CT series is 256 MiB; the tab stays well under a GiB
export const CACHE_BYTES = 320 * 1024 * 1024;
// frames fetched at once: HTTP/1.1 browsers open 6 connections to a host;
// leave room for thumbnails and the API
const CONCURRENCY = 4;

export class FrameError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// the first part of a multipart/related answer, as bytes (copied, so that
// typed arrays over it are aligned)
export function firstPart(buffer, contentType) {
  const match = /boundary="?([^";,]+)"?/i.exec(contentType || "");
  if (!match) throw new FrameError(0, "The node's answer is not multipart.");
  const bytes = new Uint8Array(buffer);
  const boundary = new TextEncoder().encode(`--${match[1]}`);
  const start = indexOf(bytes, boundary, 0);
  if (start < 0) throw new FrameError(0, "No part in the node's answer.");
  const headersEnd = indexOf(bytes, new Uint8Array([13, 10, 13, 10]), start + boundary.length);
  if (headersEnd < 0) throw new FrameError(0, "A part without headers in the node's answer.");
  const bodyStart = headersEnd + 4;
  const closing = new Uint8Array(boundary.length + 2);
  closing.set([13, 10]);
  closing.set(boundary, 2);
  const end = indexOf(bytes, closing, bodyStart);
  if (end < 0) throw new FrameError(0, "A part without its end in the node's answer.");
  return bytes.slice(bodyStart, end);
}

function indexOf(haystack, needle, from) {
  const first = needle[0];
  const last = haystack.length - needle.length;
  outer: for (let i = haystack.indexOf(first, from); i !== -1 && i <= last; i = haystack.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// one frame's native samples; a 401 sends the browser to the sign-in form
// (as api.js does for the JSON API: this is the binary counterpart)
export async function fetchFrame(url, signal) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: NATIVE }, credentials: "same-origin", signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new FrameError(0, "The node could not be reached.");
  }
  if (response.status === 401) {
    window.location.assign("/sign-in");
    throw new FrameError(401, "Your session has ended. Sign in again.");
  }
  if (!response.ok) {
    const reason = response.status === 406 ? "the node cannot decode this image" : `the node answered ${response.status}`;
    throw new FrameError(response.status, `Image not loaded: ${reason}.`);
  }
  return firstPart(await response.arrayBuffer(), response.headers.get("content-type"));
}

// Frames by URL: `get` answers a promise of the parsed frame (one request per
// frame however often asked), `prefetch` replaces the queue of frames wanted
// next (nearest first), the least recently used frames go beyond the bound.
export class FrameCache {
  constructor({ limit = CACHE_BYTES, parse }) {
    this.limit = limit;
    this.parse = parse; // (bytes, key) -> {bytes: size in memory, ...}
    this.frames = new Map(); // url -> parsed frame (insertion order = recency)
    this.pending = new Map(); // url -> promise
    this.queue = [];
    this.size = 0;
    this.active = 0;
    this.requests = 0;
    this.listeners = new Set();
  }

  has(url) {
    return this.frames.has(url);
  }

  peek(url) {
    const frame = this.frames.get(url);
    if (frame) {
      this.frames.delete(url);
      this.frames.set(url, frame);
    }
    return frame;
  }

  get(url, context) {
    const cached = this.peek(url);
    if (cached) return Promise.resolve(cached);
    if (this.pending.has(url)) return this.pending.get(url);
    const promise = this.load(url, context);
    this.pending.set(url, promise);
    return promise;
  }

  async load(url, context) {
    this.active++;
    this.requests++;
    try {
      const frame = this.parse(await fetchFrame(url), context);
      this.store(url, frame);
      return frame;
    } finally {
      this.active--;
      this.pending.delete(url);
      this.pump();
    }
  }

  store(url, frame) {
    this.frames.set(url, frame);
    this.size += frame.bytes;
    for (const [key, old] of this.frames) {
      if (this.size <= this.limit || key === url) break;
      this.frames.delete(key);
      this.size -= old.bytes;
    }
  }

  // wanted: [[url, context], ...] nearest first
  prefetch(wanted) {
    this.queue = wanted.filter(([url]) => !this.frames.has(url) && !this.pending.has(url));
    this.pump();
  }

  pump() {
    while (this.active < CONCURRENCY && this.queue.length) {
      const [url, context] = this.queue.shift();
      if (this.frames.has(url) || this.pending.has(url)) continue;
      this.get(url, context).catch(() => {}); // a prefetch failing is shown when the frame is opened
    }
    if (!this.active && !this.queue.length) for (const listener of this.listeners) listener();
  }

  get idle() {
    return this.active === 0 && this.queue.length === 0;
  }
}
