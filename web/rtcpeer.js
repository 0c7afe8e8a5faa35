// The bridge's RTCPeer API as a browser client (docs/rtcpeer.md): sign-in over HTTP, then one
// WebSocket on which every request gets exactly one reply and pushes (which never carry
// `result`) arrive in between.

/** A refusal from the bridge: `code` is the protocol's `result` (or HTTP-level code). */
export class Refused extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

async function fetchJson(url, init) {
  const r = await fetch(url, init);
  const text = await r.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Refused(`the bridge answered ${r.status} ${r.statusText}`, r.status);
  }
}

/**
 * The page's docking login → `{sid, userId, name}`. A third-party client does getSign with its
 * app's secret and dockingLogin (docs/rtcpeer.md); the page holds no app secret: the bridge logs
 * the signed-in operator's page in itself (`POST /api/meeting/login`, same answer as dockingLogin).
 */
export async function login({ account, name }) {
  const r = await fetchJson('/api/meeting/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ account, userName: name }),
  });
  if (r.result !== 0) {
    throw new Refused(`login refused: ${r.message || `result ${r.result ?? r.code}`}`, r.result ?? r.code);
  }
  return { sid: r.SID, userId: r.user.id, name: r.user.name || name };
}

/**
 * The `/rtcpeer` socket. Events: `push` (detail = the message), `close` (detail = reason).
 */
export class Signalling extends EventTarget {
  #ws;
  #waiting = new Map(); // "module.method" → [{resolve, reject, timer}] in request order

  /** Opens the socket; resolves when it is open. */
  static open(url) {
    return new Promise((resolve, reject) => {
      const s = new Signalling();
      const ws = new WebSocket(url);
      s.#ws = ws;
      ws.onopen = () => resolve(s);
      ws.onerror = () => reject(new Refused('cannot reach the bridge', 0));
      ws.onmessage = (e) => s.#receive(e.data);
      ws.onclose = (e) => {
        reject(new Refused('cannot reach the bridge', 0));
        s.#closed(e.reason || `connection closed (${e.code})`);
      };
    });
  }

  get open() {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  /** Sends a request; resolves with the reply, rejects with `Refused` when `result` ≠ 0. */
  request(msg, timeoutMs = 10000) {
    const key = `${msg.module}.${msg.method}`;
    return new Promise((resolve, reject) => {
      if (!this.open) return reject(new Refused('not connected to the bridge', 0));
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(() => {
        this.#forget(key, waiter);
        reject(new Refused(`the bridge did not answer ${key}`, 0));
      }, timeoutMs);
      if (!this.#waiting.has(key)) this.#waiting.set(key, []);
      this.#waiting.get(key).push(waiter);
      this.#ws.send(JSON.stringify(msg));
    });
  }

  close() {
    this.#ws.close(1000, 'bye');
  }

  #forget(key, waiter) {
    const q = this.#waiting.get(key) || [];
    const i = q.indexOf(waiter);
    if (i >= 0) q.splice(i, 1);
  }

  #receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return console.warn('rtcpeer: not JSON', data);
    }
    if (!('result' in msg)) {
      this.dispatchEvent(new CustomEvent('push', { detail: msg }));
      return;
    }
    const waiter = (this.#waiting.get(`${msg.module}.${msg.method}`) || []).shift();
    if (!waiter) return console.warn('rtcpeer: reply nobody waits for', msg);
    clearTimeout(waiter.timer);
    if (msg.result === 0) waiter.resolve(msg);
    else waiter.reject(new Refused(msg.message || `result ${msg.result}`, msg.result));
  }

  #closed(reason) {
    for (const q of this.#waiting.values()) {
      for (const w of q.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Refused('the connection to the bridge closed', 0));
      }
    }
    this.dispatchEvent(new CustomEvent('close', { detail: reason }));
  }
}
