// Waterfall renderer: channel (and fiber distance) across, time down (newest at the top),
// colour = value, events outlined, with axes and a colour bar. Plain canvas 2D.

const ANCHORS = [ // an "inferno"-like map: dark = quiet, bright = anomalous
  [0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
  [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164],
];
const LUT = Array.from({ length: 256 }, (_, i) => {
  const x = (i / 255) * (ANCHORS.length - 1);
  const k = Math.min(Math.floor(x), ANCHORS.length - 2);
  const f = x - k;
  return ANCHORS[k].map((c, j) => Math.round(c + f * (ANCHORS[k + 1][j] - c)));
});
export const SEVERITY_COLOURS = {
  low: "#79a8ff", medium: "#e3b341", high: "#f2914a", critical: "#f0506e",
};
const M = { left: 66, right: 78, top: 34, bottom: 38 };
const AXIS = "#8b95a5";
const FONT = "12px system-ui, sans-serif";

function niceStep(range, n) {
  const raw = range / Math.max(1, n);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
}

function ticks(lo, hi, n) {
  const step = niceStep(hi - lo, n);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
  return out;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600];

/** Time ticks [t_s, label] for a span drawn `ph` px tall: HH:MM, or HH:MM:SS below a minute. */
function timeTicks(t0, t1, ph) {
  const step = TIME_STEPS.find((s) => (t1 - t0) / s <= Math.max(3, ph / 55)) || 43200;
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    out.push([t, new Date(t * 1000).toISOString().slice(11, step < 60 ? 19 : 16)]);
  }
  return out;
}

function valueRange(win) {
  const vals = win.values.flat().filter((v) => v !== null).sort((a, b) => a - b);
  if (!vals.length) return null;
  const q = (p) => vals[Math.min(vals.length - 1, Math.floor(p * vals.length))];
  if (win.field === "score") return [0, Math.max(1.5, q(0.998))];
  const lo = q(0.01), hi = q(0.99);
  return hi > lo ? [lo, hi] : [lo - 1, hi + 1];
}

function setup(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(rect.width * dpr));
  canvas.height = Math.max(1, Math.round(rect.height * dpr));
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, w: rect.width, h: rect.height };
}

/**
 * Draw `win` (a /window or /anomalies/{id} waterfall) on `canvas`.
 * opts: events (outlined), selected (event id), spacing (m per channel, or null), label.
 */
export function drawWaterfall(canvas, win, opts = {}) {
  const { ctx, w, h } = setup(canvas);
  ctx.clearRect(0, 0, w, h);
  ctx.font = FONT;
  const range = win && win.times_ns.length ? valueRange(win) : null;
  if (!range) {
    const g = { px: M.left, py: M.top, pw: w - M.left - M.right, ph: h - M.top - M.bottom };
    ctx.fillStyle = "#0a0c10";
    ctx.fillRect(g.px, g.py, g.pw, g.ph);
    ctx.fillStyle = AXIS;
    ctx.textAlign = "center";
    ctx.fillText(opts.empty || "no data in this window", g.px + g.pw / 2, g.py + g.ph / 2);
    canvas._wf = null;
    return;
  }
  const nT = win.times_ns.length, nC = win.channels.length;
  const t0 = Number(win.times_ns[0]) / 1e9;
  const t1 = Number(win.times_ns[nT - 1]) / 1e9 + win.resolution_s;
  const c0 = win.channels[0], c1 = win.channels[nC - 1] + win.group_size;
  // the left margin holds the time labels (HH:MM or HH:MM:SS) and, left of them, the axis title
  const ph = h - M.top - M.bottom;
  const times = timeTicks(t0, t1, ph);
  const labelW = Math.max(0, ...times.map(([, text]) => ctx.measureText(text).width));
  const left = Math.max(M.left, Math.ceil(labelW) + 8 + 24);
  const g = { px: left, py: M.top, pw: w - left - M.right, ph, t0, t1, c0, c1, win, times };
  g.titleX = left - 8 - labelW - 8;
  ctx.fillStyle = "#0a0c10";
  ctx.fillRect(g.px, g.py, g.pw, g.ph);
  const x = (ch) => g.px + ((ch - c0) / (c1 - c0)) * g.pw;
  const y = (t) => g.py + ((t1 - t) / (t1 - t0)) * g.ph;

  const off = new OffscreenCanvas(nC, nT);
  const img = new ImageData(nC, nT);
  const [lo, hi] = range;
  for (let c = 0; c < nC; c++) {
    const col = win.values[c];
    for (let t = 0; t < nT; t++) {
      const v = col[t];
      const i = ((nT - 1 - t) * nC + c) * 4;
      if (v === null) { img.data[i + 3] = 0; continue; }
      const rgb = LUT[Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo)) * 255)))];
      img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
    }
  }
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, g.px, y(t1), g.pw, y(t0) - y(t1));

  drawEvents(ctx, g, x, y, opts);
  drawAxes(ctx, g, x, y, opts.spacing);
  drawColourBar(ctx, g, range, opts.label || win.field, opts.threshold);
  canvas._wf = g;
}

