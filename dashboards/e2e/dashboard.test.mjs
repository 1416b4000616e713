// End-to-end test of the web dashboard in headless Chromium (playwright-core driving Debian's
// /usr/bin/chromium). Starts the real coordinator and two workers on 127.0.0.1 with free ports,
// submits a bad spec and a Mandelbrot job through the Submit page, watches the progress bar
// advance live (no reload), and checks the picture appears. Screenshots go to
// target/dashboard-e2e/. Run by .ci/run after `cargo build --bins`:
//
//   node dashboards/e2e/dashboard.test.mjs
//
// Env: COORDINATOR_BIN, WORKER_BIN (default target/debug/*), CHROMIUM (default /usr/bin/chromium).
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const COORDINATOR = process.env.COORDINATOR_BIN || join(ROOT, "target/debug/coordinator");
const WORKER = process.env.WORKER_BIN || join(ROOT, "target/debug/worker");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = join(ROOT, "target/dashboard-e2e");
const TOKEN = "e2e-admin-token-0123456789abcdef";
const TIMEOUT = 120_000;

const tmp = mkdtempSync(join(tmpdir(), "sparecycles-e2e-"));
const children = [];
let browser = null;
let lastUrl = null;

function log(...args) {
  console.log(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...args);
}

function startCoordinator() {
  const child = spawn(COORDINATOR, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(tmp, "data"), "--admin-token", TOKEN], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "info" },
  });
  children.push(child);
  let stderr = "";
  child.stderr.on("data", (d) => { stderr = (stderr + d).slice(-20000); });
  child.logs = () => stderr;
  return new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error(`coordinator did not start:\n${stderr}`)), 60_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(timer); ok({ child, url: m[1] }); }
    });
    child.on("exit", (code) => fail(new Error(`coordinator exited with ${code}:\n${stderr}`)));
  });
}

