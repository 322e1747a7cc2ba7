// dnnprof report: the paper's figures (Plotly.js, served by the service) and tables over /v1/analysis.
"use strict";
const COLOURS = { cuda: "#2ca02c", jetson: "#ff7f0e", cpu: "#1f77b4", paper: "#7f7f7f" };
const EXTRA = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
const BATCHES = [1, 2, 4, 8, 16, 32, 64];
const $ = (id) => document.getElementById(id);
let rows = [], bounds = [], fits = [];
let figure = "throughput";
let highlight = null;
const sorting = {}; // table id -> {key, dir}

function query() {
  const p = new URLSearchParams();
  if ($("device").value) p.set("device", $("device").value);
  if ($("precision").value) p.set("precision", $("precision").value);
  p.set("runtime", $("runtime").value);
  p.set("select", $("select").value);
  return p;
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function cellAt(row, bs) { return row.batches.find((c) => c.batch_size === bs) || null; }
function label(r) { return r.paper_name || r.model.replace(/^(tv|timm|dnnprof):/, ""); }
function fmt(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

// Filters change faster than the requests answer: only the newest load may draw.
let latestLoad = 0;

async function load() {
  const ticket = ++latestLoad;
  const bs = Number($("batch").value);
  const q = query();
  const bq = new URLSearchParams(q); bq.set("batch_size", bs);
  const [newRows, newBounds, newFits] = await Promise.all([
    getJSON(`/v1/analysis/models?${q}`),
    getJSON(`/v1/analysis/throughput?${bq}`),
    getJSON(`/v1/analysis/memory-fits?${q}`),
  ]);
  if (ticket !== latestLoad) return;
  rows = newRows; bounds = newBounds; fits = newFits;
  $("summary").textContent = `${rows.length} model/device pairs`;
  drawFigure(bs);
  drawModels(bs);
  drawTable12();
  await drawTable3();
}

// -- figures -----------------------------------------------------------------------------------

const targetColour = (() => {
  const seen = {};
  return (target) => {
    if (!(target in seen)) {
      const cls = target.split("/")[0];
      const used = Object.values(seen);
      seen[target] = used.includes(COLOURS[cls]) ? EXTRA[used.length % EXTRA.length] : (COLOURS[cls] || EXTRA[0]);
    }
    return seen[target];
  };
})();

function hoverText(r, c, bs) {
  return [
    `<b>${label(r)}</b> (${r.model})`,
    `${r.target} · ${r.device_name} · ${r.precision}`,
    `params ${fmt(r.params / 1e6)} M · ${fmt(r.gflops)} G-FLOPs · file ${fmt(r.param_file_mb)} MB`,
    `top-1 ${fmt(r.top1)} % · top-5 ${fmt(r.top5)} %${r.accuracy_source ? ` (${r.accuracy_source})` : ""}`,
    c && c.status === "ok"
      ? `batch ${bs}: ${fmt(c.ms_per_image)} ms/image · ${fmt(c.images_per_s)} images/s · ${fmt(c.memory_mb)} MB${c.noisy ? " · noisy" : ""}`
      : `batch ${bs}: ${c ? c.status : "not measured"}`,
    `${r.repeats} process(es)${r.kind !== "measured" ? " · published (" + r.kind + ")" : ""}`,
  ].join("<br>");
}

function byTarget() {
  const groups = new Map();
  for (const r of rows) {
    if (!groups.has(r.target)) groups.set(r.target, []);
    groups.get(r.target).push(r);
  }
  return groups;
}

function markerTrace(target, pts, extra = {}) {
  return {
    type: "scatter", mode: "markers+text", name: target, legendgroup: target,
    x: pts.map((p) => p.x), y: pts.map((p) => p.y), text: pts.map((p) => label(p.r)),
    textposition: "top center", textfont: { size: 10 },
    hovertext: pts.map((p) => p.hover), hoverinfo: "text",
    customdata: pts.map((p) => p.r.model),
    marker: { color: targetColour(target), size: 9, line: { width: 1, color: "#fff" }, ...(extra.marker || {}) },
    ...extra.trace,
  };
}

function figureTraces(bs) {
  const traces = [];
  const layout = {};
  for (const [target, group] of byTarget()) {
    const pts = [];
    for (const r of group) {
      const c = cellAt(r, bs);
      const hover = hoverText(r, c, bs);
      if (figure === "ball" && r.gflops != null && r.top1 != null) pts.push({ r, x: r.gflops, y: r.top1, y5: r.top5, hover });
      else if (figure === "density" && r.top1 != null && r.params > 0) pts.push({ r, x: r.top1 / (r.params / 1e6), y: r.top1, hover });
      else if (figure === "throughput" && r.top1 != null && c && c.images_per_s) pts.push({ r, x: c.images_per_s, y: r.top1, hover });
      else if (figure === "memory" && c && c.memory_mb != null) pts.push({ r, x: r.param_file_mb, y: c.memory_mb, hover });
    }
    if (!pts.length) continue;
    if (figure === "ball") {
      const sizes = pts.map((p) => p.r.params / 1e6);
      const ball = { size: sizes, sizemode: "area", sizeref: (2 * Math.max(...sizes)) / 45 ** 2, sizemin: 3, opacity: 0.75 };
      traces.push(markerTrace(target, pts, { marker: ball, trace: { name: `${target}: top-1` } }));
      const five = pts.filter((p) => p.y5 != null).map((p) => ({ ...p, y: p.y5 }));
      if (five.length) {
        traces.push(markerTrace(target, five, {
          marker: { ...ball, size: five.map((p) => p.r.params / 1e6), symbol: "circle-open" },
          trace: { name: `${target}: top-5`, mode: "markers" },
        }));
      }
    } else {
      traces.push(markerTrace(target, pts));
    }
    if (figure === "throughput") {
      const b = bounds.find((x) => x.target === target);
      if (b && b.frontier.length) {
        traces.push({
          type: "scatter", mode: "lines", name: `${target}: Pareto frontier`, legendgroup: target, hoverinfo: "skip",
          x: b.frontier.map((p) => p.images_per_s), y: b.frontier.map((p) => p.top1),
          line: { color: targetColour(target), width: 1, shape: "hv" },
        });
      }
      if (b && b.slope != null) {
        const xs = pts.map((p) => p.x), lo = Math.min(...xs), hi = Math.max(...xs);
        const grid = Array.from({ length: 60 }, (_, i) => lo * (hi / lo) ** (i / 59));
        traces.push({
          type: "scatter", mode: "lines", legendgroup: target, hoverinfo: "name",
          name: `${target}: bound ${fmt(b.intercept)} ${b.slope < 0 ? "−" : "+"} ${Math.abs(b.slope).toPrecision(3)}·x`,
          x: grid, y: grid.map((x) => b.intercept + b.slope * x),
          line: { color: targetColour(target), dash: "dash", width: 2 },
        });
      }
    }
    if (figure === "memory") {
      const f = fits.find((x) => x.target === target && x.batch_size === bs);
      if (f) {
        const xs = pts.map((p) => p.x), lo = Math.min(...xs), hi = Math.max(...xs);
        traces.push({
          type: "scatter", mode: "lines", legendgroup: target, hoverinfo: "name",
          name: `${target}: ${fmt(f.slope)}·x + ${fmt(f.intercept_mb)} MB, R² ${f.r2.toFixed(3)}`,
          x: [lo, hi], y: [f.intercept_mb + f.slope * lo, f.intercept_mb + f.slope * hi],
          line: { color: targetColour(target), dash: "dot", width: 2 },
        });
      }
    }
  }
  const axes = {
    ball: ["G-FLOPs per image", "accuracy (%)", "linear"],
    density: ["top-1 per million parameters", "top-1 (%)", "log"],
    throughput: [`images/s at batch size ${bs}`, "top-1 (%)", "log"],
    memory: ["parameter file (MB)", `memory at batch size ${bs} (MB)`, "linear"],
  }[figure];
  Object.assign(layout, {
    xaxis: { title: { text: axes[0] }, type: axes[2], zeroline: false, automargin: true },
    yaxis: { title: { text: axes[1] }, zeroline: false, automargin: true },
    margin: { t: 30, r: 20, b: 60, l: 60 },
    legend: { orientation: "h", y: -0.25 },
    hovermode: "closest",
    height: 540,
  });
  return { traces, layout };
}

function drawFigure(bs) {
  const { traces, layout } = figureTraces(bs);
  const empty = !traces.length;
  if (empty) {
    layout.annotations = [{ text: "No profiles with these figures yet: profile a model below.",
      showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 16 } }];
  }
  Plotly.react("chart", traces, layout, { displaylogo: false, responsive: true });
  const chart = $("chart");
  chart.classList.toggle("empty", empty);
  Plotly.Fx.unhover(chart); // no tooltip outlives the figure it belonged to
  const dq = new URLSearchParams(query()); dq.set("batch_size", bs);
  $("png").href = `/v1/figures/${figure}.png?${dq}`;
  $("svg").href = `/v1/figures/${figure}.svg?${dq}`;
  // What the chart now shows, so a reader (or a test) can tell a finished redraw from an older one.
  Object.assign(chart.dataset, { figure, batch: String(bs), device: $("device").value, marks: String(traces.length) });
}

// -- the model panel -----------------------------------------------------------------------------

async function openModel(name) {
  const [detail, history] = await Promise.all([
    getJSON(`/v1/models/${encodeURIComponent(name)}`),
    getJSON(`/v1/models/${encodeURIComponent(name)}/history`),
  ]);
  $("model-panel").hidden = false;
  $("model-title").textContent = `${detail.paper_name ? detail.paper_name + " · " : ""}${detail.qualified}`;
  const facts = [
    ["input", `${detail.input_size} px, crop ${detail.crop_pct}, ${detail.interpolation}`],
    ["params", detail.params != null ? `${fmt(detail.params / 1e6)} M (${detail.params_source})` : "–"],
    ["GMACs", detail.gmacs != null ? `${fmt(detail.gmacs)} (${detail.gmacs_source})` : "–"],
    ["top-1 / top-5", detail.top1 != null ? `${fmt(detail.top1)} / ${fmt(detail.top5)} % (${detail.accuracy_source})` : "–"],
  ];
  if (detail.paper_quoted_top1 != null) facts.push(["top-1 the paper quotes", `${detail.paper_quoted_top1} %`]);
  $("model-facts").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const t of history) {
    for (const p of t.profiles) {
      const ms = Object.entries(p.ms_per_image).map(([b, v]) => `${b}: ${fmt(v)}`).join(" · ");
      addRow(body, [p.profile_id.slice(0, 8), t.target, new Date(p.created_at * 1000).toLocaleString(),
        String(p.repeats), p.noisy ? "yes" : "", p.counts ? "✓" : "", ms]);
    }
  }
  showLayerProfiles(history);
  $("model-panel").scrollIntoView({ block: "nearest" });
}

