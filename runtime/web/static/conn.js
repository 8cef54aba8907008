// Connection keeps one WebSocket to /v1/ws in the JSON subprotocol
// (parley.v1.json: protojson with proto field names; 64-bit numbers arrive
// as strings). It correlates requests with replies by frame id, pings at the
// heartbeat the server announces, and reconnects by itself: after the
// server's reconnect frame at the time it asks (after_ms), otherwise with
// jittered exponential backoff. Close codes 4500-4999 mean "do not
// reconnect" (runtime/wire): it stops and says why.
//
// Events (CustomEvent detail):
//   welcome  - the Welcome frame; the session is usable (resend, resync)
//   frame    - every server frame that is not a reply to a request
//   status   - {state: 'connecting'|'open'|'waiting'|'stopped', ...}

export const SUBPROTOCOL = 'parley.v1.json';
export const TERMINAL_MIN = 4500;
export const TERMINAL_MAX = 4999;
export const CLOSE_TOKEN_EXPIRED = 4501;

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 10000;
const IDLE_FACTOR = 2.5;

// backoffDelay returns the wait before attempt n (1-based): uniform in
// [d/2, d] with d = min(max, min*2^(n-1)), so a crowd that lost its gateway
// together does not come back together.
export function backoffDelay(attempt, min = BACKOFF_MIN_MS, max = BACKOFF_MAX_MS) {
  const d = Math.min(max, min * 2 ** Math.max(0, attempt - 1));
  return d / 2 + Math.random() * (d / 2);
}

export class RequestError extends Error {
  constructor(code, message, retryAfterMs = 0) {
    super(message);
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

export class Connection extends EventTarget {
  // probe(): called when a socket closed before its welcome, to learn why
  // (a refused upgrade only shows as code 1006). Resolves to
  // {terminal: bool, code, reason}.
  constructor({ url, token, probe }) {
    super();
    this.url = url;
    this.token = token;
    this.probe = probe;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.state = 'stopped';
    this.welcome = null;
    this.timer = null;
    this.pingTimer = null;
    this.reconnectAt = 0; // set by a reconnect frame
    this.lastHeard = 0;
    this.onOnline = () => this.retryNow();
    window.addEventListener('online', this.onOnline);
  }

  start() {
    if (this.state !== 'stopped') return;
    this.stopped = false;
    this.connect();
  }

  stop(reason = 'signed out') {
    this.stopped = true;
    clearTimeout(this.timer);
    this.clearPing();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, reason);
    }
    this.failPending(new RequestError('closed', 'The connection was closed.'));
    window.removeEventListener('online', this.onOnline);
    this.setState('stopped', { reason });
  }

  setToken(token) {
    this.token = token;
  }

  get open() {
    return this.state === 'open';
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('status', { detail: { state, attempt: this.attempt, ...extra } }));
  }

  connect() {
    clearTimeout(this.timer);
    this.welcome = null;
    this.setState('connecting');
    const u = new URL(this.url, location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('access_token', this.token);
    let ws;
    try {
      ws = new WebSocket(u.href, [SUBPROTOCOL]);
    } catch (err) {
      this.scheduleReconnect('cannot open a WebSocket');
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this.onMessage(ws, ev);
    ws.onclose = (ev) => this.onClose(ws, ev);
  }

  onMessage(ws, ev) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    let f;
    try {
      f = JSON.parse(ev.data);
    } catch {
      return;
    }
    const id = Number(f.id || 0);
    if (f.welcome) {
      this.welcome = f.welcome;
      this.attempt = 0;
      this.reconnectAt = 0;
      this.startPing(Number(f.welcome.heartbeat_ms) || 30000);
      this.setState('open');
      this.dispatchEvent(new CustomEvent('welcome', { detail: f.welcome }));
      return;
    }
    if (f.reconnect) {
      // The gateway drains: come back when it says (it spread the crowd).
      const after = Number(f.reconnect.after_ms) || 0;
      this.reconnectAt = Date.now() + after;
      this.drainReason = f.reconnect.reason || 'server restarting';
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        if (this.ws === ws) ws.close(1000, 'reconnect');
      }, after);
      return;
    }
    const p = id ? this.pending.get(id) : null;
    if (p && !f.presence) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (f.error) p.reject(new RequestError(f.error.code, f.error.message, Number(f.error.retry_after_ms) || 0));
      else p.resolve(f);
      return;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: f }));
  }

  async onClose(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.clearPing();
    this.failPending(new RequestError('disconnected', 'The connection was lost.'));
    if (this.stopped) return;
    const code = ev.code;
    if (code >= TERMINAL_MIN && code <= TERMINAL_MAX) {
      this.setState('stopped', { terminal: true, code, reason: ev.reason || `closed with code ${code}` });
      return;
    }
    if (!this.welcome && this.probe) {
      // Refused before the welcome: ask REST why (401 token, 503 draining).
      const p = await this.probe().catch(() => ({ terminal: false }));
      if (this.stopped) return;
      if (p.terminal) {
        this.setState('stopped', { terminal: true, code: p.code, reason: p.reason });
        return;
      }
    }
    this.scheduleReconnect(this.reconnectAt ? this.drainReason : 'connection lost');
  }

  scheduleReconnect(reason) {
    let delay;
    if (this.reconnectAt) {
      delay = Math.max(0, this.reconnectAt - Date.now());
      this.reconnectAt = 0;
    } else {
      this.attempt += 1;
      delay = backoffDelay(this.attempt);
    }
    this.setState('waiting', { delayMs: delay, until: Date.now() + delay, reason });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  retryNow() {
    if (this.state === 'waiting') this.connect();
  }

  startPing(heartbeatMs) {
    this.clearPing();
    this.lastHeard = Date.now();
    this.pingTimer = setInterval(() => {
      if (!this.ws) return;
      if (Date.now() - this.lastHeard > heartbeatMs * IDLE_FACTOR) {
        // Nothing heard for too long: the path is dead even if the socket
        // does not know it yet.
        this.ws.close(4002, 'heartbeat timeout');
        this.onClose(this.ws, { code: 4002, reason: 'heartbeat timeout' });
        return;
      }
      this.sendFrame({ ping: {} });
    }, heartbeatMs);
  }

  clearPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  failPending(err) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  // sendFrame sends a frame that expects no reply (ack, read, typing, ping).
  sendFrame(body) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ id: this.nextId++, ...body }));
    return true;
  }

  // request sends a frame and resolves with the server frame that replies
  // to it; rejects with RequestError (code from the error frame, or
  // 'offline', 'disconnected', 'timeout').
  request(body, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.open) return Promise.reject(new RequestError('offline', 'Not connected.'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestError('timeout', 'The server did not answer in time.'));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ id, ...body }));
    });
  }
}
