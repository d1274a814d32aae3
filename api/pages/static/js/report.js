// The report editor beside the viewer's images, and the printable report's
// Print button (issue 18). Everything goes through the reports API (api.js):
// the permissions, the author/reviewer rules and the audit events are the
// API's. The panel shows only the controls the role's permissions allow
// (data-can-* from the permission table); when the API refuses anyway, its
// sentence is shown as a message.
//
// Keys: Ctrl+S saves the draft now; Ctrl+Enter submits it for review (its
// author) or signs a report in review (a reviewer).
import { ApiError, api, messageOf, showMessage, timeElement } from "./api.js";

const AUTOSAVE_MS = 1000;
const EDITABLE = new Set(["draft", "revised"]);
const STATUS_TEXT = {
  draft: "Draft",
  in_review: "In review: waiting for a reviewer to sign",
  final: "Signed",
  revised: "Addendum being written",
};
const KIND_TEXT = {
  preliminary: "submitted",
  returned: "returned to the author",
  final: "signed",
};

// what a stored version was: an addendum (or correction) is stored when it is
// started (status revised) and again when it is submitted (in_review)
function versionText(version) {
  if (KIND_TEXT[version.kind]) return KIND_TEXT[version.kind];
  return `${version.kind} ${version.status === "revised" ? "started" : "submitted"}`;
}

const printButton = document.getElementById("print-button");
if (printButton) printButton.addEventListener("click", () => window.print());

const panel = document.getElementById("report-panel");
if (panel && panel.dataset.canRead === "true") startPanel(panel);

