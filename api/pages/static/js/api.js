// The pages' one way to call the node's API: the session cookie goes with
// every request (same origin), the CSRF token (from <meta name="csrf-token">)
// with every request that changes something, and an error comes back as an
// ApiError carrying the API's own message (its JSON error shape,
// docs/api.md), so a page shows a sentence, never raw JSON.

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body; // the whole error object: current_state, existing, field...
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

// fetch ``path`` on the node; ``json`` is sent as a JSON body. Answers the
// parsed JSON (null for 204), or throws ApiError. A 401 (the session expired
// or was revoked) sends the browser to the sign-in form.
export async function api(path, { method = "GET", json, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, signal,
    credentials: "same-origin" };
  if (!SAFE.has(method)) init.headers["X-CSRF-Token"] = csrfToken();
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "The node could not be reached. Check the connection and try again.", null);
  }
  if (response.status === 401) {
    window.location.assign("/sign-in");
    throw new ApiError(401, "unauthenticated", "Your session has ended. Sign in again.", null);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = body && body.error ? body.error : {};
    throw new ApiError(response.status, error.code || "error",
      error.message || `The node answered ${response.status}.`, error);
  }
  return body;
}

// a message in the page's live region (#notices, read out by screen readers);
// ``kind``: "error", "info" or "success". Answers the element, to remove early.
export function showMessage(text, kind = "error", { timeout = kind === "error" ? 0 : 6000 } = {}) {
  const area = document.getElementById("notices");
  const element = document.createElement("p");
  element.className = `message ${kind}`;
  element.textContent = text;
  area.append(element);
  if (timeout) setTimeout(() => element.remove(), timeout);
  return element;
}

// the message of any error, for showMessage: the API's sentence, or a plain one
export function messageOf(error) {
  return error instanceof ApiError ? error.message : "Something went wrong in this page. Reload it and try again.";
}

// a <time datetime=... data-local> element, localised (local-time.js)
export function timeElement(iso) {
  const element = document.createElement("time");
  if (!iso) return element;
  element.setAttribute("datetime", iso);
  element.dataset.local = "";
  element.textContent = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" })
    .format(new Date(iso));
  return element;
}