function startWorker(url, name) {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const child = spawn(WORKER, ["run", "--coordinator", url, "--state-dir", dir, "--name", name, "--owner", "e2e-team",
    "--cores", "1", "--heartbeat-secs", "1", "--idle-minutes", "0", "--pause-on-battery", "false"], {
    stdio: ["ignore", "ignore", "ignore"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  children.push(child);
  return child;
}

async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log("screenshot", path);
}

async function main() {
  for (const bin of [COORDINATOR, WORKER, CHROMIUM]) {
    assert.ok(existsSync(bin), `${bin} is missing (build with cargo build --bins; install chromium)`);
  }
  mkdirSync(SHOTS, { recursive: true });
  const { url, child: coordinator } = await startCoordinator();
  log("coordinator at", url);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "light" });
  // Only loopback: refuse anything else the page might try to fetch.
  await context.route((u) => !/^https?:\/\/(127\.0\.0\.1|localhost)[:/]/.test(u.href) && !u.href.startsWith("data:"), (r) => r.abort());
  const page = await context.newPage();
  lastPage = page;
  lastUrl = url;
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.setDefaultTimeout(TIMEOUT);

  await page.goto(url + "/");
  await page.waitForSelector("#live[data-state=live]");
  await page.waitForSelector("#fleet .stat");
  log("dashboard is live");

  // --- A bad spec shows the coordinator's error next to the input. ---
  await page.click('nav a[href="#/submit"]');
  await page.fill("#token", TOKEN);
  const bad = 'name = "bad tiles"\napp = "mandelbrot"\n\n[params]\nwidth = 640\nheight = 480\ncenter_re = -0.5\ncenter_im = 0.0\nscale = 3.0\nmax_iter = 100\ntile = 0\n';
  await page.fill("#spec", bad);
  await page.click("#submit");
  await page.waitForFunction(() => document.getElementById("spec-error").textContent.trim().length > 0);
  const shown = (await page.textContent("#spec-error")).trim();
  const direct = await fetch(url + "/api/v1/jobs", { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/toml" }, body: bad });
  assert.equal(direct.status, 422);
  const problem = await direct.json();
  assert.equal(shown, problem.detail, "the page shows the coordinator's own message");
  assert.equal(await page.getAttribute("#spec", "aria-invalid"), "true");
  // The error sits right after the textarea.
  assert.equal(await page.evaluate(() => document.getElementById("spec").nextElementSibling.id), "spec-error");
  log("bad spec refused with:", shown);
  await shot(page, "submit-error");

  // --- Workers join; the overview shows them. ---
  startWorker(url, "alpha");
  startWorker(url, "beta");

  // --- Submit a Mandelbrot job through the page. ---
  await page.evaluate(() => { window.__noReload = 42; });
  const good = [
    'name = "seahorse-e2e"', 'app = "mandelbrot"', "", "[params]",
    "width = 1024", "height = 768", "center_re = -0.7453", "center_im = 0.1127", "scale = 0.0065",
    "max_iter = 6000", "tile = 32", "", "[redundancy]", "min_quorum = 2", "",
  ].join("\n");
  await page.fill("#spec", good);
  await page.click("#submit");
  await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
  const jobId = page.url().split("/").pop();
  log("submitted job", jobId);

  // --- The progress bar advances without a reload. ---
  const bar = `.progress[data-job="${jobId}"]`;
  await page.waitForSelector(bar);
  const total = Number(await page.getAttribute(bar, "aria-valuemax"));
  assert.equal(total, 768);
  const seen = new Set();
  let midShot = false;
  const deadline = Date.now() + 240_000;
  for (;;) {
    const now = Number(await page.getAttribute(bar, "aria-valuenow"));
    seen.add(now);
    if (!midShot && now > total * 0.15 && now < total) {
      await shot(page, "job-running");
      midShot = true;
    }
    if (now === total) break;
    assert.ok(Date.now() < deadline, `job did not finish; progress values seen: ${[...seen]}\n${coordinator.logs()}`);
    await page.waitForTimeout(100);
  }
  const partial = [...seen].filter((v) => v > 0 && v < total);
  assert.ok(partial.length >= 1, `saw intermediate progress (values: ${[...seen].sort((a, b) => a - b)})`);
  log(`progress advanced through ${seen.size} values, ${partial.length} of them partial`);

  // --- The Mandelbrot picture appears when the job completes. ---
  await page.waitForSelector("#result-img");
  await page.waitForFunction(() => {
    const img = document.getElementById("result-img");
    return img && img.complete && img.naturalWidth > 0;
  });
  const size = await page.evaluate(() => {
    const img = document.getElementById("result-img");
    return [img.naturalWidth, img.naturalHeight];
  });
  assert.deepEqual(size, [1024, 768]);
  assert.equal(await page.evaluate(() => window.__noReload), 42, "the page never reloaded");
  const download = await page.getAttribute('#result a[download]', "href");
  assert.equal(download, `/api/v1/jobs/${jobId}/result`);
  const cells = await page.$$eval("#unitmap .unitmap span.done", (s) => s.length);
  assert.equal(cells, 768, "every unit shows as done in the unit map");
  // Every unit has at least one valid result (adaptive replication may accept trusted workers'
  // results alone).
  await page.waitForFunction(() => Number(document.querySelector("#figures dl div:first-child dd").textContent.replace(/,/g, "")) >= 768);
  await page.waitForSelector(".badge.completed");
  await shot(page, "job-completed");

  // --- Overview, leaderboard, workers (admin), phone width, dark theme. ---
  await page.click('nav a[href="#/"]');
  await page.waitForSelector(`tr[data-job="${jobId}"] .badge.completed`);
  await page.waitForFunction(() => /[1-9]/.test(document.querySelector("#fleet .stat .value").textContent));
  await shot(page, "overview");
  await page.click('nav a[href="#/leaderboard"]');
  await page.waitForSelector("text=e2e-team");
  await shot(page, "leaderboard");
  await page.click('nav a[href="#/workers"]');
  await page.waitForSelector("#workers td.jobname");
  assert.equal(await page.$$eval("#workers tbody tr", (r) => r.length), 2);
  await shot(page, "workers");

  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("#theme");
  await page.click('nav a[href="#/"]');
  await page.waitForSelector(`tr[data-job="${jobId}"]`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling at phone width (overflow ${overflow}px)`);
  await shot(page, "overview-phone-dark");
  await page.goto(`${url}/#/jobs/${jobId}`);
  await page.waitForSelector("#result-img");
  await shot(page, "job-phone-dark");

  // --- Keyboard: the skip link and the nav are reachable with Tab. ---
  await page.reload();
  await page.waitForSelector("#result-img");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  for (let i = 0; i < 5; i++) await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Leaderboard");
  await page.keyboard.press("Enter");
  await page.waitForURL(/#\/leaderboard$/);

  // --- A submitter submits through the page and cannot touch the admin's job. ---
  const admin = { authorization: `Bearer ${TOKEN}` };
  const made = await fetch(url + "/api/v1/tokens", { method: "POST", headers: { ...admin, "content-type": "application/json" }, body: JSON.stringify({ name: "e2e submitter" }) });
  assert.equal(made.status, 201);
  const submitter = (await made.json()).token;
  const held = await fetch(url + "/api/v1/jobs", { method: "POST", headers: { ...admin, "content-type": "application/toml" }, body: 'name = "admin held"\napp = "collatz"\n\n[params]\nstart = 1\nend = 1000000\nunit_size = 1000\n' });
  const heldId = (await held.json()).id;
  assert.equal((await fetch(`${url}/api/v1/jobs/${heldId}/pause`, { method: "POST", headers: admin })).status, 200);
  await page.evaluate((t) => localStorage.setItem("sparecycles.token", t), submitter);
  await page.goto(`${url}/#/jobs/${heldId}`);
  await page.click("text=Resume");
  await page.waitForFunction(() => document.getElementById("act-error").textContent.includes("no job with id"));
  await page.click('nav a[href="#/submit"]');
  await page.fill("#spec", 'name = "mine"\napp = "collatz"\n\n[params]\nstart = 1\nend = 1000\nunit_size = 100\n');
  await page.click("#submit");
  await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
  const mine = page.url().split("/").pop();
  const listed = await (await fetch(url + "/api/v1/jobs", { headers: { authorization: `Bearer ${submitter}` } })).json();
  assert.deepEqual(listed.jobs.map((j) => j.id), [mine], "a submitter lists its own jobs only");
  assert.equal((await (await fetch(`${url}/api/v1/jobs/${heldId}`)).json()).state, "paused", "the admin's job was not resumed");
  log("a submitter submitted", mine, "and was refused the admin's job");

  assert.deepEqual(pageErrors, [], "no JavaScript errors");
  log("all dashboard checks passed");
}

let failed = false;
let lastPage = null;
try {
  await main();
} catch (e) {
  failed = true;
  console.error(e);
  if (lastPage) await shot(lastPage, "failure").catch(() => {});
  if (lastUrl) console.error(await (await fetch(lastUrl + "/api/v1/jobs")).text().catch(() => ""));
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 300));
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
