// The reading worklist (/worklist): the table is one page of GET /api/worklist
// with the filters and sort of the form, refetched whenever the event stream
// (GET /api/events) announces a change to a worklist item, so a new study
// appears and a claim by anyone shows without a reload. Claim and release are
// the API's POST routes; a refusal shows the API's own sentence.
//
// Keyboard first: j/k or the arrow keys move the selection, Enter or o opens
// the study, c claims, r releases, a reassigns (admins and leads), n/p change
// page, / goes to the filters, ? shows the list. Keys typed into a form field
// or a dialog are never taken.
import { api, messageOf, showMessage, timeElement } from "./api.js";

const root = document.getElementById("worklist-page");
const form = document.getElementById("worklist-filters");
const rows = document.getElementById("worklist-rows");
const count = document.getElementById("worklist-count");
const liveStatus = document.getElementById("live-status");
const previousButton = document.getElementById("previous-page");
const nextButton = document.getElementById("next-page");
const shortcuts = document.getElementById("shortcuts");

const userId = Number(root.dataset.userId);
const canClaim = root.dataset.canClaim === "true";
// release anyone's claim and reassign work (an admin or a lead radiologist)
const canReassign = root.dataset.canReassign === "true";
const dialog = document.getElementById("reassign-dialog");
const viewerUrl = root.dataset.viewerUrl;
const limit = Number(root.dataset.pageSize);
const FILTERS = ["queue", "status", "assigned_to", "modality", "priority", "overdue", "sort"];
// a burst of changes (a study arriving) is one refetch, at most this often
const REFRESH_DELAY_MS = 200;
// the list is refetched this often anyway: an item's due time passing is no event
const SAFETY_REFRESH_MS = 60000;
// without the stream (every stream slot taken, or the node unreachable)
const POLL_MS = 15000;
const numbers = new Intl.NumberFormat();

let offset = 0;
let items = [];
let total = 0;
let selectedId = null;
let loading = null; // the fetch under way (an AbortController)
let again = false; // a change arrived during that fetch
let refreshTimer = null;
let pollTimer = null;
let lastDrawn = null; // what the table shows, to redraw only on a change

// ------------------------------------------------------------------ filters and URL

// the filters live in the page's query string (no patient data: codes and ids
// only), so a reload or a bookmark keeps them
function readLocation() {
  const params = new URLSearchParams(window.location.search);
  for (const name of FILTERS) {
    const field = form.elements.namedItem(name);
    const value = params.get(name);
    if (!field || value === null) continue;
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) continue;
    field.value = value;
  }
  const start = Number(params.get("offset"));
  offset = Number.isInteger(start) && start > 0 ? start - (start % limit) : 0;
}

function filterParams() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = form.elements.namedItem(name).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function writeLocation() {
  const params = filterParams();
  if (offset) params.set("offset", String(offset));
  const query = params.toString();
  window.history.replaceState(null, "", query ? `?${query}` : window.location.pathname);
}

// ------------------------------------------------------------------ loading

async function load() {
  if (loading) {
    again = true;
    return;
  }
  const controller = new AbortController();
  loading = controller;
  const params = filterParams();
  params.set("offset", String(offset));
  params.set("limit", String(limit));
  try {
    const page = await api(`/api/worklist?${params}`, { signal: controller.signal });
    if (page.items.length === 0 && offset > 0 && page.total > 0) {
      // the page emptied (items claimed or done meanwhile): show the last one
      offset = Math.max(0, Math.floor((page.total - 1) / limit) * limit);
      again = true;
      return;
    }
    // the same answer again (a change elsewhere in the queue): nothing to redraw
    const drawn = JSON.stringify([offset, page.total, page.items]);
    if (drawn === lastDrawn) return;
    lastDrawn = drawn;
    items = page.items;
    total = page.total;
    render();
  } catch (error) {
    if (error.name !== "AbortError") showMessage(messageOf(error));
  } finally {
    loading = null;
    if (again) {
      again = false;
      load();
    }
  }
}

// a change was announced: refetch soon, once for a burst
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    load();
  }, REFRESH_DELAY_MS);
}

// filters changed: start again from the first page
function reload() {
  offset = 0;
  writeLocation();
  if (loading) loading.abort();
  load();
}

// ------------------------------------------------------------------ rendering

// DICOM PN "FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX" (first component group) as "FAMILY, GIVEN MIDDLE"
function personName(value) {
  if (!value) return "";
  const [family, given, middle, prefix, suffix] = value.split("=")[0].split("^");
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(" ");
  return rest ? `${family || ""}, ${rest}` : family || "";
}

// DICOM DA "YYYYMMDD" as an ISO date (a calendar date: no time zone to convert)
function studyDate(value) {
  return /^\d{8}$/.test(value || "") ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value || "";
}

