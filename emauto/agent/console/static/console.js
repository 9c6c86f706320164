// emauto console: one WebSocket of live updates, a few fetches, canvas plots. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
const data = { generation: -1, steps: [], knobs: [], units: {} };
window.__console = data;  // what the plots show: read by tests
// [frame id, time its pixels were handed to the screen (ms since the epoch)]: read by tests
window.__painted = [];
let shownFrame = 0;
let loading = false;
let pending = false;
let lastStatus = null;

// ------------------------------------------------------------------ requests

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Emauto": "1" },
    body: JSON.stringify(body || {}),
  });
  return response.json();
}

function showError(reply, where) {
  $(where).textContent = reply.ok ? "" : `${reply.error.type}: ${reply.error.message}`;
}

for (const button of document.querySelectorAll("button[data-command]")) {
  button.addEventListener("click", async () => {
    const reply = await post(`/api/control/${button.dataset.command}`);
    showError(reply, "control-error");
    if (reply.ok) showStatus(reply.status);
  });
}

for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", async () => {
    const reply = await post("/api/answer", { choice: button.dataset.choice });
    showError(reply, "control-error");
    if (reply.ok) showStatus(reply.status);
  });
}

$("submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = $("submit-kind").value;
  const step = { kind, name: kind };
  if (kind === "align_probe") {
    step.policy = $("submit-policy").value;
    step.max_acquisitions = Number($("submit-frames").value);
    step.detune = $("submit-detune").checked;
  }
  const reply = await post("/api/submit", { name: `console-${kind}`, plan: [step] });
  $("submit-result").textContent = reply.ok
    ? `queued (${reply.status.queue.length} waiting)`
    : `${reply.error.type}: ${reply.error.message}`;
  if (reply.ok) showStatus(reply.status);
});

async function loadRegistries() {
  const registries = await (await fetch("/api/registries")).json();
  for (const [select, names] of [["submit-kind", registries.tasks],
                                 ["submit-policy", registries.policies]]) {
    $(select).replaceChildren(...names.map((name) => new Option(name, name)));
  }
}

async function loadSessions() {
  const sessions = await (await fetch("/api/sessions")).json();
  $("session-list").replaceChildren(...sessions.map((s) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = s.report;
    link.target = "_blank";
    link.textContent = s.name;
    item.append(link, ` ${s.exit_status || "running"}`);
    return item;
  }));
}
$("sessions-refresh").addEventListener("click", loadSessions);

// ------------------------------------------------------------------ the frame

async function loadFrame() {
  if (loading) { pending = true; return; }
  loading = true;
  try {
    do {
      pending = false;
      const response = await fetch("/frame/latest.png", { cache: "no-store" });
      if (!response.ok) continue;
      const id = Number(response.headers.get("X-Frame-Id"));
      if (id <= shownFrame) continue;
      const url = URL.createObjectURL(await response.blob());
      const image = new Image();
      image.src = url;
      await image.decode();
      const old = $("frame").src;
      $("frame").src = url;
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      await new Promise((resolve) => requestAnimationFrame(resolve));
      shownFrame = id;
      $("frame-id").textContent = `#${id}`;
      $("frame-id").dataset.frameId = String(id);
      window.__painted.push([id, performance.timeOrigin + performance.now()]);
    } while (pending);
  } finally {
    loading = false;
  }
}

// a click on the picture labels the patch there (the class typed above) for the few-shot
// classifier; the daemon refuses it if a newer frame has replaced this one
$("label-form").addEventListener("submit", (event) => event.preventDefault());
$("frame").addEventListener("click", async (event) => {
  const name = $("label-class").value.trim();
  if (!name) {
    $("label-result").textContent = "type a class name first, then click on the picture";
    return;
  }
  const picture = $("frame");
  const reply = await post("/api/label", {
    label: name,
    frame_id: shownFrame,
    x: event.offsetX / picture.clientWidth,
    y: event.offsetY / picture.clientHeight,
  });
  $("label-result").textContent = reply.ok
    ? `labelled "${reply.status.label.label}" on frame #${shownFrame}`
    : `${reply.error.type}: ${reply.error.message}`;
});

// ------------------------------------------------------------------ plots

