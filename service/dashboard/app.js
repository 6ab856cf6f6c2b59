// whyslow's dashboard: the anomaly feed with each diagnosis and its incident's state (acknowledge,
// resolve, a permalink #/anomalies/<id>), the call graph with what recent incidents reached,
// and per service the week-seasonal band with the observed latency and the flags drawn on
// it. Plain DOM and
// SVG, no build step. Every text from the API is set with textContent: reports carry
// untrusted strings (exception messages, operation names).
"use strict";

const REFRESH_MS = 15000;
const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const SVG = "http://www.w3.org/2000/svg";
const W = 1000, H = 280, M = { left: 70, right: 12, top: 12, bottom: 28 };

const state = {
  service: null, selected: null, key: sessionStorage.getItem("whyslow-key"),
  filter: "", tests: false, linked: null,
};

async function api(path, method = "GET") {
  const headers = state.key ? { "X-API-Key": state.key } : {};
  const response = await fetch(path, { method, headers });
  if (response.status === 401) {
    document.getElementById("key-form").hidden = false;
    throw new Error("an API key is needed");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function el(tag, attrs = {}, text = null) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

const ms = (v) => (v >= 100 ? v.toFixed(0) : v.toPrecision(3)) + " ms";

function when(report) {
  if (!report || !report.window) return "";
  const start = new Date(report.window.start);
  return start.toLocaleString(undefined, {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
    timeZone: "UTC", timeZoneName: "short",
  });
}

// ---------------------------------------------------------------- status and feed

async function refreshStatus() {
  const pill = document.getElementById("status");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    if (response.ok) {
      const model = body.model;
      pill.textContent = `ready · ${model.base}${model.adapter ? " + " + model.adapter : ""} ${model.quantization}`;
      pill.className = "pill ready";
    } else {
      pill.textContent = `model ${body.status}`;
      pill.className = "pill down";
    }
  } catch (error) {
    pill.textContent = "service unreachable";
    pill.className = "pill down";
  }
}

// "root: <service> (<kind>)" and the services the incident reached: where to look first,
// which the consumer found across services and the flagged one's own report cannot show.
function incidentLine(incident) {
  const line = el("p", { class: "incident" });
  if (incident.root_cause) {
    line.append(el("span", { class: "root" },
      `root: ${incident.root_cause.service} (${incident.root_cause.kind})`));
  }
  const affected = incident.affected.map((a) => a.service);
  if (affected.length) {
    line.append(el("span", { class: "muted" }, ` affected: ${affected.join(", ")}`));
  }
  return line;
}

// The context's signals well off their usual value, as the prompt tags them (HIGHER or
// LOWER: both large in ratio and in absolute terms; a percentage near 100 is high anyway).
const SIGNALS = [
  ["cpu", "cpu_pct", "cpu_baseline_pct", "%", 15],
  ["memory", "memory_pct", "memory_baseline_pct", "%", 15],
  ["requests", "request_rate", "request_rate_baseline", "/s", 0.5],
  ["errors", "error_rate", "error_rate_baseline", "", 0.02],
  ["queue", "queue_depth", "queue_depth_baseline", "", 10],
];

const num = (v) => (Math.abs(v) >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(2));

function abnormal(observed, usual, minDelta, unit) {
  if (observed === null || observed === undefined || usual === null || usual === undefined) {
    return false;
  }
  const saturated = unit === "%" && observed >= 85;
  return (observed - usual >= minDelta && (observed >= 1.5 * usual || saturated)) ||
    (usual - observed >= minDelta && observed <= usual / 1.5);
}

function abnormalSignals(report) {
  const ctx = report.context || {};
  const out = [];
  for (const [name, key, usualKey, unit, minDelta] of SIGNALS) {
    if (abnormal(ctx[key], ctx[usualKey], minDelta, unit)) {
      out.push(`${name} ${num(ctx[key])}${unit} (usual ${num(ctx[usualKey])}${unit})`);
    }
  }
  if (ctx.deployed_minutes_ago !== null && ctx.deployed_minutes_ago !== undefined &&
      ctx.deployed_minutes_ago <= 60) {
    out.push(`deployed ${num(ctx.deployed_minutes_ago)} min ago`);
  }
  return out;
}

// The call furthest above its usual p95 (else the slowest one).
function slowestDependency(report) {
  const calls = (report.context && report.context.downstream) || [];
  if (!calls.length) return null;
  const score = (d) => (d.baseline_p95_ms ? d.p95_ms / d.baseline_p95_ms : 0);
  const worst = calls.reduce((a, b) => (score(b) > score(a) ||
    (score(b) === score(a) && b.p95_ms > a.p95_ms) ? b : a));
  const usual = worst.baseline_p95_ms ? ` (usual ${ms(worst.baseline_p95_ms)})` : "";
  return `slowest call: ${worst.service} ${worst.operation} ${ms(worst.p95_ms)}${usual}`;
}

// The numbers a person reads before deciding to click: p95 against its usual value, the
// signals well off theirs, and the call furthest above its usual.
function keyNumbers(report) {
  const box = el("div", { class: "key-numbers" });
  const usual = report.baseline ? ` vs usual ${ms(report.baseline.p95)}` : "";
  const ratio = report.deviation
    ? ` (${report.deviation.ratio.toFixed(1)}x)`
    : report.baseline && report.baseline.p95 > 0
      ? ` (${(report.latency_ms.p95 / report.baseline.p95).toFixed(1)}x)` : "";
  box.append(el("p", { class: "numbers" }, `p95 ${ms(report.latency_ms.p95)}${usual}${ratio}`));
  const signals = abnormalSignals(report);
  if (signals.length) box.append(el("p", { class: "signals" }, signals.join(" · ")));
  const slowest = slowestDependency(report);
  if (slowest) box.append(el("p", { class: "dependency" }, slowest));
  return box;
}

// The incident's state, who may change it, and a link to this anomaly.
function stateBar(analysis, incident) {
  const bar = el("div", { class: "state-bar" });
  const current = incident ? incident.state : "open";
  bar.append(el("span", { class: `badge ${current}`, title: incident
    ? `incident ${incident.incident_id}` +
      (incident.resolved_by ? `, resolved by ${incident.resolved_by}` : "") : "" }, current));
  if (incident && incident.test) bar.append(el("span", { class: "badge test" }, "test"));
  for (const [action, label, allowed] of [
    ["ack", "Ack", current === "open"], ["resolve", "Resolve", current !== "resolved"]]) {
    const button = el("button", { type: "button", class: action, "data-action": action }, label);
    button.disabled = !allowed;
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      changeState(analysis.anomaly_id, action, button);
    });
    bar.append(button);
  }
  const link = el("a", { class: "permalink", href: `#/anomalies/${encodeURIComponent(analysis.anomaly_id)}`,
    title: "link to this anomaly" }, "link");
  link.addEventListener("click", (event) => event.stopPropagation());
  bar.append(link);
  return bar;
}

