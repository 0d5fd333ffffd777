// The tables: anomalies, fleet, models and rounds, plus the rounds chart.

import { fillTable, fmt, h } from "./api.js";

export function renderEvents(table, items, selected, onSelect) {
  fillTable(table, [["time"], ["where"], ["event"], ["peak", "r"]], items.map((e) =>
    h("tr", { class: e.id === selected ? "selected" : null, "data-id": e.id, onclick: () => onSelect(e.id) },
      h("td", { title: fmt.datetime(e.start_ns) }, fmt.time(e.start_ns)),
      h("td", { title: `${e.site}/${e.gateway} ${e.stream}, ${e.dist_start_m}–${e.dist_end_m} m` },
        `${e.gateway} `, h("span", { class: "muted" }, e.stream), ` ${e.ch_start}–${e.ch_end}`),
      h("td", { title: `${e.severity} · ${kindText(e)}` },
        h("span", { class: `sev ${e.severity}` }, e.severity), ` ${e.kind || e.class_hint}`),
      h("td", { class: "r", title: `peak score ${e.peak_score}` }, fmt.num(e.peak_score)))));
  if (!items.length) table.append(h("tbody", {}, h("tr", {}, h("td", { class: "muted", colspan: 4 }, "no anomalies"))));
}

/** "leak (confidence 0.82)" from the classifier, else the class hint. */
export function kindText(e) {
  if (!e.kind) return e.class_hint;
  return `${e.kind} (confidence ${fmt.num(e.kind_confidence, 2)})`;
}

export function renderFleet(table, summary, data) {
  const now = data.now_ns;
  fillTable(table, [["gateway"], ["last seen", "r"], ["model"], ["frames/s", "r"], ["p99 ms", "r"],
    ["outbox", "r"], ["drops", "r"], ["gaps", "r"], ["FA mutes", "r"], ["RSS", "r"]], data.items.map((g) => {
    const age = g.last_seen_ns ? (now - g.last_seen_ns) / 1e9 : null;
    return h("tr", {},
      h("td", { title: `${g.site}/${g.gateway}: ${g.status}` }, h("span", { class: `dot ${g.status}` }), g.gateway,
        h("span", { class: "muted small" }, ` ${g.site}`)),
      h("td", { class: "r" }, fmt.age(age)),
      h("td", {}, g.model_version || "–"),
      h("td", { class: "r" }, fmt.num(g.frames_per_s)),
      p99Cell(g),
      h("td", { class: "r" }, g.outbox_depth ?? "–"),
      h("td", { class: "r" }, g.drops_total ?? "–"),
      h("td", { class: "r" }, g.gaps ?? "–"),
      faCell(g),
      h("td", { class: "r" }, g.rss_mb === undefined ? "–" : `${fmt.num(g.rss_mb)} MB`));
  }));
  const ok = data.items.filter((g) => g.status === "ok").length;
  summary.textContent = `${ok}/${data.items.length} ok`;
}

/** Labelled false alarms muting flags on the gateway (`edge_agent.fa_calibration`): the
 * channel groups muted now; what was muted since the agent started in the tooltip. "–" from
 * agents that do not report it. */
function faCell(g) {
  if (g.fa_mutes_active === null || g.fa_mutes_active === undefined) return h("td", { class: "r" }, "–");
  const title = `${g.fa_mutes_active} channel group(s) muted by labelled false alarms; since the agent started `
    + `${g.fa_muted_windows ?? 0} window(s), ${g.fa_muted_groups ?? 0} group flag(s) muted`;
  return h("td", { class: "r fa-mutes", title }, String(g.fa_mutes_active));
}

/** The fleet's p99 cell. Frames wait for their window, so latency follows each stream's hop
 * (das 0.5 s, dts 5 s) and the all-frames p99 of a gateway with a dts stream is a dts frame's
 * wait. Per stream when the agent reports it: the das value (labelled unless das is the only
 * stream), every stream in the tooltip; else (older agents) the all-frames value. */
function p99Cell(g) {
  const by = g.latency_p99_ms_by_stream || {};
  const kinds = Object.keys(by).sort();
  const all = `all frames ${ms(g.latency_p99_ms)}`;
  if (!kinds.length) return h("td", { class: "r", title: `p99 frame → scored: ${all}` }, fmt.num(g.latency_p99_ms));
  const main = kinds.includes("das") ? "das" : kinds[0];
  const title = `p99 frame → scored: ${kinds.map((k) => `${k} ${ms(by[k])}`).join(" · ")} (${all})`;
  const label = kinds.length > 1 || main !== "das";
  return h("td", { class: "r", title },
    label ? h("span", { class: "muted small" }, `${main} `) : null, fmt.num(by[main]));
}

function ms(v) {
  if (v === null || v === undefined) return "–";
  return `${v >= 1000 ? Math.round(v).toLocaleString("en-US") : fmt.num(v)} ms`;
}

