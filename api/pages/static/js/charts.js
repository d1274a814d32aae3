// Bar charts as inline SVG, built with the DOM API (no chart library, no
// innerHTML). Each chart is a <figure> with a title, a sentence saying what it
// shows (its text alternative, also the SVG's description), a legend, the
// bars, and the same figures as a table behind a visible toggle. Series differ
// by fill pattern as well as colour (solid, stripes, dots), and each bar is
// labelled with its value, so colour is never the only cue. The colours are
// at least 4.5:1 on white.

const SVG = "http://www.w3.org/2000/svg";
export const SERIES_STYLES = [
  { colour: "#0b4f8a", pattern: "solid" },   // 8.6:1
  { colour: "#a14f00", pattern: "stripes" }, // 5.6:1
  { colour: "#5a2d82", pattern: "dots" },    // 10:1
];
const WIDTH = 640;
const LEFT = 150;
const RIGHT = 80;
const BAR = 16;
const BAR_GAP = 3;
const GROUP_GAP = 14;
const TOP = 8;
const AXIS = 30;

let chartCount = 0;

function svg(name, attributes = {}, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function html(name, attributes = {}, text) {
  const element = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// a fill for series ``index``: the colour itself, or a pattern of it
function fill(defs, prefix, index) {
  const style = SERIES_STYLES[index % SERIES_STYLES.length];
  if (style.pattern === "solid") return style.colour;
  const id = `${prefix}-${style.pattern}`;
  if (!defs.querySelector(`#${id}`)) {
    const pattern = svg("pattern", { id, width: 6, height: 6, patternUnits: "userSpaceOnUse" });
    pattern.append(svg("rect", { width: 6, height: 6, fill: "#ffffff" }));
    if (style.pattern === "stripes") {
      pattern.setAttribute("patternTransform", "rotate(45)");
      pattern.append(svg("rect", { width: 3, height: 6, fill: style.colour }));
    } else {
      pattern.append(svg("circle", { cx: 3, cy: 3, r: 1.8, fill: style.colour }));
    }
    defs.append(pattern);
  }
  return `url(#${id})`;
}

// a round step for the axis: 1, 2 or 5 times a power of ten
function niceStep(max, ticks = 4) {
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((f) => f * power).find((s) => s >= rough);
  return step || power * 10;
}

function swatch(prefix, index) {
  const box = svg("svg", { width: 18, height: 14, viewBox: "0 0 18 14", "aria-hidden": "true",
    focusable: "false" });
  const style = SERIES_STYLES[index % SERIES_STYLES.length];
  const localDefs = svg("defs");
  box.append(localDefs);
  // the legend's own copy of the pattern (an SVG's url() refers within the document)
  box.append(svg("rect", { x: 1, y: 1, width: 16, height: 12, fill: fill(localDefs, `${prefix}-legend`, index),
    stroke: style.colour, "stroke-width": 1.5 }));
  return box;
}

// ``groups``: labels of the bands; ``series``: [{name, values}] (a value per
// group, null for no data); ``format``: a value as text; ``summary``: the text
// alternative; ``table``: {head: [...], rows: [[...]]}, the chart's figures;
// ``unitOf(max)``: the axis's unit for the largest value (its ticks are round
// numbers of it: hours, not 8.3 h), ``tickFormat(value, unit)`` their labels.
export function barChart({ title, groups, series, format, summary, table, max,
  unitOf = () => 1, tickFormat = (value) => format(value) }) {
  chartCount += 1;
  const prefix = `chart${chartCount}`;
  const figure = html("figure", { class: "chart", "aria-labelledby": `${prefix}-title` });
  const caption = html("figcaption");
  caption.append(html("h3", { id: `${prefix}-title` }, title));
  caption.append(html("p", { id: `${prefix}-summary`, class: "chart-summary" }, summary));
  figure.append(caption);

  const legend = html("ul", { class: "legend" });
  series.forEach((one, index) => {
    const item = html("li");
    item.append(swatch(prefix, index), document.createTextNode(` ${one.name}`));
    legend.append(item);
  });
  figure.append(legend);

  const perGroup = series.length * (BAR + BAR_GAP) - BAR_GAP;
  const height = TOP + groups.length * (perGroup + GROUP_GAP) + AXIS;
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
    "aria-labelledby": `${prefix}-title`, "aria-describedby": `${prefix}-summary`,
    class: "chart-svg", preserveAspectRatio: "xMinYMin meet" });
  const defs = svg("defs");
  chart.append(defs);
  const values = series.flatMap((one) => one.values).filter((v) => v !== null && v !== undefined);
  const top = Math.max(max ?? 0, ...values, 1);
  const unit = unitOf(top);
  const step = niceStep(top / unit) * unit;
  const scaleMax = Math.ceil(top / step) * step;
  const plot = WIDTH - LEFT - RIGHT;
  const x = (value) => LEFT + (value / scaleMax) * plot;
  const bottom = height - AXIS;

  // gridlines and the axis's labels
  for (let tick = 0; tick <= scaleMax + step / 2; tick += step) {
    chart.append(svg("line", { x1: x(tick), x2: x(tick), y1: TOP - 4, y2: bottom,
      stroke: "#8a8f96", "stroke-width": tick === 0 ? 1.5 : 0.5 }));
    chart.append(svg("text", { x: x(tick), y: bottom + 16, "text-anchor": "middle",
      class: "tick" }, tickFormat(tick, unit)));
  }

  groups.forEach((label, g) => {
    const y0 = TOP + g * (perGroup + GROUP_GAP);
    const name = label.length > 20 ? `${label.slice(0, 19)}…` : label;
    const text = svg("text", { x: LEFT - 8, y: y0 + perGroup / 2 + 5, "text-anchor": "end",
      class: "group-label" }, name);
    text.append(svg("title", {}, label));
    chart.append(text);
    series.forEach((one, s) => {
      const value = one.values[g];
      const y = y0 + s * (BAR + BAR_GAP);
      const style = SERIES_STYLES[s % SERIES_STYLES.length];
      const known = value !== null && value !== undefined;
      const width = known ? Math.max(x(value) - LEFT, value > 0 ? 2 : 0) : 0;
      const bar = svg("rect", { x: LEFT, y, width, height: BAR, fill: fill(defs, prefix, s),
        stroke: style.colour, "stroke-width": known && width ? 1.5 : 0, class: "bar",
        "data-group": label, "data-series": one.name, "data-value": known ? value : "" });
      bar.append(svg("title", {}, `${label}, ${one.name}: ${known ? format(value) : "no data"}`));
      chart.append(bar);
      chart.append(svg("text", { x: LEFT + width + 6, y: y + BAR - 3, class: "value" },
        known ? format(value) : "no data"));
    });
  });
  const frame = html("div", { class: "chart-frame" });
  frame.append(chart);
  figure.append(frame);

  const details = html("details", { class: "chart-table" });
  details.append(html("summary", {}, `Figures as a table: ${title}`));
  const wrap = html("div", { class: "table-wrap" });
  const tableElement = html("table", { class: "data" });
  tableElement.append(html("caption", { class: "visually-hidden" }, title));
  const head = html("tr");
  table.head.forEach((label) => head.append(html("th", { scope: "col" }, label)));
  const thead = html("thead");
  thead.append(head);
  const body = html("tbody");
  for (const cells of table.rows) {
    const tr = html("tr");
    cells.forEach((cell, i) => tr.append(html(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : {}, cell)));
    body.append(tr);
  }
  tableElement.append(thead, body);
  wrap.append(tableElement);
  details.append(wrap);
  figure.append(details);
  return figure;
}
