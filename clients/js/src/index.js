// wsingest device client for browsers and Node (one ES module).
//
// A device keeps one WebSocket open, sends telemetry and gets {"ack": seq}
// once its points are durable (in InfluxDB or the server's fsynced spool).
// This client keeps every message until it is acked, resends what was not
// acked after a reconnect (same seq, same ts, same bytes: InfluxDB
// overwrites, so nothing is stored twice), backs off when the server is
// overloaded, stops on an auth refusal and reports every message the server
// refuses for good, with its reason. See docs/devices.md.
//
//   import { WsingestClient } from "wsingest-client";
//   const c = new WsingestClient("ws://127.0.0.1:8765", { device: "meter-7", token });
//   await c.send({ measurement: "power", fields: { watts: 230.5 }, tags: { phase: "L1" } });
//   await c.flush(30_000);
//   console.log(c.stats);
//   await c.close();

import { encode as cborEncode, decode as cborDecode } from "./cbor.js";

export { cborEncode, cborDecode };

/** Nack reasons resent after a backoff; every other reason is permanent. */
export const TRANSIENT_ERRORS = new Set([
  "storage_unavailable",
  "rate_limited",
  "overloaded",
  "shutting_down",
  "bridge_unavailable",
  "too_many_series",
]);

const SUBPROTOCOLS = { json: "wsingest.v1.json", cbor: "wsingest.v1.cbor" };
const NACK_QUIET_MS = 30_000;
const isNode = typeof process !== "undefined" && !!process.versions?.node;

/** Base class of the errors this module throws. */
export class WsingestError extends Error {
  constructor(message) {
    super(message);
    this.name = this.constructor.name;
  }
}

/**
 * The server refused the device: HTTP 401/403 at the handshake (Node only:
 * browsers cannot see the status of a refused handshake) or close 1008
 * (token revoked or rotated, policy). The client stops for good.
 */
