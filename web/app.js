// The aigc playground: completion and chat with streamed output, image generation, and training curves.
// Plain browser JavaScript against the server's own API; uPlot draws the charts.
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function num(id) {
  const v = $(id).value;
  return v === "" ? undefined : Number(v);
}

// The sampling controls as request fields (empty ones left to the server's defaults).
function sampling() {
  const body = {};
  for (const f of ["max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "presence_penalty",
                   "frequency_penalty", "seed"]) {
    const v = num(f);
    if (v !== undefined) body[f] = v;
  }
  const stop = $("stop").value;
  if (stop) body.stop = [stop.replace(/\\n/g, "\n")];
  return body;
}

async function errorText(res) {
  try {
    return (await res.json()).error.message;
  } catch (e) {
    return res.status + " " + res.statusText;
  }
}

// POSTs a streaming request and calls onChunk with each parsed Server-Sent Event until [DONE].
async function streamSSE(path, body, onChunk, signal) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorText(res));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      if (!event.startsWith("data: ")) continue;  // comments (keep-alive probes)
      const data = event.slice(6);
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      onChunk(chunk);
    }
  }
}

function showStats(tokens, t0, firstAt) {
  const s = (performance.now() - t0) / 1000;
  const ttft = firstAt ? ((firstAt - t0) / 1000).toFixed(2) + " s to first text, " : "";
  $("stats").textContent = `${tokens} chunks, ${ttft}${(tokens / s).toFixed(1)} chunks/s`;
}

// ---- completion ----
let controller = null;
$("generate").onclick = async () => {
  const out = $("completion-output");
  out.textContent = "";
  out.classList.remove("error");
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop-generate").disabled = false;
  const t0 = performance.now();
  let chunks = 0, firstAt = 0;
  try {
    await streamSSE("/v1/completions", { prompt: $("prompt").value, stream: true, ...sampling() }, (c) => {
      const text = c.choices[0].text;
      if (!text) return;
      if (!firstAt) firstAt = performance.now();
      out.textContent += text;
      showStats(++chunks, t0, firstAt);
    }, controller.signal);
  } catch (e) {
    if (e.name !== "AbortError") {
      out.textContent += "\n[" + e.message + "]";
      out.classList.add("error");
    }
  }
  $("generate").disabled = false;
  $("stop-generate").disabled = true;
};
$("stop-generate").onclick = () => controller && controller.abort();

// ---- chat ----
let messages = [];
function drawChat() {
  const log = $("chat-log");
  log.innerHTML = "";
  for (const m of messages) {
    const div = document.createElement("div");
    div.className = "msg";
    const who = document.createElement("b");
    who.textContent = m.role === "user" ? "You: " : "Assistant: ";
    div.append(who, document.createTextNode(m.content));
    log.append(div);
  }
}
$("chat-send").onclick = async () => {
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "" };
  messages.push(reply);
  drawChat();
  const system = $("chat-system").value.trim();
  const sent = (system ? [{ role: "system", content: system }] : []).concat(messages.slice(0, -1));
  try {
    await streamSSE("/v1/chat/completions", { messages: sent, stream: true, ...sampling() }, (c) => {
      reply.content += c.choices[0].delta.content || "";
      drawChat();
    });
  } catch (e) {
    reply.content += "[" + e.message + "]";
    drawChat();
  }
  reply.content = reply.content.trim();
  drawChat();
};
$("chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter") $("chat-send").onclick(); });
$("chat-clear").onclick = () => { messages = []; drawChat(); };

// ---- images ----
$("image-generate").onclick = async () => {
  const status = $("image-status");
  status.textContent = "generating...";
  status.classList.remove("error");
  const body = { n: num("image-n") || 16, response_format: "b64_json" };
  if ($("image-class").value) body.prompt = $("image-class").value;
  if (num("image-seed") !== undefined) body.seed = num("image-seed");
  if (num("image-steps") !== undefined) body.steps = num("image-steps");
  const t0 = performance.now();
  const res = await fetch("/v1/images/generations", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) {
    status.textContent = await errorText(res);
    status.classList.add("error");
    return;
  }
  const data = (await res.json()).data;
  const grid = $("image-grid");
  grid.innerHTML = "";
  for (const d of data) {
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + d.b64_json;
    grid.append(img);
  }
  status.textContent = `${data.length} images in ${((performance.now() - t0) / 1000).toFixed(2)} s`;
};

// ---- training curves ----
let plots = [];
async function loadRuns() {
  const res = await fetch("/runs", { headers: headers() });
  if (!res.ok) { $("run-status").textContent = await errorText(res); return; }
  const { runs } = await res.json();
  const sel = $("run-select");
  const keep = sel.value;
  sel.innerHTML = "";
  for (const r of runs) sel.append(new Option(r, r));
  if (runs.includes(keep)) sel.value = keep;
  $("run-status").textContent = runs.length ? "" : "no runs with a metrics.jsonl";
  if (runs.length) drawRun(sel.value);
}

async function drawRun(name) {
  const res = await fetch("/runs/" + encodeURIComponent(name) + "/metrics", { headers: headers() });
  if (!res.ok) { $("run-status").textContent = await errorText(res); return; }
  const rows = (await res.json()).metrics.filter((r) => typeof r.step === "number");
  for (const p of plots) p.destroy();
  plots = [];
  const charts = $("charts");
  charts.innerHTML = "";
  // One chart per numeric field; rows without the field (e.g. validation every N steps) are gaps.
  const fields = [...new Set(rows.flatMap((r) => Object.keys(r)))]
    .filter((f) => f !== "step" && rows.some((r) => typeof r[f] === "number"));
  $("run-status").textContent = `${rows.length} rows`;
  for (const f of fields) {
    const pts = rows.filter((r) => typeof r[f] === "number");
    const div = document.createElement("div");
    div.className = "chart";
    charts.append(div);
    if (typeof uPlot === "undefined") { div.textContent = f + ": charts need uPlot (run scripts/setup.sh)"; continue; }
    plots.push(new uPlot({ title: f, width: 420, height: 220, scales: { x: { time: false } },
                           series: [{ label: "step" }, { label: f, stroke: "#4a7be0", width: 1.5 }] },
                         [pts.map((r) => r.step), pts.map((r) => r[f])], div));
  }
}
$("run-refresh").onclick = loadRuns;
$("run-select").onchange = () => drawRun($("run-select").value);

// ---- tabs and start-up ----
for (const b of document.querySelectorAll("nav button")) {
  b.onclick = () => {
    for (const x of document.querySelectorAll("nav button, .tab")) x.classList.remove("active");
    b.classList.add("active");
    $(b.dataset.tab).classList.add("active");
    if (b.dataset.tab === "training") loadRuns();
  };
}

(async () => {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (!res.ok) return;
    const models = (await res.json()).data;
    $("model-name").textContent = models.map((m) => m.id).join(" · ");
    const image = models.find((m) => m.kind);
    for (const c of (image && image.classes) || []) $("image-class").append(new Option(c, c));
    if (!image) $("image-status").textContent = "this server has no image model (start it with --image-ckpt)";
  } catch (e) { /* the server will say more on the first request */ }
})();
