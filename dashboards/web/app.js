// SpareCycles dashboard: plain JS, no build step, nothing fetched from outside the coordinator.
// Live over Server-Sent Events (/api/v1/events): a "snapshot" event carries the overview (jobs,
// fleet, throughput), "update" events say what just happened. Pages: overview, job, submit,
// workers, leaderboard (hash routes, so the server serves one page).
"use strict";

const main = document.getElementById("main");
const live = document.getElementById("live");
const TOKEN_KEY = "sparecycles.token";
const THEME_KEY = "sparecycles.theme";
const FINAL = ["completed", "failed", "canceled"];

const store = {
  snapshot: null,
  // job id -> [[server ms, units done], ...] over the last minute, for units/s and ETA
  history: new Map(),
};

// ---------- small helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const fmtInt = (n) => Number(n).toLocaleString("en-US");
function fmtNum(x, digits = 1) {
  if (!isFinite(x)) return "–";
  if (Math.abs(x) >= 1000) return fmtInt(Math.round(x));
  return x.toFixed(x < 10 ? Math.max(digits, 2) : digits);
}
function fmtDuration(secs) {
  if (!isFinite(secs) || secs < 0) return "–";
  if (secs < 60) return `${Math.max(1, Math.round(secs))} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${Math.round(secs % 60)} s`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ${Math.round((secs % 3600) / 60)} min`;
  return `${(secs / 86400).toFixed(1)} days`;
}
function fmtAgo(ms) {
  const s = (Date.now() - ms) / 1000;
  if (s < 5) return "just now";
  return `${fmtDuration(s)} ago`;
}
const badge = (state) => el("span", { class: `badge ${state}` }, state);
const token = () => localStorage.getItem(TOKEN_KEY) || "";

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.auth && token()) headers.Authorization = `Bearer ${token()}`;
  const resp = await fetch(path, { ...opts, headers, cache: "no-store" });
  if (!resp.ok) {
    let detail = `HTTP ${resp.status}`;
    try {
      const body = await resp.json();
      if (body.detail) detail = body.detail;
    } catch (_) { /* not JSON */ }
    const err = new Error(detail);
    err.status = resp.status;
    throw err;
  }
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp;
}

// ---------- theme ----------

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}
applyTheme(localStorage.getItem(THEME_KEY));
document.getElementById("theme").addEventListener("click", () => {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  const next = dark ? "light" : "dark";
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
});

// ---------- live connection ----------

let source = null;
let backoff = 1000;
const listeners = new Set(); // page hooks: fn(kind, data)

function setLive(state, text) {
  live.dataset.state = state;
  live.textContent = text;
}

function connect() {
  setLive("connecting", "connecting…");
  source = new EventSource("/api/v1/events");
  source.addEventListener("open", () => { backoff = 1000; setLive("live", "live"); });
  source.addEventListener("snapshot", (e) => {
    setLive("live", "live");
    onSnapshot(JSON.parse(e.data));
  });
  source.addEventListener("update", (e) => {
    const ev = JSON.parse(e.data);
    for (const fn of listeners) fn("update", ev);
  });
  source.addEventListener("error", () => {
    // EventSource retries by itself (the server asks for 2 s); if it gave up, we retry, slower
    // each time, never in a tight loop.
    if (source.readyState === EventSource.CLOSED) {
      setLive("down", `offline, retrying in ${Math.round(backoff / 1000)} s`);
      source.close();
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 30000);
    } else {
      setLive("connecting", "reconnecting…");
    }
  });
}

function onSnapshot(snap) {
  store.snapshot = snap;
  for (const job of snap.jobs) {
    let h = store.history.get(job.id);
    if (!h) store.history.set(job.id, (h = []));
    if (!h.length || h[h.length - 1][0] < snap.at) h.push([snap.at, job.units.done]);
    while (h.length > 2 && h[0][0] < snap.at - 60000) h.shift();
  }
  for (const fn of listeners) fn("snapshot", snap);
}

/** Units per second of a job: over the last minute of snapshots, else since it was created. */
function rate(job) {
  if (job.state !== "running") return NaN;
  const h = store.history.get(job.id) || [];
  if (h.length >= 2) {
    const [t0, d0] = h[0];
    const [t1, d1] = h[h.length - 1];
    if (t1 - t0 >= 2000 && d1 > d0) return (d1 - d0) / ((t1 - t0) / 1000);
  }
  const at = store.snapshot ? store.snapshot.at : Date.now();
  const secs = (at - job.created_at) / 1000;
  return secs > 1 && job.units.done > 0 ? job.units.done / secs : NaN;
}
function eta(job) {
  const r = rate(job);
  return r > 0 ? (job.units.total - job.units.done - job.units.failed) / r : NaN;
}

function progressBar(job, big = false) {
  const total = Math.max(1, job.units.total);
  const done = (100 * job.units.done) / total;
  const run = Math.min(100 - done, (100 * job.units.in_progress) / total);
  return el("div", {
    class: `progress ${job.state}${big ? " big" : ""}`,
    role: "progressbar",
    "aria-label": `${job.name} progress`,
    "aria-valuemin": 0,
    "aria-valuemax": job.units.total,
    "aria-valuenow": job.units.done,
    "data-job": job.id,
  },
  el("span", { class: "done", style: `width:${done.toFixed(2)}%` }),
  el("span", { class: "run", style: `width:${run.toFixed(2)}%` }),
  el("em", {}, `${fmtInt(job.units.done)} / ${fmtInt(job.units.total)}`));
}

// ---------- router ----------

let cleanup = null;

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  listeners.clear();
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, arg] = hash.split("/");
  const current = { "": "overview", jobs: "overview", submit: "submit", workers: "workers", leaderboard: "leaderboard" }[page] || "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.nav === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (page === "jobs" && arg) jobPage(arg);
  else if (page === "submit") submitPage();
  else if (page === "workers") workersPage();
  else if (page === "leaderboard") leaderboardPage();
  else overviewPage();
}
window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); });

// ---------- overview ----------

function overviewPage() {
  document.title = "SpareCycles";
  const stats = el("div", { class: "stats", id: "fleet" });
  const chart = el("div", { class: "panel" }, el("h2", {}, "Units per second, last hour"), el("div", { id: "chart" }));
  const jobs = el("section", { class: "panel", "aria-labelledby": "jobs-title" },
    el("div", { class: "head" }, el("h2", { id: "jobs-title", style: "margin:0" }, "Jobs"), el("span", { class: "spacer" }),
      el("a", { class: "button", href: "#/submit" }, "Submit a job")),
    el("div", { class: "table-wrap", id: "jobs" }));
  const failures = el("section", { class: "panel", id: "failures", hidden: true, "aria-labelledby": "fail-title" },
    el("h2", { id: "fail-title" }, "Recent failures"), el("ul", {}));
  main.append(stats, chart, jobs, failures);

  const render = () => {
    const snap = store.snapshot;
    if (!snap) {
      document.getElementById("jobs").replaceChildren(el("p", { class: "empty" }, "Connecting to the coordinator…"));
      return;
    }
    renderFleet(stats, snap);
    renderChart(document.getElementById("chart"), snap.throughput);
    renderJobs(document.getElementById("jobs"), snap.jobs);
    const failed = snap.jobs.filter((j) => j.state === "failed").slice(0, 5);
    failures.hidden = !failed.length;
    failures.querySelector("ul").replaceChildren(...failed.map((j) =>
      el("li", {}, el("a", { href: `#/jobs/${j.id}` }, j.name), " ", el("span", { class: "muted" }, `${j.error || "failed"} · ${fmtAgo(j.finished_at || j.updated_at)}`))));
  };
  listeners.add((kind) => { if (kind === "snapshot") render(); });
  render();
}

