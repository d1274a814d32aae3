// The turnaround dashboard: GET /api/turnaround for the whole window (a table)
// and grouped as chosen (charts from charts.js, each with its table). The
// dates are the user's: a day runs from their midnight to the next.
import { api, messageOf, showMessage, timeElement } from "./api.js";
import { barChart } from "./charts.js";

const form = document.getElementById("turnaround-filters");
const windowText = document.getElementById("turnaround-window");
const overall = document.querySelector("#overall-table tbody");
const slaNote = document.getElementById("sla-note");
const charts = document.getElementById("charts");
const groupName = document.getElementById("group-name");

export const METRICS = {
  order_to_exam: "Order to exam started",
  exam_to_preliminary: "Exam completed to preliminary report",
  exam_to_final: "Exam completed to signed report",
  order_to_final: "Order to signed report",
  critical_to_communicated: "Critical finding to communication",
};
// the intervals charted by group: the order's wait, the reading, the whole
const CHARTED = ["order_to_exam", "exam_to_final", "order_to_final"];
const SHORT = { order_to_exam: "Order to exam", exam_to_final: "Exam to signed",
  order_to_final: "Order to signed" };

// a figure in a table: the API's number to one decimal, or "no data"
function figure(value) {
  if (value === null || value === undefined) return "no data";
  return String(Math.round(value * 10) / 10);
}

// minutes as a person reads them on an axis or a bar
function duration(minutes) {
  if (minutes < 120) return `${Math.round(minutes)} min`;
  if (minutes < 2880) return `${Math.round(minutes / 6) / 10} h`;
  return `${Math.round(minutes / 144) / 10} d`;
}
const percent = (value) => `${Math.round(value)}%`;
// an axis of minutes counts in minutes, hours or days, whichever fits its range
const durationUnit = (max) => (max < 120 ? 1 : max < 2880 ? 60 : 1440);
const durationTick = (value, unit) =>
  `${Math.round((value / unit) * 10) / 10} ${{ 1: "min", 60: "h", 1440: "d" }[unit]}`;

// a date input's day (the user's zone) as the ISO instant of its midnight
function midnight(value, addDays = 0) {
  const [year, month, day] = value.split("-").map(Number);
  return new Date(year, month - 1, day + addDays).toISOString();
}

function groupLabel(group, groupBy) {
  if (groupBy === "none") return "All";
  return group === null ? `(no ${groupBy})` : group;
}

// the grouping as a table's first column head: "Priority"
function groupHeading() {
  return form.elements.group_by.selectedOptions[0].textContent;
}

function byMetric(group) {
  return Object.fromEntries(group.metrics.map((m) => [m.metric, m]));
}

function fillOverall(report) {
  const [whole] = report.groups;
  const metrics = whole ? byMetric(whole) : {};
  overall.replaceChildren(...Object.entries(METRICS).map(([key, label]) => {
    const m = metrics[key] || {};
    const tr = document.createElement("tr");
    tr.dataset.metric = key;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = label;
    tr.append(th);
    for (const value of [m.count ?? 0, m.open ?? 0, figure(m.median_minutes), figure(m.p90_minutes),
      figure(m.within_sla_percent)]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.append(td);
    }
    return tr;
  }));
  const slas = Object.entries(report.sla_minutes).map(([priority, minutes]) => `${priority} ${duration(minutes)}`);
  slaNote.textContent = `SLAs by priority: ${slas.join(", ")}; a critical result must be communicated ` +
    `within ${duration(report.critical_deadline_minutes)}.`;
}

