// dnnprof report: the paper's figures and tables over /v1/analysis, interactive, no external assets.
"use strict";
const COLOURS = { cuda: "#2ca02c", jetson: "#ff7f0e", cpu: "#1f77b4" };
const $ = (id) => document.getElementById(id);
let rows = [];
let bounds = [];
let sortKey = "model", sortDir = 1;
let highlight = null;

function query() {
  const p = new URLSearchParams();
  if ($("device").value) p.set("device", $("device").value);
  if ($("precision").value) p.set("precision", $("precision").value);
  return p;
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function cellAt(row, bs) { return row.batches.find((c) => c.batch_size === bs) || null; }

// Filters can change faster than the three requests answer: only the newest load may draw.
let latestLoad = 0;

async function load() {
  const ticket = ++latestLoad;
  const bs = Number($("batch").value);
  const q = query();
  const bq = new URLSearchParams(q); bq.set("batch_size", bs);
  const [newRows, newBounds, t3] = await Promise.all([
    getJSON(`/v1/analysis/models?${q}`),
    getJSON(`/v1/analysis/throughput?${bq}`),
    getJSON(`/v1/analysis/table3?${bq}`),
  ]);
  if (ticket !== latestLoad) return;
  rows = newRows;
  bounds = newBounds;
  $("summary").textContent = `${rows.length} profiled model/device pairs`;
  const fig = $("figure").value;
  const dq = new URLSearchParams(bq); if ($("device").value) dq.set("device", $("device").value);
  $("png").href = `/v1/figures/${fig}.png?${dq}`;
  $("svg").href = `/v1/figures/${fig}.svg?${dq}`;
  drawChart(fig, bs);
  drawTable(bs);
  drawTable3(t3);
  // What the chart now shows, so a reader (or a test) can tell a finished redraw from the last one.
  Object.assign($("chart").dataset, { figure: fig, batch: String(bs), device: $("device").value });
}

function points(fig, bs) {
  const out = [];
  for (const r of rows) {
    const c = cellAt(r, bs);
    let x = null, y = null, size = 6;
    if (fig === "throughput") { x = c && c.images_per_s; y = r.top1; }
    else if (fig === "ball") { x = r.gflops; y = r.top1; size = Math.max(4, Math.sqrt(r.params / 1e6) * 3); }
    else if (fig === "density") { x = r.top1 != null ? r.top1 / (r.params / 1e6) : null; y = r.top1; }
    else if (fig === "memory") { x = r.param_file_mb; y = c && c.memory_mb; }
    if (x != null && y != null && x > 0) out.push({ r, c, x, y, size });
  }
  return out;
}

const LABELS = {
  throughput: ["images/s (log)", "top-1 (%)", true],
  ball: ["G-FLOPs", "top-1 (%)", false],
  density: ["top-1 per M params (log)", "top-1 (%)", true],
  memory: ["parameter file (MB)", "memory (MB)", false],
};

function svgEl(name, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function drawChart(fig, bs) {
  const svg = $("chart");
  svg.replaceChildren();
  const W = 900, H = 480, L = 60, R = 20, T = 20, B = 45;
  const pts = points(fig, bs);
  const [xlab, ylab, logx] = LABELS[fig];
  svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
  svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
  svgEl("text", { x: (W + L) / 2, y: H - 8, "text-anchor": "middle" }, svg).textContent = xlab;
  svgEl("text", { x: 14, y: (H - B) / 2, transform: `rotate(-90 14 ${(H - B) / 2})`, "text-anchor": "middle" }, svg)
    .textContent = ylab;
  if (!pts.length) {
    svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", id: "no-data" }, svg).textContent =
      "No profiles with these figures yet: profile a model below.";
    return;
  }
  const fx = (v) => (logx ? Math.log10(v) : v);
  let x0 = Math.min(...pts.map((p) => fx(p.x))), x1 = Math.max(...pts.map((p) => fx(p.x)));
  let y0 = Math.min(...pts.map((p) => p.y)), y1 = Math.max(...pts.map((p) => p.y));
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const px = (v) => L + ((fx(v) - x0) / (x1 - x0)) * (W - L - R - 20) + 10;
  const py = (v) => H - B - ((v - y0) / (y1 - y0)) * (H - T - B - 20) - 10;
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4, yv = y0 + ((y1 - y0) * i) / 4;
    const xr = logx ? 10 ** xv : xv;
    svgEl("text", { x: px(xr), y: H - B + 16, "text-anchor": "middle" }, svg).textContent = fmt(xr);
    svgEl("text", { x: L - 6, y: py(yv) + 4, "text-anchor": "end" }, svg).textContent = fmt(yv);
  }
  const clip = svgEl("clipPath", { id: "plot-area" }, svg);
  svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B }, clip);
  if (fig === "throughput") {
    for (const b of bounds) {
      if (b.slope == null || !b.points.length) continue;
      const xs = b.points.map((p) => p.images_per_s);
      const lo = Math.min(...xs), hi = Math.max(...xs);
      let d = "";
      for (let i = 0; i <= 50; i++) {
        const xv = lo * (hi / lo) ** (i / 50);
        d += `${i ? "L" : "M"}${px(xv).toFixed(1)},${py(b.intercept + b.slope * xv).toFixed(1)}`;
      }
      svgEl("path", { d, class: "bound", stroke: COLOURS[b.device] || "#888", "clip-path": "url(#plot-area)" }, svg);
    }
  }
  for (const p of pts) {
    const circle = svgEl("circle", {
      cx: px(p.x), cy: py(p.y), r: p.size, fill: COLOURS[p.r.device] || "#888",
      "data-model": p.r.model, "data-device": p.r.device,
    }, svg);
    if (highlight && highlight === p.r.model) circle.classList.add("focus");
    circle.addEventListener("mouseenter", (ev) => showTip(ev, p, bs));
    circle.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  }
}

