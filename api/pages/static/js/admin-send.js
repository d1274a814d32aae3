// /admin/send: pick a configured peer (GET /api/peers), find a study by an ID
// (GET /api/studies with a DICOM key), send it (POST /api/studies/{id}/send).
// The answer says how many instances the peer stored; a peer that cannot be
// reached is the API's message.
import { api, messageOf, showMessage } from "./api.js";
import { cell, noteRow, succeeded } from "./admin-common.js";

const peerSelect = document.getElementById("peer");
const results = document.querySelector("#studies tbody");

function message(text) {
  results.replaceChildren(noteRow(7, text));
}

async function loadPeers() {
  try {
    const peers = await api("/api/peers");
    if (!peers.length) {
      peerSelect.append(new Option("No peers configured", ""));
      peerSelect.disabled = true;
      showMessage("No DICOM peers are configured (the peers setting): there is nowhere to send to.", "info", { timeout: 0 });
      return;
    }
    for (const peer of peers) {
      peerSelect.append(new Option(`${peer.ae_title} (${peer.host}:${peer.port}${peer.tls ? ", TLS" : ""})`, peer.ae_title));
    }
  } catch (error) {
    showMessage(messageOf(error));
  }
}

async function send(study, button) {
  const peer = peerSelect.value;
  if (!peer) { showMessage("Choose a peer first."); peerSelect.focus(); return; }
  button.disabled = true;
  const label = button.textContent;
  button.textContent = "Sending…";
  const pending = showMessage(`Sending ${study.instance_count} instances to ${peer}…`, "info", { timeout: 0 });
  try {
    const sent = await api(`/api/studies/${study.id}/send`, { method: "POST", json: { peer } });
    const stored = sent.completed + sent.warning;
    if (sent.failed) {
      const reasons = [...new Set(sent.failures.map((f) => f.reason))].join("; ");
      showMessage(`${stored} of ${sent.instances} instances stored by ${sent.peer}; ${sent.failed} failed: ${reasons}.`);
    } else {
      succeeded(`Sent: ${sent.peer} stored all ${stored} instances of the study.`, { timeout: 0 });
    }
  } catch (error) {
    showMessage(messageOf(error));
  } finally {
    pending.remove();
    button.disabled = false;
    button.textContent = label;
  }
}

// a DICOM date (DA, YYYYMMDD) as ISO 8601 (YYYY-MM-DD); a calendar date, no time zone
function date(value) {
  return /^\d{8}$/.test(value ?? "") ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value;
}

function row(study) {
  const tr = document.createElement("tr");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "button";
  button.textContent = "Send";
  button.setAttribute("aria-label", `Send study ${study.accession_number || study.study_instance_uid}`);
  button.addEventListener("click", () => send(study, button));
  tr.append(cell(study.accession_number), cell(study.patient_id), cell(date(study.study_date)),
    cell(study.modalities.join(", ")), cell(study.study_description), cell(String(study.instance_count)),
    cell(button));
  return tr;
}

document.getElementById("study-search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = document.getElementById("search-key").value;
  const value = document.getElementById("search-value").value.trim();
  if (!value) { showMessage("Type the ID to search for."); return; }
  try {
    const page = await api(`/api/studies?${new URLSearchParams({ [key]: value, limit: "50" })}`);
    if (!page.items.length) { message("No study matches."); return; }
    results.replaceChildren(...page.items.map(row));
  } catch (error) {
    showMessage(messageOf(error));
  }
});

loadPeers();