function timeChart(report, metric) {
  const labels = report.groups.map((g) => groupLabel(g.group, report.group_by));
  const stats = report.groups.map((g) => byMetric(g)[metric] || {});
  const medians = stats.map((m) => m.median_minutes ?? null);
  const p90s = stats.map((m) => m.p90_minutes ?? null);
  const said = labels.map((label, i) => medians[i] === null
    ? `${label}: no data`
    : `${label}: median ${duration(medians[i])}, 90th percentile ${duration(p90s[i])}`);
  return barChart({
    title: `${METRICS[metric]}: median and 90th percentile`,
    groups: labels,
    series: [{ name: "Median", values: medians }, { name: "90th percentile", values: p90s }],
    format: duration,
    unitOf: durationUnit,
    tickFormat: durationTick,
    summary: `${METRICS[metric]}, by ${groupName.textContent}. ${said.join("; ")}.`,
    table: {
      head: [groupHeading(), "Ended", "Still open", "Median (minutes)",
        "90th percentile (minutes)", "Within SLA (%)"],
      rows: labels.map((label, i) => [label, String(stats[i].count ?? 0), String(stats[i].open ?? 0),
        figure(medians[i]), figure(p90s[i]), figure(stats[i].within_sla_percent)]),
    },
  });
}

function breachChart(report) {
  const labels = report.groups.map((g) => groupLabel(g.group, report.group_by));
  const outside = (metric) => report.groups.map((g) => {
    const within = (byMetric(g)[metric] || {}).within_sla_percent;
    return within === null || within === undefined ? null : Math.round((100 - within) * 10) / 10;
  });
  const series = CHARTED.map((metric) => ({ name: SHORT[metric], values: outside(metric) }));
  const said = labels.map((label, i) => `${label}: ` + series.map((s) =>
    `${s.name} ${s.values[i] === null ? "no data" : percent(s.values[i])}`).join(", "));
  return barChart({
    title: "SLA breaches: share of ended intervals over the SLA",
    groups: labels,
    series,
    format: percent,
    max: 100,
    summary: `Percent over the priority's SLA, by ${groupName.textContent}. ${said.join("; ")}.`,
    table: {
      head: [groupHeading(), ...series.map((s) => `${s.name} over SLA (%)`)],
      rows: labels.map((label, i) => [label, ...series.map((s) => figure(s.values[i]))]),
    },
  });
}

async function load() {
  const params = new URLSearchParams();
  const from = form.elements.from.value;
  const to = form.elements.to.value;
  if (from) params.set("from", midnight(from));
  if (to) params.set("to", midnight(to, 1)); // the last day counts whole
  const groupBy = form.elements.group_by.value;
  groupName.textContent = form.elements.group_by.selectedOptions[0].textContent.toLowerCase();
  windowText.textContent = "Loading the figures...";
  let whole;
  let grouped;
  try {
    [whole, grouped] = await Promise.all([
      api(`/api/turnaround?${params}`),
      api(`/api/turnaround?${params}&group_by=${encodeURIComponent(groupBy)}`),
    ]);
  } catch (error) {
    windowText.textContent = "The figures could not be read.";
    showMessage(messageOf(error));
    return;
  }
  windowText.replaceChildren("Exams and orders from ", timeElement(whole.from), " to ",
    timeElement(whole.to), " (not included).");
  fillOverall(whole);
  if (!grouped.groups.length) {
    const none = document.createElement("p");
    none.textContent = "Nothing started in this window.";
    charts.replaceChildren(none);
  } else {
    charts.replaceChildren(...CHARTED.map((metric) => timeChart(grouped, metric)), breachChart(grouped));
  }
  const address = new URLSearchParams();
  if (from) address.set("from", from);
  if (to) address.set("to", to);
  address.set("group_by", groupBy);
  history.replaceState(null, "", `${window.location.pathname}?${address}`);
}

// the form from the address: a bookmark keeps its window and grouping
const given = new URLSearchParams(window.location.search);
for (const name of ["from", "to", "group_by"]) {
  const value = given.get(name);
  if (value && (name === "group_by" || /^\d{4}-\d{2}-\d{2}$/.test(value))) form.elements[name].value = value;
}
if (!form.elements.group_by.value) form.elements.group_by.value = "priority";

form.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  if (form.elements.from.value && form.elements.to.value && form.elements.from.value > form.elements.to.value) {
    showMessage("The first day comes after the last one.");
    return;
  }
  load();
});

load();