async function changeState(anomalyId, action, button) {
  button.disabled = true;
  try {
    await api(`/v1/anomalies/${encodeURIComponent(anomalyId)}/${action}`, "POST");
    await refreshFeed();
  } catch (error) {
    button.disabled = false;
    showError(error);
  }
}

function anomalyCard(analysis, report, incident) {
  const card = el("li", { class: `anomaly ${analysis.severity}`, "data-id": analysis.anomaly_id });
  if (analysis.anomaly_id === state.selected) card.classList.add("selected");
  if (incident) card.classList.add(`state-${incident.state}`);
  const title = el("div", { class: "title" });
  title.append(el("span", {}, `${analysis.service} · ${analysis.operation}`));
  title.append(el("span", { class: "when" }, when(report)));
  card.append(title);
  card.append(stateBar(analysis, incident));
  if (report) {
    card.append(keyNumbers(report));
    if (report.incident) card.append(incidentLine(report.incident));
  }
  const verdict = el("p");
  verdict.append(el("span", { class: `severity ${analysis.severity}` }, analysis.severity), " ");
  verdict.append(el("span", { class: "cause" }, analysis.probable_cause));
  const model = analysis.model;
  verdict.append(el("span", { class: "muted" },
    ` confidence ${analysis.confidence} · ${analysis.grounding} · ${model.base}` +
    `${model.adapter ? " + " + model.adapter : ""}${analysis.cached ? " · cached" : ""}`));
  card.append(verdict);
  card.append(el("p", { class: "summary" }, analysis.summary));
  const details = el("details");
  details.append(el("summary", {}, "explanation and actions"));
  details.append(el("p", {}, analysis.explanation));
  const actions = el("ul");
  for (const action of analysis.recommended_actions) actions.append(el("li", {}, action));
  details.append(actions);
  if (report && report.evidence && report.evidence.length) {
    details.append(el("p", { class: "muted" }, "evidence: " + report.evidence.join(" | ")));
  }
  card.append(details);
  card.addEventListener("click", (event) => {
    if (event.target.closest("details")) return;
    select(analysis.anomaly_id, analysis.service);
  });
  return card;
}