function renderFleet(node, snap) {
  const f = snap.fleet;
  const tp = snap.throughput;
  const now = tp.length ? tp[tp.length - 1].units_per_sec : 0;
  const card = (label, value, unit) => el("div", { class: "stat" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value, unit ? el("small", {}, unit) : null));
  node.replaceChildren(
    card("Workers online", fmtInt(f.workers_online), `of ${fmtInt(f.workers_total)}`),
    card("Cores online", fmtInt(f.cores_online)),
    card("Throughput", fmtNum(now), "units/s"),
    card("In flight", fmtInt(f.tasks_in_flight), "tasks"),
    card("Queue", fmtInt(f.tasks_unsent), "tasks"),
    card("Units done", fmtInt(f.units_done_total)));
}

/** A tiny SVG area chart of units/s per minute over the last hour. */
function renderChart(node, points) {
  const W = 600, H = 150, now = Date.now(), start = now - 3600 * 1000;
  const max = Math.max(1e-9, ...points.map((p) => p.units_per_sec));
  const x = (t) => ((t - start) / 3600000) * W;
  const y = (v) => H - 4 - (v / max) * (H - 14);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Units per second over the last hour; peak ${fmtNum(max)}`);
  const add = (tag, attrs) => { const n = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); svg.append(n); };
  add("line", { x1: 0, y1: H - 4, x2: W, y2: H - 4, class: "axis" });
  // One bar per minute (the last one still filling).
  const bw = W / 60;
  for (const p of points) {
    if (p.at < start - 60000 || p.units_per_sec <= 0) continue;
    const x0 = Math.max(0, Math.min(W - bw, x(p.at)));
    add("rect", { x: (x0 + 1).toFixed(1), y: y(p.units_per_sec).toFixed(1), width: (bw - 2).toFixed(1), height: (H - 4 - y(p.units_per_sec)).toFixed(1), class: "bar", rx: 2 });
  }
  node.replaceChildren(svg, el("div", { class: "chart-labels" }, el("span", {}, "60 min ago"), el("span", {}, `peak ${fmtNum(points.length ? max : 0)} units/s`), el("span", {}, "now")));
}

function renderJobs(node, jobs) {
  if (!jobs.length) {
    node.replaceChildren(el("p", { class: "empty" }, "No jobs yet. ", el("a", { href: "#/submit" }, "Submit one"), " or run ", el("code", {}, "coordinator submit job-specs/prime-count.toml"), "."));
    return;
  }
  const rows = jobs.map((job) => {
    const open = () => { location.hash = `#/jobs/${job.id}`; };
    return el("tr", { class: "clickable", "data-job": job.id, onclick: open },
      el("td", {}, el("a", { class: "jobname", href: `#/jobs/${job.id}`, onclick: (e) => e.stopPropagation() }, job.name), el("div", { class: "muted small hide-narrow", title: job.app }, appLabel(job.app))),
      el("td", {}, badge(job.state)),
      el("td", { style: "width:40%" }, progressBar(job)),
      el("td", { class: "num hide-narrow" }, job.state === "running" ? fmtNum(rate(job)) : "–"),
      el("td", { class: "num hide-narrow" }, job.state === "running" ? fmtDuration(eta(job)) : FINAL.includes(job.state) && job.finished_at ? fmtAgo(job.finished_at) : "–"));
  });
  node.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", {}, "State"), el("th", {}, "Progress"), el("th", { class: "num hide-narrow" }, "Units/s"), el("th", { class: "num hide-narrow" }, "ETA / ended"))),
    el("tbody", {}, rows)));
}