export class AuthError extends WsingestError {
  constructor(message, { status = null, closeCode = null, reason = "" } = {}) {
    super(message);
    this.status = status;
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

/** `send` with `block: false` while the buffer is full. Nothing was taken. */
export class BufferFullError extends WsingestError {}

/** The encoded message is over `maxMessageBytes`. Nothing was taken. */
export class MessageTooLargeError extends WsingestError {}

/** The client was closed. */
export class ClientClosedError extends WsingestError {}

/** `flush` did not see every message answered in time. */
export class FlushTimeoutError extends WsingestError {}

/**
 * Thrown by `flush` when messages were refused for good since the last
 * flush and no `onFailure` callback was given; `failures` lists them as
 * `{seq, error, detail, payload}`.
 */
export class DeliveryFailedError extends WsingestError {
  constructor(failures) {
    const reasons = failures
      .slice(0, 5)
      .map((f) => `seq ${f.seq}: ${f.error} (${f.detail})`)
      .join(", ");
    super(`${failures.length} message(s) refused by the server: ${reasons}`);
    this.failures = failures;
  }
}

/** `ws://host:8765` -> `ws://host:8765/v1/devices/{device}`. */
export function deviceUrl(url, device) {
  const id = encodeURIComponent(device);
  if (url.includes("{device}")) return url.replace("{device}", id);
  const u = new URL(url);
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(`url ${url}: use ws:// or wss://`);
  }
  if (u.pathname === "" || u.pathname === "/") u.pathname = `/v1/devices/${id}`;
  return u.toString();
}

function newStats() {
  return {
    sent: 0,
    acked: 0,
    nacked: 0,
    resent: 0,
    retried: 0,
    reconnects: 0,
    connects: 0,
    points_sent: 0,
    points_acked: 0,
    restored: 0,
    commands: 0,
    nacks: {},
    closes: {},
    connect_errors: {},
    buffered: 0,
    in_flight: 0,
  };
}

const bump = (map, key) => {
  map[key] = (map[key] || 0) + 1;
};

function byteLength(frame) {
  return typeof frame === "string" ? new TextEncoder().encode(frame).length : frame.length;
}

/**
 * A device's connection to wsingest.
 *
 * Options: `device` (required), `token`, `encoding` ("json" | "cbor"),
 * `window` (messages in flight, 64), `buffer` (unacked messages held, 10000),
 * `block` (send waits while the buffer is full; false: throws
 * BufferFullError), `bufferDir` (Node: on-disk buffer directory), `fsync`
 * (Node: fsync every append), `ackTimeoutMs` (30000), `connectTimeoutMs`
 * (10000), `backoffBaseMs` (500), `backoffMaxMs` (30000), `maxMessageBytes`
 * (1 MiB), `onFailure(failure)`, `tokenInQuery` (always in browsers),
 * `WebSocket` (an implementation to use instead of the global one or `ws`).
 */
export class WsingestClient {
  constructor(url, options = {}) {
    const o = options;
    if (!o.device) throw new TypeError("options.device is required");
    this.encoding = o.encoding || "json";
    if (!(this.encoding in SUBPROTOCOLS)) throw new TypeError(`encoding: "json" or "cbor", not ${this.encoding}`);
    this.device = o.device;
    this.window = o.window ?? 64;
    this.bufferLimit = o.buffer ?? 10_000;
    this.block = o.block ?? true;
    this.ackTimeoutMs = o.ackTimeoutMs ?? 30_000;
    this.connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
    this.backoffBaseMs = o.backoffBaseMs ?? 500;
    this.backoffMaxMs = o.backoffMaxMs ?? 30_000;
    this.maxMessageBytes = o.maxMessageBytes ?? 1 << 20;
    this.onFailure = o.onFailure ?? null;
    this._token = o.token ?? null;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket ?? null;
    this._headerAuth = !!this._token && !o.tokenInQuery && !this._WebSocket;
    this.url = deviceUrl(url, o.device);
    if (this._token && !this._headerAuth) {
      const u = new URL(this.url);
      u.searchParams.set("token", this._token);
      this.url = u.toString();
    }
    this.stats = newStats();
    this._held = new Map(); // seq -> {seq, frame, points, inFlight, sentBefore, resend}
    this._queue = []; // seqs to send, a min-heap
    this._inFlight = 0;
    this._cwnd = this.window;
    this._holdUntil = 0;
    this._lastTransient = 0;
    this._lastProgress = 0;
    this._attempt = 0;
    this._nackAttempt = 0;
    this._replies = [];
    this._nextSeq = 1;
    this._lastAutoTs = 0;
    this._failures = [];
    this._fatal = null;
    this._closed = false;
    this._ws = null;
    this._open = false;
    this._everConnected = false;
    this._waiters = new Set();
    this._timers = new Set();
    this._commandHandler = null;
    this._disk = null;
    this._ready = this._init(o).catch((e) => {
      this._fatal = e;
      this._notify();
    });
  }

  async _init(o) {
    if (o.bufferDir) {
      if (!isNode) throw new WsingestError("bufferDir needs Node (browsers have no disk buffer)");
      const { FileBuffer } = await import("./filebuffer.js");
      this._disk = new FileBuffer(o.bufferDir, { fsync: !!o.fsync });
      const { pending, nextSeq } = this._disk.load();
      this._nextSeq = nextSeq;
      for (const s of pending) {
        this._held.set(s.seq, { seq: s.seq, frame: s.frame, points: s.points, inFlight: false, sentBefore: true, resend: true });
        heapPush(this._queue, s.seq);
      }
      this.stats.restored = pending.length;
    }
    if (!this._WebSocket) {
      if (!isNode) throw new WsingestError("no WebSocket implementation");
      const mod = await import("ws");
      this._WebSocket = mod.WebSocket ?? mod.default;
      this._nodeWs = true;
    }
    this._syncStats();
    this._connect();
  }