function select(anomalyId, service) {
  state.selected = anomalyId;
  document.querySelectorAll(".anomaly").forEach((n) =>
    n.classList.toggle("selected", n.dataset.id === anomalyId));
  drawGraph();
  if (service) selectService(service);
}

async function refreshFeed() {
  const params = new URLSearchParams({ limit: "50", include_reports: "true" });
  if (state.filter) params.set("state", state.filter);
  if (state.tests) params.set("include_tests", "true");
  const page = await api(`/v1/anomalies?${params}`);
  state.reports = page.reports;
  state.items = page.items;
  state.incidents = page.incidents || {};
  const feed = document.getElementById("feed");
  feed.replaceChildren(...page.items.map((a) =>
    anomalyCard(a, page.reports[a.anomaly_id], state.incidents[a.anomaly_id])));
  document.getElementById("feed-total").textContent = page.total ? `(${page.total})` : "";
  document.getElementById("feed-empty").hidden = page.items.length > 0;
  await refreshLinked();
}

// ---------------------------------------------------------------- the permalink

// #/anomalies/<id>: that anomaly selected, shown above the feed when the feed's page (its
// filter, its 50 newest) does not hold it.
function linkedId() {
  const match = location.hash.match(/^#\/anomalies\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function refreshLinked() {
  const id = linkedId();
  const box = document.getElementById("linked");
  const shown = id && (state.items || []).some((a) => a.anomaly_id === id);
  if (!id || shown) {
    box.replaceChildren();
    box.hidden = true;
    if (shown && state.linked !== id) {
      state.linked = id;
      const card = document.querySelector(`#feed .anomaly[data-id="${CSS.escape(id)}"]`);
      select(id, null);
      if (card) card.scrollIntoView({ block: "nearest" });
    }
    return;
  }
  let record;
  try {
    record = await api(`/v1/anomalies/${encodeURIComponent(id)}`);
  } catch (error) {
    box.replaceChildren(el("li", { class: "muted" }, `anomaly ${id}: ${error.message}`));
    box.hidden = false;
    return;
  }
  state.reports = { ...state.reports, [id]: record.report };
  box.replaceChildren(anomalyCard(record.analysis, record.report, record.incident));
  box.hidden = false;
  if (state.linked !== id) {
    state.linked = id;
    select(id, record.analysis.service);
  }
}

// ---------------------------------------------------------------- the band

function scales(operation) {
  const values = [
    ...operation.flag_above, ...operation.observed_peak, ...operation.band_high,
    ...operation.flags.map((f) => f.p95),
  ].filter((v) => v !== null && isFinite(v));
  const top = Math.max(10, ...values) * 1.08;
  const x = (how) => M.left + (how / 168) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v / top) * (H - M.top - M.bottom);
  return { x, y, top };
}

// Runs of consecutive non-null values, each as [[how, value], ...].
function runs(values) {
  const out = [];
  let run = [];
  values.forEach((v, how) => {
    if (v === null) { if (run.length) out.push(run); run = []; } else run.push([how, v]);
  });
  if (run.length) out.push(run);
  return out;
}

function line(values, cls, sc) {
  const group = el("svg:g", { class: cls });
  for (const run of runs(values)) {
    const points = run.map(([how, v]) => `${sc.x(how + 0.5).toFixed(1)},${sc.y(v).toFixed(1)}`);
    if (points.length === 1) points.push(points[0]);
    group.append(el("svg:polyline", { points: points.join(" ") }));
  }
  return group;
}