// ---------- job page ----------

function jobPage(id) {
  let job = null;
  let unitsTimer = null;
  let lastUnits = 0;
  const head = el("div", { class: "head" });
  const summary = el("section", { class: "panel" });
  // Held here, not looked up by id: an answer that arrives after the user left the page must
  // land in these (detached) nodes, not find nothing in the next page's DOM.
  const unitmap = el("div", { id: "unitmap" }, el("p", { class: "muted" }, "Loading…"));
  const figuresBody = el("div", { id: "figures" });
  const map = el("section", { class: "panel", "aria-labelledby": "map-title" }, el("h2", { id: "map-title" }, "Units"), unitmap);
  const figures = el("section", { class: "panel", "aria-labelledby": "val-title" }, el("h2", { id: "val-title" }, "Validation"), figuresBody);
  const result = el("section", { class: "panel result", id: "result", hidden: true, "aria-labelledby": "res-title" }, el("h2", { id: "res-title" }, "Result"), el("div", {}));
  main.append(head, summary, el("div", { class: "grid2" }, map, figures), result);

  const renderHead = () => {
    document.title = `${job.name} · SpareCycles`;
    const actions = el("div", { class: "actions" });
    if (["queued", "running"].includes(job.state)) actions.append(el("button", { class: "ghost", type: "button", onclick: () => act("pause") }, "Pause"));
    if (job.state === "paused") actions.append(el("button", { class: "ghost", type: "button", onclick: () => act("resume") }, "Resume"));
    if (!FINAL.includes(job.state)) actions.append(el("button", { class: "danger", type: "button", onclick: () => act("cancel") }, "Cancel"));
    head.replaceChildren(el("div", {}, el("a", { href: "#/", class: "small" }, "← All jobs"), el("h1", {}, job.name, " ", badge(job.state))), el("span", { class: "spacer" }), actions, el("div", { id: "act-error", class: "error", role: "alert" }));
    const r = rate(job);
    summary.replaceChildren(progressBar(job, true),
      el("div", { class: "kv", style: "margin-top:.9rem" },
        el("div", { style: "overflow-wrap:anywhere" }, el("span", {}, "App"), job.app),
        el("div", {}, el("span", {}, "Units"), fmtInt(job.units.total)),
        el("div", {}, el("span", {}, "In progress"), fmtInt(job.units.in_progress)),
        el("div", {}, el("span", {}, "Units/s"), job.state === "running" ? fmtNum(r) : "–"),
        el("div", {}, el("span", {}, job.state === "running" ? "ETA" : "Ended"), job.state === "running" ? fmtDuration(eta(job)) : job.finished_at ? fmtAgo(job.finished_at) : "–"),
        el("div", {}, el("span", {}, "Quorum"), `${job.redundancy.min_quorum} of ${job.redundancy.target_results}`)),
      ...(job.error ? [el("div", { class: "error" }, job.error)] : []),
      el("div", { class: "muted small mono" }, job.id));
  };

  const act = async (what) => {
    const errBox = head.querySelector("#act-error");
    if (!token()) {
      const t = prompt("Admin or submitter token (a submitter manages its own jobs), kept in this browser:");
      if (!t) return;
      localStorage.setItem(TOKEN_KEY, t.trim());
    }
    try {
      job = await api(`/api/v1/jobs/${id}/${what}`, { method: "POST", auth: true });
      renderHead();
      loadUnits();
    } catch (e) {
      if (e.status === 401) localStorage.removeItem(TOKEN_KEY);
      errBox.textContent = e.message;
    }
  };

  const loadUnits = async () => {
    lastUnits = Date.now();
    try {
      const m = await api(`/api/v1/jobs/${id}/units`);
      renderUnitMap(unitmap, m, job);
      renderFigures(figuresBody, m, job);
    } catch (e) {
      unitmap.replaceChildren(el("p", { class: "error" }, e.message));
    }
  };
  // At most one unit-map request a second, however fast results arrive.
  const scheduleUnits = () => {
    if (unitsTimer) return;
    const wait = Math.max(0, 1000 - (Date.now() - lastUnits));
    unitsTimer = setTimeout(() => { unitsTimer = null; loadUnits(); }, wait);
  };
  let resultShown = false;
  const showResult = () => {
    if (job.state !== "completed" || resultShown) return;
    resultShown = true;
    renderResult(result, job);
  };
  const update = (fresh) => {
    const changed = !job || fresh.updated_at !== job.updated_at || fresh.state !== job.state || fresh.units.done !== job.units.done || fresh.units.in_progress !== job.units.in_progress;
    job = fresh;
    if (!changed) return;
    renderHead();
    scheduleUnits();
    showResult();
  };

  listeners.add((kind, data) => {
    if (kind === "snapshot") {
      const fresh = data.jobs.find((j) => j.id === id);
      if (fresh) update(fresh);
    } else if (data.job_id === id) {
      scheduleUnits();
    }
  });
  cleanup = () => clearTimeout(unitsTimer);
  api(`/api/v1/jobs/${id}`).then(update).catch((e) => {
    head.replaceChildren(el("div", {}, el("a", { href: "#/", class: "small" }, "← All jobs"), el("h1", {}, "Job not found")));
    summary.replaceChildren(el("p", { class: "error" }, e.message));
  });
}

