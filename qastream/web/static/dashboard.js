// qastream dashboard: polls GET /metrics, GET /answers/latest and GET /batches, draws small SVG charts and
// batch progress bars (with a Cancel button per batch in progress), and submits questions with POST /query, following each stage live on GET /status/{id}/events.
// No library and no network beyond this worker: everything is drawn here.
//
// With QASTREAM_AUTH=required every data request carries the API key the user typed into the key form,
// which appears on the first 401. The key lives in sessionStorage only: it is gone when the tab closes,
// it never enters localStorage, the URL or the console. A 403 marks the panels that need a scope the key
// lacks, and the others keep working: the page shows what the key may see. With auth off no request is
// ever refused, so the form never appears.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563", "#dc2626"];
const STATUS_COLORS = { pending: "#9ca3af", processing: "#2563eb", retrying: "#d97706", completed: "#16a34a", failed: "#dc2626", cancelled: "#6b7280" };
const METRICS_EVERY_MS = 2000;
const ANSWERS_EVERY_MS = 3000;
// Each listed batch costs the worker a read of all its items (its counts are folded from its questions), so
// the panel asks less often than the charts; the back-off below slows it further when that read is slow.
const BATCHES_EVERY_MS = 4000;
const BATCHES_SHOWN = 10;
// A live status stream that ends before its question's terminal event (the worker's longest stream, a
// restart) is opened again after this wait (or the Retry-After of a 429, 503), with Last-Event-ID.
const STREAM_RETRY_MS = 1000;
// The events after which a question's stream closes (qastream/policy/lifecycle.py TERMINAL).
const TERMINAL_EVENTS = new Set(["completed", "failed", "cancelled"]);
// A refresh that fails, or takes longer than its interval, doubles the wait before the next one, up to
// BACKOFF_CAP_MS: a loaded worker (or a /metrics that has a year of rows to count) is asked less, not more.
const BACKOFF_CAP_MS = 30000;
// A Retry-After (429, 503) is waited out in full, up to this long: a wrong header must not stop the page.
const RETRY_AFTER_CAP_MS = 300000;
const KEY_ITEM = "qastream.apiKey"; // the sessionStorage item
// The scope each endpoint needs (qastream/policy/access.py), named on a panel when the key lacks it.
const SCOPE_OF = { metrics: "metrics", answers: "read", query: "submit", status: "read", batches: "read",
  cancel: "submit" };
const HISTORY = 150; // samples kept for the line charts: 5 minutes at one every 2 s

const history = [];
let lastMetrics = null;

// -- the API key -----------------------------------------------------------------

// Bumped whenever the key changes: an answer to a request sent with the previous key is ignored.
let keyGeneration = 0;
const pollers = [];

function currentKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch (err) {
    return ""; // storage disabled: no key can be kept, and none is sent
  }
}

function showKeyForm(message) {
  document.getElementById("key-form").hidden = false;
  document.getElementById("key-message").textContent = message || "";
}

// What the previous key saw leaves the page with it: its answers, its question, the figures it could read.
function keyChanged() {
  keyGeneration += 1;
  document.getElementById("key-forget").hidden = !currentKey();
  history.length = 0;
  blankMetrics(() => notice("…"));
  const rows = document.querySelector("#answers tbody");
  rows.replaceChildren();
  cell(rows.insertRow(), "…", "muted").colSpan = 6;
  following = null;
  stopStream();
  document.getElementById("ask-result").hidden = true;
  document.getElementById("ask-submit").disabled = false;
  clearBatches("…");
  for (const poller of pollers) poller.restart();
}

function useKey(event) {
  event.preventDefault();
  const input = document.getElementById("key-input");
  const key = input.value.trim();
  // A header value must be Latin-1 (fetch throws otherwise); keys are printable ASCII.
  if (!/^[\x21-\x7e]+$/.test(key)) {
    showKeyForm("a key is one word of printable ASCII characters");
    return;
  }
  try {
    sessionStorage.setItem(KEY_ITEM, key);
  } catch (err) {
    showKeyForm("this browser keeps no session storage, so the page cannot hold a key");
    return;
  }
  input.value = "";
  document.getElementById("key-form").hidden = true;
  keyChanged();
}

function forgetKey(event) {
  event.preventDefault();
  try {
    sessionStorage.removeItem(KEY_ITEM);
  } catch (err) {
    // nothing was kept
  }
  showKeyForm("key forgotten: enter another");
  keyChanged();
}

