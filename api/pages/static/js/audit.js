// The audit trail page: the filters become the query of GET /api/audit-events
// (the API audits each read), the answer a table with paging, a row's whole
// record a dialog (GET /api/audit-events/{id}), and the same filters the link
// of the CSV export (GET /api/audit-events.csv). Everything on the page is
// built with the DOM API: the trail holds text from outside (AE titles, reasons).
import { api, messageOf, showMessage, timeElement } from "./api.js";

const form = document.getElementById("audit-filters");
const rows = document.getElementById("audit-rows");
const summary = document.getElementById("audit-summary");
const exportLink = document.getElementById("audit-export");
const previous = document.getElementById("page-previous");
const next = document.getElementById("page-next");
const position = document.getElementById("page-position");
const dialog = document.getElementById("event-dialog");
const dialogBody = document.getElementById("event-dialog-body");
const dialogTitle = document.getElementById("event-dialog-title");

// the filters the API takes (exact matches); "from" and "to" are times
const TEXT_FILTERS = ["study_instance_uid", "accession_number", "patient_id", "actor",
  "target_class", "target_id", "action", "event_code", "outcome"];
const TIME_FILTERS = ["from", "to"];
const FIELD_LABELS = {
  id: "Event number", timestamp: "Time", event_code: "Event type code", action: "Action",
  outcome: "Outcome", actor: "Actor", actor_user_id: "Actor's user number",
  actor_role: "Actor's role", source_address: "Source address", target_class: "Target kind",
  target_id: "Target ID", patient_id: "Patient ID", study_instance_uid: "Study instance UID",
  accession_number: "Accession number", reason: "Reason", details: "Details",
};

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;

let offset = 0;
// the latest listing asked for: an older answer arriving late is dropped
let asked = 0;