// The model's layer profiles (layers: true): one runtime's at a time, chosen in a selector.
function showLayerProfiles(history) {
  const select = $("layers-profile");
  select.replaceChildren();
  for (const t of history) {
    for (const p of t.profiles) {
      for (const bs of p.layers_batch_sizes || []) {
        const option = document.createElement("option");
        option.value = JSON.stringify({ id: p.profile_id, bs });
        option.textContent = `${p.runtime} · ${t.target} · batch ${bs} · ${p.profile_id.slice(0, 8)}`;
        select.append(option);
      }
    }
  }
  $("layers-box").hidden = select.options.length === 0;
  if (select.options.length) drawLayers().catch((e) => { $("layers-note").textContent = e.message; });
}

async function drawLayers() {
  const { id, bs } = JSON.parse($("layers-profile").value);
  const depth = $("layers-depth").value;
  const q = new URLSearchParams({ batch_size: bs });
  if (depth) q.set("depth", depth);
  const lp = await getJSON(`/v1/profiles/${id}/layers?${q}`);
  if (lp.error) { $("layers-note").textContent = `no layer profile: ${lp.error}`; return; }
  const flops = lp.layers.reduce((s, l) => s + (l.flops || 0), 0) || 1;
  const layers = lp.layers.filter((l) => l.ms_per_image > 0 || l.flops > 0); // topological order
  const names = layers.map((l) => l.path || "(model)");
  const hover = layers.map((l) => `${l.path || "(model)"} (${l.type})<br>${fmt(l.ms_per_image || 0)} ms/image` +
    `<br>${(l.nodes || []).slice(0, 4).join("<br>")}`);
  const bar = (name, y) => ({ type: "bar", name, x: names, y, hovertext: hover, hoverinfo: "text+name" });
  Plotly.react("layers-chart", [
    bar("time share", layers.map((l) => l.share || 0)),
    bar("FLOP share", layers.map((l) => (l.flops || 0) / flops)),
  ], { barmode: "group", yaxis: { tickformat: ".0%", title: "share" }, height: 360,
    margin: { t: 10, b: 120 }, legend: { orientation: "h" } }, { displaylogo: false, responsive: true });
  const ops = lp.op_types;
  Plotly.react("layers-ops", [
    { type: "bar", name: "time share", x: ops.map((o) => o.op_type), y: ops.map((o) => o.time_share) },
    { type: "bar", name: "FLOP share", x: ops.map((o) => o.op_type), y: ops.map((o) => o.flop_share) },
  ], { barmode: "group", yaxis: { tickformat: ".0%", title: "share" }, height: 300, margin: { t: 10 },
    legend: { orientation: "h" } }, { displaylogo: false, responsive: true });
  $("layers-note").textContent = `${lp.runtime}: profiled forward ${fmt(lp.forward_ms_per_image)} ms/image` +
    (lp.timed_ms_per_image ? ` (timed ${fmt(lp.timed_ms_per_image)})` : "") +
    `, unattributed ${fmt(lp.unattributed_ms_per_image)}` + (lp.overlapping ? " (node times overlap)" : "") +
    `. ${lp.note}.`;
}