// fetch() with the key, if one is set. Resolves null when the key changed while the request was out (its
// answer speaks for a key the page no longer uses). A 401 opens the key form.
async function api(path, options = {}) {
  const key = currentKey();
  const generation = keyGeneration;
  const headers = { ...(options.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  if (generation !== keyGeneration) return null;
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    showKeyForm(key ? `key refused: ${body.error || "HTTP 401"}` : "this worker needs an API key");
  }
  return response;
}

// Retry-After in ms (delay-seconds or an HTTP date), 0 without one.
function retryAfterMs(response) {
  const raw = (response.headers.get("Retry-After") || "").trim();
  if (!raw) return 0;
  const seconds = /^\d+$/.test(raw) ? Number(raw) : (Date.parse(raw) - Date.now()) / 1000;
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds * 1000, RETRY_AFTER_CAP_MS) : 0;
}

// What a refresh tells its poller: worked; failed (and how long the worker asked to be left alone); or
// refused for this key (401, 403), which asking again with the same key cannot change: wait for another.
const OK = { ok: true };
const failed = (response) => ({ ok: false, retryAfterMs: response ? retryAfterMs(response) : 0 });
const REFUSED = { ok: false, refused: true };

function notice(text, cls = "notice") {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  return p;
}

function denied(scope) {
  const p = notice("this key lacks the ", "notice denied");
  const code = document.createElement("code");
  code.textContent = scope;
  p.append(code, " scope");
  return p;
}

// -- drawing -----------------------------------------------------------------

function el(tag, attrs, parent, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 10000) return (v / 1000).toFixed(0) + "k";
  if (Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + "k";
  const d = digits === undefined ? (Number.isInteger(v) ? 0 : 2) : digits;
  return Number(v).toFixed(d);
}

function frame(container) {
  container.replaceChildren();
  const W = Math.max(container.clientWidth, 240), H = Math.max(container.clientHeight, 150);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, container);
  return { svg, W, H, L: 40, R: 10, T: 22, B: 30 };
}

function yAxis(f, max) {
  const { svg, W, H, L, R, T, B } = f;
  // Whole steps for small counts (0, 1, 2 rather than 0, 0.5, 1, 1.5, 2).
  const steps = Number.isInteger(max) && max <= 5 ? max : 4;
  const digits = Number.isInteger(max / steps) ? 0 : 1;
  for (let i = 0; i <= steps; i++) {
    const y = T + (H - T - B) * (1 - i / steps);
    el("line", { x1: L, x2: W - R, y1: y, y2: y, class: i ? "grid-line" : "axis" }, svg);
    el("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, svg, fmt(max * i / steps, digits));
  }
}

// entries: [label, value, color?]
function barChart(container, entries, opts = {}) {
  const f = frame(container);
  const { svg, W, H, L, R, T, B } = f;
  const max = niceMax(Math.max(0, ...entries.map((e) => e[1] || 0)));
  yAxis(f, max);
  if (!entries.length) {
    el("text", { x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle", class: "empty" }, svg, opts.empty || "no data yet");
  }
  const slot = (W - L - R) / Math.max(entries.length, 1);
  const width = Math.min(slot * 0.7, 56);
  entries.forEach(([label, value, color], i) => {
    const h = (H - T - B) * (value || 0) / max;
    const x = L + i * slot + (slot - width) / 2;
    const bar = el("rect", { x, y: H - B - h, width, height: Math.max(h, 0), rx: 2, class: "bar",
      fill: color || PALETTE[i % PALETTE.length] }, svg);
    el("title", {}, bar, `${label}: ${value}`);
    el("text", { x: x + width / 2, y: H - B - h - 4, "text-anchor": "middle", class: "value-label" }, svg, fmt(value, 0));
    const short = label.length > 14 ? label.slice(0, 13) + "…" : label;
    el("text", { x: L + i * slot + slot / 2, y: H - B + 16, "text-anchor": "middle" }, svg, short);
  });
  container.dataset.points = String(entries.filter((e) => e[1] > 0).length);
  container.dataset.bars = String(entries.length);
}

// Horizontal bars, for long labels (topic names). entries: [label, value, title]
function hbarChart(container, entries, opts = {}) {
  container.replaceChildren();
  const W = Math.max(container.clientWidth, 240), H = Math.max(container.clientHeight, 150);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, container);
  const L = Math.min(190, W * 0.45), R = 40;
  if (!entries.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg, opts.empty || "no data yet");
  }
  const max = niceMax(Math.max(0, ...entries.map((e) => e[1] || 0)));
  const slot = Math.min((H - 4) / Math.max(entries.length, 1), 28);
  entries.forEach(([label, value, title], i) => {
    const y = 2 + i * slot;
    const w = (W - L - R) * (value || 0) / max;
    el("text", { x: L - 8, y: y + slot / 2 + 4, "text-anchor": "end" }, svg, label);
    el("rect", { x: L, y: y + slot * 0.2, width: W - L - R, height: slot * 0.6, fill: "#f3f4f6", rx: 2 }, svg);
    const bar = el("rect", { x: L, y: y + slot * 0.2, width: Math.max(w, 0), height: slot * 0.6, rx: 2,
      class: "bar", fill: opts.color || PALETTE[0] }, svg);
    el("title", {}, bar, `${title || label}: ${value}`);
    el("text", { x: L + w + 6, y: y + slot / 2 + 4, class: "value-label" }, svg, fmt(value, 0));
  });
  container.dataset.points = String(entries.filter((e) => e[1] > 0).length);
  container.dataset.bars = String(entries.length);
}

// series: {name, color, values: [v per history sample]}
function lineChart(container, series, times) {
  const f = frame(container);
  const { svg, W, H, L, R, T, B } = f;
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const max = niceMax(Math.max(0, ...all));
  yAxis(f, max);
  const n = Math.max(times.length, 2);
  const x = (i) => L + (W - L - R) * i / (n - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  let points = 0;
  series.forEach((s, k) => {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      points += 1;
    });
    if (d) el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, class: "line" }, svg);
    const lx = L + 8 + k * 96;
    el("rect", { x: lx, y: 4, width: 10, height: 10, fill: s.color, rx: 2 }, svg);
    el("text", { x: lx + 14, y: 13 }, svg, s.name);
  });
  if (times.length > 1) {
    const secs = Math.round((times[times.length - 1] - times[0]));
    el("text", { x: L, y: H - B + 16 }, svg, `${secs} s ago`);
    el("text", { x: W - R, y: H - B + 16, "text-anchor": "end" }, svg, "now");
  }
  container.dataset.points = String(points);
}