function startPanel(root) {
  const $ = (id) => document.getElementById(id);
  const me = Number(root.dataset.userId);
  const studyId = Number(root.dataset.studyId);
  const can = {
    write: root.dataset.canWrite === "true",
    finalize: root.dataset.canFinalize === "true",
    communicate: root.dataset.canCommunicate === "true",
  };
  const view = {
    state: $("report-state"), start: $("report-start"), create: $("report-create"),
    form: $("report-form"), findings: $("report-findings"), impression: $("report-impression"),
    critical: $("report-critical"), saveStatus: $("report-save-status"), save: $("report-save"),
    submit: $("report-submit"), sign: $("report-sign"), addendum: $("report-addendum"),
    reload: $("report-reload"), print: $("report-print"), returnArea: $("report-return-area"),
    returnComment: $("report-return-comment"), returnButton: $("report-return"),
    criticalArea: $("report-critical-area"), communications: $("report-communications"),
    communicationForm: $("report-communication-form"), finding: $("communication-finding"),
    to: $("communication-to"), method: $("communication-method"), at: $("communication-at"),
    history: $("report-history"), versions: $("report-versions"), versionView: $("report-version-view"),
  };

  let report = null;
  let timer = null;
  let saving = null; // the save under way (a promise), so saves never overlap
  let dirty = false;
  let stopped = false; // a refused save: the text on the node moved on

  const editable = () => report && !stopped && can.write && EDITABLE.has(report.status)
    && report.current_author_id === me;
  const signable = () => report && can.finalize && report.status === "in_review"
    && report.current_author_id !== me;

  async function load() {
    try {
      const listing = await api(`/api/reports?study_id=${studyId}&limit=1`);
      if (!listing.items.length) {
        report = null;
        view.state.textContent = "No report for this study yet.";
        view.start.hidden = !can.write;
        view.form.hidden = true;
        view.criticalArea.hidden = true;
        view.history.hidden = true;
        return;
      }
      report = await api(`/api/reports/${listing.items[0].id}`);
      stopped = false;
      dirty = false;
      render();
      await loadVersions();
    } catch (error) {
      view.state.textContent = "The report could not be loaded.";
      showMessage(messageOf(error));
    }
  }

  function render() {
    view.start.hidden = true;
    view.form.hidden = false;
    view.state.textContent = `${STATUS_TEXT[report.status] || report.status} (report ${report.id})`;
    if (report.signed_at) {
      view.state.append(", last signed ", timeElement(report.signed_at));
    }
    view.findings.value = report.findings;
    view.impression.value = report.impression;
    view.critical.checked = report.critical_flag;
    const edit = editable();
    view.findings.readOnly = !edit;
    view.impression.readOnly = !edit;
    view.critical.disabled = !edit;
    view.save.hidden = !edit;
    view.submit.hidden = !edit;
    view.sign.hidden = !signable();
    view.returnArea.hidden = !signable();
    view.addendum.hidden = !(can.write && report.status === "final");
    view.reload.hidden = !stopped;
    view.print.hidden = !report.signed_at;
    view.print.href = `/reports/${report.id}/print`;
    if (edit && !view.saveStatus.textContent) view.saveStatus.textContent = "Changes are saved as you type.";
    if (!edit) view.saveStatus.textContent = stopped ? view.saveStatus.textContent : "";
    renderCritical();
  }

  function renderCritical() {
    const records = report.critical_communications;
    view.criticalArea.hidden = !report.critical_flag && !records.length;
    view.communications.replaceChildren(...records.map((record) => {
      const item = document.createElement("li");
      if (record.communicated_at) {
        item.append(`${record.finding}: told ${record.communicated_to} by ${record.method.replace("_", " ")}, `,
          timeElement(record.communicated_at),
          record.deadline_met === false ? " (after the deadline)" : "");
        if (record.acknowledged_at) item.append("; acknowledged ", timeElement(record.acknowledged_at));
        else if (can.communicate) item.append(" ", acknowledgeButton(record));
      } else {
        item.append(`${record.finding}: not communicated yet; due `, timeElement(record.deadline_at),
          record.overdue ? " (overdue)" : "");
      }
      return item;
    }));
    const waiting = records.some((record) => !record.communicated_at);
    view.communicationForm.hidden = !(can.communicate && report.critical_flag
      && (waiting || !records.length) && report.status !== "final");
    if (!view.communicationForm.hidden) {
      if (!view.finding.value) {
        const open = records.find((record) => !record.communicated_at);
        view.finding.value = open ? open.finding : "";
      }
      if (!view.at.value) {
        view.at.value = localInputValue(new Date());
        view.at.dataset.suggested = view.at.value;
      }
    }
  }

  // the recipient confirmed they understood the finding (read-back)
  function acknowledgeButton(record) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button";
    button.textContent = "Mark acknowledged";
    button.setAttribute("aria-label", `Mark acknowledged: ${record.finding}, told ${record.communicated_to}`);
    button.addEventListener("click", async () => {
      if (!(await save())) return; // the text typed so far, before the panel re-reads
      try {
        await api(`/api/reports/${report.id}/critical-communications/${record.id}/acknowledge`,
          { method: "PATCH" });
        report = await api(`/api/reports/${report.id}`);
        render();
        showMessage("Acknowledgement recorded.", "success");
      } catch (error) {
        showMessage(messageOf(error));
      }
    });
    return button;
  }

  async function loadVersions() {
    try {
      const versions = await api(`/api/reports/${report.id}/versions`);
      view.history.hidden = !versions.length;
      view.versions.replaceChildren(...versions.map((version) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "link-button";
        button.textContent = `Version ${version.version}: ${versionText(version)}`;
        button.addEventListener("click", () => showVersion(version));
        item.append(button, ", ", timeElement(version.created_at));
        return item;
      }));
    } catch (error) {
      showMessage(messageOf(error));
    }
  }

  function showVersion(version) {
    const heading = document.createElement("h4");
    heading.textContent = `Version ${version.version} (${versionText(version)})`;
    const parts = [heading];
    if (version.comment) parts.push(paragraph(`Reviewer's comment: ${version.comment}`));
    parts.push(paragraph("Findings", "version-label"), paragraph(version.findings, "report-text"),
      paragraph("Impression", "version-label"), paragraph(version.impression, "report-text"));
    view.versionView.replaceChildren(...parts);
    view.versionView.hidden = false;
    view.versionView.focus();
  }

  // ---- autosave: a PATCH of the draft a moment after the typing stops
  function changed() {
    if (!editable()) return;
    dirty = true;
    view.saveStatus.textContent = "Unsaved changes…";
    clearTimeout(timer);
    timer = setTimeout(save, AUTOSAVE_MS);
  }

  async function save() {
    clearTimeout(timer);
    // one save at a time; a caller (submit) must not pass while one is under way
    while (saving) {
      try { await saving; } catch { /* shown by the save that made it */ }
    }
    if (stopped) return false;
    if (!dirty || !editable()) return true;
    dirty = false;
    // the updated_at this text was based on: a save from another tab since
    // then is a 409 (shown, autosave stops), never silently overwritten
    const body = { findings: view.findings.value, impression: view.impression.value,
      expected_updated_at: report.updated_at };
    saving = api(`/api/reports/${report.id}`, { method: "PATCH", json: body });
    try {
      const saved = await saving;
      report = { ...report, ...saved };
      // typed while this save was under way: that text is not saved yet
      if (!dirty) {
        const at = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        view.saveStatus.textContent = `Saved at ${at}`;
      }
      return true;
    } catch (error) {
      refused(error, "Not saved");
      return false;
    } finally {
      saving = null;
    }
  }

  // A 409 (the report moved on: submitted or signed elsewhere) or a 403 (the
  // reading item went to someone else) means this text is no longer the one
  // on the node: stop autosaving and say so, instead of retrying blindly.
  function refused(error, what) {
    if (error instanceof ApiError && (error.status === 409 || error.status === 403)) {
      stopped = true;
      view.saveStatus.textContent = `${what}: the report was changed elsewhere.`;
      showMessage(`${what}: ${error.message} The report was changed elsewhere; reload it to see its current state.`);
      render();
    } else {
      if (what === "Not saved") dirty = true;
      view.saveStatus.textContent = `${what}: ${messageOf(error)}`;
      showMessage(messageOf(error));
    }
  }

  async function act(path, what, { json, method = "POST", success } = {}) {
    try {
      report = await api(path, { method, json });
      stopped = false;
      render();
      await loadVersions();
      if (success) showMessage(success, "success");
      return true;
    } catch (error) {
      refused(error, what);
      return false;
    }
  }

  async function submit() {
    if (!(await save())) return;
    await act(`/api/reports/${report.id}/submit`, "Not submitted", { success: "Submitted for review." });
  }

  async function sign() {
    await act(`/api/reports/${report.id}/finalize`, "Not signed", { success: "Report signed." });
  }

  view.create.addEventListener("click", async () => {
    try {
      report = await api("/api/reports", { method: "POST", json: { study_id: studyId } });
      render();
      await loadVersions();
      view.findings.focus();
    } catch (error) {
      showMessage(messageOf(error));
    }
  });
  view.findings.addEventListener("input", changed);
  view.impression.addEventListener("input", changed);
  view.critical.addEventListener("change", async () => {
    if (!(await save())) return;
    await act(`/api/reports/${report.id}`, "Not saved", {
      method: "PATCH", json: { critical_flag: view.critical.checked, expected_updated_at: report.updated_at },
    });
  });
  view.save.addEventListener("click", () => { dirty = true; save(); });
  view.submit.addEventListener("click", submit);
  view.sign.addEventListener("click", sign);
  view.reload.addEventListener("click", load);
  view.addendum.addEventListener("click", async () => {
    if (await act(`/api/reports/${report.id}/addendum`, "No addendum", {
      // the API needs text to start from: the signed text, edited from here on
      json: { kind: "addendum", findings: report.findings, impression: report.impression },
    })) {
      view.findings.focus();
    }
  });
  view.returnButton.addEventListener("click", async () => {
    const comment = view.returnComment.value.trim();
    if (!comment) {
      showMessage("Write a comment for the author before returning the report.");
      view.returnComment.focus();
      return;
    }
    if (await act(`/api/reports/${report.id}/return`, "Not returned", { json: { comment }, success: "Returned to the author." })) {
      view.returnComment.value = "";
    }
  });
  view.communicationForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    // the suggested minute left as it was means "just now": sent to the
    // second, since a time before the finding was flagged is refused (422)
    const when = view.at.value === view.at.dataset.suggested ? new Date() : new Date(view.at.value);
    if (Number.isNaN(when.getTime())) {
      showMessage("Give the time of the communication.");
      return;
    }
    if (!(await save())) return; // the text typed so far, before the panel re-reads
    try {
      await api(`/api/reports/${report.id}/critical-communications`, {
        method: "POST",
        json: {
          finding: view.finding.value.trim(), communicated_to: view.to.value.trim(),
          method: view.method.value, communicated_at: when.toISOString(),
        },
      });
      view.to.value = "";
      view.at.value = "";
      report = await api(`/api/reports/${report.id}`);
      render();
      showMessage("Communication recorded.", "success");
    } catch (error) {
      showMessage(messageOf(error));
    }
  });
  // Ctrl+S anywhere on the page (never the browser's "save page"); Ctrl+Enter
  // only inside the panel, so a key pressed over the images signs nothing
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && (event.key === "s" || event.key === "S")) {
      event.preventDefault();
      if (editable()) { dirty = true; save(); }
    }
  });
  root.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey)) return;
    if (event.key === "Enter") {
      event.preventDefault();
      if (editable()) submit();
      else if (signable()) sign();
    }
  });
  // live: the report moved on elsewhere (submitted, signed, returned, an
  // addendum started) or a report was created for this study. The stream
  // carries ids and states only; the panel re-reads the report through the
  // API. Its own saves change neither status nor version, so they are no news.
  function listen() {
    const events = new EventSource("/api/events");
    const onReport = (event) => {
      const entry = JSON.parse(event.data);
      const payload = entry.payload || {};
      if (report ? entry.entity_id !== report.id : payload.study_id !== studyId) return;
      if (report && payload.status === report.status && payload.version === report.version) return;
      if (dirty || saving) {
        // unsaved typing is never replaced under the radiologist's hands
        stopped = true;
        render();
        showMessage("The report was changed elsewhere; reload it to see its current state.");
        return;
      }
      load();
    };
    events.addEventListener("report.created", onReport);
    events.addEventListener("report.updated", onReport);
    events.addEventListener("end", () => events.close());
    events.addEventListener("open", () => { root.dataset.live = "true"; });
    window.addEventListener("pagehide", () => events.close());
  }

  // a draft typed but not yet saved when the page goes: save it on the way out
  window.addEventListener("pagehide", () => { if (dirty) save(); });

  listen();
  load();
}

function paragraph(text, className) {
  const element = document.createElement("p");
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

// a Date as the value of <input type="datetime-local"> (the browser's zone)
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
