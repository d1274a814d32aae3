// The reconciliation queue (api/pages/reconciliation.py): GET /api/reconciliation,
// and for a chosen study one of the API's three ways out: link to an order
// (the candidates: the open orders of the study's patient, from /api/orders),
// release to reading, or create an order from the study. Each needs a reason.
import { api, ApiError, messageOf, showMessage, timeElement } from "./api.js";
import { cell, loadCenters, PAGE_SIZE, pager, personName } from "./orders.js";

const form = document.getElementById("reconciliation-filters");
const body = document.querySelector("#reconciliation-table tbody");
const summary = document.getElementById("reconciliation-summary");
const panel = document.getElementById("resolve-panel");
const resolveForm = document.getElementById("resolve-form");
const orderSelect = document.getElementById("link-order");
const submit = document.getElementById("resolve-submit");
const canReadOrders = document.getElementById("reconciliation-config").dataset.canReadOrders === "true";
const centers = document.querySelector("[data-centers]");
const ACTION_LABEL = { link: "Link", release: "Release to reading", create: "Create order" };
const pages = pager(load);
let chosen = null; // the entry being resolved
let opener = null; // the button that opened the panel, for focus on close

function statusText(entry) {
  if (entry.kind === "procedure_step") return "unscheduled exam (procedure step only)";
  return entry.metadata_status === "conflict" ? "conflicts with its order" : "no order";
}

function row(entry) {
  const tr = document.createElement("tr");
  const status = document.createElement("span");
  status.textContent = statusText(entry);
  if (entry.released_to_reading) {
    const released = document.createElement("span");
    released.className = "released";
    released.textContent = "released to reading";
    status.append(released);
  }
  // a study is resolved through one of the three actions; an unscheduled exam
  // known only from its procedure step (no images) is closed with an outcome
  const study = entry.kind === "study";
  const who = personName(entry.patient_name) || "an unknown patient";
  const action = document.createElement("button");
  action.type = "button";
  action.className = "button secondary";
  action.textContent = study ? "Resolve" : "Close";
  action.setAttribute("aria-label", study
    ? `Resolve the study of ${who}, ${entry.study_description || entry.modality || ""}`.trim()
    : `Close the unscheduled exam of ${who}`);
  action.addEventListener("click", () => open(entry, action));
  tr.dataset.studyId = entry.study_id ?? "";
  tr.dataset.itemId = entry.worklist_item_id ?? "";
  tr.append(
    cell(timeElement(entry.created_at), "nowrap"),
    cell(status, "status"),
    cell(personName(entry.patient_name)),
    cell(entry.patient_id),
    cell(entry.accession_number),
    cell(entry.modality),
    cell(entry.study_description),
    cell(entry.instance_count ?? ""),
    cell(action),
  );
  return tr;
}

async function load() {
  const data = new FormData(form);
  const query = new URLSearchParams({ offset: String(pages.offset), limit: String(PAGE_SIZE) });
  for (const name of ["metadata_status", "patient_id"]) {
    const value = String(data.get(name) || "").trim();
    if (value) query.set(name, value);
  }
  summary.textContent = "Loading…";
  try {
    const page = await api(`/api/reconciliation?${query}`);
    body.replaceChildren(...page.items.map(row));
    summary.textContent = page.total
      ? `${page.offset + 1} to ${page.offset + page.items.length} of ${page.total} to reconcile.`
      : "Nothing to reconcile.";
    pages.show(page);
  } catch (error) {
    summary.textContent = "";
    showMessage(messageOf(error));
  }
}

function fact(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value || "—";
  list.append(dt, dd);
}

// the open orders of the study's patient: the orders the images were most likely meant for
async function candidates(entry) {
  for (const option of [...orderSelect.options].slice(1)) option.remove();
  if (!canReadOrders || !entry.patient_id) return;
  const query = new URLSearchParams({ patient_id: entry.patient_id, limit: "50", sort: "-created_at" });
  for (const status of ["requested", "scheduled", "in_progress"]) query.append("status", status);
  if (entry.issuer_of_patient_id) query.set("issuer_of_patient_id", entry.issuer_of_patient_id);
  try {
    const page = await api(`/api/orders?${query}`);
    for (const order of page.items) {
      const text = [`Order ${order.id}`, order.requested_modality, order.study_description,
        order.status.replaceAll("_", " "), order.accession_number ? `accession ${order.accession_number}` : ""]
        .filter(Boolean).join(", ");
      orderSelect.append(new Option(text, order.id));
    }
    if (entry.linked_order_id) orderSelect.value = String(entry.linked_order_id);
    else if (page.items.length === 1) orderSelect.value = String(page.items[0].id);
  } catch (error) {
    showMessage(messageOf(error));
  }
}