// -- metrics -----------------------------------------------------------------

function tile(label, value) {
  return `<div class="tile"><div class="label">${label}</div><div class="value">${value}</div></div>`;
}

function renderTiles(m) {
  const cache = m.cache_info || {};
  const lookups = (cache.hits || 0) + (cache.misses || 0);
  const byStatus = m.questions_by_status || {};
  const inFlight = (byStatus.pending || 0) + (byStatus.processing || 0) + (byStatus.retrying || 0);
  document.getElementById("tiles").innerHTML = [
    tile("answers stored", fmt(m.total_responses, 0)),
    tile("average score", m.average_score === null ? "–" : fmt(m.average_score, 3)),
    tile("completed / min", fmt(m.throughput.completed_per_minute["1m"], 1)),
    tile("in flight", fmt(inFlight, 0)),
    tile("cache hit rate", lookups ? `${Math.round(100 * cache.hits / lookups)} %` : "–"),
    tile("LLM p95", m.llm.latency_ms.p95 === null ? "–" : `${fmt(m.llm.latency_ms.p95, 0)} ms`),
    tile("dead letters", fmt(m.dead_letters, 0)),
    tile("consumer lag", fmt(m.consumer_lag.total, 0)),
  ].join("");
  const breaker = document.getElementById("breaker");
  breaker.textContent = `LLM breaker: ${m.circuit_breaker.state.replace("_", " ")}`;
  breaker.className = `pill ${m.circuit_breaker.state}`;
}

// One row per LLM server: its breaker, calls in flight of its slots, calls and failures (by class in the
// tooltip), and how often its breaker opened since the worker started.
function renderServers(m) {
  const body = document.querySelector("#servers tbody");
  body.replaceChildren();
  for (const server of m.llm.servers || []) {
    const row = body.insertRow();
    cell(row, server.url);
    const state = server.breaker.state;
    const pill = document.createElement("span");
    pill.className = `pill ${state}`;
    pill.textContent = state.replace("_", " ");
    row.insertCell().appendChild(pill);
    cell(row, `${fmt(server.in_flight, 0)} / ${fmt(server.concurrency, 0)}`, "num");
    cell(row, fmt(server.calls, 0), "num");
    const failures = Object.entries(server.failures_by_class);
    cell(row, fmt(failures.reduce((sum, [, n]) => sum + n, 0), 0), "num",
      failures.map(([c, n]) => `${c}: ${n}`).join(", ") || "no failures");
    cell(row, fmt(server.breaker.entered.open || 0, 0), "num");
  }
}