  /** Set the handler of downlink commands: `handler({id, name, args})`
   * returns (or resolves to) undefined/true (ok), false, or `{ok, detail}`;
   * a throw answers `ok: false` with its message. */
  onCommand(handler) {
    this._commandHandler = handler;
    return this;
  }

  /**
   * Take one point: `{measurement, fields, tags, ts}` (`ts`: epoch ms or a
   * Date; absent: now, stamped here and kept on every resend). Resolves to
   * the message's seq once the client holds it (and wrote it to the disk
   * buffer), not once acked: use `flush` for that. Waits while the buffer is
   * full (`block: false`: throws BufferFullError).
   */
  async send(point) {
    return this.sendPoints([point]);
  }

  /** Take several points as one message (one seq, one ack). */
  async sendPoints(points) {
    await this._ready;
    this._checkUsable();
    if (!Array.isArray(points) || points.length === 0) throw new TypeError("no points");
    const wire = points.map((p) => this._point(p));
    while (this._held.size >= this.bufferLimit) {
      if (!this.block) throw new BufferFullError(`${this._held.size} unacked messages held (buffer=${this.bufferLimit})`);
      await this._change();
      this._checkUsable();
    }
    const seq = this._nextSeq;
    const msg = wire.length === 1 ? { seq, ...wire[0] } : { seq, points: wire };
    const frame = this._encode(msg);
    const size = byteLength(frame);
    if (size > this.maxMessageBytes) {
      throw new MessageTooLargeError(`message of ${size} bytes is over maxMessageBytes=${this.maxMessageBytes}`);
    }
    this._nextSeq += 1;
    if (this._disk) this._disk.append(seq, frame, wire.length);
    this._held.set(seq, { seq, frame, points: wire.length, inFlight: false, sentBefore: false, resend: false });
    heapPush(this._queue, seq);
    this.stats.sent += 1;
    this.stats.points_sent += wire.length;
    this._syncStats();
    this._pump();
    return seq;
  }

  /**
   * Resolve once every message taken so far is answered (acked or refused
   * for good). Rejects with FlushTimeoutError after `timeoutMs`, AuthError
   * if the server refused the device, DeliveryFailedError if messages were
   * refused since the last flush and there is no `onFailure` callback.
   */
  async flush(timeoutMs) {
    await this._ready;
    const last = this._nextSeq - 1;
    const deadline = timeoutMs == null ? Infinity : Date.now() + timeoutMs;
    for (;;) {
      if (this._fatal) throw this._fatal;
      const oldest = this._held.keys().next();
      if (oldest.done || oldest.value > last) break;
      if (this._closed) throw new ClientClosedError("closed before everything was acked");
      const left = deadline - Date.now();
      if (left <= 0) {
        let n = 0;
        for (const s of this._held.keys()) if (s <= last) n++;
        throw new FlushTimeoutError(`flush: ${n} message(s) still unacked after ${timeoutMs} ms`);
      }
      await this._change(left);
    }
    if (this._failures.length) {
      const f = this._failures;
      this._failures = [];
      throw new DeliveryFailedError(f);
    }
  }