const PRIORITY_LABELS = { stat: "STAT", urgent: "Urgent", routine: "Routine" };
const STATUS_LABELS = { pending: "Pending", claimed: "Claimed", completed: "Completed", cancelled: "Cancelled" };

function cell(content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  return td;
}

function button(label, action, item, description) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = "button small";
  element.textContent = label;
  element.dataset.action = action;
  element.setAttribute("aria-label", `${label} ${description}`);
  element.addEventListener("click", (event) => {
    event.stopPropagation();
    select(item.id, { focus: false });
    act(action, item);
  });
  return element;
}

function viewerHref(item) {
  return item.study ? `${viewerUrl}/${encodeURIComponent(item.study.study_instance_uid)}` : null;
}

function mayRelease(item) {
  return item.status === "claimed" && (item.assigned_to_id === userId || canReassign);
}

const OPEN = new Set(["pending", "claimed"]);

function describe(item) {
  return item.study && item.study.accession_number ? `accession ${item.study.accession_number}` : `item ${item.id}`;
}

function rowOf(item) {
  const study = item.study || {};
  const tr = document.createElement("tr");
  tr.dataset.itemId = String(item.id);
  tr.tabIndex = -1;
  if (item.overdue) tr.classList.add("overdue");
  // what a button's name says, so a screen reader knows which row it acts on
  const description = describe(item);

  const name = personName(study.patient_name) || "(no name)";
  const href = viewerHref(item);
  if (href) {
    const link = document.createElement("a");
    link.href = href;
    link.textContent = name;
    link.className = "open-study";
    tr.append(cell(link, "patient"));
  } else {
    tr.append(cell(name, "patient"));
  }
  tr.append(cell(study.patient_id));
  tr.append(cell(study.accession_number));
  tr.append(cell(study.modality));
  tr.append(cell(study.body_part));
  tr.append(cell(studyDate(study.study_date)));

  const priority = document.createElement("span");
  priority.className = `priority ${item.priority}`;
  priority.textContent = PRIORITY_LABELS[item.priority] || item.priority;
  tr.append(cell(priority));

  const due = document.createElement("span");
  due.className = "due";
  if (item.due_at) due.append(timeElement(item.due_at));
  if (item.overdue) {
    const flag = document.createElement("span");
    flag.className = "overdue-flag";
    flag.textContent = "Overdue";
    due.append(" ", flag);
  }
  tr.append(cell(due, "due"));

  tr.append(cell(STATUS_LABELS[item.status] || item.status, "status"));
  const holder = item.assigned_to_id === userId ? "You" : item.assigned_to || "";
  tr.append(cell(holder, "assignee"));

  const actions = document.createElement("td");
  actions.className = "actions";
  if (canClaim && item.status === "pending") actions.append(button("Claim", "claim", item, description));
  if (mayRelease(item)) actions.append(button("Release", "release", item, description));
  if (canReassign && OPEN.has(item.status)) actions.append(button("Reassign", "reassign", item, description));
  tr.append(actions);

  tr.addEventListener("click", () => select(item.id, { focus: false }));
  tr.addEventListener("dblclick", () => open(item));
  return tr;
}

function render() {
  const hadFocus = rows.contains(document.activeElement) || document.activeElement === document.body;
  const fragment = document.createDocumentFragment();
  for (const item of items) fragment.append(rowOf(item));
  if (items.length === 0) {
    const tr = document.createElement("tr");
    const td = cell("No items match these filters.", "empty");
    td.colSpan = 11;
    tr.append(td);
    fragment.append(tr);
  }
  rows.replaceChildren(fragment);
  if (!items.some((item) => item.id === selectedId)) selectedId = items.length ? items[0].id : null;
  select(selectedId, { focus: hadFocus && items.length > 0, scroll: false });

  count.textContent = total
    ? `Items ${numbers.format(offset + 1)} to ${numbers.format(offset + items.length)} of ${numbers.format(total)}`
    : "No items";
  previousButton.disabled = offset === 0;
  nextButton.disabled = offset + items.length >= total;
}

// ------------------------------------------------------------------ selection and actions

function rowElements() {
  return [...rows.querySelectorAll("tr[data-item-id]")];
}

// ``scroll``: bring the row into view (a key press); a live refresh keeps the
// page where the reader left it
function select(id, { focus = true, scroll = true } = {}) {
  selectedId = id;
  for (const tr of rowElements()) {
    const chosen = Number(tr.dataset.itemId) === id;
    tr.classList.toggle("selected", chosen);
    // the one row Tab reaches; the others by j/k
    tr.tabIndex = chosen ? 0 : -1;
    if (chosen) tr.setAttribute("aria-current", "true");
    else tr.removeAttribute("aria-current");
    if (chosen && focus) tr.focus({ preventScroll: !scroll });
  }
}

