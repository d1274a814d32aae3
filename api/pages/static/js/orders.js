// The orders pages (api/pages/orders.py): the list with its filters and pages,
// the new-order form with the duplicate warning and its override, and one
// order with its schedule and cancel actions. Everything goes through the
// HTTP API (api.js), so the API's permissions, visibility rule and audit
// events apply; a refusal is shown as the API's sentence.
import { api, ApiError, messageOf, showMessage, timeElement } from "./api.js";

export const PAGE_SIZE = 25;
const OPEN = new Set(["requested", "scheduled"]); // what may still be scheduled or cancelled
const FLASH = "orders-flash"; // a message carried to the next page (sessionStorage)

// ---------------------------------------------------------------- shared

export function cell(content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  if (className) td.className = className;
  return td;
}

// a DICOM person name for people: "DOE^JANE" -> "DOE, JANE"
export function personName(value) {
  if (!value) return "";
  const [family, given, middle] = value.split("=")[0].split("^");
  return [family, [given, middle].filter(Boolean).join(" ")].filter(Boolean).join(", ");
}

// an <input type=date> value (the user's calendar day) -> ISO 8601 UTC of its start
export function dayStart(value, plusDays = 0) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

// ISO 8601 -> the value of an <input type=datetime-local> in the user's zone
function localInput(iso) {
  const moment = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())}`
    + `T${pad(moment.getHours())}:${pad(moment.getMinutes())}`;
}

function label(value) {
  return (value || "").replaceAll("_", " ");
}

function flash() {
  const text = sessionStorage.getItem(FLASH);
  if (text) {
    sessionStorage.removeItem(FLASH);
    showMessage(text, "success");
  }
}

// fill a <select> with the imaging centers (facilities:read)
export async function loadCenters(select) {
  const page = await api("/api/imaging-centers?limit=500&sort=name");
  for (const center of page.items) {
    select.append(new Option(`${center.name} (${center.code})`, center.id));
  }
  return page.items;
}

// the modality devices (active ones can be booked), by id
async function loadDevices(type) {
  const query = new URLSearchParams({ limit: "500", status: "active" });
  if (type) query.set("type", type);
  const page = await api(`/api/modalities?${query}`);
  return page.items;
}

function fillDevices(select, devices, keep) {
  for (const option of [...select.options].slice(1)) option.remove();
  for (const device of devices) {
    select.append(new Option(`${device.name}: ${device.type}, AE ${device.dicom_ae_title}`, device.id));
  }
  if (keep) select.value = String(keep);
}

// the Previous/Next page buttons (#previous-page, #next-page) of a listing:
// ``load`` reads ``pages.offset``; ``pages.show(page)`` after each answer
export function pager(load) {
  const previous = document.getElementById("previous-page");
  const next = document.getElementById("next-page");
  const pages = {
    offset: 0,
    show(page) {
      previous.disabled = page.offset === 0;
      next.disabled = page.offset + page.items.length >= page.total;
    },
  };
  previous.addEventListener("click", () => {
    pages.offset = Math.max(0, pages.offset - PAGE_SIZE);
    load();
  });
  next.addEventListener("click", () => {
    pages.offset += PAGE_SIZE;
    load();
  });
  return pages;
}

// ---------------------------------------------------------------- the list

function orderRow(order) {
  const row = document.createElement("tr");
  const link = document.createElement("a");
  link.href = `/orders/${order.id}`;
  link.textContent = `Order ${order.id}`;
  row.append(
    cell(link, "nowrap"),
    cell(personName(order.patient_name)),
    cell(order.patient_id),
    cell(order.study_description),
    cell(order.requested_modality),
    cell(order.priority),
    cell(label(order.status), "status"),
    cell(order.scheduled_at ? timeElement(order.scheduled_at) : "not scheduled", "nowrap"),
    cell(order.accession_number || ""),
    cell(timeElement(order.created_at), "nowrap"),
  );
  return row;
}

function listPage() {
  const form = document.getElementById("order-filters");
  const body = document.querySelector("#orders-table tbody");
  const summary = document.getElementById("orders-summary");
  const pages = pager(load);

  async function load() {
    const data = new FormData(form);
    const query = new URLSearchParams({ offset: String(pages.offset), limit: String(PAGE_SIZE) });
    for (const name of ["status", "modality", "patient_id", "accession_number"]) {
      const value = String(data.get(name) || "").trim();
      if (value) query.set(name, value);
    }
    if (data.get("scheduled_from")) query.set("scheduled_from", dayStart(data.get("scheduled_from")));
    if (data.get("scheduled_to")) query.set("scheduled_to", dayStart(data.get("scheduled_to"), 1));
    summary.textContent = "Loading…";
    try {
      const page = await api(`/api/orders?${query}`);
      body.replaceChildren(...page.items.map(orderRow));
      if (!page.total) summary.textContent = "No orders match.";
      else {
        summary.textContent = `Orders ${page.offset + 1} to ${page.offset + page.items.length} of ${page.total}.`;
      }
      pages.show(page);
    } catch (error) {
      summary.textContent = "";
      showMessage(messageOf(error));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    pages.offset = 0;
    load();
  });
  form.addEventListener("reset", () => {
    pages.offset = 0;
    setTimeout(load); // after the browser has cleared the fields
  });
  load();
}

// ---------------------------------------------------------------- a new order

function orderBody(form) {
  const data = new FormData(form);
  const body = {};
  for (const name of [
    "patient_id", "issuer_of_patient_id", "patient_name", "patient_sex", "requested_modality",
    "study_description", "priority", "clinical_indication", "referring_physician_name",
    "requesting_physician", "scheduled_performing_physician_name",
  ]) {
    const value = String(data.get(name) ?? "").trim();
    if (value) body[name] = value;
  }
  const born = String(data.get("patient_birth_date") || "");
  if (born) body.patient_birth_date = born.replaceAll("-", "");
  for (const name of ["referring_physician_id", "imaging_center_id"]) {
    const value = String(data.get(name) || "");
    if (value) body[name] = Number(value);
  }
  return body;
}

function describeExisting(existing) {
  const parts = [
    `Order ${existing.id}`,
    `${personName(existing.patient_name)} (${existing.patient_id})`,
    `${existing.requested_modality} ${existing.study_description || ""}`.trim(),
    label(existing.status),
  ];
  if (existing.scheduled_at) {
    parts.push(`scheduled ${new Date(existing.scheduled_at).toLocaleString()}`);
  }
  return parts.join(", ");
}

function newOrderPage() {
  const form = document.getElementById("order-form");
  const warning = document.getElementById("duplicate-warning");
  const centers = form.querySelector("[data-centers]");
  const devices = form.querySelector("[data-devices]");
  const modality = document.getElementById("requested_modality");
  let allDevices = [];

  if (centers) loadCenters(centers).catch((error) => showMessage(messageOf(error)));
  if (devices) {
    loadDevices().then((found) => {
      allDevices = found;
      showDevices();
    }).catch((error) => showMessage(messageOf(error)));
  }
  // a device of the chosen modality type (and center, if one is chosen)
  function showDevices() {
    if (!devices) return;
    const kept = devices.value;
    fillDevices(devices, allDevices.filter((d) =>
      (!modality.value || d.type === modality.value)
      && (!centers || !centers.value || String(d.imaging_center_id) === centers.value)), kept);
  }
  modality.addEventListener("change", showDevices);
  if (centers) centers.addEventListener("change", showDevices);

  function missing() {
    for (const field of form.querySelectorAll("[required]")) {
      if (!String(field.value).trim()) {
        const name = form.querySelector(`label[for="${field.id}"]`).textContent.replace("*", "").trim();
        showMessage(`${name} is required.`);
        field.setAttribute("aria-invalid", "true");
        field.focus();
        return true;
      }
      field.removeAttribute("aria-invalid");
    }
    return false;
  }

  async function create(force) {
    const body = orderBody(form);
    if (force) {
      const reason = document.getElementById("force_reason");
      if (!reason.value.trim()) {
        showMessage("Give the reason to order it again.");
        reason.focus();
        return;
      }
      body.force = true;
      body.force_reason = reason.value.trim();
    }
    const device = devices ? devices.value : "";
    const when = document.getElementById("schedule_at");
    if (device && !(when && when.value)) {
      showMessage("Choose the date and time to schedule it, or book it later.");
      when.focus();
      return;
    }
    let order;
    try {
      order = await api("/api/orders", { method: "POST", json: body });
    } catch (error) {
      if (error instanceof ApiError && error.status === 409 && !force) {
        showDuplicate(error);
        return;
      }
      showMessage(messageOf(error));
      return;
    }
    let text = `Order ${order.id} created.`;
    if (device) {
      try {
        order = await api(`/api/orders/${order.id}/schedule`, {
          method: "POST",
          json: { modality_id: Number(device), scheduled_at: new Date(when.value).toISOString() },
        });
        text = `Order ${order.id} created and scheduled (accession ${order.accession_number}).`;
      } catch (error) {
        text = `Order ${order.id} created, but not scheduled: ${messageOf(error)}`;
      }
    }
    sessionStorage.setItem(FLASH, text);
    window.location.assign(`/orders/${order.id}`);
  }

  function showDuplicate(error) {
    document.getElementById("duplicate-text").textContent = error.message;
    const about = document.getElementById("duplicate-existing");
    about.replaceChildren();
    const existing = error.body && error.body.existing;
    if (existing) {
      const link = document.createElement("a");
      link.href = `/orders/${existing.id}`;
      link.textContent = describeExisting(existing);
      about.append("The open order: ", link, ".");
    }
    warning.hidden = false;
    document.getElementById("force_reason").focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (missing()) return;
    warning.hidden = true;
    create(false);
  });
  document.getElementById("force-create").addEventListener("click", () => {
    if (missing()) return;
    create(true);
  });
}

// ---------------------------------------------------------------- one order

function detailPage() {
  const root = document.getElementById("order-detail");
  const id = root.dataset.orderId;
  const facts = document.getElementById("order-facts");
  const scheduleSection = document.getElementById("schedule-section");
  const cancelSection = document.getElementById("cancel-section");
  const deviceSelect = document.getElementById("schedule-device");
  // the center's and the device's names (facilities:read), else their ids
  const canReadFacilities = root.dataset.canReadFacilities === "true";
  let devices = null;
  let centers = null;

  function fact(term, value) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value || "—";
    facts.append(dt, dd);
  }

  async function facilities() {
    if (devices !== null) return;
    try {
      const [deviceList, centerList] = await Promise.all([
        api("/api/modalities?limit=500"), api("/api/imaging-centers?limit=500"),
      ]);
      devices = deviceList.items;
      centers = centerList.items;
    } catch (error) {
      devices = [];
      centers = [];
      if (!(error instanceof ApiError && error.status === 403)) showMessage(messageOf(error));
    }
  }

  function show(order) {
    document.getElementById("order-loading").hidden = true;
    facts.hidden = false;
    facts.replaceChildren();
    const device = (devices || []).find((d) => d.id === order.scheduled_modality_id);
    const center = (centers || []).find((c) => c.id === order.imaging_center_id);
    fact("Status", label(order.status));
    fact("Priority", order.priority);
    fact("Patient", personName(order.patient_name));
    fact("Patient ID", order.issuer_of_patient_id
      ? `${order.patient_id} (issuer ${order.issuer_of_patient_id})` : order.patient_id);
    fact("Birth date", order.patient_birth_date);
    fact("Sex", order.patient_sex);
    fact("Procedure", order.study_description);
    fact("Modality", order.requested_modality);
    fact("Reason for the exam", order.clinical_indication);
    fact("Referring physician", personName(order.referring_physician_name));
    fact("Requesting physician", personName(order.requesting_physician));
    fact("Imaging center", center ? center.name : order.imaging_center_id ? `center ${order.imaging_center_id}` : "");
    fact("Scheduled", order.scheduled_at ? timeElement(order.scheduled_at) : "not scheduled");
    fact("Modality device", device ? `${device.name} (AE ${device.dicom_ae_title})`
      : order.scheduled_modality_id ? `device ${order.scheduled_modality_id}` : "");
    fact("Accession number", order.accession_number);
    fact("Study Instance UID", order.study_instance_uid);
    fact("Requested procedure ID", order.requested_procedure_id);
    fact("Scheduled procedure step ID", order.scheduled_procedure_step_id);
    if (order.cancel_reason) fact("Cancelled because", order.cancel_reason);
    fact("Created", timeElement(order.created_at));
    fact("Last changed", timeElement(order.updated_at));
    const open = OPEN.has(order.status);
    if (scheduleSection) {
      scheduleSection.hidden = !open;
      document.getElementById("schedule-heading").textContent =
        order.status === "scheduled" ? "Reschedule" : "Schedule";
      document.getElementById("schedule-button").textContent =
        order.status === "scheduled" ? "Reschedule" : "Schedule";
      fillDevices(deviceSelect, (devices || []).filter((d) =>
        d.status === "active" && d.type === order.requested_modality), order.scheduled_modality_id);
      const when = document.getElementById("schedule-when");
      if (order.scheduled_at && !when.value) when.value = localInput(order.scheduled_at);
    }
    if (cancelSection) cancelSection.hidden = !open;
  }

  async function load() {
    try {
      if (canReadFacilities) await facilities();
      show(await api(`/api/orders/${id}`));
    } catch (error) {
      document.getElementById("order-loading").textContent = "The order could not be shown.";
      showMessage(messageOf(error));
    }
  }

  if (scheduleSection) {
    document.getElementById("schedule-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const when = document.getElementById("schedule-when");
      if (!deviceSelect.value || !when.value) {
        showMessage("Choose a modality device and a date and time.");
        (deviceSelect.value ? when : deviceSelect).focus();
        return;
      }
      try {
        const order = await api(`/api/orders/${id}/schedule`, {
          method: "POST",
          json: { modality_id: Number(deviceSelect.value), scheduled_at: new Date(when.value).toISOString() },
        });
        show(order);
        showMessage(`Order ${order.id} scheduled, accession ${order.accession_number}.`, "success");
      } catch (error) {
        showMessage(messageOf(error));
      }
    });
  }
  if (cancelSection) {
    document.getElementById("cancel-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const reason = document.getElementById("cancel-reason");
      if (!reason.value.trim()) {
        showMessage("Give the reason for cancelling.");
        reason.focus();
        return;
      }
      try {
        const order = await api(`/api/orders/${id}/cancel`, {
          method: "POST", json: { reason: reason.value.trim() },
        });
        reason.value = "";
        show(order);
        showMessage(`Order ${order.id} cancelled.`, "success");
      } catch (error) {
        showMessage(messageOf(error));
      }
    });
  }
  load();
}

const pages = { "orders-list": listPage, "orders-new": newOrderPage, "orders-detail": detailPage };
const root = document.querySelector("[data-page]");
if (root && pages[root.dataset.page]) {
  flash();
  pages[root.dataset.page]();
}