function fmt(v) {
  if (v == null) return "–";
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

function showTip(ev, p, bs) {
  const r = p.r, c = p.c;
  const tip = $("tooltip");
  tip.textContent = [
    `${r.paper_name ? r.paper_name + " · " : ""}${r.model}`,
    `${r.target} (${r.device_name}) · ${r.precision}`,
    `params ${fmt(r.params / 1e6)} M · ${fmt(r.gflops)} G-FLOPs`,
    `top-1 ${fmt(r.top1)} %${r.accuracy_source ? " (" + r.accuracy_source + ")" : ""}`,
    c ? `batch ${bs}: ${fmt(c.ms_per_image)} ms/image · ${fmt(c.images_per_s)} images/s · ${fmt(c.memory_mb)} MB` : `batch ${bs}: not measured`,
  ].join("\n");
  const box = $("chart-box").getBoundingClientRect();
  tip.style.left = `${ev.clientX - box.left + 12}px`;
  tip.style.top = `${ev.clientY - box.top + 12}px`;
  tip.hidden = false;
}

function tableRows(bs) {
  return rows.map((r) => {
    const c = cellAt(r, bs);
    return {
      model: r.model, label: r.paper_name ? `${r.model} (${r.paper_name})` : r.model, device: r.device, target: r.target,
      precision: r.precision, params: r.params / 1e6, gflops: r.gflops, top1: r.top1, source: r.accuracy_source || "",
      ms: c ? c.ms_per_image : null, ips: c ? c.images_per_s : null, mem: c ? c.memory_mb : null,
      oom: c && c.status === "oom",
    };
  });
}

function drawTable(bs) {
  const data = tableRows(bs);
  data.sort((a, b) => {
    const va = a[sortKey], vb = b[sortKey];
    if (va == null && vb == null) return 0;
    if (va == null) return 1;
    if (vb == null) return -1;
    return (typeof va === "number" ? va - vb : String(va).localeCompare(String(vb))) * sortDir;
  });
  const body = $("models").querySelector("tbody");
  body.replaceChildren();
  for (const d of data) {
    const tr = document.createElement("tr");
    if (highlight === d.model) tr.classList.add("new");
    const cells = [d.label, d.target, d.precision, fmt(d.params), fmt(d.gflops), fmt(d.top1), d.source,
      d.oom ? "OOM" : fmt(d.ms), d.oom ? "OOM" : fmt(d.ips), d.oom ? "OOM" : fmt(d.mem)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = d.device;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  for (const th of $("models").querySelectorAll("th")) {
    th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir === -1);
  }
}

function drawTable3(t3) {
  const table = $("table3");
  const head = table.querySelector("thead"), body = table.querySelector("tbody");
  head.replaceChildren(); body.replaceChildren();
  for (const dev of t3) {
    const fps = [...new Set(dev.cells.map((c) => c.min_fps))];
    const mem = [...new Set(dev.cells.map((c) => c.max_memory_mb))];
    const hr = document.createElement("tr");
    [`${dev.target}: memory ≤ / images/s ≥`, ...fps.map((f) => `${f}`)].forEach((t) => {
      const th = document.createElement("th"); th.textContent = t; hr.appendChild(th);
    });
    head.appendChild(hr);
    for (const m of mem) {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.textContent = `${m} MB`; tr.appendChild(th);
      for (const f of fps) {
        const c = dev.cells.find((x) => x.max_memory_mb === m && x.min_fps === f);
        const td = document.createElement("td");
        td.textContent = c && c.model ? `${c.model} (${fmt(c.top1)} %)` : "–";
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }
}

async function submitProfile(ev) {
  ev.preventDefault();
  const status = $("job-status");
  const body = { model: $("model").value.trim() };
  if ($("form-device").value) body.device = $("form-device").value;
  const sizes = $("batch-sizes").value.split(",").map((s) => Number(s.trim())).filter((n) => n > 0);
  if (sizes.length) body.batch_sizes = sizes;
  const headers = { "content-type": "application/json" };
  if ($("api-key").value) headers["x-api-key"] = $("api-key").value;
  const r = await fetch("/v1/profiles", { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await r.json();
  if (!r.ok) {
    status.textContent = `${r.status}: ${answer.detail}` + (answer.suggestions ? ` — did you mean ${answer.suggestions.join(", ")}?` : "");
    status.dataset.state = "error";
    return;
  }
  status.dataset.state = "queued";
  status.textContent = `${answer.profile.settings.model} on ${answer.device}: ${answer.status}` + (answer.warning ? ` (${answer.warning})` : "");
  follow(answer.id);
}

async function follow(id) {
  const status = $("job-status");
  for (;;) {
    const rec = await getJSON(`/v1/profiles/${id}`);
    const p = rec.progress || {};
    const where = p.stage === "batch" ? ` (batch size ${p.batch_size}, ${p.batches_done}/${p.batches_total})` : p.stage ? ` (${p.stage})` : "";
    status.textContent = `${rec.settings.model} on ${rec.settings.device}: ${rec.status}${where}` + (rec.error ? ` — ${rec.error}` : "");
    status.dataset.state = rec.status;
    if (["succeeded", "failed", "cancelled"].includes(rec.status)) {
      highlight = rec.settings.model;
      await load();
      return;
    }
    await new Promise((res) => setTimeout(res, 700));
  }
}

for (const id of ["device", "precision", "batch", "figure"]) $(id).addEventListener("change", () => load());
for (const th of document.querySelectorAll("#models th[data-key]")) {
  th.addEventListener("click", () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1;
    sortKey = th.dataset.key;
    drawTable(Number($("batch").value));
  });
}
$("profile-form").addEventListener("submit", submitProfile);

// The device targets seen (GET /v1/devices) join the classes in both device menus; the paper's
// published devices only in the one that views (nothing can be sent to them).
async function addTargets() {
  const seen = await getJSON("/v1/devices");
  for (const id of ["device", "form-device"]) {
    const select = $(id);
    const have = new Set([...select.options].map((o) => o.value));
    for (const d of seen) {
      if (have.has(d.target) || (id === "form-device" && d.status === "published")) continue;
      const option = document.createElement("option");
      option.value = d.target;
      const note = { gone: " (gone)", published: " (the paper's figures)" }[d.status] || "";
      option.textContent = `${d.target}${note}`;
      select.appendChild(option);
    }
  }
}
addTargets().catch(() => {});
load().catch((e) => { $("summary").textContent = `could not load: ${e.message}`; });