function move(step) {
  if (!items.length) return;
  const index = items.findIndex((item) => item.id === selectedId);
  const next = Math.min(items.length - 1, Math.max(0, (index < 0 ? 0 : index) + step));
  select(items[next].id);
}

function selectedItem() {
  return items.find((item) => item.id === selectedId) || null;
}

function open(item) {
  const href = item && viewerHref(item);
  if (href) window.location.assign(href);
}

const DONE = { claim: "Claimed", release: "Released", reassign: "Reassigned" };

async function act(action, item, json) {
  if (!item) return;
  if (action === "reassign" && json === undefined) {
    askReassign(item);
    return;
  }
  try {
    await api(`/api/worklist/${item.id}/${action}`, { method: "POST", json });
    showMessage(`${DONE[action]} ${describe(item)}.`, "success");
    refreshSoon();
  } catch (error) {
    showMessage(messageOf(error));
  }
}

// the reassign dialog (a modal <dialog>: the focus stays in it, Escape closes it)
let reassigning = null;

function askReassign(item) {
  if (!dialog || !item) return;
  reassigning = item;
  document.getElementById("reassign-what").textContent = describe(item);
  dialog.showModal();
  document.getElementById("reassign-user").focus();
}

if (dialog) {
  document.getElementById("reassign-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const item = reassigning;
    const chosen = Number(document.getElementById("reassign-user").value);
    dialog.close();
    act("reassign", item, { user_id: chosen });
  });
  document.getElementById("reassign-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    reassigning = null;
    select(selectedId);
  });
}

function turnPage(step) {
  const next = offset + step * limit;
  if (next < 0 || (step > 0 && next >= total)) return;
  offset = next;
  writeLocation();
  load();
}

// ------------------------------------------------------------------ keyboard

function typingInField(target) {
  return target instanceof HTMLElement && (target.isContentEditable ||
    ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName));
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (dialog && dialog.open) return;
  if (typingInField(target)) {
    if (event.key === "Escape" && form.contains(target)) {
      event.preventDefault();
      select(selectedId);
    }
    return;
  }
  // Enter and Space on a link or button do what the control does
  const onControl = target instanceof HTMLElement && target.closest("a, button, summary");
  switch (event.key) {
    case "j":
    case "ArrowDown":
      move(1);
      break;
    case "k":
    case "ArrowUp":
      move(-1);
      break;
    case "Enter":
      if (onControl) return;
      open(selectedItem());
      break;
    case "o":
      open(selectedItem());
      break;
    case "c":
      // the API decides (an item claimed meanwhile is refused with its reason)
      if (canClaim) act("claim", selectedItem());
      break;
    case "r":
      act("release", selectedItem());
      break;
    case "a":
      if (canReassign) askReassign(selectedItem());
      break;
    case "n":
      turnPage(1);
      break;
    case "p":
      turnPage(-1);
      break;
    case "/":
      form.elements.namedItem("queue").focus();
      break;
    case "?":
      shortcuts.open = !shortcuts.open;
      break;
    default:
      return;
  }
  event.preventDefault();
});

// ------------------------------------------------------------------ live updates

function poll() {
  if (!pollTimer) pollTimer = setInterval(load, POLL_MS);
}

function listen() {
  // worklist items only: a new study becomes visible here when its reading
  // item is created, a claim is an update of the item
  const stream = new EventSource("/api/events?entity=worklist_item");
  const changed = () => refreshSoon();
  for (const action of ["created", "updated", "deleted"]) {
    stream.addEventListener(`worklist_item.${action}`, changed);
  }
  stream.addEventListener("reset", changed);
  stream.addEventListener("open", () => {
    liveStatus.textContent = "Live updates: on";
    if (pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
    // whatever changed between the list's fetch and the stream's start (and,
    // on a reconnect, while it was down): an unchanged list is not redrawn
    refreshSoon();
  });
  stream.addEventListener("end", () => {
    // the session ended: the next call sends the browser to the sign-in form
    stream.close();
    load();
  });
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED) {
      // refused (every stream slot of this user taken, in other tabs): poll instead
      liveStatus.textContent = `Live updates: off (too many open tabs?); refreshing every ${POLL_MS / 1000} s`;
      poll();
    } else {
      liveStatus.textContent = "Live updates: reconnecting";
    }
  });
}

// ------------------------------------------------------------------ start

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (form.reportValidity()) reload();
});
for (const field of form.querySelectorAll("select")) field.addEventListener("change", reload);
previousButton.addEventListener("click", () => turnPage(-1));
nextButton.addEventListener("click", () => turnPage(1));

readLocation();
load();
listen();
setInterval(load, SAFETY_REFRESH_MS);
