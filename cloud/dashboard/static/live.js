// Server-sent events from /api/v1/live, read with fetch (EventSource cannot send the bearer
// token), reconnecting with backoff (1 s doubling to 30 s) until closed.

const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

/** Open the stream; `on[topic](data)` per message, `onstate("live"|"reconnecting"|"off")`,
 * `onauth()` on 401 (stops). Returns { close() }. */
export function openLive(token, on, { onstate = () => {}, onauth = () => {} } = {}) {
  let stopped = false;
  let ctrl = null;
  let delay = MIN_DELAY_MS;
  let timer = null;

  async function connect() {
    ctrl = new AbortController();
    try {
      const resp = await fetch("/api/v1/live", {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        cache: "no-store", signal: ctrl.signal,
      });
      if (resp.status === 401) { stopped = true; onstate("off"); onauth(); return; }
      if (!resp.ok || !resp.body) throw new Error(`live stream: HTTP ${resp.status}`);
      onstate("live");
      delay = MIN_DELAY_MS;
      await read(resp.body.getReader());
    } catch (err) {
      if (err.name !== "AbortError") console.warn("live stream", err.message);
    }
    if (stopped) return;
    onstate("reconnecting");
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }

  async function read(reader) {
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      // lines end in \n, \r\n or \r; a \r at the end may be the first half of a \r\n
      const keep = buf.endsWith("\r") ? "\r" : "";
      buf = buf.slice(0, buf.length - keep.length).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        dispatch(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
      }
      buf += keep;
    }
  }

  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length || !on[name]) return;
    try {
      on[name](JSON.parse(data.join("\n")));
    } catch (err) {
      console.warn("live message", name, err.message);
    }
  }

  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (ctrl) ctrl.abort();
      onstate("off");
    },
  };
}