function area(low, high, cls, sc) {
  const group = el("svg:g", { class: cls });
  const both = low.map((v, how) => (v === null || high[how] === null ? null : [v, high[how]]));
  for (const run of runs(both)) {
    const top = run.map(([how, [, hi]]) => `${sc.x(how).toFixed(1)},${sc.y(hi).toFixed(1)} ${sc.x(how + 1).toFixed(1)},${sc.y(hi).toFixed(1)}`);
    const bottom = run.slice().reverse().map(([how, [lo]]) => `${sc.x(how + 1).toFixed(1)},${sc.y(lo).toFixed(1)} ${sc.x(how).toFixed(1)},${sc.y(lo).toFixed(1)}`);
    group.append(el("svg:polygon", { points: [...top, ...bottom].join(" ") }));
  }
  return group;
}

function axes(sc) {
  const grid = el("svg:g", { class: "grid" });
  const axis = el("svg:g", { class: "axis" });
  for (let day = 0; day <= 7; day++) {
    const x = sc.x(day * 24);
    grid.append(el("svg:line", { x1: x, x2: x, y1: M.top, y2: H - M.bottom }));
    if (day < 7) axis.append(el("svg:text", { x: sc.x(day * 24 + 12), y: H - 8, "text-anchor": "middle" }, DAYS[day]));
  }
  const step = niceStep(sc.top / 4);
  for (let v = 0; v <= sc.top; v += step) {
    grid.append(el("svg:line", { x1: M.left, x2: W - M.right, y1: sc.y(v), y2: sc.y(v) }));
    axis.append(el("svg:text", { x: M.left - 6, y: sc.y(v) + 4, "text-anchor": "end" }, `${v} ms`));
  }
  return [grid, axis];
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
}