// -- tables ------------------------------------------------------------------------------------

function addRow(body, cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  }
  body.appendChild(tr);
  return tr;
}

function sortRows(id, data, fallback) {
  const { key, dir } = sorting[id] || { key: fallback, dir: 1 };
  data.sort((a, b) => {
    const va = a[key], vb = b[key];
    if (va == null && vb == null) return 0;
    if (va == null) return 1;
    if (vb == null) return -1;
    return (typeof va === "number" ? va - vb : String(va).localeCompare(String(vb))) * dir;
  });
  for (const th of $(id).querySelectorAll("th[data-key]")) {
    th.classList.toggle("sorted-asc", th.dataset.key === key && dir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === key && dir === -1);
  }
  return data;
}

function sortable(id, redraw) {
  $(id).querySelector("thead").addEventListener("click", (ev) => {
    const th = ev.target.closest("th[data-key]");
    if (!th) return;
    const now = sorting[id] || {};
    sorting[id] = { key: th.dataset.key, dir: now.key === th.dataset.key ? -now.dir : 1 };
    redraw();
  });
}

function drawModels(bs) {
  const data = sortRows("models", rows.map((r) => {
    const c = cellAt(r, bs);
    const oom = c && c.status === "oom";
    return {
      r, label: label(r), model: r.model, target: r.target, precision: r.precision, params: r.params / 1e6,
      gflops: r.gflops, top1: r.top1, source: r.accuracy_source || "", oom,
      ms: c && !oom ? c.ms_per_image : null, ips: c && !oom ? c.images_per_s : null, mem: c && !oom ? c.memory_mb : null,
    };
  }), "label");
  const body = $("models").querySelector("tbody");
  body.replaceChildren();
  for (const d of data) {
    const link = document.createElement("a");
    link.href = "#"; link.textContent = d.label; link.dataset.model = d.model;
    link.addEventListener("click", (ev) => { ev.preventDefault(); openModel(d.model); });
    const tr = addRow(body, [link, d.target, d.precision, fmt(d.params), fmt(d.gflops), fmt(d.top1), d.source,
      d.oom ? "OOM" : fmt(d.ms), d.oom ? "OOM" : fmt(d.ips), d.oom ? "OOM" : fmt(d.mem)], highlight === d.model ? "new" : "");
    tr.dataset.model = d.model;
  }
}

