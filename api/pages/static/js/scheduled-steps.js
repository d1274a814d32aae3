// The scheduled steps page (api/pages/orders.py): what a Modality Worklist
// C-FIND with the chosen keys answers, read from GET /api/scheduled-steps
// (the worklist SCP's own service), one row per scheduled procedure step.
import { api, messageOf, showMessage, timeElement } from "./api.js";
import { cell, personName } from "./orders.js";

const form = document.getElementById("step-filters");
const body = document.querySelector("#steps-table tbody");
const summary = document.getElementById("steps-summary");
const station = document.getElementById("step-station");
const PRIORITY = { STAT: "stat", HIGH: "urgent", ROUTINE: "routine" };

function today() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

function row(found) {
  const top = found.attributes;
  const step = found.step;
  const tr = document.createElement("tr");
  const link = document.createElement("a");
  link.href = `/orders/${found.order_id}`;
  link.textContent = `Order ${found.order_id}`;
  tr.append(
    cell(found.scheduled_at ? timeElement(found.scheduled_at) : "", "nowrap"),
    cell(step.ScheduledStationAETitle),
    cell(step.ScheduledStationName),
    cell(step.Modality),
    cell(top.AccessionNumber),
    cell(top.RequestedProcedureID),
    cell(step.ScheduledProcedureStepID),
    cell(step.ScheduledProcedureStepDescription || top.RequestedProcedureDescription),
    cell(personName(top.PatientName)),
    cell(top.PatientID),
    cell(PRIORITY[top.RequestedProcedurePriority] || top.RequestedProcedurePriority),
    cell(link, "nowrap"),
  );
  return tr;
}

async function loadStations() {
  try {
    const page = await api("/api/modalities?limit=500&sort=name");
    for (const device of page.items) {
      station.append(new Option(`${device.dicom_ae_title} (${device.name}, ${device.type})`,
        device.dicom_ae_title));
    }
  } catch (error) {
    showMessage(messageOf(error));
  }
}

async function load() {
  const data = new FormData(form);
  const query = new URLSearchParams();
  for (const name of ["modality", "station_ae_title", "date_from", "date_to"]) {
    const value = String(data.get(name) || "");
    if (value) query.set(name, value);
  }
  summary.textContent = "Querying…";
  try {
    const answer = await api(`/api/scheduled-steps?${query}`);
    body.replaceChildren(...answer.items.map(row));
    summary.textContent = answer.items.length
      ? `${answer.items.length} scheduled step${answer.items.length === 1 ? "" : "s"}`
        + (answer.truncated ? " (more matched: narrow the query)." : ".")
      : "No scheduled steps match.";
  } catch (error) {
    summary.textContent = "";
    showMessage(messageOf(error));
  }
}

document.getElementById("step-from").value = today();
document.getElementById("step-to").value = today();
form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
if (station) loadStations();
load();