export function renderModels(table, summary, data) {
  const rank = { production: 0, canary: 1, candidate: 2, retired: 3 };
  const items = [...data.items].sort((a, b) => rank[a.state] - rank[b.state] || String(b.version).localeCompare(a.version));
  fillTable(table, [["version"], ["state"], ["parent"], ["AUC", "r"], ["F1", "r"]], items.map((m) =>
    h("tr", { title: `created ${created(m.created)} · package ${String(m.package_hash || "").slice(0, 16)}` },
      h("td", {}, m.version),
      h("td", {}, h("span", { class: `state ${m.state}` }, m.state)),
      h("td", { class: "muted" }, m.parent || "–"),
      h("td", { class: "r" }, fmt.num(m.metrics?.auc)),
      h("td", { class: "r" }, fmt.num(m.metrics?.f1)))));
  const canary = items.filter((m) => m.state === "canary").map((m) => m.version);
  summary.textContent = `production ${data.production || "none"}`;
  return { canary };
}

function created(value) {
  if (value === null || value === undefined) return "–";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(d) ? String(value) : d.toISOString().slice(0, 16).replace("T", " ");
}

export function renderRounds(table, summary, canvas, items) {
  fillTable(table, [["round", "r"], ["clients", "r"], ["fail", "r"], ["loss", "r"],
    ["AUC", "r"], ["s", "r"], ["up", "r"]], items.map((r) =>
    h("tr", { title: `${r.run_id} · ${r.strategy} · model ${r.model_version}` },
      h("td", { class: "r" }, r.round),
      h("td", { class: "r" }, r.participants),
      h("td", { class: "r" }, r.failures),
      h("td", { class: "r" }, fmt.num(r.loss)),
      h("td", { class: "r" }, fmt.num(r.auc)),
      h("td", { class: "r" }, fmt.num(r.duration_s)),
      h("td", { class: "r" }, fmt.bytes(r.bytes_up)))));
  summary.textContent = items.length ? `${items[0].strategy} · ${items[0].run_id}` : "no rounds yet";
  const lb = items.find((r) => r.label_fa_windows !== undefined && r.label_fa_windows !== null);
  if (lb) {  // a label round's report (federation.flower.label_round)
    summary.textContent += ` · labels: false alarms ${lb.label_fa_before} → ${lb.label_fa_after}` +
      ` of ${lb.label_fa_windows} held-back windows`;
  }
  drawRounds(canvas, [...items].reverse());
}

function drawRounds(canvas, rows) {
  const m = { l: 46, r: 46, t: 18, b: 16 };
  const { ctx, r, pw, ph } = plotFrame(canvas, m);
  if (!rows.length) return;
  // one round is a point in the middle, labelled with its value; more are a line
  const single = rows.length === 1;
  const xs = (i) => (single ? m.l + pw / 2 : m.l + (i / (rows.length - 1)) * pw);
  const series = [["loss", "#f2914a", "left"], ["auc", "#7ec699", "right"]];
  series.forEach(([key, colour, side], k) => {
    const pts = rows.map((row, i) => [xs(i), row[key]]).filter(([, v]) => v !== null && v !== undefined);
    if (!pts.length) return;
    const vals = pts.map(([, v]) => v);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi === lo) { lo -= 0.5; hi += 0.5; }
    // a single value has no scale: loss and AUC points sit apart, each with its value
    const ys = single ? () => m.t + ph * (k ? 0.68 : 0.36)
      : (v) => m.t + ph - ((v - lo) / (hi - lo)) * ph;
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineWidth = 1.8;
    if (pts.length > 1) {
      ctx.beginPath();
      pts.forEach(([x, v], i) => (i ? ctx.lineTo(x, ys(v)) : ctx.moveTo(x, ys(v))));
      ctx.stroke();
    }
    for (const [x, v] of pts) {
      ctx.beginPath();
      ctx.arc(x, ys(v), pts.length > 1 ? 2.5 : 3.5, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (single) {
      const [x, v] = pts[0];
      ctx.textAlign = "left";
      ctx.fillText(`${key === "auc" ? "AUC" : "loss"} ${fmt.num(v)}`, x + 8, ys(v) + 4);
    } else {
      ctx.textAlign = side === "left" ? "right" : "left";
      const x = side === "left" ? m.l - 4 : m.l + pw + 4;
      ctx.fillText(fmt.num(hi), x, m.t + 8);
      ctx.fillText(fmt.num(lo), x, m.t + ph);
    }
    ctx.textAlign = side === "left" ? "left" : "right";
    const legend = single ? (key === "auc" ? "AUC ●" : "● loss")
      : (key === "auc" ? "AUC (right axis) —" : "— loss (left axis)");
    ctx.fillText(legend, side === "left" ? m.l : m.l + pw, 11);
  });
  ctx.fillStyle = "#8b95a5";
  ctx.textAlign = "center";
  if (single) {
    ctx.fillText(`round ${rows[0].round}`, m.l + pw / 2, r.height - 3);
  } else {
    ctx.fillText(`round ${rows[0].round}`, m.l + 24, r.height - 3);
    ctx.fillText(`round ${rows.at(-1).round}`, m.l + pw - 24, r.height - 3);
  }
}

/** A cleared, DPI-scaled canvas with a framed plot area inside margins `m`. */
export function plotFrame(canvas, m) {
  const dpr = window.devicePixelRatio || 1;
  const r = canvas.getBoundingClientRect();
  canvas.width = r.width * dpr;
  canvas.height = r.height * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, r.width, r.height);
  ctx.font = "11px system-ui, sans-serif";
  const pw = r.width - m.l - m.r, ph = r.height - m.t - m.b;
  ctx.strokeStyle = "#272e38";
  ctx.strokeRect(m.l + 0.5, m.t + 0.5, pw, ph);
  return { ctx, r, pw, ph };
}