function batchHead(id, first) {
  const head = $(id).querySelector("thead");
  head.replaceChildren();
  const tr = document.createElement("tr");
  for (const [key, text, num] of [["label", "Model"], ["target", "Device target"], ...BATCHES.map((b) => [`b${b}`, `${b}`, true])].concat(first || [])) {
    const th = document.createElement("th");
    th.dataset.key = key; th.textContent = text;
    if (num) th.dataset.num = "";
    tr.appendChild(th);
  }
  head.appendChild(tr);
}

function drawTable12() {
  for (const [id, value, text] of [
    ["table1", (c) => c.ms_per_image, (c) => `${fmt(c.ms_per_image)} (${fmt(c.images_per_s)}/s)`],
    ["table2", (c) => c.memory_mb, (c) => fmt(c.memory_mb)],
  ]) {
    batchHead(id);
    const data = sortRows(id, rows.map((r) => {
      const d = { r, label: label(r), target: r.target };
      for (const b of BATCHES) {
        const c = cellAt(r, b);
        d[`b${b}`] = c && c.status === "ok" ? value(c) : null;
      }
      return d;
    }), "label");
    const body = $(id).querySelector("tbody");
    body.replaceChildren();
    for (const d of data) {
      const cells = [d.label, d.target];
      for (const b of BATCHES) {
        const c = cellAt(d.r, b);
        cells.push(!c ? "" : c.status === "ok" && value(c) != null ? text(c) + (c.noisy ? " *" : "") : c.status === "oom" ? "—" : c.status);
      }
      const tr = addRow(body, cells);
      BATCHES.forEach((b, i) => {
        const c = cellAt(d.r, b);
        if (c && c.status === "oom") tr.children[i + 2].className = "oom";
        if (c && c.noisy) tr.children[i + 2].classList.add("noisy");
      });
    }
  }
}

