// /admin/status: GET /api/node-status every 5 seconds, shown as facts. Times
// in the reader's zone (timeElement); sizes in GB.
import { api, messageOf, showMessage, timeElement } from "./api.js";

const REFRESH_MS = 5000;
let failing = null;

function bytes(value) {
  if (value === null || value === undefined) return "unknown";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let amount = value;
  let unit = 0;
  while (amount >= 1000 && unit < units.length - 1) { amount /= 1000; unit += 1; }
  return `${amount.toLocaleString(undefined, { maximumFractionDigits: unit ? 1 : 0 })} ${units[unit]}`;
}

// facts: [term, text or Node, bad?]
function fill(id, facts) {
  const list = document.getElementById(id);
  const children = [];
  for (const [term, value, bad] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value); else dd.textContent = String(value);
    if (bad) dd.classList.add("bad");
    children.push(dt, dd);
  }
  list.replaceChildren(...children);
}

function disk(label, figures) {
  if (!figures) return [[label, "not configured"]];
  const share = figures.total_bytes ? figures.used_bytes / figures.total_bytes : 0;
  const meter = document.createElement("meter");
  meter.min = 0; meter.max = 1; meter.low = 0.8; meter.high = 0.9; meter.optimum = 0; meter.value = share;
  meter.setAttribute("aria-label", `${label}: share used`);
  const text = document.createElement("span");
  text.append(meter, ` ${Math.round(share * 100)}% used`);
  return [
    [label, figures.path],
    [`${label}: free`, bytes(figures.free_bytes), figures.free_bytes < 0.1 * figures.total_bytes],
    [`${label}: used`, text],
    [`${label}: size`, bytes(figures.total_bytes)],
  ];
}

function show(status) {
  const components = Object.entries(status.components)
    .map(([name, up]) => [`Component ${name}`, up ? "up" : "down", !up]);
  fill("health", [
    ["Overall", status.status === "ok" ? "OK" : "Degraded", status.status !== "ok"],
    ["Database", status.database ? "answers" : "does not answer", !status.database],
    ...components,
  ]);
  const a = status.associations;
  fill("associations", [
    ["Open now", a.open],
    ["Accepted", a.accepted],
    ["Rejected", a.rejected],
    ["Aborted", a.aborted],
    ["Instances received", status.instances_received],
    ["Instances refused", status.instances_refused],
  ]);
  const q = status.queues;
  fill("queues", [
    ["Open worklist items", q.worklist_open],
    ["Overdue worklist items", q.worklist_overdue, q.worklist_overdue > 0],
    ["Studies to reconcile", q.reconciliation_open],
    ["Transfers being written", q.store_temp_files],
  ]);
  fill("disk", disk("Image store", status.store_disk));
  const backup = status.backup;
  const last = backup.last;
  const facts = [["Scheduled backups", backup.configured ? `every ${backup.interval_hours} hours` : "not configured (backup_dir unset)", !backup.configured]];
  if (last) {
    facts.push(["Last backup", timeElement(last.at)]);
    facts.push(["Outcome", last.outcome.replace("_", " "), last.outcome !== "success"]);
    if (last.bytes !== null) facts.push(["Size", `${bytes(last.bytes)} in ${last.files} files`]);
  } else {
    facts.push(["Last backup", "none recorded", true]);
  }
  if (backup.disk) facts.push(...disk("Backup disk", backup.disk));
  fill("backup", facts);
  const jobs = Object.entries(status.job_runs).sort(([x], [y]) => x.localeCompare(y))
    .map(([job, outcomes]) => [job.replaceAll("_", " "),
      Object.entries(outcomes).map(([outcome, runs]) => `${outcome}: ${runs}`).join(", "),
      (outcomes.failed ?? 0) > 0]);
  fill("jobs", jobs.length ? jobs : [["Runs", "none since the node started"]]);
  document.getElementById("status-read").replaceChildren(timeElement(new Date().toISOString()));
  document.getElementById("status").setAttribute("aria-busy", "false");
}

async function refresh() {
  try {
    show(await api("/api/node-status"));
    if (failing) { failing.remove(); failing = null; }
  } catch (error) {
    if (!failing) failing = showMessage(messageOf(error));
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