function commonPrefix(names) {
  if (names.length < 2) return "";
  let prefix = names[0];
  for (const name of names) while (!name.startsWith(prefix)) prefix = prefix.slice(0, -1);
  return prefix.slice(0, prefix.lastIndexOf("-") + 1); // whole words only
}

function renderCharts(m) {
  const times = history.map((h) => h.t);
  lineChart(document.getElementById("chart-throughput"), [
    { name: "completed", color: "#16a34a", values: history.map((h) => h.completed) },
    { name: "accepted", color: "#2563eb", values: history.map((h) => h.accepted) },
    { name: "failed", color: "#dc2626", values: history.map((h) => h.failed) },
  ], times);
  lineChart(document.getElementById("chart-latency"), [
    { name: "LLM p50", color: "#7c3aed", values: history.map((h) => h.llm50) },
    { name: "LLM p95", color: "#c4b5fd", values: history.map((h) => h.llm95) },
    { name: "question p50", color: "#0891b2", values: history.map((h) => h.q50) },
    { name: "question p95", color: "#67e8f9", values: history.map((h) => h.q95) },
  ], times);
  const order = ["pending", "processing", "retrying", "completed", "failed", "cancelled"];
  const statuses = m.questions_by_status || {};
  barChart(document.getElementById("chart-status"),
    order.map((s) => [s, statuses[s] || 0, STATUS_COLORS[s]]));
  // Bucket "0.60-0.70" is labelled by its lower edge; the first and last say "<" and "≥".
  barChart(document.getElementById("chart-scores"), Object.entries(m.score_distribution).map(([b, n], i) => [
    b.startsWith(">=") ? "≥" + b.slice(2) : i === 0 ? "<" + b.split("-")[1] : b.split("-")[0], n, "#2563eb"]));
  barChart(document.getElementById("chart-attempts"),
    Object.entries(m.attempts_distribution).map(([a, n]) => [`${a} attempt${a === "1" ? "" : "s"}`, n, "#7c3aed"]),
    { empty: "no answers yet" });
  const topics = m.consumer_lag.topics || {};
  const prefix = commonPrefix(Object.keys(topics)); // QASTREAM_TOPIC_PREFIX, if any
  hbarChart(document.getElementById("chart-lag"), Object.entries(topics).map(([t, v]) => [
    t.slice(prefix.length).replace(/^llm-responses-(error-)?/, "llm-"), v.lag, t]),
  { empty: "no partitions assigned", color: "#d97706" });
}

// The metrics panels (tiles, breaker, servers, charts) with what makeNode() says instead of figures.
function blankMetrics(makeNode) {
  lastMetrics = null;
  document.getElementById("tiles").replaceChildren(makeNode());
  const breaker = document.getElementById("breaker");
  breaker.textContent = "LLM breaker: ?";
  breaker.className = "pill";
  const servers = document.querySelector("#servers tbody");
  servers.replaceChildren();
  const td = servers.insertRow().insertCell();
  td.colSpan = 6;
  td.appendChild(makeNode());
  for (const chart of document.querySelectorAll(".chart")) {
    chart.replaceChildren(makeNode());
    chart.dataset.points = "0";
  }
}

async function pollMetrics() {
  let response = null;
  try {
    response = await api("/metrics");
    if (response === null) return OK; // sent with another key: the poller asks again at once
    if (response.status === 401) {
      blankMetrics(() => notice("an API key is needed"));
      document.getElementById("updated").textContent = "waiting for an API key";
      return REFUSED;
    }
    if (response.status === 403) {
      blankMetrics(() => denied(SCOPE_OF.metrics));
      document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
      return REFUSED;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const m = await response.json();
    lastMetrics = m;
    const q = m.worker_counts.question_latency_ms;
    history.push({
      t: m.generated_at,
      completed: m.throughput.completed_per_minute["1m"],
      accepted: m.throughput.accepted_per_minute["1m"],
      failed: m.throughput.failed_per_minute["1m"],
      llm50: m.llm.latency_ms.p50, llm95: m.llm.latency_ms.p95,
      q50: q.p50 !== null ? q.p50 : m.processing_time_ms.p50,
      q95: q.p95 !== null ? q.p95 : m.processing_time_ms.p95,
    });
    if (history.length > HISTORY) history.shift();
    renderTiles(m);
    renderServers(m);
    renderCharts(m);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    return OK;
  } catch (err) {
    document.getElementById("updated").textContent = `metrics unavailable (${err.message})`;
    return failed(response);
  }
}

// -- latest answers ------------------------------------------------------------

function cell(row, text, cls, title) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  td.title = title || text;
  return td;
}

