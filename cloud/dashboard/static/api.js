// Token handling, API calls and a tiny DOM helper. No framework, no build step.

const TOKEN_KEY = "fiberwatch.token";

export class AuthError extends Error {}

/** Take "#token=..." from the URL (then drop it from the address bar), else localStorage. */
export function initialToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromHash = params.get("token");
  if (fromHash) {
    localStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, "", location.pathname + location.search);
    return fromHash;
  }
  return localStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) { localStorage.setItem(TOKEN_KEY, token); }
export function clearToken() { localStorage.removeItem(TOKEN_KEY); }

async function reason(resp) {
  try {
    const body = await resp.json();
    if (Array.isArray(body.detail)) return body.detail.map((d) => `${d.loc.at(-1)}: ${d.msg}`).join("; ");
    return body.detail || resp.statusText;
  } catch {
    return resp.statusText;
  }
}

/** GET or POST /api/v1{path}; throws AuthError on 401, Error(reason) on other failures. */
export async function api(token, path, { params, body, method } = {}) {
  const url = new URL("/api/v1" + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, {
    method: method || (body === undefined ? "GET" : "POST"),
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) throw new AuthError(await reason(resp));
  if (!resp.ok) throw new Error(`${resp.status}: ${await reason(resp)}`);
  return resp.json();
}

/** Open health check (no token). */
export async function health() {
  const resp = await fetch("/api/v1/health");
  return resp.json();
}

/** h("td", {class: "r"}, "text", child, ...): elements with textContent only (no innerHTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replace a table's content with a header row and body rows. */
export function fillTable(table, head, rows) {
  const thead = h("thead", {}, h("tr", {}, head.map(([label, cls]) => h("th", { class: cls }, label))));
  table.replaceChildren(thead, h("tbody", {}, rows));
}

export const fmt = {
  time(ns) {
    return new Date(Number(BigInt(ns) / 1000000n)).toISOString().slice(11, 19);
  },
  datetime(ns) {
    return new Date(Number(BigInt(ns) / 1000000n)).toISOString().replace("T", " ").slice(0, 19) + "Z";
  },
  age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return `${seconds.toFixed(0)} s`;
    if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  },
  num(v, digits = 3) {
    if (v === null || v === undefined) return "–";
    const x = Number(v);
    if (Math.abs(x) >= 10 ** digits) return x.toFixed(0);
    const s = x.toPrecision(digits);
    return s.includes(".") && !s.includes("e") ? s.replace(/\.?0+$/, "") : s;
  },
  bytes(n) {
    if (n === null || n === undefined) return "–";
    return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} kB`;
  },
};
