// The alerts panel: firing / acknowledged / resolved alerts, acknowledge and resolve
// buttons for operators, and the latest audit entries (who did what).

import { fillTable, fmt, h } from "./api.js";

const ORDER = { firing: 0, acknowledged: 1, resolved: 2 };

/** Render `alerts` ({items, queued}) and `audit` ({items}); `act(eventId, "ack"|"resolve")`
 * is called by the buttons, shown only when `canAct`. */
export function renderAlerts(table, summary, auditList, alerts, audit, canAct, act, onSelect) {
  const items = [...alerts.items].sort((a, b) => ORDER[a.status] - ORDER[b.status] || b.updated_ns - a.updated_ns);
  fillTable(table, [["fired"], ["where"], ["alert"], ["status"], [""]], items.map((a) =>
    h("tr", { "data-alert": a.event_id, class: `alert-${a.status}` },
      h("td", { title: fmt.datetime(a.fired_ns) }, fmt.time(a.fired_ns)),
      h("td", { title: `${a.site}/${a.gateway}` }, a.gateway, h("span", { class: "muted small" }, ` ${a.site}`)),
      h("td", { class: "link-cell", title: `rule ${a.rule} → ${a.receivers.join(", ")}`, onclick: () => onSelect(a.event_id) },
        h("span", { class: `sev ${a.severity}` }, a.severity), ` ${a.kind}`),
      h("td", {}, h("span", { class: `astatus ${a.status}` }, a.status)),
      h("td", { class: "r" }, canAct ? buttons(a, act) : null))));
  if (!items.length) table.append(h("tbody", {}, h("tr", {}, h("td", { class: "muted", colspan: 5 }, "no alerts"))));
  if (alerts.configured === false) {
    summary.textContent = "alerting not configured (fiberwatch cloud serve --alerting FILE)";
    auditList.replaceChildren();
    return;
  }
  const firing = items.filter((a) => a.status === "firing").length;
  const queued = Object.values(alerts.queued || {}).reduce((s, n) => s + n, 0);
  summary.textContent = `${firing} firing${queued ? ` · ${queued} queued for delivery` : ""}`;
  auditList.replaceChildren(...audit.items.slice(0, 8).map((r) => h("li", { "data-audit": r.action },
    h("span", { class: "muted" }, fmt.time(r.t_ns)), ` ${r.actor} `, h("strong", {}, r.action),
    ` ${String(r.event_id).slice(0, 8)}`, r.detail ? h("span", { class: "muted" }, ` — ${r.detail}`) : null)));
}

function buttons(a, act) {
  const out = [];
  if (a.status === "firing") out.push(h("button", { type: "button", class: "small-btn", "data-act": "ack", onclick: () => act(a.event_id, "ack") }, "Acknowledge"));
  if (a.status !== "resolved") out.push(h("button", { type: "button", class: "small-btn", "data-act": "resolve", onclick: () => act(a.event_id, "resolve") }, "Resolve"));
  return out;
}