async function pollAnswers() {
  let response = null;
  try {
    response = await api("/answers/latest?limit=12");
    if (response === null) return OK;
    const body = document.querySelector("#answers tbody");
    if (response.status === 401 || response.status === 403) {
      body.replaceChildren();
      const td = body.insertRow().insertCell();
      td.colSpan = 6;
      td.append(response.status === 401 ? notice("an API key is needed") : denied(SCOPE_OF.answers));
      return REFUSED;
    }
    if (!response.ok) return failed(response);
    const { answers } = await response.json();
    body.replaceChildren();
    if (!answers.length) {
      cell(body.insertRow(), "no answers yet", "muted").colSpan = 6;
      return OK;
    }
    for (const a of answers) {
      const row = body.insertRow();
      row.dataset.questionId = a.question_id;
      cell(row, new Date(a.stored_at * 1000).toLocaleTimeString([], { hour12: false }));
      cell(row, a.question_text);
      cell(row, a.answer);
      cell(row, a.score === null ? "–" : a.score.toFixed(3), a.low_quality ? "num low" : "num",
        a.low_quality ? "kept below the threshold after the last attempt" : undefined);
      cell(row, String(a.processing_attempts), "num");
      cell(row, fmt(a.total_processing_time_ms, 0), "num");
    }
    return OK;
  } catch (err) {
    return failed(response); // the metrics line already says when the worker is unreachable
  }
}

// -- batches -------------------------------------------------------------------

const BATCH_IN_PROGRESS = "in_progress";
// The table's rows by batch id: a refresh updates them in place, so a Cancel button keeps its place (and
// its focus) under the pointer while the panel refreshes.
const batchRows = new Map();

// The stacked bar of a batch's request_counts: [class, label, count] per drawn part, in order. completed
// includes its low-quality answers, drawn apart; what is left of the total is still in flight (the track).
function batchParts(counts) {
  const completed = counts.completed || 0;
  const low = Math.min(counts.low_quality || 0, completed);
  return [["completed", "completed", completed - low], ["low", "low quality", low],
    ["failed", "failed", counts.failed || 0], ["cancelled", "cancelled", counts.cancelled || 0]];
}