function chart(name, operation, timezone) {
  const sc = scales(operation);
  const box = el("div", { class: "chart", "data-operation": name });
  box.append(el("h3", {}, name));
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${name}: week baseline in ${timezone}` });
  svg.append(...axes(sc));
  svg.append(area(operation.band_low, operation.band_high, "band", sc));
  svg.append(line(operation.p95, "usual", sc));
  svg.append(line(operation.flag_above, "above", sc));
  svg.append(line(operation.observed_peak, "peak", sc));
  svg.append(line(operation.observed_p95, "observed", sc));
  if (operation.latest_hour_of_week !== null) {
    const x = sc.x(operation.latest_hour_of_week + 1);
    svg.append(el("svg:line", { class: "now", x1: x, x2: x, y1: M.top, y2: H - M.bottom }));
  }
  const selected = state.reports && state.reports[state.selected];
  const flags = el("svg:g", { class: "flags" });
  for (const flag of operation.flags) {
    const minute = new Date(flag.start).getUTCMinutes() / 60;
    const isSelected = selected && selected.operation === name && selected.window &&
      Date.parse(selected.window.start) === Date.parse(flag.start);
    const dot = el("svg:circle", { class: isSelected ? "flag selected" : "flag",
      cx: sc.x(flag.hour_of_week + minute), cy: sc.y(flag.p95), r: 5 });
    dot.append(el("svg:title", {}, `flagged ${flag.start}: p95 ${ms(flag.p95)}`));
    flags.append(dot);
  }
  svg.append(flags);
  box.append(svg);
  return box;
}

async function refreshBand() {
  const { services } = await api("/v1/baselines");
  const select = document.getElementById("service");
  if (!state.service || !services.includes(state.service)) state.service = services[0] || null;
  select.replaceChildren(...services.map((s) => el("option", { value: s }, s)));
  select.value = state.service || "";
  const charts = document.getElementById("charts");
  document.getElementById("band-empty").hidden = services.length > 0;
  if (!state.service) { charts.replaceChildren(); return; }
  const profile = await api(`/v1/baselines/${encodeURIComponent(state.service)}`);
  const operations = Object.entries(profile.operations).sort(([a], [b]) => a.localeCompare(b));
  charts.replaceChildren(...operations.map(([name, op]) => chart(name, op, profile.timezone)));
  document.getElementById("band-title").firstChild.textContent =
    `Week baseline (${profile.timezone}) `;
}

function selectService(service) {
  state.service = service;
  refreshBand().catch(showError);
}

// ---------------------------------------------------------------- the call graph

const G = { col: 200, row: 34, nodeW: 160, nodeH: 24, pad: 10, label: 20, shown: 150 };

// Each service's column: the longest chain of calls leading to it from a service nobody
// calls, so callers stand left of their callees. A call back up a cycle does not count
// (it is found by a depth-first walk, iterative: a deep chain must not overflow the stack).
function depths(names, edges) {
  const out = new Map(names.map((n) => [n, []]));
  const called = new Set(edges.map((e) => e.callee));
  for (const e of edges) out.get(e.caller).push(e.callee);
  const mark = new Map(); // 1: on the walk's path, 2: done
  const order = [];
  const back = new Set();
  for (const start of [...names.filter((n) => !called.has(n)), ...names]) {
    if (mark.has(start)) continue;
    mark.set(start, 1);
    const stack = [[start, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const next = out.get(top[0])[top[1]++];
      if (next === undefined) {
        stack.pop();
        mark.set(top[0], 2);
        order.push(top[0]);
      } else if (!mark.has(next)) {
        mark.set(next, 1);
        stack.push([next, 0]);
      } else if (mark.get(next) === 1) {
        back.add(`${top[0]}\u0000${next}`);
      }
    }
  }
  const depth = new Map(names.map((n) => [n, 0]));
  for (const node of order.reverse()) { // callers before callees
    for (const next of out.get(node)) {
      if (!back.has(`${node}\u0000${next}`)) {
        depth.set(next, Math.max(depth.get(next), depth.get(node) + 1));
      }
    }
  }
  return depth;
}

// Positions: one column per depth; in a column, services sit near the mean row of their
// callers (fewer crossings), by name among equals.
function layout(names, edges) {
  const depth = depths(names, edges);
  const callers = new Map(names.map((n) => [n, []]));
  for (const e of edges) callers.get(e.callee).push(e.caller);
  const columns = [];
  for (const name of names) (columns[depth.get(name)] ||= []).push(name);
  const row = new Map();
  const at = new Map();
  columns.forEach((column, d) => {
    const mean = (n) => {
      const rows = callers.get(n).filter((c) => row.has(c)).map((c) => row.get(c));
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity;
    };
    const keyed = column.map((n) => [mean(n), n]);
    keyed.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1));
    keyed.forEach(([, n], i) => {
      row.set(n, i);
      at.set(n, { x: G.pad + d * G.col, y: G.pad + i * G.row });
    });
  });
  const width = G.pad * 2 + (columns.length - 1) * G.col + G.nodeW;
  const height = G.pad * 2 + (Math.max(...columns.map((c) => c.length)) - 1) * G.row + G.nodeH;
  return { at, width, height };
}

// The incident the graph highlights: the selected card's, else the newest in the feed.
function focusIncident() {
  const reports = state.reports || {};
  const selected = reports[state.selected];
  if (selected && selected.incident) return selected.incident;
  for (const item of state.items || []) {
    const report = reports[item.anomaly_id];
    if (report && report.incident) return report.incident;
  }
  return null;
}

// A big mesh is drawn around what incidents reached: those services and their neighbours.
function shownPart(topology) {
  const { services, edges } = topology;
  if (services.length <= G.shown) return { services, edges };
  const reached = new Set(
    services.filter((s) => s.anomalous || s.root_of.length).map((s) => s.name));
  const keep = new Set(reached);
  for (const e of edges) {
    if (reached.has(e.caller) || reached.has(e.callee)) { keep.add(e.caller); keep.add(e.callee); }
  }
  const kept = services.filter((s) => keep.has(s.name)).slice(0, G.shown);
  const names = new Set(kept.map((s) => s.name));
  return { services: kept, edges: edges.filter((e) => names.has(e.caller) && names.has(e.callee)) };
}

function marker(id, cls) {
  const m = el("svg:marker", { id, class: cls, viewBox: "0 0 8 8", refX: 8, refY: 4,
    markerUnits: "userSpaceOnUse", markerWidth: 9, markerHeight: 9, orient: "auto" });
  m.append(el("svg:path", { d: "M0,0 L8,4 L0,8 z" }));
  return m;
}

function drawGraph() {
  const box = document.getElementById("graph");
  const topology = state.topology;
  if (!topology) return;
  const { services, edges } = shownPart(topology);
  document.getElementById("graph-empty").hidden = services.length > 0;
  const note = document.getElementById("graph-note");
  const left = topology.services.length - services.length;
  note.hidden = !left && !topology.truncated;
  note.textContent = left
    ? `showing ${services.length} of ${topology.services.length} services: ` +
      "those incidents reached and their neighbours"
    : "the graph is larger than the service sends: its anomalous part is kept";
  const incident = focusIncident();
  const root = incident && incident.root_cause ? incident.root_cause.service : null;
  const path = new Set();
  if (incident) incident.path.forEach((s, i) => i && path.add(`${incident.path[i - 1]}\u0000${s}`));
  document.getElementById("graph-focus").textContent =
    root ? `· root ${root} (${incident.root_cause.kind})` : "";
  if (!services.length) { box.replaceChildren(); return; }

  const names = services.map((s) => s.name);
  const { at, width, height } = layout(names, edges);
  const svg = el("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `call graph of ${names.length} services` });
  const defs = el("svg:defs");
  defs.append(marker("arrow", "plain"), marker("arrow-anomalous", "anomalous"));
  svg.append(defs);
  const lines = el("svg:g", { class: "edges" });
  for (const e of edges) {
    if (e.caller === e.callee) continue;
    const a = at.get(e.caller), b = at.get(e.callee);
    // a call back up a cycle leaves its caller on the left and enters its callee on the right
    const back = b.x <= a.x;
    const x1 = back ? a.x : a.x + G.nodeW, x2 = back ? b.x + G.nodeW : b.x;
    const y1 = a.y + G.nodeH / 2, y2 = b.y + G.nodeH / 2;
    const bend = (back ? -1 : 1) * Math.max(40, Math.abs(x2 - x1) / 2);
    let cls = e.anomalous ? "edge anomalous" : "edge";
    if (back) cls += " back";
    if (e.anomalous && path.has(`${e.caller}\u0000${e.callee}`)) cls += " focus";
    const curve = el("svg:path", { class: cls,
      d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
      "marker-end": `url(#${e.anomalous ? "arrow-anomalous" : "arrow"})` });
    const seen = e.last_seen ? `, last ${new Date(e.last_seen).toISOString()}` : "";
    curve.append(el("svg:title", {}, `${e.caller} → ${e.callee}: ${e.calls} calls${seen}`));
    lines.append(curve);
  }
  svg.append(lines);
  const nodes = el("svg:g", { class: "nodes" });
  for (const s of services) {
    const { x, y } = at.get(s.name);
    let cls = s.anomalous ? "node anomalous" : "node";
    if (s.name === root) cls += " root";
    const node = el("svg:g",
      { class: cls, transform: `translate(${x},${y})`, "data-service": s.name });
    node.append(el("svg:rect", { width: G.nodeW, height: G.nodeH, rx: 4 }));
    const label = s.name.length > G.label ? s.name.slice(0, G.label - 1) + "…" : s.name;
    node.append(el("svg:text", { x: 8, y: 16 }, label));
    const roots = s.root_of.length ? `; root of ${s.root_of.join(", ")}` : "";
    const reached = s.anomalous ? ": reached by an incident" : "";
    node.append(el("svg:title", {}, `${s.name}${reached}${roots}`));
    node.addEventListener("click", () => selectService(s.name));
    nodes.append(node);
  }
  svg.append(nodes);
  box.replaceChildren(svg);
}

// ---------------------------------------------------------------- wiring

function showError(error) {
  document.getElementById("updated").textContent = String(error.message || error);
}

async function refresh() {
  await refreshStatus();
  try {
    const [, , topology] = await Promise.all([refreshFeed(), refreshBand(), api("/v1/topology")]);
    state.topology = topology;
    drawGraph();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    showError(error);
  }
}

document.getElementById("service").addEventListener("change", (e) => selectService(e.target.value));
document.getElementById("state-filter").addEventListener("change", (e) => {
  state.filter = e.target.value;
  refreshFeed().catch(showError);
});
document.getElementById("show-tests").addEventListener("change", (e) => {
  state.tests = e.target.checked;
  refreshFeed().catch(showError);
});
window.addEventListener("hashchange", () => { state.linked = null; refreshLinked().catch(showError); });
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = document.getElementById("key").value;
  sessionStorage.setItem("whyslow-key", state.key);
  document.getElementById("key-form").hidden = true;
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