function numbers(text, what) {
  const parts = text.split(",").map((s) => s.trim()).filter((s) => s);
  const bad = parts.find((s) => !/^\d+(\.\d+)?$/.test(s) || Number(s) <= 0);
  if (!parts.length) return { error: `${what}: give at least one number` };
  if (bad !== undefined) return { error: `${what}: '${bad}' is not a positive number` };
  return { values: parts.map(Number) };
}

async function drawTable3() {
  const mem = numbers($("t3-memory").value, "memory bounds"), fps = numbers($("t3-fps").value, "frame rates");
  $("t3-error").textContent = mem.error || fps.error || "";
  if (mem.error || fps.error) return;
  const q = query();
  q.set("batch_size", $("batch").value);
  q.set("memory", $("t3-basis").value);
  mem.values.forEach((m) => q.append("max_memory_mb", m));
  fps.values.forEach((f) => q.append("min_fps", f));
  const t3 = await getJSON(`/v1/analysis/table3?${q}`);
  const table = $("table3");
  const head = table.querySelector("thead"), body = table.querySelector("tbody");
  head.replaceChildren(); body.replaceChildren();
  for (const dev of t3) {
    const hr = document.createElement("tr");
    const floor = dev.memory_floor_mb != null ? `, floor ${fmt(dev.memory_floor_mb)} MB` : "";
    for (const t of [`${dev.target}${floor}: memory ≤ / images/s ≥`, ...fps.values.map(String)]) {
      const th = document.createElement("th"); th.textContent = t; hr.appendChild(th);
    }
    head.appendChild(hr);
    for (const m of mem.values) {
      const cells = [`${m} MB`];
      for (const f of fps.values) {
        const c = dev.cells.find((x) => x.max_memory_mb === m && x.min_fps === f);
        cells.push(c && c.model ? `${c.model} (${fmt(c.top1)} %)` : "–");
      }
      addRow(body, cells);
    }
  }
}

