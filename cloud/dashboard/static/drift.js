// The model-health panel: score shift (PSI against the training quantiles) over time per
// stream and model version, with int8 saturation and out-of-range rates, on a time axis.

import { fmt } from "./api.js";
import { plotFrame } from "./panels.js";

const COLOURS = ["#79a8ff", "#f2914a", "#7ec699", "#e3b341", "#c58af9", "#f0506e"];
export const PSI_LIMIT = 0.25; // the alerting default (drift_psi)

/** Draw `items` (GET /model-health) on `canvas` over [startNs, endNs]; fills `summary`. */
export function renderDrift(canvas, summary, items, startNs, endNs) {
  const series = new Map();
  for (const p of items) {
    const key = `${p.gateway} ${p.stream} ${p.model_version}`;
    if (!series.has(key)) series.set(key, []);
    series.get(key).push(p);
  }
  const m = { l: 40, r: 10, t: 16, b: 18 };
  const { ctx, r, pw, ph } = plotFrame(canvas, m);
  const psis = items.map((p) => p.score_psi).filter((v) => v !== null && v !== undefined);
  const hi = Math.max(PSI_LIMIT * 2, ...psis);
  const x = (t) => m.l + ((t - startNs) / Math.max(1, endNs - startNs)) * pw;
  const y = (v) => m.t + ph - (v / hi) * ph;
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = "#f0506e";
  ctx.beginPath(); ctx.moveTo(m.l, y(PSI_LIMIT)); ctx.lineTo(m.l + pw, y(PSI_LIMIT)); ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = "#8b95a5";
  ctx.textAlign = "right";
  ctx.fillText(fmt.num(hi, 2), m.l - 4, m.t + 8);
  ctx.fillText("0", m.l - 4, m.t + ph);
  ctx.fillText(`${PSI_LIMIT}`, m.l - 4, y(PSI_LIMIT) + 4);
  ctx.textAlign = "center";
  for (const f of [0, 0.5, 1]) {
    const t = startNs + f * (endNs - startNs);
    ctx.fillText(fmt.time(BigInt(Math.round(t))), m.l + f * pw + (f === 0 ? 24 : f === 1 ? -24 : 0), r.height - 4);
  }
  let k = 0;
  const legend = [];
  for (const [key, pts] of series) {
    const colour = COLOURS[k++ % COLOURS.length];
    const drawn = pts.filter((p) => p.score_psi !== null && p.score_psi !== undefined);
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    drawn.forEach((p, i) => (i ? ctx.lineTo(x(p.time_ns), y(p.score_psi)) : ctx.moveTo(x(p.time_ns), y(p.score_psi))));
    ctx.stroke();
    for (const p of drawn) { ctx.beginPath(); ctx.arc(x(p.time_ns), y(p.score_psi), 2, 0, 2 * Math.PI); ctx.fill(); }
    const last = pts.at(-1);
    legend.push(`${key}: PSI ${fmt.num(last.score_psi, 2)} · sat ${pct(last.saturation_rate)} · out ${pct(last.out_of_range_rate)} · fallback ${pct(last.fallback_rate)}`);
  }
  canvas._mh = { series: series.size, points: items.length };
  const drifting = items.filter((p) => p.score_psi > PSI_LIMIT).length;
  summary.textContent = items.length ? `${series.size} model(s) · ${drifting} point(s) past PSI ${PSI_LIMIT}` : "no model-health data";
  canvas.title = legend.join("\n");
  return legend;
}

function pct(v) {
  return v === null || v === undefined ? "–" : `${fmt.num(v * 100, 2)} %`;
}