function renderUnitMap(node, m, job) {
  // A Mandelbrot job's units are tiles in row order: lay the map out like the picture.
  let cols = Math.ceil(Math.sqrt(m.done.length * 2));
  if (job && job.app === "mandelbrot" && m.units_per_cell === 1 && job.params.tile) cols = Math.ceil(job.params.width / job.params.tile);
  cols = Math.max(1, Math.min(cols, 64));
  const cells = m.done.map((done, i) => {
    const size = Math.min(m.units_per_cell, m.unit_count - i * m.units_per_cell);
    let cls = "";
    if (m.failed[i]) cls = "failed";
    else if (done >= size) cls = "done";
    else if (m.running[i]) cls = "running";
    else if (done > 0) cls = "partial";
    else if (m.created[i]) cls = "created";
    const first = i * m.units_per_cell;
    const label = m.units_per_cell === 1 ? `unit ${first}` : `units ${first}–${first + size - 1}`;
    return el("span", { class: cls, title: `${label}: ${done} done, ${m.running[i]} running, ${m.failed[i]} failed` });
  });
  const grid = el("div", { class: "unitmap", role: "img", style: `grid-template-columns:repeat(${cols},minmax(0,1fr))`, "aria-label": `${m.done.reduce((a, b) => a + b, 0)} of ${m.unit_count} units done` }, cells);
  const key = (color, text) => el("span", {}, el("i", { style: `background:var(--${color})` }), text);
  node.replaceChildren(grid, el("div", { class: "legend" },
    key("ok", "done"), key("warn", "running"), key("idle", "waiting"), key("bad", "failed"), key("empty", "not created yet"),
    m.units_per_cell > 1 ? el("span", {}, `${fmtInt(m.units_per_cell)} units per cell`) : null));
}