function drawEvents(ctx, g, x, y, { events = [], selected } = {}) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(g.px, g.py, g.pw, g.ph);
  ctx.clip();
  for (const e of events) {
    const xa = x(e.ch_start), xb = x(e.ch_end + 1);
    const ya = y(Number(e.end_ns) / 1e9), yb = y(Number(e.start_ns) / 1e9);
    if (xb < g.px || xa > g.px + g.pw || yb < g.py || ya > g.py + g.ph) continue;
    const colour = SEVERITY_COLOURS[e.severity] || "#ffffff";
    const sel = e.id === selected;
    ctx.strokeStyle = colour;
    ctx.lineWidth = sel ? 2.5 : 1.5;
    ctx.setLineDash(sel ? [] : [5, 3]);
    ctx.strokeRect(xa, ya, Math.max(3, xb - xa), Math.max(3, yb - ya));
    const tag = `${e.class_hint} · ${e.severity}`;
    ctx.font = "600 11px system-ui, sans-serif";
    const tw = ctx.measureText(tag).width + 8;
    const ty = Math.max(g.py + 1, ya - 17);
    ctx.fillStyle = "#0e1116dd";
    ctx.fillRect(xa, ty, tw, 16);
    ctx.fillStyle = colour;
    ctx.fillText(tag, xa + 4, ty + 12);
  }
  ctx.restore();
}

function drawAxes(ctx, g, x, y, spacing) {
  ctx.strokeStyle = "#323a46";
  ctx.lineWidth = 1;
  ctx.setLineDash([]);
  ctx.strokeRect(g.px + 0.5, g.py + 0.5, g.pw, g.ph);
  ctx.fillStyle = AXIS;
  ctx.font = FONT;
  ctx.textAlign = "center";
  for (const c of ticks(g.c0, g.c1, Math.max(2, g.pw / 90))) {
    tick(ctx, x(c), g.py + g.ph, 0, 5);
    ctx.fillText(String(Math.round(c)), x(c), g.py + g.ph + 17);
  }
  ctx.fillText("channel", g.px + g.pw / 2, g.py + g.ph + 33);
  if (spacing) {
    for (const d of ticks(g.c0 * spacing, g.c1 * spacing, Math.max(2, g.pw / 110))) {
      tick(ctx, x(d / spacing), g.py, 0, -5);
      ctx.fillText(`${Math.round(d)} m`, x(d / spacing), g.py - 9);
    }
  }
  ctx.textAlign = "right";
  for (const [t, text] of g.times) {
    tick(ctx, g.px, y(t), -5, 0);
    ctx.fillText(text, g.px - 8, y(t) + 4);
  }
  ctx.save();
  ctx.translate(g.titleX, g.py + g.ph / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("time (UTC), newest at top", 0, 0);
  ctx.restore();
}

function tick(ctx, x0, y0, dx, dy) {
  ctx.beginPath();
  ctx.moveTo(Math.round(x0) + 0.5, Math.round(y0) + 0.5);
  ctx.lineTo(Math.round(x0 + dx) + 0.5, Math.round(y0 + dy) + 0.5);
  ctx.stroke();
}

function drawColourBar(ctx, g, [lo, hi], label, threshold) {
  const bx = g.px + g.pw + 14, bw = 12, by = g.py, bh = g.ph;
  const grad = ctx.createLinearGradient(0, by + bh, 0, by);
  LUT.forEach((c, i) => { if (i % 16 === 0 || i === 255) grad.addColorStop(i / 255, `rgb(${c})`); });
  ctx.fillStyle = grad;
  ctx.fillRect(bx, by, bw, bh);
  ctx.strokeStyle = "#323a46";
  ctx.strokeRect(bx + 0.5, by + 0.5, bw, bh);
  ctx.fillStyle = AXIS;
  ctx.textAlign = "left";
  const yv = (v) => by + bh - ((v - lo) / (hi - lo)) * bh;
  for (const v of ticks(lo, hi, 5)) {
    tick(ctx, bx + bw, yv(v), 4, 0);
    ctx.fillText(Number(v.toPrecision(3)).toString(), bx + bw + 6, yv(v) + 4);
  }
  if (threshold !== undefined && threshold > lo && threshold < hi) {
    ctx.strokeStyle = "#ffffff";
    ctx.setLineDash([3, 2]);
    tick(ctx, bx - 3, yv(threshold), bw + 6, 0);
    ctx.setLineDash([]);
  }
  ctx.save();
  ctx.translate(bx + bw + 52, by + bh / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(label, 0, 0);
  ctx.restore();
}

/** What is under the mouse: {channel, t_ns, value} or null. */
export function probe(canvas, clientX, clientY) {
  const g = canvas._wf;
  if (!g) return null;
  const r = canvas.getBoundingClientRect();
  const fx = (clientX - r.left - g.px) / g.pw, fy = (clientY - r.top - g.py) / g.ph;
  if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return null;
  const { win } = g;
  const c = Math.min(win.channels.length - 1, Math.floor(fx * win.channels.length));
  const t = g.t1 - fy * (g.t1 - g.t0);
  const ti = Math.min(win.times_ns.length - 1, Math.max(0, Math.floor((t - g.t0) / win.resolution_s)));
  return { channel: win.channels[c], t_ns: win.times_ns[ti], value: win.values[c][ti] };
}