let comparing = [];
async function drawCompare() {
  const a = $("compare-a").value, b = $("compare-b").value;
  if (!a || !b || a === b) { comparing = []; } else {
    const q = new URLSearchParams({ a, b, select: $("select").value });
    comparing = (await getJSON(`/v1/analysis/compare?${q}`)).map((c) => ({
      model: c.model, batch_size: c.batch_size, a_ms: c.a_ms_per_image, b_ms: c.b_ms_per_image, ratio: c.b_over_a,
    }));
  }
  const body = $("compare").querySelector("tbody");
  body.replaceChildren();
  for (const c of sortRows("compare", comparing, "model")) {
    addRow(body, [c.model, String(c.batch_size), fmt(c.a_ms), fmt(c.b_ms), fmt(c.ratio)]);
  }
}

// -- the form ------------------------------------------------------------------------------------

function parseBatchSizes(text) {
  const parts = text.split(",").map((s) => s.trim()).filter((s) => s);
  if (!parts.length) return { error: "batch sizes: give at least one, e.g. 1,2,4" };
  for (const p of parts) {
    if (!/^\d+$/.test(p) || Number(p) < 1) return { error: `batch sizes: '${p}' is not a whole number of 1 or more (e.g. 1,2,4)` };
    if (Number(p) > 1024) return { error: `batch sizes: ${p} is over 1024` };
  }
  return { values: [...new Set(parts.map(Number))] };
}

function validateForm() {
  const sizes = parseBatchSizes($("batch-sizes").value);
  const model = $("model").value.trim();
  const error = !model ? "model: name one (completion lists the catalogue)" : sizes.error || "";
  $("form-error").textContent = model || $("model").dataset.touched ? error : sizes.error || "";
  $("profile-form").querySelector("button").disabled = Boolean(error);
  $("batch-sizes").setAttribute("aria-invalid", String(Boolean(sizes.error)));
  return error ? null : { model, sizes: sizes.values };
}

let completing = 0;
async function complete() {
  const q = $("model").value.trim();
  const ticket = ++completing;
  if (q.length < 2) return;
  const found = await getJSON(`/v1/models?${new URLSearchParams({ q, limit: 15 })}`);
  if (ticket !== completing) return;
  $("model-names").replaceChildren(...found.map((m) => {
    const o = document.createElement("option");
    // What a user types: the paper's name, a torchvision architecture as is, else the qualified name.
    o.value = m.paper_name || (m.source === "tv" ? m.architecture : m.name);
    o.label = m.paper_name ? m.name : `${m.input_size} px`;
    return o;
  }));
}

async function submitProfile(ev) {
  ev.preventDefault();
  $("model").dataset.touched = "1";
  const ok = validateForm();
  if (!ok) return;
  const status = $("job-status");
  const body = { model: ok.model, batch_sizes: ok.sizes };
  if ($("form-device").value) body.device = $("form-device").value;
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
  const status = $("job-status"), bar = $("job-progress");
  bar.hidden = false;
  for (;;) {
    const rec = await getJSON(`/v1/profiles/${id}`);
    const p = rec.progress || {};
    const where = p.stage === "batch" ? ` (batch size ${p.batch_size}, ${p.batches_done}/${p.batches_total})` : p.stage ? ` (${p.stage})` : "";
    status.textContent = `${rec.settings.model} on ${rec.settings.device}: ${rec.status}${where}` + (rec.error ? ` — ${rec.error}` : "");
    status.dataset.state = rec.status;
    bar.max = p.batches_total || 1;
    bar.value = p.batches_done || 0;
    if (["succeeded", "failed", "cancelled"].includes(rec.status)) {
      bar.hidden = true;
      highlight = rec.settings.model;
      await load();
      return;
    }
    await new Promise((res) => setTimeout(res, 700));
  }
}