function renderFigures(node, m, job) {
  const t = m.tasks;
  const created = m.created.reduce((a, b) => a + b, 0);
  const fig = (label, value, cls = "") => el("div", { class: cls }, el("dt", {}, label), el("dd", {}, value));
  node.replaceChildren(el("dl", { class: "figures" },
    fig("Valid", fmtInt(t.valid), "ok"),
    fig("Invalid", fmtInt(t.invalid), t.invalid ? "bad" : ""),
    fig("Inconclusive units", fmtInt(t.inconclusive_units), t.inconclusive_units ? "warn" : ""),
    fig("Awaiting quorum", fmtInt(t.pending)),
    fig("Errors", fmtInt(t.errors), t.errors ? "bad" : ""),
    fig("Timed out", fmtInt(t.timed_out), t.timed_out ? "warn" : ""),
    fig("In flight", fmtInt(t.in_flight)),
    fig("Unsent", fmtInt(t.unsent)),
    fig("Replicas per unit", created ? (t.total / created).toFixed(2) : "–")),
  el("p", { class: "note" }, `Quorum ${job ? job.redundancy.min_quorum : "?"}: a unit is accepted when that many results agree. Tasks: ${fmtInt(t.total)}.`));
}

async function renderResult(section, job) {
  section.hidden = false;
  const body = section.querySelector("div");
  const href = `/api/v1/jobs/${job.id}/result`;
  const safe = job.name.replace(/[^A-Za-z0-9._-]+/g, "-");
  if ((job.result_type || "").startsWith("image/")) {
    body.replaceChildren(
      el("img", { src: href, alt: `Result of ${job.name}`, id: "result-img" }),
      el("p", {}, el("a", { class: "button", href, download: `${safe}.png` }, "Download PNG")));
    return;
  }
  try {
    const value = await api(href);
    if (value instanceof Response) {
      // Not JSON after all: show what the content type says.
      const type = value.headers.get("content-type") || "";
      if (type.startsWith("image/")) { renderResult(section, { ...job, result_type: type }); return; }
      body.replaceChildren(el("a", { class: "button ghost", href, download: safe }, `Download (${type})`));
      return;
    }
    const kv = el("div", { class: "kv" });
    if (value && typeof value === "object" && !Array.isArray(value)) {
      // Module jobs name their values under "named".
      const named = value.named && typeof value.named === "object" ? value.named : {};
      for (const [k, v] of [...Object.entries(value), ...Object.entries(named)]) {
        if (typeof v === "number") kv.append(el("div", {}, el("span", {}, k.replace(/_/g, " ")), Number.isInteger(v) ? fmtInt(v) : String(v)));
      }
    }
    body.replaceChildren(kv, el("pre", { id: "result-json" }, JSON.stringify(value, null, 2)),
      el("a", { class: "button ghost", href, download: `${safe}.json` }, "Download JSON"));
  } catch (e) {
    body.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// Module apps are named by a 64-digit hash: the list shows its start.
function appLabel(app) {
  return app.startsWith("wasm:") ? `${app.slice(0, 17)}…` : app;
}

// ---------- submit ----------

function submitPage() {
  document.title = "Submit · SpareCycles";
  const examples = el("select", { id: "example" }, el("option", { value: "" }, "Choose an example…"));
  const file = el("input", { type: "file", id: "spec-file", accept: ".toml,.json,application/json,application/toml" });
  const spec = el("textarea", { id: "spec", spellcheck: "false", "aria-describedby": "spec-error spec-help", placeholder: 'name = "primes"\napp = "prime-count"\n\n[params]\nstart = 0\nend = 1_000_000\nunit_size = 100_000' });
  const error = el("div", { id: "spec-error", class: "error", role: "alert", "aria-live": "assertive" });
  const tokenField = el("div", { class: "field", id: "token-field" },
    el("label", { for: "token" }, "Admin or submitter token"),
    el("input", { type: "password", id: "token", autocomplete: "off", placeholder: "printed by the coordinator at its first start" }),
    el("div", { class: "note" }, "Asked once; kept in this browser's local storage."));
  const forget = el("button", { type: "button", class: "ghost", id: "forget-token", onclick: () => { localStorage.removeItem(TOKEN_KEY); syncToken(); } }, "Forget token");
  const submit = el("button", { type: "submit", id: "submit" }, "Submit job");
  const syncToken = () => { tokenField.hidden = !!token(); forget.hidden = !token(); };
  const form = el("form", { class: "panel", novalidate: true },
    el("h1", { style: "margin-bottom:1rem" }, "Submit a job"),
    el("div", { class: "row" },
      el("div", { class: "field" }, el("label", { for: "example" }, "Example from job-specs/"), examples),
      el("div", { class: "field" }, el("label", { for: "spec-file" }, "Or upload a file"), file)),
    el("div", { class: "field" }, el("label", { for: "spec" }, "Job spec (TOML or JSON)"), spec, error,
      el("div", { class: "note", id: "spec-help" }, "Apps: prime-count, collatz, monte-carlo-pi, mandelbrot, … — see the README for their parameters.")),
    tokenField,
    el("div", { class: "actions" }, submit, forget));
  main.append(form);
  syncToken();

  api("/api/v1/job-specs").then((list) => {
    for (const s of list) examples.append(el("option", { value: s.file }, `${s.file} (${s.app})`));
    examples.addEventListener("change", () => {
      const s = list.find((x) => x.file === examples.value);
      if (s) { spec.value = s.toml; error.textContent = ""; spec.removeAttribute("aria-invalid"); }
    });
  }).catch(() => {});
  file.addEventListener("change", async () => {
    if (file.files[0]) spec.value = await file.files[0].text();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    spec.removeAttribute("aria-invalid");
    const tokenInput = document.getElementById("token");
    if (!token()) {
      if (!tokenInput.value.trim()) { error.textContent = "Enter the admin (or submitter) token first."; tokenInput.focus(); return; }
      localStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    }
    const text = spec.value.trim();
    if (!text) { error.textContent = "Paste a job spec, pick an example or upload a file."; spec.focus(); return; }
    const json = text.startsWith("{");
    submit.disabled = true;
    try {
      const job = await api("/api/v1/jobs", { method: "POST", auth: true, body: text, headers: { "content-type": json ? "application/json" : "application/toml" } });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      if (err.status === 401) { localStorage.removeItem(TOKEN_KEY); syncToken(); }
      error.textContent = err.message;
      spec.setAttribute("aria-invalid", "true");
      spec.focus();
    } finally {
      submit.disabled = false;
    }
  });
}

// ---------- workers ----------

function workersPage() {
  document.title = "Workers · SpareCycles";
  const body = el("div", { class: "table-wrap", id: "workers" });
  const note = el("div", { class: "error", role: "alert" });
  const count = el("span", { class: "muted small", id: "workers-note" });
  main.append(el("section", { class: "panel" }, el("div", { class: "head" }, el("h1", {}, "Workers"), el("span", { class: "spacer" }), count), note, body));
  if (!token()) {
    const input = el("input", { type: "password", id: "workers-token", autocomplete: "off" });
    body.replaceChildren(el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); if (input.value.trim()) { localStorage.setItem(TOKEN_KEY, input.value.trim()); route(); } } },
      el("div", { class: "field" }, el("label", { for: "workers-token" }, "The workers list is for admins: token"), input),
      el("div", { class: "field", style: "flex:0" }, el("button", { type: "submit" }, "Show"))),
    el("p", { class: "note" }, "Everyone can see the ", el("a", { href: "#/leaderboard" }, "leaderboard"), "."));
    return;
  }
  let last = 0;
  const load = async () => {
    last = Date.now();
    try {
      const workers = await api("/api/v1/workers", { auth: true });
      note.textContent = "";
      renderWorkers(body, workers);
      count.textContent = `${workers.length} enrolled`;
    } catch (e) {
      if (e.status === 401) localStorage.removeItem(TOKEN_KEY);
      note.textContent = e.message;
    }
  };
  listeners.add((kind) => { if (kind === "snapshot" && Date.now() - last > 4000) load(); });
  load();
}