function action() {
  return new FormData(resolveForm).get("action");
}

function closingItem() {
  return chosen !== null && chosen.kind === "procedure_step";
}

function showAction() {
  const chosenAction = action();
  const item = closingItem();
  document.getElementById("action-choices").hidden = item;
  document.getElementById("item-fields").hidden = !item;
  document.getElementById("link-fields").hidden = item || chosenAction !== "link";
  document.getElementById("priority-fields").hidden = item || chosenAction === "link";
  const center = document.getElementById("center-field");
  if (center) center.hidden = chosenAction !== "create";
  document.getElementById("create-force-field").hidden = chosenAction !== "create";
  submit.textContent = item ? "Close the item" : ACTION_LABEL[chosenAction];
}

function open(entry, button) {
  chosen = entry;
  opener = button;
  resolveForm.reset();
  const facts = document.getElementById("resolve-facts");
  facts.replaceChildren();
  document.getElementById("resolve-heading").textContent = entry.kind === "study"
    ? "Resolve the study" : "Close the unscheduled exam";
  fact(facts, "Patient", `${personName(entry.patient_name)} (${entry.patient_id || "no ID"})`);
  fact(facts, "Study", [entry.modality, entry.study_description].filter(Boolean).join(" "));
  fact(facts, "Accession number", entry.accession_number);
  fact(facts, "Study Instance UID", entry.study_instance_uid);
  if (entry.performed_station_ae_title) fact(facts, "Performed at", entry.performed_station_ae_title);
  if (entry.linked_order_id) fact(facts, "Order it claims", `Order ${entry.linked_order_id}`);
  // a conflict is linked to the right order, never released (the API refuses it)
  resolveForm.querySelector('input[value="release"]').disabled = entry.metadata_status === "conflict"
    || Boolean(entry.released_to_reading);
  showAction();
  panel.hidden = false;
  document.getElementById("resolve-heading").focus();
  if (entry.kind === "study") candidates(entry);
}

function close() {
  panel.hidden = true;
  chosen = null;
  if (opener && opener.isConnected) opener.focus();
}

async function resolve() {
  const reason = document.getElementById("resolve-reason").value.trim();
  if (!reason) {
    showMessage("Give the reason: it is kept in the audit trail.");
    document.getElementById("resolve-reason").focus();
    return;
  }
  const id = chosen.study_id;
  const priority = document.getElementById("resolve-priority").value;
  const chosenAction = action();
  let text;
  try {
    if (closingItem()) {
      const outcome = document.getElementById("item-outcome").value;
      await api(`/api/reconciliation/items/${chosen.worklist_item_id}/resolve`, {
        method: "POST", json: { reason, outcome },
      });
      text = `The unscheduled exam is closed (${outcome}).`;
    } else if (chosenAction === "link") {
      const typed = document.getElementById("link-order-id").value;
      const orderId = Number(typed || orderSelect.value);
      if (!orderId) {
        showMessage("Choose the order to link the study to, or type its number.");
        orderSelect.focus();
        return;
      }
      const result = await api(`/api/reconciliation/${id}/link`, {
        method: "POST",
        json: { order_id: orderId, reason, force: document.getElementById("link-force").checked },
      });
      text = `The study is linked to order ${result.order.id}.`;
    } else if (chosenAction === "release") {
      await api(`/api/reconciliation/${id}/release`, { method: "POST", json: { reason, priority } });
      text = "The study is released to reading; it stays here until an order claims it.";
    } else {
      const json = { reason, priority, force: document.getElementById("create-force").checked };
      if (centers && centers.value) json.imaging_center_id = Number(centers.value);
      const result = await api(`/api/reconciliation/${id}/create-order`, { method: "POST", json });
      text = `Order ${result.order.id} was created from the study and linked to it.`;
    }
  } catch (error) {
    let message = messageOf(error);
    if (error instanceof ApiError && error.body && error.body.existing && error.body.existing.id) {
      message += ` (the open order: order ${error.body.existing.id}; link the study to it instead)`;
    }
    showMessage(message);
    return;
  }
  showMessage(text, "success");
  panel.hidden = true;
  chosen = null;
  await load();
  document.getElementById("main").focus();
}

resolveForm.addEventListener("change", (event) => {
  if (event.target.name === "action") showAction();
});
resolveForm.addEventListener("submit", (event) => {
  event.preventDefault();
  resolve();
});
document.getElementById("resolve-close").addEventListener("click", close);
panel.addEventListener("keydown", (event) => {
  if (event.key === "Escape") close();
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  pages.offset = 0;
  load();
});
if (centers) loadCenters(centers).catch((error) => showMessage(messageOf(error)));
load();