// datetime-local value (the user's zone) <-> ISO 8601 UTC
function toIso(local) {
  const moment = new Date(local);
  return Number.isNaN(moment.getTime()) ? null : moment.toISOString();
}
function toLocalInput(iso) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())}` +
    `T${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}`;
}

// the filters of the form as API query parameters (empty fields left out)
function filterParams() {
  const params = new URLSearchParams();
  for (const name of TEXT_FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const name of TIME_FILTERS) {
    const value = form.elements[name].value;
    if (!value) continue;
    const iso = toIso(value);
    if (iso === null) throw new RangeError(`"${name}" is not a time.`);
    params.set(name, iso);
  }
  params.set("order", form.elements.order.value);
  return params;
}

// the form from the page's own query string: a link may open one study's trail
function fillFromLocation() {
  const given = new URLSearchParams(window.location.search);
  for (const name of [...TEXT_FILTERS, "order", "limit"]) {
    if (given.has(name)) form.elements[name].value = given.get(name);
  }
  for (const name of TIME_FILTERS) {
    if (given.has(name)) form.elements[name].value = toLocalInput(given.get(name));
  }
  offset = Math.max(0, Number.parseInt(given.get("offset") || "0", 10) || 0);
  // a filter given among "more filters" is shown, not hidden behind the toggle
  if (["target_class", "target_id"].some((name) => given.has(name))) {
    form.querySelector("details.more-filters").open = true;
  }
}

function text(value) {
  return value === null || value === undefined || value === "" ? "" : String(value);
}

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = text(content);
  return td;
}

// a button in a cell that narrows the trail to one ID and tells it oldest first
function trailButton(name, value, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button";
  button.textContent = value;
  button.setAttribute("aria-label", `${label} ${value}: show its whole trail, oldest first`);
  button.addEventListener("click", () => {
    form.reset();
    form.elements[name].value = value;
    form.elements.order.value = "oldest";
    offset = 0;
    load();
  });
  return button;
}

function lines(...parts) {
  const wrapper = document.createElement("div");
  for (const part of parts) {
    if (part === null || part === undefined || part === "") continue;
    const line = document.createElement("div");
    if (part instanceof Node) line.append(part);
    else line.textContent = part;
    wrapper.append(line);
  }
  return wrapper;
}

function outcomeLabel(outcome) {
  const span = document.createElement("span");
  span.className = outcome === "success" ? "outcome" : "outcome failure";
  span.textContent = text(outcome).replace("_", " ");
  return span;
}

function row(event) {
  const tr = document.createElement("tr");
  tr.dataset.eventId = event.id;
  const code = document.createElement("span");
  code.className = "muted";
  code.textContent = event.event_code;
  tr.append(
    cell(timeElement(event.timestamp)),
    cell(lines(event.action, code)),
    cell(outcomeLabel(event.outcome)),
    cell(lines(event.actor, event.actor_role ? `(${event.actor_role})` : "")),
    cell(lines(event.target_class, event.target_id)),
    cell(event.patient_id ? trailButton("patient_id", event.patient_id, "Patient") : ""),
    cell(lines(
      event.study_instance_uid ? trailButton("study_instance_uid", event.study_instance_uid, "Study") : "",
      event.accession_number ? trailButton("accession_number", event.accession_number, "Accession") : "",
    )),
  );
  const open = document.createElement("button");
  open.type = "button";
  open.className = "button secondary small";
  open.textContent = "Details";
  open.setAttribute("aria-label", `Details of event ${event.id}`);
  open.addEventListener("click", () => showDetails(event.id, open));
  tr.append(cell(open));
  return tr;
}

async function load() {
  let params;
  try {
    params = filterParams();
  } catch (error) {
    showMessage(error.message);
    return;
  }
  const limit = Number.parseInt(form.elements.limit.value, 10);
  const listing = new URLSearchParams(params);
  listing.set("offset", String(offset));
  listing.set("limit", String(limit));
  summary.textContent = "Loading the trail...";
  const mine = ++asked;
  let page;
  try {
    page = await api(`/api/audit-events?${listing}`);
  } catch (error) {
    if (mine !== asked) return;
    summary.textContent = "The trail could not be read.";
    showMessage(messageOf(error));
    return;
  }
  if (mine !== asked) return;
  rows.replaceChildren(...page.items.map(row));
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  summary.textContent = page.total
    ? `Events ${first} to ${last} of ${page.total}.`
    : "No event matches these filters.";
  const pages = Math.max(1, Math.ceil(page.total / limit));
  position.textContent = `Page ${Math.floor(page.offset / limit) + 1} of ${pages}`;
  previous.disabled = page.offset === 0;
  next.disabled = last >= page.total;
  // the export: the filters that just listed (so never a request the API refuses)
  exportLink.href = `/api/audit-events.csv?${params}`;
  exportLink.hidden = page.total === 0;
  exportLink.setAttribute("aria-label", `Export the ${page.total} events as CSV`);
  // the filters in the address (ids only), to come back or share with a colleague
  const address = new URLSearchParams(listing);
  if (offset === 0) address.delete("offset");
  history.replaceState(null, "", `${window.location.pathname}?${address}`);
}

// a value of the record: nested objects as definition lists, arrays as lists
function describe(value) {
  if (value !== null && typeof value === "object") {
    if (Array.isArray(value)) {
      if (!value.length) return document.createTextNode("none");
      const list = document.createElement("ul");
      for (const item of value) {
        const li = document.createElement("li");
        li.append(describe(item));
        list.append(li);
      }
      return list;
    }
    const entries = Object.entries(value);
    if (!entries.length) return document.createTextNode("none");
    const dl = document.createElement("dl");
    dl.className = "facts nested";
    for (const [key, item] of entries) {
      const dt = document.createElement("dt");
      dt.textContent = key.replaceAll("_", " ");
      const dd = document.createElement("dd");
      dd.append(describe(item));
      dl.append(dt, dd);
    }
    return dl;
  }
  if (typeof value === "string" && ISO_TIME.test(value) && !Number.isNaN(Date.parse(value))) {
    // a time in the details: in the reader's zone, the recorded value beside it
    const span = document.createElement("span");
    span.append(timeElement(value), document.createTextNode(` (${value})`));
    return span;
  }
  return document.createTextNode(value === null || value === "" ? "none" : String(value));
}

async function showDetails(id, opener) {
  let event;
  try {
    event = await api(`/api/audit-events/${encodeURIComponent(id)}`);
  } catch (error) {
    showMessage(messageOf(error));
    return;
  }
  dialogTitle.textContent = `Audit event ${event.id}: ${event.action}`;
  const dl = document.createElement("dl");
  dl.className = "facts event-record";
  for (const [name, label] of Object.entries(FIELD_LABELS)) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    if (name === "timestamp") {
      const time = timeElement(event.timestamp);
      dd.append(time, document.createTextNode(` (${event.timestamp} UTC)`));
    } else {
      dd.append(describe(event[name]));
    }
    dl.append(dt, dd);
  }
  dialogBody.replaceChildren(dl);
  dialog.returnFocusTo = opener;
  dialog.showModal();
}

document.getElementById("event-dialog-close").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => {
  if (dialog.returnFocusTo) dialog.returnFocusTo.focus();
});

form.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  offset = 0;
  load();
});
document.getElementById("clear-filters").addEventListener("click", () => {
  form.reset();
  offset = 0;
  load();
});
previous.addEventListener("click", () => {
  offset = Math.max(0, offset - Number.parseInt(form.elements.limit.value, 10));
  load();
});
next.addEventListener("click", () => {
  offset += Number.parseInt(form.elements.limit.value, 10);
  load();
});

fillFromLocation();
load();