// -- wiring --------------------------------------------------------------------------------------

for (const id of ["device", "precision", "runtime", "batch", "select"]) $(id).addEventListener("change", () => load());
for (const tab of document.querySelectorAll("#tabs button")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll("#tabs button")) t.setAttribute("aria-selected", String(t === tab));
    figure = tab.dataset.figure;
    drawFigure(Number($("batch").value));
  });
}
sortable("models", () => drawModels(Number($("batch").value)));
sortable("table1", drawTable12);
sortable("table2", drawTable12);
sortable("compare", () => drawCompare());
for (const id of ["t3-memory", "t3-fps", "t3-basis"]) $(id).addEventListener("change", () => drawTable3());
for (const id of ["compare-a", "compare-b"]) $(id).addEventListener("change", () => drawCompare());
$("profile-form").addEventListener("submit", submitProfile);
$("batch-sizes").addEventListener("input", validateForm);
$("model").addEventListener("input", () => { validateForm(); complete().catch(() => {}); });

// The precisions a profile may be asked in, from the API's own schema (one list: the contract's).
async function addPrecisions() {
  const schema = await getJSON("/schema/openapi.json");
  const select = $("precision");
  for (const name of schema.components.schemas.ProfileRequest.properties.precision.enum) {
    const option = document.createElement("option"); option.value = option.textContent = name;
    select.appendChild(option);
  }
}

// The device targets seen (GET /v1/devices) join the classes in the device menus; the paper's
// published devices only where figures are viewed (nothing can be sent to them).
async function addTargets() {
  const seen = await getJSON("/v1/devices");
  for (const id of ["device", "form-device", "compare-a", "compare-b"]) {
    const select = $(id);
    const have = new Set([...select.options].map((o) => o.value));
    if (id.startsWith("compare")) for (const cls of ["", "cuda", "jetson", "cpu"]) {
      if (have.has(cls)) continue;
      const o = document.createElement("option"); o.value = cls; o.textContent = cls || "—"; select.appendChild(o);
      have.add(cls);
    }
    for (const d of seen) {
      if (have.has(d.target) || (id === "form-device" && d.status === "published")) continue;
      const option = document.createElement("option");
      option.value = d.target;
      const note = { gone: " (gone)", published: " (the paper's figures)" }[d.status] || "";
      option.textContent = `${d.target}${note}`;
      select.appendChild(option);
    }
  }
  // The runtimes the devices' workers run (eager always): what the analyses can be viewed in.
  const runtimes = $("runtime");
  const offered = new Set([...runtimes.options].map((o) => o.value));
  for (const name of seen.flatMap((d) => Object.keys(d.runtimes || {})).sort()) {
    if (offered.has(name)) continue;
    const option = document.createElement("option"); option.value = option.textContent = name;
    runtimes.appendChild(option); offered.add(name);
  }
}

async function start() {
  await load();
  $("chart").on("plotly_click", (ev) => { if (ev.points.length && ev.points[0].customdata) openModel(ev.points[0].customdata); });
  for (const id of ["layers-profile", "layers-depth"]) {
    $(id).addEventListener("change", () => drawLayers().catch((e) => { $("layers-note").textContent = e.message; }));
  }
}
addTargets().catch(() => {});
addPrecisions().catch(() => {});
validateForm();
start().catch((e) => { $("summary").textContent = `could not load: ${e.message}`; });
