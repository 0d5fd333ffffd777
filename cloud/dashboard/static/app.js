// The dashboard: sign-in, controls, live updates (server-sent events), event detail and labels.

import { api, AuthError, clearToken, fmt, h, health, initialToken, saveToken } from "./api.js";
import { renderAlerts } from "./alerts.js";
import { renderDrift } from "./drift.js";
import { openLive } from "./live.js";
import { kindText, renderEvents, renderFleet, renderModels, renderRounds } from "./panels.js";
import { drawWaterfall, probe } from "./waterfall.js";

const $ = (id) => document.getElementById(id);
const VIEW_KEY = "fiberwatch.view";
const CONTROLS = ["site", "gateway", "stream", "field", "span", "ch-start", "ch-end"];
const RANK = { viewer: 0, operator: 1, admin: 2 };
const state = { token: initialToken(), me: null, selected: null, spacing: null, busy: {}, drawn: {}, live: null };
const SLOW_MS = 10000; // models and the health pill; everything else is pushed

function view() {
  return Object.fromEntries(CONTROLS.map((id) => [id, $(id).value]));
}

function restoreView() {
  const saved = JSON.parse(localStorage.getItem(VIEW_KEY) || "{}");
  for (const id of CONTROLS) {
    if (saved[id] === undefined) continue;
    if ($(id).tagName === "SELECT" && !$(id).querySelector(`option[value="${CSS.escape(saved[id])}"]`)) {
      $(id).append(h("option", { value: saved[id] }, saved[id]));
    }
    $(id).value = saved[id];
  }
}

/** Run `fn` unless the same task is still running; 401 opens the sign-in box, other
 * errors go to the element `show` (the server's reason, e.g. a range over the limits). */
async function task(name, fn, show) {
  if (state.busy[name] || !state.token) return;
  state.busy[name] = true;
  try {
    await fn();
    if (show) $(show).classList.remove("error");
  } catch (err) {
    if (err instanceof AuthError) showLogin(err.message);
    else if (show) Object.assign($(show), { textContent: `⚠ ${err.message}`, className: `${$(show).className} error` });
    else console.warn(name, err);
  } finally {
    state.busy[name] = false;
  }
}

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token-input").focus();
}

async function signIn(token) {
  try {
    state.me = await api(token, "/me");
  } catch (err) {
    showLogin(err instanceof AuthError ? "That token was not accepted." : String(err.message));
    return;
  }
  state.token = token;
  saveToken(token);
  $("login").hidden = true;
  $("user").textContent = `${state.me.name} (${state.me.role})`;
  $("signout").hidden = false;
  refreshAll();
}

function setOptions(select, values) {
  const current = select.value;
  const want = [...new Set(values)];
  if (want.join("|") !== [...select.options].map((o) => o.value).join("|")) {
    select.replaceChildren(...want.map((v) => h("option", { value: v }, v)));
  }
  select.value = want.includes(current) ? current : want[0] || "";
}

async function refreshFleet() {
  showFleet(await api(state.token, "/fleet"));
}

function showFleet(data) {
  renderFleet($("fleet"), $("fleet-summary"), data);
  setOptions($("site"), data.items.map((g) => g.site));
  const site = $("site").value;
  setOptions($("gateway"), data.items.filter((g) => g.site === site).map((g) => g.gateway));
}

function spacingFrom(events) {
  const e = events.find((x) => x.ch_end > x.ch_start && x.dist_end_m > x.dist_start_m);
  return e ? (e.dist_end_m - e.dist_start_m) / (e.ch_end - e.ch_start) : state.spacing;
}