function plot(canvas, series, label) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 58, bottom = 18, top = 16;
  ctx.clearRect(0, 0, w, h);
  const points = series.flatMap((s) => s.points);
  ctx.fillStyle = "#222";
  ctx.font = "11px sans-serif";
  ctx.fillText(label, left, 11);
  if (points.length === 0) return;
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => left + (x - x0) / (x1 - x0) * (w - left - 6);
  const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(left, top, w - left - 6, h - top - bottom);
  ctx.fillText(y1.toPrecision(3), 2, top + 8);
  ctx.fillText(y0.toPrecision(3), 2, h - bottom);
  ctx.fillText(String(x0), left, h - 4);
  ctx.fillText(String(x1), w - 40, h - 4);
  series.forEach((s, i) => {
    ctx.strokeStyle = s.color || COLORS[i % COLORS.length];
    ctx.beginPath();
    s.points.forEach(([x, y], j) => (j ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
    ctx.stroke();
  });
}

function scaled(unit) {
  if (unit === "m") return [1e9, "nm"];
  if (unit === "rad") return [1e3, "mrad"];
  return [1, unit || ""];
}

function drawPlots() {
  const steps = data.steps;
  plot($("plot-reward"), [{ points: steps.filter((p) => p.reward !== null).map((p) => [p.n, p.reward]) }],
       "objective (reward) per step");
  plot($("plot-strehl"), [{ points: steps.filter((p) => p.strehl !== null).map((p) => [p.n, p.strehl]), color: COLORS[2] }],
       "Strehl ratio per step");
  const acquisitions = data.knobs.filter((p) => p.kind === "acquire");
  plot($("plot-dose"), [{ points: acquisitions.map((p) => [p.frame, p.dose_e]), color: COLORS[3] }],
       "cumulative dose (electrons) per frame");
  const names = Object.keys(data.knobs.length ? data.knobs[data.knobs.length - 1].knobs : {});
  const moving = names.filter((name) => {
    const values = data.knobs.map((p) => p.knobs[name]).filter((v) => v !== null);
    return values.length && Math.max(...values) !== Math.min(...values);
  }).slice(0, COLORS.length);
  const holder = $("knob-plots");
  const canvases = moving.map((name, i) => {
    let canvas = holder.querySelector(`canvas[data-knob="${name}"]`);
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.width = 420;
      canvas.height = 70;
      canvas.dataset.knob = name;
    }
    const [factor, unit] = scaled(data.units[name]);
    const points = data.knobs.filter((p) => p.knobs[name] !== null)
      .map((p) => [p.n, p.knobs[name] * factor]);
    plot(canvas, [{ points, color: COLORS[i] }], `${name} (${unit})`);
    return canvas;
  });
  holder.replaceChildren(...canvases);
  $("knob-legend").textContent = moving.length ? "" : "no knob has moved in this plan yet";
}

// ------------------------------------------------------------------ status and updates

function showStatus(status) {
  if (lastStatus && lastStatus.history.length !== status.history.length) loadSessions();
  lastStatus = status;
  $("state").textContent = status.state;
  $("state").dataset.state = status.state;
  $("reason").textContent = status.reason || "";
  const link = status.link || {};
  $("link").textContent = link.state && link.state !== "none" ? `link ${link.state}` : "";
  $("plan").textContent = status.plan ? `${status.plan.id} ${status.plan.name}` : "–";
  $("task").textContent = status.task || "–";
  $("progress").textContent = `${status.progress.done} / ${status.progress.total}`;
  const state = status.state;
  const asking = Boolean(status.question);
  $("pause").disabled = state !== "running";
  $("resume").disabled = state !== "paused" || asking;
  $("abort").disabled = !(state === "running" || state === "paused");
  $("reset").disabled = state !== "tripped";
  $("question").hidden = !asking;
  $("question").dataset.questionId = asking ? String(status.question.id) : "";
  $("question-text").textContent = asking ? status.question.text : "";
  $("queue-list").replaceChildren(...status.queue.map((p) => {
    const item = document.createElement("li");
    item.textContent = `${p.id} ${p.name}: ${p.tasks.join(", ")} (${p.source})`;
    return item;
  }));
  $("history-list").replaceChildren(...status.history.map((p) => {
    const item = document.createElement("li");
    item.textContent = `${p.id} ${p.name}: ${p.exit_status}${p.error ? " — " + p.error : ""}`;
    return item;
  }));
}

function onMessage(message) {
  if (message.status) showStatus(message.status);
  if (message.generation !== undefined) {
    if (message.generation !== data.generation) {
      data.generation = message.generation;
      data.steps = [];
      data.knobs = [];
    }
    data.units = message.units || data.units;
    data.steps.push(...message.steps);
    data.knobs.push(...message.knobs);
    if (message.steps.length || message.knobs.length) scheduleDraw();
    const log = $("log-lines");
    for (const line of message.log) {
      const time = new Date(line.t * 1000).toLocaleTimeString();
      log.textContent += `${time} ${line.level} ${line.message}\n`;
    }
    if (message.log.length) log.scrollTop = log.scrollHeight;
  }
  if (message.frame) loadFrame();
}

let drawScheduled = false;
function scheduleDraw() {
  if (drawScheduled) return;
  drawScheduled = true;
  setTimeout(() => { drawScheduled = false; drawPlots(); }, 200);
}

// The WebSocket carries every change; should a message be lost or the socket stall, the
// state is read over HTTP once the socket has been quiet for STATUS_POLL_MS.
const STATUS_POLL_MS = 2000;
let lastMessageAt = 0;

async function pollStatus() {
  if (Date.now() - lastMessageAt < STATUS_POLL_MS) return;
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (response.ok) showStatus(await response.json());
  } catch (error) {
    // the daemon is away: the socket's own retry says so
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.onopen = () => { $("connection").textContent = "live"; };
  socket.onmessage = (event) => {
    lastMessageAt = Date.now();
    onMessage(JSON.parse(event.data));
  };
  socket.onclose = () => {
    $("connection").textContent = "offline (retrying)";
    setTimeout(connect, 1000);
  };
}

loadRegistries();
loadSessions();
connect();
setInterval(pollStatus, STATUS_POLL_MS);