  /** Close the connection (1000) and stop. Does not wait for acks: call
   * `flush` first. Unacked messages stay in the disk buffer, if any. */
  async close() {
    await this._ready;
    if (this._closed) return;
    this._closed = true;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    const ws = this._ws;
    if (ws && ws.readyState <= 1) {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 2000);
        ws.addEventListener("close", () => {
          clearTimeout(t);
          resolve();
        });
        try {
          ws.close(1000, "client closing");
        } catch {
          resolve();
        }
      });
    }
    if (this._disk) this._disk.close();
    this._notify();
  }

  get connected() {
    return this._open;
  }

  // -- encoding ---------------------------------------------------------

  _point(p) {
    const fields = p?.fields;
    if (!fields || typeof fields !== "object" || Object.keys(fields).length === 0) {
      throw new TypeError("fields must be a non-empty object");
    }
    for (const [k, v] of Object.entries(fields)) {
      if (typeof v === "number") {
        if (!Number.isFinite(v)) throw new RangeError(`fields.${k} is ${v}: InfluxDB stores finite numbers only`);
      } else if (typeof v !== "boolean" && typeof v !== "string") {
        throw new TypeError(`fields.${k}: a number, boolean or string, not ${typeof v}`);
      }
    }
    const out = { ts: this._stamp(p.ts) };
    if (p.measurement != null) out.measurement = String(p.measurement);
    if (p.tags && Object.keys(p.tags).length) {
      for (const [k, v] of Object.entries(p.tags)) {
        if (typeof v !== "string") throw new TypeError(`tags.${k}: tag values are strings`);
      }
      out.tags = { ...p.tags };
    }
    out.fields = { ...fields };
    return out;
  }

  _stamp(ts) {
    if (ts == null) {
      // Never the same millisecond twice: two points of one series would
      // overwrite each other in InfluxDB.
      const t = Math.max(Date.now(), this._lastAutoTs + 1);
      this._lastAutoTs = t;
      return t;
    }
    if (ts instanceof Date) return ts.getTime();
    if (typeof ts === "number" && Number.isFinite(ts)) return ts;
    throw new TypeError("ts: epoch milliseconds, a Date, or undefined");
  }

  _encode(msg) {
    return this.encoding === "cbor" ? cborEncode(msg) : JSON.stringify(msg);
  }

  _decode(data) {
    if (typeof data === "string") return JSON.parse(data);
    return cborDecode(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
  }

  // -- state ------------------------------------------------------------

  _checkUsable() {
    if (this._fatal) throw this._fatal;
    if (this._closed) throw new ClientClosedError("the client is closed");
  }

  _syncStats() {
    this.stats.buffered = this._held.size;
    this.stats.in_flight = this._inFlight;
  }

  _notify() {
    const ws = this._waiters;
    this._waiters = new Set();
    for (const w of ws) w();
  }

  _change(timeoutMs) {
    return new Promise((resolve) => {
      let t = null;
      const done = () => {
        if (t) {
          clearTimeout(t);
          this._timers.delete(t);
        }
        resolve();
      };
      if (timeoutMs != null && Number.isFinite(timeoutMs)) {
        t = setTimeout(() => {
          this._timers.delete(t);
          this._waiters.delete(done);
          resolve();
        }, timeoutMs);
        this._timers.add(t);
      }
      this._waiters.add(done);
    });
  }

  _later(ms, fn) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _backoff(attempt, cap) {
    const d = Math.min(this.backoffBaseMs * 2 ** Math.min(attempt, 30), cap);
    return d * (0.5 + Math.random() * 0.5);
  }

  _answered(m) {
    this._held.delete(m.seq);
    if (m.inFlight) {
      m.inFlight = false;
      this._inFlight -= 1;
    }
    if (this._disk) this._disk.done(m.seq, this._held);
    this._syncStats();
    this._notify();
    this._pump();
  }

  _fail(m, error, detail) {
    this._answered(m);
    this.stats.nacked += 1;
    const f = { seq: m.seq, error, detail, payload: m.frame };
    if (this.onFailure) {
      try {
        this.onFailure(f);
      } catch {
        // the callback's bug must not stop the client
      }
    } else {
      this._failures.push(f);
    }
  }

  _handle(data) {
    let d;
    try {
      d = this._decode(data);
    } catch {
      return;
    }
    if (!d || typeof d !== "object") return;
    const now = Date.now();
    if ("ack" in d) {
      this._lastProgress = now;
      const m = this._held.get(Number(d.ack));
      if (m && m.inFlight) {
        this.stats.acked += 1;
        this.stats.points_acked += m.points;
        this._attempt = 0;
        if (this._cwnd < this.window) this._cwnd += 1;
        if (now - this._lastTransient > NACK_QUIET_MS) this._nackAttempt = 0;
        this._answered(m);
      }
    } else if ("nack" in d) {
      this._lastProgress = now;
      const error = String(d.error ?? "unknown");
      const detail = String(d.detail ?? "");
      bump(this.stats.nacks, error);
      const m = d.nack == null ? null : this._held.get(Number(d.nack));
      if (!m || !m.inFlight) return;
      if (TRANSIENT_ERRORS.has(error)) {
        // Back in the queue at its place; the session pauses, then sends
        // one message at a time and opens the window again ack by ack.
        m.inFlight = false;
        this._inFlight -= 1;
        heapPush(this._queue, m.seq);
        this._lastTransient = now;
        this._cwnd = 1;
        if (now >= this._holdUntil) {
          const wait = this._backoff(this._nackAttempt++, Math.min(this.backoffMaxMs, 5000));
          this._holdUntil = now + wait;
          this._later(wait + 1, () => this._pump());
        }
        this._syncStats();
      } else {
        this._fail(m, error, detail);
      }
    } else if ("cmd" in d) {
      this._command({ id: String(d.cmd), name: String(d.name ?? ""), args: d.args ?? null });
    }
  }

  async _command(cmd) {
    let ok = false;
    let detail = "this device has no command handler";
    if (this._commandHandler) {
      try {
        const r = await this._commandHandler(cmd);
        if (r === undefined || r === null || r === true) [ok, detail] = [true, undefined];
        else if (r === false) [ok, detail] = [false, undefined];
        else [ok, detail] = [!!r.ok, r.detail];
      } catch (e) {
        [ok, detail] = [false, String(e?.message ?? e)];
      }
    }
    const reply = { cmd_result: cmd.id, ok };
    if (detail !== undefined) reply.detail = detail;
    this.stats.commands += 1;
    this._replies.push(this._encode(reply));
    this._pump();
  }

  // -- the connection ---------------------------------------------------

  _connect() {
    if (this._closed || this._fatal) return;
    let ws;
    try {
      const proto = SUBPROTOCOLS[this.encoding];
      if (this._nodeWs) {
        const headers = this._headerAuth ? { Authorization: `Bearer ${this._token}` } : {};
        ws = new this._WebSocket(this.url, [proto], {
          headers,
          handshakeTimeout: this.connectTimeoutMs,
          perMessageDeflate: false,
          maxPayload: 16 * 1024 * 1024,
        });
      } else {
        ws = new this._WebSocket(this.url, [proto]);
      }
    } catch (e) {
      this._connectFailed(String(e?.message ?? e), null);
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let opened = false;
    let failure = null;
    const openTimer = this._later(this.connectTimeoutMs + 1000, () => {
      if (!opened) {
        failure = failure ?? "timeout";
        try {
          ws.close();
        } catch {
          /* not open yet */
        }
      }
    });
    ws.onopen = () => {
      opened = true;
      clearTimeout(openTimer);
      this._timers.delete(openTimer);
      this._sessionStart();
    };
    ws.onmessage = (ev) => this._handle(ev.data);
    ws.onerror = (ev) => {
      const msg = String(ev?.message ?? ev?.error?.message ?? "");
      const m = /Unexpected server response: (\d+)/.exec(msg);
      if (m) failure = Number(m[1]);
      else if (/ECONNREFUSED/.test(msg)) failure = failure ?? "refused";
    };
    ws.onclose = (ev) => {
      clearTimeout(openTimer);
      this._timers.delete(openTimer);
      if (this._ws === ws) this._ws = null;
      if (!opened) {
        this._connectFailed(failure ?? "handshake", typeof failure === "number" ? failure : null);
        return;
      }
      this._sessionEnd(ev.code ?? 1006, ev.reason ?? "");
    };
  }

  _connectFailed(kind, status) {
    if (status === 401 || status === 403) {
      this._stop(new AuthError(`the server refused the device's token: HTTP ${status}`, { status }));
      return;
    }
    bump(this.stats.connect_errors, typeof kind === "number" ? `http_${kind}` : kind);
    if (this._closed) return;
    this._later(this._backoff(this._attempt++, this.backoffMaxMs), () => this._connect());
  }

  _sessionStart() {
    this._open = true;
    this.stats.connects += 1;
    if (this._everConnected) this.stats.reconnects += 1;
    this._everConnected = true;
    this._replies = [];
    // Everything unanswered goes out again, in seq order, same bytes.
    this._inFlight = 0;
    this._queue = [];
    for (const m of this._held.values()) {
      if (m.sentBefore) m.resend = true;
      m.inFlight = false;
      this._queue.push(m.seq); // Map order is seq order: already a heap
    }
    this._syncStats();
    this._watchdog();
    this._pump();
  }

  _watchdog() {
    const ws = this._ws;
    this._later(1000, () => {
      if (this._ws !== ws || !this._open) return;
      if (this._inFlight > 0 && Date.now() - this._lastProgress > this.ackTimeoutMs) {
        bump(this.stats.closes, "ack_timeout");
        try {
          ws.close(4000, "no ack in time");
        } catch {
          /* already closing */
        }
        return;
      }
      this._watchdog();
    });
  }

  _sessionEnd(code, reason) {
    this._open = false;
    if (this._closed) return;
    bump(this.stats.closes, String(code));
    for (const m of this._held.values()) m.inFlight = false;
    this._inFlight = 0;
    this._syncStats();
    if (code === 1008) {
      this._stop(new AuthError(`the server closed the session with 1008: ${reason}`, { closeCode: 1008, reason }));
      return;
    }
    if (code === 1009) this._tooBig(reason);
    this._later(this._backoff(this._attempt++, this.backoffMaxMs), () => this._connect());
  }

  _stop(err) {
    this._fatal = err;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._notify();
  }

  // Close 1009: the culprit is over the server's limit, so the largest
  // unacked message is too; it is refused for good (else every reconnect
  // would resend it and be closed again).
  _tooBig(reason) {
    let big = null;
    for (const m of this._held.values()) if (!big || byteLength(m.frame) > byteLength(big.frame)) big = m;
    if (!big) return;
    const size = byteLength(big.frame);
    this.maxMessageBytes = Math.min(this.maxMessageBytes, Math.max(size - 1, 1));
    this._fail(big, "too_large", `the server closed the connection with 1009 (message too big): this message is ${size} bytes ${reason}`.trim());
  }

  _canSend() {
    return this._queue.length > 0 && this._inFlight < this._cwnd && Date.now() >= this._holdUntil;
  }

  _pump() {
    const ws = this._ws;
    if (!this._open || !ws || ws.readyState !== 1) return;
    try {
      while (this._replies.length) ws.send(this._replies.shift());
      while (this._canSend()) {
        const seq = heapPop(this._queue);
        const m = this._held.get(seq);
        if (!m || m.inFlight) continue;
        m.inFlight = true;
        if (this._inFlight === 0) this._lastProgress = Date.now();
        this._inFlight += 1;
        if (m.resend) this.stats.resent += 1;
        else if (m.sentBefore) this.stats.retried += 1;
        m.resend = false;
        m.sentBefore = true;
        ws.send(m.frame);
      }
    } catch {
      // the socket is closing: its close event takes it from here
    }
    this._syncStats();
  }
}

function heapPush(h, v) {
  h.push(v);
  let i = h.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p] <= v) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = v;
}

function heapPop(h) {
  const top = h[0];
  const last = h.pop();
  if (h.length) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && h[r] < h[l] ? r : l;
      if (h[c] >= last) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
  }
  return top;
}