async function refreshWaterfall() {
  const v = view();
  if (!v.site) return;
  const range = { site: v.site, gateway: v.gateway, stream: v.stream, start: `now-${v.span}`, end: "now" };
  const canvas = $("waterfall");
  const [win, events] = await Promise.all([
    api(state.token, "/window", { params: { ...range, ch_start: v["ch-start"], ch_end: v["ch-end"],
      field: v.field, max_times: Math.min(1000, Math.round(canvas.clientHeight * 1.5)) } }),
    api(state.token, "/anomalies", { params: { ...range, limit: 200 } }),
  ]);
  state.spacing = spacingFrom(events.items);
  const label = v.field === "score" ? "anomaly score" : "band energy (log10 RMS)";
  const opts = { events: events.items, selected: state.selected, spacing: state.spacing, label };
  state.drawn.main = [win, opts];
  drawWaterfall(canvas, win, opts);
  $("wf-title").textContent = `${v.site} / ${v.gateway || "all gateways"} / ${v.stream}`;
  $("wf-info").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC · `
    + `${win.times_ns.length} × ${win.channels.length} cells · ${win.resolution_s} s × ${win.group_size} ch`;
}

async function refreshEvents() {
  const data = await api(state.token, "/anomalies", { params: { limit: 100, severity: $("severity-filter").value } });
  showEvents(data.items);
}

function showEvents(items) {
  $("events-error").textContent = "";
  renderEvents($("events"), items, state.selected, (id) => task("detail", () => selectEvent(id), "detail-title"));
}

async function refreshHealth() {
  const hs = await health();
  const pill = $("health");
  const age = hs.last_data_age_s === null ? "" : ` (${fmt.age(hs.last_data_age_s)})`;
  pill.textContent = `influx ${hs.influx} · ingestion ${hs.ingestion}${age}`;
  pill.className = `pill ${hs.status === "ok" ? "ok" : hs.influx === "ok" ? "warn" : "bad"}`;
}

async function refreshModels() {
  const box = $("model-actions");
  let data;
  try {
    data = await api(state.token, "/models");
  } catch (err) {
    if (err instanceof AuthError) throw err;
    $("models-summary").textContent = err.message.replace(/^\d+: /, "");
    return;
  }
  const { canary } = renderModels($("models"), $("models-summary"), data);
  if (RANK[state.me?.role] < RANK.admin) return box.replaceChildren();
  box.replaceChildren(
    ...canary.map((version) => h("button", { type: "button", onclick: () => modelAction(
      `/models/${encodeURIComponent(version)}/promote`, { to: "production", reason: "promoted from dashboard" },
      `Promote ${version} to production on every gateway?`) }, `Promote ${version}`)),
    h("button", { type: "button", class: "danger", onclick: () => modelAction(
      "/models/rollback", { reason: "rollback from dashboard" }, "Roll production back to the previous model?") },
    "Roll back"));
}

async function modelAction(path, body, question) {
  if (!confirm(question)) return;
  try {
    await api(state.token, path, { body });
  } catch (err) {
    alert(err.message);
  }
  task("models", refreshModels);
}

async function refreshRounds() {
  showRounds(await api(state.token, "/rounds", { params: { limit: 50 } }));
}

function showRounds(data) {
  renderRounds($("rounds"), $("rounds-summary"), $("rounds-chart"), data.items);
}

/** Pushed updates: each topic arrives on connect and whenever it changes. */
const LIVE = {
  events(data) {
    if ($("severity-filter").value) task("events", refreshEvents, "events-error");
    else showEvents(data.items);
    task("waterfall", refreshWaterfall, "wf-info");
  },
  fleet(data) {
    showFleet(data);
    task("waterfall", refreshWaterfall, "wf-info");
    task("drift", refreshDrift);
  },
  rounds: showRounds,
  alerts: showAlerts,
  error(data) { console.warn("live", data.topic, data.detail); },
};

function startLive() {
  if (state.live || !state.token || !$("live").checked) return;
  state.live = openLive(state.token, LIVE, {
    onstate: (s) => { $("live-state").textContent = s; $("live-state").className = `pill ${s === "live" ? "ok" : "warn"}`; },
    onauth: () => { state.live = null; showLogin("The token was not accepted."); },
  });
}

function stopLive() {
  if (state.live) state.live.close();
  state.live = null;
}

async function refreshDrift() {
  const v = view();
  let data;
  try {
    data = await api(state.token, "/model-health", { params: { site: v.site, gateway: v.gateway, start: `now-${v.span}` } });
  } catch (err) {
    if (err instanceof AuthError) throw err;
    $("drift-summary").textContent = err.message.replace(/^\d+: /, "");
    return;
  }
  const end = data.now_ns;
  const start = end - spanMs(v.span) * 1e6;
  const legend = renderDrift($("drift-chart"), $("drift-summary"), data.items, start, end);
  const prec = await api(state.token, "/model-health/precision", { params: { site: v.site, gateway: v.gateway } });
  const kinds = Object.entries(prec.kinds).map(([k, r]) => `${k} ${fmt.num(r.precision * 100, 3)} % of ${r.labelled}`);
  legend.push(`labelled precision (30 d): ${kinds.length ? kinds.join(" · ") : "no confirmed or false-alarm labels yet"}`);
  $("drift-legend").replaceChildren(...legend.map((t) => h("li", { "data-legend": "" }, t)));
}

function spanMs(span) {
  const n = parseFloat(span);
  return n * (span.endsWith("h") ? 3600e3 : 60e3);
}

async function refreshAlerts() {
  let alerts;
  try {
    alerts = await api(state.token, "/alerts", { params: { limit: 50 } });
  } catch (err) {
    if (err instanceof AuthError) throw err;
    $("alerts-summary").textContent = err.message.replace(/^\d+: /, "");
    return;
  }
  const audit = await api(state.token, "/alerts/audit", { params: { limit: 20 } });
  showAlerts({ alerts, audit });
}

function showAlerts({ alerts, audit }) {
  const canAct = RANK[state.me?.role] >= RANK.operator;
  renderAlerts($("alerts"), $("alerts-summary"), $("audit"), alerts, audit, canAct, alertAction,
    (id) => task("detail", () => selectEvent(id), "detail-title"));
}

async function alertAction(id, action) {
  await task("alert-action", () => api(state.token, `/alerts/${encodeURIComponent(id)}/${action}`,
    { body: { note: "" } }), "alerts-summary");
  task("alerts", refreshAlerts);
}

async function selectEvent(id) {
  state.selected = id;
  for (const tr of $("events").querySelectorAll("tbody tr")) tr.classList.toggle("selected", tr.dataset.id === id);
  const d = await api(state.token, `/anomalies/${encodeURIComponent(id)}`);
  renderDetail(d);
  if (state.drawn.main) {
    state.drawn.main[1].selected = id;
    drawWaterfall($("waterfall"), ...state.drawn.main);
  }
}

function renderDetail({ event: e, waterfall, waterfall_error: why }) {
  $("detail-title").textContent = `${e.class_hint} · ${e.severity} — ${e.site}/${e.gateway} ${e.stream}`;
  const canvas = h("canvas", { class: "detail-wf", "aria-label": "event waterfall" });
  const facts = [
    ["id", e.id], ["kind", kindText(e)], ["start", fmt.datetime(e.start_ns)],
    ["duration", `${((e.end_ns - e.start_ns) / 1e9).toFixed(1)} s`],
    ["channels", `${e.ch_start}–${e.ch_end}`],
    ["distance", `${e.dist_start_m.toFixed(1)}–${e.dist_end_m.toFixed(1)} m`],
    ["peak / mean", `${fmt.num(e.peak_score)} / ${fmt.num(e.mean_score)} (threshold ${fmt.num(e.threshold)})`],
    ["windows", e.n_windows], ["model", `${e.model_version} (${String(e.model_hash).slice(0, 12)})`],
    ["latency", e.received_ns ? `${((e.received_ns - e.end_ns) / 1e9).toFixed(2)} s end → cloud` : "–"],
  ];
  if (e.merged_into) {
    facts.unshift(["merged into", h("button", { type: "button", class: "link", onclick: () => task("detail", () => selectEvent(e.merged_into), "detail-title") }, e.merged_into)]);
  }
  const side = h("div", {},
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", {}, "Labels"),
    h("ul", { class: "labels" }, (e.labels || []).length ? e.labels.map((l) => h("li", {},
      h("strong", {}, l.label), ` by ${l.user}`, l.note ? ` — ${l.note}` : "")) : h("li", { class: "muted" }, "none yet")));
  if (RANK[state.me?.role] >= RANK.operator) side.append(labelForm(e.id));
  $("detail-body").replaceChildren(h("div", {}, canvas, why ? h("p", { class: "error" }, why) : null), side);
  const opts = { events: [e], selected: e.id, spacing: state.spacing, label: "anomaly score", threshold: e.threshold };
  state.drawn.detail = [waterfall, opts];
  drawWaterfall(canvas, waterfall, opts);
}

function labelForm(id) {
  const kind = h("select", { name: "label" }, ["confirmed", "false_alarm", "note"].map((k) => h("option", { value: k }, k.replace("_", " "))));
  const note = h("input", { name: "note", placeholder: "note (optional)", maxlength: 2000 });
  return h("form", { class: "label-form", onsubmit: async (ev) => {
    ev.preventDefault();
    await task("label", () => api(state.token, `/anomalies/${encodeURIComponent(id)}/labels`,
      { body: { label: kind.value, note: note.value } }));
    task("detail", () => selectEvent(id));
  } }, kind, note, h("button", { type: "submit" }, "Add label"));
}

async function refreshAll() {
  await task("fleet", refreshFleet);
  task("waterfall", refreshWaterfall, "wf-info");
  task("events", refreshEvents, "events-error");
  task("alerts", refreshAlerts);
  task("drift", refreshDrift);
  task("models", refreshModels);
  task("rounds", refreshRounds);
  refreshHealth().catch(() => {});
  startLive();
}

function wire() {
  restoreView();
  $("controls").addEventListener("change", (ev) => {
    localStorage.setItem(VIEW_KEY, JSON.stringify(view()));
    if (ev.target.id === "site") task("fleet", refreshFleet).then(() => task("waterfall", refreshWaterfall, "wf-info"));
    else task("waterfall", refreshWaterfall, "wf-info");
    task("drift", refreshDrift);
  });
  $("controls").addEventListener("submit", (ev) => ev.preventDefault());
  $("severity-filter").addEventListener("change", () => task("events", refreshEvents, "events-error"));
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token-input").value.trim()); });
  $("signout").addEventListener("click", () => { clearToken(); state.token = null; location.reload(); });
  $("waterfall").addEventListener("mousemove", (ev) => {
    const p = probe($("waterfall"), ev.clientX, ev.clientY);
    if (!p) return;
    const dist = state.spacing ? ` · ${(p.channel * state.spacing).toFixed(0)} m` : "";
    $("wf-info").textContent = `ch ${p.channel}${dist} · ${fmt.datetime(p.t_ns)} · value ${fmt.num(p.value)}`;
  });
  window.addEventListener("resize", () => {
    if (state.drawn.main) drawWaterfall($("waterfall"), ...state.drawn.main);
    const detail = document.querySelector(".detail-wf");
    if (detail && state.drawn.detail) drawWaterfall(detail, ...state.drawn.detail);
  });
  $("live").addEventListener("change", () => ($("live").checked ? startLive() : stopLive()));
  setInterval(() => {
    if (!state.token || document.hidden || !$("live").checked) return;
    task("models", refreshModels);
    refreshHealth().catch(() => {});
  }, SLOW_MS);
  refreshHealth().catch(() => {});
  if (state.token) signIn(state.token);
  else showLogin();
}

wire();