function renderWorkers(node, workers) {
  if (!workers.length) { node.replaceChildren(el("p", { class: "empty" }, "No workers yet. Start one with ", el("code", {}, "worker run --coordinator URL"), ".")); return; }
  workers.sort((a, b) => b.last_seen - a.last_seen);
  const online = (w) => Date.now() - w.last_seen < 90000;
  node.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["Name", "Owner", "OS", "Cores", "Apps", "Last seen", "In flight", "Valid", "Invalid", "Errors", "Credit", "Status"].map((h, i) => el("th", { class: i >= 6 && i <= 10 ? "num" : (i === 3 ? "num" : "") }, h)))),
    el("tbody", {}, workers.map((w) => el("tr", {},
      el("td", { class: "jobname" }, w.name),
      el("td", {}, w.owner || el("span", { class: "muted" }, "–")),
      el("td", {}, `${w.os}/${w.arch}`),
      el("td", { class: "num" }, w.cores),
      el("td", { class: "wrap small" }, w.apps.join(", ")),
      el("td", {}, online(w) ? el("span", { class: "badge yes" }, "online") : fmtAgo(w.last_seen)),
      el("td", { class: "num" }, fmtInt(w.in_flight)),
      el("td", { class: "num" }, fmtInt(w.valid)),
      el("td", { class: "num" }, fmtInt(w.invalid)),
      el("td", { class: "num" }, fmtInt(w.errors + (w.timeouts || 0))),
      el("td", { class: "num" }, fmtNum(w.credit, 1)),
      el("td", {}, w.banned ? badge("banned") : w.trusted ? el("span", { class: "badge yes" }, "trusted") : el("span", { class: "badge" }, "new")))))));
}