// A timestamp (seconds) as the page shows it: the time of day, with the date when it is not today.
function when(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const at = new Date(seconds * 1000);
  const time = at.toLocaleTimeString([], { hour12: false });
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString()} ${time}`;
}

function batchesMessage(text) {
  const message = document.getElementById("batches-message");
  message.textContent = text || "";
  message.hidden = !text;
}

// The panel without rows, saying why (text, or a node such as denied()).
function clearBatches(what) {
  batchRows.clear();
  const body = document.querySelector("#batches tbody");
  body.replaceChildren();
  const td = body.insertRow().insertCell();
  td.colSpan = 6;
  td.className = "muted";
  td.append(what);
  batchesMessage("");
}

function newBatchRow(batchId) {
  const row = document.createElement("tr");
  row.dataset.batchId = batchId;
  const id = row.insertCell();
  const code = document.createElement("code");
  code.textContent = batchId;
  const meta = document.createElement("div");
  meta.className = "meta";
  id.append(code, meta);
  const status = document.createElement("span");
  row.insertCell().append(status);
  const progress = row.insertCell();
  const bar = document.createElement("div");
  bar.className = "progress";
  bar.setAttribute("role", "progressbar");
  const text = document.createElement("div");
  text.className = "progress-text";
  progress.append(bar, text);
  row.insertCell().className = "when";
  row.insertCell().className = "webhook";
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Cancel";
  button.className = "cancel";
  button.addEventListener("click", () => cancelBatch(batchId, button));
  row.insertCell().append(button);
  return row;
}

// Fills a batch's row from what GET /batches (or DELETE /batches/{id}) said of it. Every value is set as text:
// metadata and webhook URLs come from whoever submitted the batch.
function showBatch(row, batch) {
  const counts = batch.request_counts || {};
  const total = counts.total || 0;
  const parts = batchParts(counts);
  const finished = parts.reduce((sum, [, , n]) => sum + n, 0);
  row.dataset.status = batch.status;
  row.dataset.total = String(total);
  row.dataset.finished = String(finished);
  const [idCell, statusCell, progressCell, timesCell, hookCell, actionCell] = row.cells;

  const meta = idCell.querySelector(".meta");
  const metadata = batch.metadata && Object.keys(batch.metadata).length ? JSON.stringify(batch.metadata) : "";
  meta.textContent = metadata;
  meta.title = metadata;

  const pill = statusCell.firstChild;
  pill.textContent = batch.status.replace("_", " ");
  pill.className = `pill ${batch.status}`;

  const bar = progressCell.querySelector(".progress");
  bar.replaceChildren(...parts.filter(([, , n]) => n > 0).map(([cls, label, n]) => {
    const part = document.createElement("span");
    part.className = cls;
    part.style.width = `${(100 * n / Math.max(total, 1)).toFixed(2)}%`;
    part.title = `${label}: ${n}`;
    return part;
  }));
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", String(total));
  bar.setAttribute("aria-valuenow", String(finished));
  const detail = parts.slice(1).filter(([, , n]) => n > 0).map(([, label, n]) => `${fmt(n, 0)} ${label}`);
  progressCell.querySelector(".progress-text").textContent =
    `${fmt(finished, 0)} / ${fmt(total, 0)} done` + (detail.length ? ` (${detail.join(", ")})` : "");

  const ended = batch.finished_at !== null && batch.finished_at !== undefined;
  const lines = [`created ${when(batch.created_at)}`];
  if (batch.cancelled_at !== null && batch.cancelled_at !== undefined) lines.push(`cancelled ${when(batch.cancelled_at)}`);
  lines.push(ended ? `ended ${when(batch.finished_at)}` : `updated ${when(batch.updated_at)}`);
  timesCell.textContent = lines.join("\n");
  timesCell.style.whiteSpace = "pre-line";

  const hook = batch.webhook || {};
  const delivery = hook.delivery;
  if (!hook.url) {
    hookCell.textContent = "–";
    hookCell.title = "no webhook";
    hookCell.dataset.state = "";
  } else {
    const state = hook.state || "not sent yet";
    const attempts = delivery ? ` (${delivery.attempts} attempt${delivery.attempts === 1 ? "" : "s"})` : "";
    hookCell.textContent = `${state}${attempts}`;
    hookCell.title = [hook.url, delivery && delivery.last_error ? `last error: ${delivery.last_error}` : ""]
      .filter(Boolean).join("\n");
    hookCell.dataset.state = hook.state || "";
  }

  actionCell.firstChild.hidden = batch.status !== BATCH_IN_PROGRESS;
}

async function pollBatches() {
  let response = null;
  try {
    response = await api(`/batches?limit=${BATCHES_SHOWN}`);
    if (response === null) return OK;
    if (response.status === 401 || response.status === 403) {
      clearBatches(response.status === 401 ? notice("an API key is needed") : denied(SCOPE_OF.batches));
      return REFUSED;
    }
    if (!response.ok) return failed(response);
    const { batches } = await response.json();
    const body = document.querySelector("#batches tbody");
    if (!batches.length) {
      clearBatches("no batches yet");
      return OK;
    }
    if (!batchRows.size) body.replaceChildren(); // the "no batches yet" line
    const shown = new Set();
    for (const batch of batches) {
      let row = batchRows.get(batch.batch_id);
      if (!row) {
        row = newBatchRow(batch.batch_id);
        batchRows.set(batch.batch_id, row);
      }
      showBatch(row, batch);
      body.append(row); // in the order listed, newest first (append moves a row already there)
      shown.add(batch.batch_id);
    }
    for (const [batchId, row] of batchRows) {
      if (!shown.has(batchId)) {
        row.remove();
        batchRows.delete(batchId);
      }
    }
    return OK;
  } catch (err) {
    return failed(response);
  }
}

// Cancels a batch (DELETE /batches/{id}), shows what the worker answered, and refreshes the panel.
async function cancelBatch(batchId, button) {
  if (!window.confirm(`Cancel batch ${batchId}? Its questions not generated yet will never be.`)) return;
  button.disabled = true;
  batchesMessage("");
  try {
    const response = await api(`/batches/${encodeURIComponent(batchId)}`, { method: "DELETE" });
    if (response === null) return; // another key now: the panel shows that key's batches
    if (response.ok) {
      const row = batchRows.get(batchId);
      if (row) showBatch(row, await response.json());
    } else {
      const body = await response.json().catch(() => ({}));
      batchesMessage(`cancelling ${batchId} failed: ` +
        (await refusal(response, SCOPE_OF.cancel) || body.error || `HTTP ${response.status}`));
    }
  } catch (err) {
    batchesMessage(`cancelling ${batchId} failed: ${err.message}`);
  } finally {
    button.disabled = false;
    batchesPoller.refreshNow();
  }
}

// -- polling -------------------------------------------------------------------

// The wait before the next refresh: the normal interval after a quick success, otherwise twice the last
// wait, and never less than the Retry-After the worker sent with its refusal (429, 503).
function nextDelay(lastDelayMs, everyMs, ok, tookMs, retryAfter = 0) {
  if (ok && tookMs <= everyMs) return everyMs;
  return Math.max(Math.min(Math.max(lastDelayMs, everyMs) * 2, BACKOFF_CAP_MS), retryAfter);
}

// Runs refresh() every everyMs, one at a time: the next is scheduled only when the previous has finished
// (a setTimeout chain, not setInterval, so a slow worker never collects a pile of requests from one tab).
// A hidden tab does not poll at all; it refreshes at once when it is shown again. A refresh refused for
// the key (401, 403) stops the chain until restart(), which the key form calls with a new key.
function poll(refresh, everyMs) {
  let delay = everyMs;
  let timer = null;
  let running = false;
  let paused = false;
  let again = false; // refreshNow() was called while a refresh was out: its answer may predate the change
  const schedule = (ms) => {
    if (timer === null && !running && !paused && !document.hidden) timer = setTimeout(tick, ms);
  };
  async function tick() {
    timer = null;
    if (document.hidden) return;
    running = true;
    const generation = keyGeneration;
    const started = performance.now();
    let outcome = failed(null);
    try {
      outcome = await refresh();
    } catch (err) {
      // a bug in drawing must not end the chain
    }
    running = false;
    if (again && !outcome.refused) {
      again = false;
      delay = everyMs;
      schedule(0);
      return;
    }
    again = false;
    if (generation !== keyGeneration) {
      delay = everyMs; // the key changed meanwhile: ask again, with the new one, now
      schedule(0);
      return;
    }
    paused = Boolean(outcome.refused);
    delay = nextDelay(delay, everyMs, outcome.ok, performance.now() - started, outcome.retryAfterMs || 0);
    schedule(delay);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else {
      schedule(0);
    }
  });
  schedule(0);
  return {
    restart() { // a new key: ask at once (a request still out is answered first, then ignored by tick)
      paused = false;
      delay = everyMs;
      clearTimeout(timer);
      timer = null;
      schedule(0);
    },
    refreshNow() { // after the page changed something (a cancel): show it without waiting for the interval
      if (running) {
        again = true;
        return;
      }
      clearTimeout(timer);
      timer = null;
      schedule(0);
    },
  };
}

// -- asking --------------------------------------------------------------------

let following = null;

// origin: "pipeline" while following a new question, or where POST /query found an earlier answer.
function showResult(status, body, origin = "pipeline") {
  document.getElementById("ask-result").hidden = false;
  const pill = document.getElementById("ask-status");
  pill.textContent = status;
  pill.className = `pill ${status}`;
  document.getElementById("ask-id").textContent = body.question_id || "";
  const result = body.result;
  const answer = document.getElementById("ask-answer");
  if (result) {
    answer.textContent = result.answer;
    document.getElementById("ask-score").textContent = result.score === null ? "unscored (no reference)" :
      `${result.score.toFixed(3)}${result.low_quality ? " (below the threshold)" : ""}`;
    document.getElementById("ask-attempts").textContent = `${result.processing_attempts}`;
    document.getElementById("ask-time").textContent = `${fmt(result.total_processing_time_ms, 0)} ms`;
    document.getElementById("ask-origin").textContent =
      origin === "pipeline" ? "answered now" : `asked before: answer from the ${origin}`;
  } else {
    answer.textContent = body.detail || body.error || (body.stage ? `stage: ${body.stage}` : "waiting for the LLM…");
    for (const id of ["ask-score", "ask-attempts", "ask-time", "ask-origin"]) {
      document.getElementById(id).textContent = "–";
    }
  }
}

// The message of a refused request, for the question form; null when the request was not refused.
async function refusal(response, scope) {
  if (response.status === 401) return "this worker needs an API key: enter one above";
  if (response.status === 403) return `this key lacks the ${scope} scope`;
  if (response.status === 429) {
    const body = await response.json().catch(() => ({}));
    const wait = retryAfterMs(response);
    return `too many requests${body.error ? `: ${body.error}` : ""}` +
      (wait ? `; retry in ${Math.ceil(wait / 1000)} s` : "");
  }
  return null;
}

// Splits text/event-stream text into its complete events ({event, id, data}) and the unfinished rest, which
// the next chunk continues. Comments (": ping") and events without data are skipped, as EventSource does.
function parseSse(text) {
  const blocks = text.replace(/\r\n/g, "\n").split("\n\n");
  const rest = blocks.pop();
  const events = [];
  for (const block of blocks) {
    const event = { event: "message", id: null, data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.event = value;
      else if (field === "id") event.id = value;
      else if (field === "data") event.data.push(value);
    }
    if (event.data.length) events.push({ event: event.event, id: event.id, data: event.data.join("\n") });
  }
  return [events, rest];
}

// The stages a question went through, as its stream announced them, one item each.
function showStage(name) {
  const list = document.getElementById("ask-stages");
  const item = document.createElement("li");
  item.textContent = name;
  item.dataset.stage = name;
  item.className = `pill ${TERMINAL_EVENTS.has(name) ? name : "stage"}`;
  list.append(item);
}

let streamAbort = null;

// Closes the stream being read, if any (another question, another key).
function stopStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
}

// Reads one response of GET /status/{id}/events, showing each event as it arrives. Returns the id of the last
// event read and whether it was the terminal one.
async function readStream(response, token, lastId) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (following === token) {
      const { value, done } = await reader.read();
      if (done) break;
      const [events, rest] = parseSse(buffer + value);
      buffer = rest;
      for (const event of events) {
        lastId = event.id || lastId;
        const body = JSON.parse(event.data);
        showStage(event.event);
        showResult(body.status, body);
        if (TERMINAL_EVENTS.has(event.event)) return { lastId, ended: true };
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return { lastId, ended: false };
}

// Follows a question on its live status stream until the terminal event. Read with fetch(), not EventSource,
// which cannot send the API key. The stream is opened again when it ends early, with Last-Event-ID so that no
// stage is shown twice; a 204 says the last event was already read.
async function follow(questionId, token) {
  let lastId = "";
  let ended = false;
  while (following === token && !ended) {
    let wait = STREAM_RETRY_MS;
    const controller = new AbortController();
    streamAbort = controller;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await api(`/status/${questionId}/events`, { headers, signal: controller.signal });
      if (response === null) continue; // the key changed: keyChanged() stopped following
      if (response.status === 200) {
        ({ lastId, ended } = await readStream(response, token, lastId));
      } else if (response.status === 204) {
        ended = true;
      } else if ([401, 403, 404].includes(response.status)) {
        const body = await response.json().catch(() => ({}));
        showResult("error", { question_id: questionId,
          error: await refusal(response, SCOPE_OF.status) || body.error || `HTTP ${response.status}` });
        break;
      } else {
        wait = Math.max(wait, retryAfterMs(response)); // a 429 or 503 says how long to leave the worker alone
      }
    } catch (err) {
      if (following !== token) break; // aborted: another question, or another key
    }
    if (!ended && following === token) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  if (streamAbort && following === token) streamAbort = null;
  if (following === token) document.getElementById("ask-submit").disabled = false;
}

async function ask(event) {
  event.preventDefault();
  const question = document.getElementById("question").value;
  const reference = document.getElementById("reference").value.trim();
  const payload = { question_text: question };
  if (reference) payload.original_answer = reference;
  const button = document.getElementById("ask-submit");
  button.disabled = true;
  const token = {};
  following = token;
  stopStream();
  document.getElementById("ask-stages").replaceChildren();
  try {
    const response = await api("/query", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    const refused = response === null ? "the key changed while the question was sent: submit it again"
      : await refusal(response, SCOPE_OF.query);
    if (refused) {
      showResult("error", { error: refused });
      button.disabled = false;
      return;
    }
    const body = await response.json();
    if (response.status === 200) {
      showResult("completed", { ...body, question_id: body.result.question_id }, body.source);
      button.disabled = false;
    } else if (response.status === 202) {
      showResult(body.status, body);
      await follow(body.question_id, token);
    } else {
      showResult("error", body);
      button.disabled = false;
    }
  } catch (err) {
    showResult("error", { error: err.message });
    button.disabled = false;
  }
}

document.getElementById("ask-form").addEventListener("submit", ask);
document.getElementById("key-form").addEventListener("submit", useKey);
document.getElementById("key-forget").addEventListener("click", forgetKey);
document.getElementById("key-forget").hidden = !currentKey();
window.addEventListener("resize", () => { if (lastMetrics) renderCharts(lastMetrics); });
const batchesPoller = poll(pollBatches, BATCHES_EVERY_MS);
pollers.push(poll(pollMetrics, METRICS_EVERY_MS), poll(pollAnswers, ANSWERS_EVERY_MS), batchesPoller);
