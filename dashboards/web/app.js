// SpareCycles dashboard: lists jobs with live progress. Plain JS, no build step.
"use strict";

const tbody = document.querySelector("#jobs tbody");
const status = document.getElementById("status");
const preview = document.getElementById("preview");
const previewImg = document.getElementById("preview-img");
let delay = 1000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function progress(job) {
  const pct = job.units.total ? (100 * job.units.done) / job.units.total : 0;
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": job.units.total, "aria-valuenow": job.units.done });
  const fill = el("span");
  fill.style.width = pct.toFixed(1) + "%";
  bar.append(fill, el("em", {}, `${job.units.done} / ${job.units.total}`));
  return bar;
}

function resultCell(job) {
  if (job.state !== "completed") return job.error ? el("span", { class: "muted" }, job.error) : "";
  const href = `/api/v1/jobs/${job.id}/result`;
  return el("a", { href }, job.result_type === "image/png" ? "picture" : "JSON");
}

function render(jobs) {
  if (!jobs.length) return;
  tbody.replaceChildren(...jobs.map((job) => el("tr", { "data-job": job.id },
    el("td", {}, job.name, el("div", { class: "muted" }, job.id)),
    el("td", {}, job.app),
    el("td", { class: `state-${job.state}` }, job.state),
    el("td", {}, progress(job)),
    el("td", {}, job.units.done ? (job.tasks_created / Math.max(1, job.units.done + job.units.in_progress)).toFixed(2) : "–"),
    el("td", {}, resultCell(job)))));
  const pic = jobs.find((j) => j.state === "completed" && j.result_type === "image/png");
  if (pic) {
    const src = `/api/v1/jobs/${pic.id}/result`;
    if (previewImg.getAttribute("src") !== src) previewImg.setAttribute("src", src);
    preview.hidden = false;
  }
}

async function refresh() {
  try {
    const resp = await fetch("/api/v1/jobs?limit=50", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const body = await resp.json();
    render(body.jobs);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    const active = body.jobs.some((j) => !["completed", "failed", "canceled"].includes(j.state));
    delay = active ? 1000 : 5000;
  } catch (e) {
    status.textContent = `coordinator unreachable (${e.message}); retrying`;
    delay = Math.min(delay * 2, 30000);
  }
  setTimeout(refresh, delay);
}

refresh();