// ---------- leaderboard ----------

function leaderboardPage() {
  document.title = "Leaderboard · SpareCycles";
  const byWorker = el("div", { class: "table-wrap" });
  const byOwner = el("div", { class: "table-wrap" });
  main.append(el("h1", { style: "margin-bottom:1rem" }, "Leaderboard"),
    el("div", { class: "grid2" },
      el("section", { class: "panel" }, el("h2", {}, "By volunteer"), byOwner),
      el("section", { class: "panel" }, el("h2", {}, "By worker"), byWorker)));
  const table = (node, rows, owners) => {
    if (!rows.length) { node.replaceChildren(el("p", { class: "empty" }, "Nobody has earned credit yet.")); return; }
    node.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, el("th", { class: "num" }, "#"), el("th", {}, owners ? "Volunteer" : "Worker"), owners ? el("th", { class: "num" }, "Workers") : el("th", { class: "hide-narrow" }, "Owner"), el("th", { class: "num" }, "Valid"), el("th", { class: "num" }, "Credit"), el("th", { class: "num hide-narrow" }, "Recent/day"))),
      el("tbody", {}, rows.map((r, i) => el("tr", {},
        el("td", { class: "num muted" }, i + 1),
        el("td", { class: "jobname" }, r.name),
        owners ? el("td", { class: "num" }, fmtInt(r.workers)) : el("td", { class: "hide-narrow" }, r.owner || el("span", { class: "muted" }, "–")),
        el("td", { class: "num" }, fmtInt(r.valid)),
        el("td", { class: "num" }, fmtNum(r.credit, 1)),
        el("td", { class: "num hide-narrow" }, fmtNum(r.recent_credit || 0, 1)))))));
  };
  let last = 0;
  const load = async () => {
    last = Date.now();
    try {
      const board = await api("/api/v1/leaderboard");
      table(byWorker, board.workers, false);
      table(byOwner, board.owners, true);
    } catch (e) {
      byWorker.replaceChildren(el("p", { class: "error" }, e.message));
    }
  };
  listeners.add((kind) => { if (kind === "snapshot" && Date.now() - last > 4000) load(); });
  load();
}

// ---------- start ----------

route();
connect();
