// The referring physician's page (issue 18): their signed reports, orders and
// studies, read through the API (the visibility rule, permissions and audit
// events are the API's), and a notice in the page when a report of theirs is
// signed, live from the event stream (/api/events; EventSource sends the
// session cookie). The stream carries ids and states, never patient data: on
// news the page re-reads its lists through the API.
import { api, messageOf, showMessage, timeElement } from "./api.js";

const LIMIT = 100;
const REFRESH_MS = 300; // several entries of one commit arrive together: one re-read
const root = document.getElementById("referrals");
const canReadStudies = root.dataset.canReadStudies === "true";
const canReadReports = root.dataset.canReadReports === "true";

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function fill(tableId, rows, columns, empty) {
  const body = document.querySelector(`#${tableId} tbody`);
  if (!rows.length) {
    const row = document.createElement("tr");
    const td = cell(empty);
    td.colSpan = columns;
    row.append(td);
    body.replaceChildren(row);
    return;
  }
  body.replaceChildren(...rows);
}

const words = (value) => (value || "").replaceAll("_", " ");
// a DICOM person name (FAMILY^GIVEN) as people write it
const personName = (value) => (value || "").split("^").filter(Boolean).join(", ");
const dicomDate = (value) => (value && value.length === 8
  ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value || "");

async function loadReports() {
  if (!canReadReports) {
    fill("referral-reports", [], 4, "Your role may not read reports.");
    return [];
  }
  const page = await api(`/api/reports?limit=${LIMIT}`);
  const rows = page.items.map((report) => {
    const row = document.createElement("tr");
    row.dataset.reportId = report.id;
    row.append(
      cell(report.accession_number || ""),
      cell(timeElement(report.signed_at)),
      cell(report.critical_flag ? "Critical" : ""),
      cell(link(`/reports/${report.id}/print`, `Read or print report ${report.id}`)),
    );
    return row;
  });
  fill("referral-reports", rows, 4, "No signed report yet.");
  return page.items;
}

async function loadOrders() {
  const page = await api(`/api/orders?limit=${LIMIT}`);
  fill("referral-orders", page.items.map((order) => {
    const row = document.createElement("tr");
    row.dataset.orderId = order.id;
    row.append(
      cell(order.accession_number || ""), cell(personName(order.patient_name)), cell(order.patient_id),
      cell(order.requested_modality || ""), cell(order.study_description || ""),
      cell(words(order.priority)), cell(words(order.status)), cell(timeElement(order.created_at)),
    );
    return row;
  }), 8, "No orders.");
}

async function loadStudies() {
  if (!canReadStudies) {
    fill("referral-studies", [], 7, "Your role may not read studies.");
    return;
  }
  const page = await api(`/api/studies?limit=${LIMIT}`);
  fill("referral-studies", page.items.map((study) => {
    const row = document.createElement("tr");
    row.dataset.studyUid = study.study_instance_uid;
    row.append(
      cell(study.accession_number || ""), cell(personName(study.patient_name)),
      cell(study.modalities.join(", ")), cell(study.study_description || ""),
      cell(dicomDate(study.study_date)), cell(words(study.status)),
      cell(link(`/viewer/${encodeURIComponent(study.study_instance_uid)}`,
        `Open images${study.accession_number ? ` of ${study.accession_number}` : ""}`)),
    );
    return row;
  }), 7, "No studies yet.");
}

async function loadAll() {
  try {
    const [reports] = await Promise.all([loadReports(), loadOrders(), loadStudies()]);
    root.dataset.loaded = "true";
    return reports;
  } catch (error) {
    showMessage(messageOf(error));
    return [];
  }
}

// ---- live: a report of theirs signed (the feed gives them report entries
// only once signed), an order or a study of theirs changed
let timer = null;
// report id -> the version last known signed: a report signed again (an
// addendum) is news too, a repeated entry is not
const signedVersion = new Map();

function refreshSoon(announce) {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    try {
      const reports = await (canReadReports ? loadReports() : Promise.resolve([]));
      await Promise.all([loadOrders(), loadStudies()]);
      for (const report of reports) {
        if (!announce.has(report.id)) continue;
        announce.delete(report.id);
        const accession = report.accession_number ? `, accession ${report.accession_number}` : "";
        const notice = showMessage(`A report of yours was signed: report ${report.id}${accession}.`,
          "info", { timeout: 0 });
        notice.append(" ", link(`/reports/${report.id}/print`, "Read it"));
      }
    } catch (error) {
      showMessage(messageOf(error));
    }
  }, REFRESH_MS);
}

const announce = new Set();
function listen() {
  const events = new EventSource("/api/events");
  const onReport = (event) => {
    const entry = JSON.parse(event.data);
    const payload = entry.payload || {};
    if (payload.status === "final" && (signedVersion.get(entry.entity_id) ?? 0) < payload.version) {
      signedVersion.set(entry.entity_id, payload.version);
      announce.add(entry.entity_id);
    }
    refreshSoon(announce);
  };
  events.addEventListener("report.created", onReport);
  events.addEventListener("report.updated", onReport);
  for (const name of ["order.created", "order.updated", "study.created", "study.updated"]) {
    events.addEventListener(name, () => refreshSoon(announce));
  }
  // the session ended or the node stops: the browser reconnects by itself
  // after a shutdown (retry:), not after "end" (the token is gone)
  events.addEventListener("end", () => events.close());
  events.addEventListener("open", () => { root.dataset.live = "true"; });
  window.addEventListener("pagehide", () => events.close());
}

// the stream first, then the lists: a report signed while the lists load is
// announced, never lost between the two
listen();
loadAll().then((reports) => {
  // reports signed before the page opened are listed, not announced
  for (const report of reports) {
    if ((signedVersion.get(report.id) ?? 0) < report.version) signedVersion.set(report.id, report.version);
  }
});
