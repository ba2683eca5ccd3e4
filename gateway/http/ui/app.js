// The status page: polls the admin JSON endpoints every two seconds and draws them. The admin key
// lives in this tab's sessionStorage only (never in a URL); every call sends it as a bearer token.
"use strict";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);
let latest = { requests: [] };

function key() { return sessionStorage.getItem("llm-gateway-admin-key") || ""; }

async function call(path, method = "GET") {
  const headers = key() ? { Authorization: "Bearer " + key() } : {};
  const response = await fetch(path, { method, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || response.statusText;
    throw new Error(`${method} ${path}: ${response.status} ${message}`);
  }
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function button(td, label, action) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", (event) => { event.stopPropagation(); act(action); });
  td.appendChild(b);
}

async function act(action) {
  try {
    const answer = await call(action, "POST");
    showResult(JSON.stringify(answer, null, 2));
  } catch (error) {
    showResult(error.message);
  }
  refresh();
}

function showResult(text) { $("reload-result").hidden = false; $("reload-result").textContent = text; }

function drawReplicas(workers) {
  const body = $("replicas").tBodies[0];
  body.replaceChildren();
  for (const w of workers.data) {
    const row = body.insertRow();
    row.dataset.replica = `${w.model}[${w.replica}]`;
    [w.model, w.replica, w.kind, w.state, w.device, w.in_flight, w.requests_served, w.restarts,
     w.load_seconds === null ? "" : w.load_seconds.toFixed(2)].forEach((v, i) =>
      cell(row, v, i === 3 ? "state-" + w.state : ""));
    cell(row, w.error, "error");
    const actions = cell(row, "");
    if (w.kind === "local") button(actions, "Restart", `/admin/workers/${w.model}/${w.replica}/restart`);
  }
}

function meanWait(model, requests) {
  const waits = requests.filter((r) => r.model === model).map((r) => r.queue_wait_ms);
  return waits.length ? (waits.reduce((a, b) => a + b, 0) / waits.length).toFixed(1) : "";
}

function drawModels(models, queued, requests) {
  const body = $("models").tBodies[0];
  body.replaceChildren();
  for (const m of models.data) {
    if (!(m.id in queued)) continue;  // an alias: its model has its own row
    const row = body.insertRow();
    [m.id, m.status ? m.status.value : "", queued[m.id], meanWait(m.id, requests.data)]
      .forEach((v) => cell(row, v));
    const actions = cell(row, "");
    button(actions, "Load", `/admin/models/${m.id}/load`);
    button(actions, "Unload", `/admin/models/${m.id}/unload`);
  }
}

function drawRequests(requests) {
  latest.requests = requests.data;
  const body = $("requests").tBodies[0];
  body.replaceChildren();
  requests.data.forEach((r, index) => {
    const row = body.insertRow();
    row.dataset.index = index;
    const tokens = r.completion_tokens === null ? "" : `${r.prompt_tokens} + ${r.completion_tokens}`;
    [new Date(r.time * 1000).toLocaleTimeString(), r.key, r.model, r.replica, r.status,
     r.queue_wait_ms, r.ttft_ms, tokens, r.duration_ms].forEach((v) => cell(row, v));
    row.addEventListener("click", () => showRequest(index));
  });
}

function showRequest(index) {
  const r = latest.requests[index];
  const lines = [`request ${r.request_id}: ${r.endpoint} on ${r.model}[${r.replica}], status ${r.status}`,
    `waited in the queue  ${r.queue_wait_ms} ms`,
    `first token after    ${r.ttft_ms === null ? "(not a stream)" : r.ttft_ms + " ms"}`,
    `done after           ${r.duration_ms} ms`,
    `tokens               ${r.prompt_tokens} prompt, ${r.completion_tokens} completion`];
  $("request-detail").hidden = false;
  $("request-detail").textContent = lines.join("\n");
}

function sparkline(canvas, values) {
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1, ...values.filter((v) => v !== null));
  g.strokeStyle = "#3b5bdb";
  g.beginPath();
  values.forEach((v, i) => {
    const x = values.length < 2 ? 0 : (i / (values.length - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 2 - ((v || 0) / top) * (canvas.height - 14);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#556";
  g.fillText(`max ${Math.round(top * 10) / 10}`, 4, 10);
}

function drawStats(stats) {
  const seconds = stats.data.slice(-180);  // the last three minutes
  sparkline($("chart-requests"), seconds.map((s) => s.requests));
  sparkline($("chart-ttft"), seconds.map((s) => s.ttft_ms));
  sparkline($("chart-queued"), seconds.map((s) => s.queued));
  const up = Math.round(Date.now() / 1000 - stats.started_at);
  $("facts").textContent = `version ${stats.version}, config v${stats.config_version}, up ${up} s`;
}

async function refresh() {
  try {
    const [workers, models, requests, stats] = await Promise.all([
      call("/admin/workers"), call("/v1/models"), call("/admin/requests?limit=25"),
      call("/admin/stats")]);
    drawReplicas(workers);
    drawModels(models, workers.queued, requests);
    drawRequests(requests);
    drawStats(stats);
    $("problem").hidden = true;
  } catch (error) {
    $("problem").hidden = false;
    $("problem").textContent = error.message;
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("llm-gateway-admin-key", $("key").value);
  $("key").value = "";
  refresh();
});
$("forget").addEventListener("click", () => { sessionStorage.removeItem("llm-gateway-admin-key"); refresh(); });
$("reload").addEventListener("click", () => act("/admin/reload"));
refresh();
setInterval(refresh, POLL_MS);
