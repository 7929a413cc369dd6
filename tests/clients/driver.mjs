// Test driver for the JavaScript client in Node (tests/clients_js.rs runs
// it); the same points and output lines as driver.py.
import { parseArgs } from "node:util";
import { WsingestClient, AuthError, DeliveryFailedError, FlushTimeoutError } from "../../clients/js/src/index.js";

const { values: a } = parseArgs({
  options: {
    url: { type: "string" },
    device: { type: "string" },
    token: { type: "string" },
    encoding: { type: "string", default: "json" },
    first: { type: "string", default: "0" },
    count: { type: "string", default: "100" },
    rate: { type: "string", default: "0" },
    ts0: { type: "string", default: "1700000000000" },
    "auto-ts": { type: "boolean", default: false },
    pad: { type: "string", default: "0" },
    window: { type: "string", default: "64" },
    "buffer-dir": { type: "string" },
    "backoff-max": { type: "string", default: "2" },
    "flush-timeout": { type: "string", default: "90" },
    mode: { type: "string", default: "normal" },
  },
});

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const first = Number(a.first);
const count = Number(a.count);
const rate = Number(a.rate);
const pad = Number(a.pad);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const c = new WsingestClient(a.url, {
  device: a.device,
  token: a.token,
  encoding: a.encoding,
  window: Number(a.window),
  bufferDir: a["buffer-dir"],
  backoffBaseMs: 100,
  backoffMaxMs: Number(a["backoff-max"]) * 1000,
  ackTimeoutMs: 20_000,
});
c.onCommand(({ name, args }) => (name === "set_interval" ? { ok: true, detail: `interval ${args?.seconds}` } : false));

let result = { result: "ok" };
try {
  let i = first;
  let sent = 0;
  const start = Date.now();
  while (a.mode === "forever" || i < first + count) {
    if (rate > 0) {
      const due = start + (sent / rate) * 1000;
      if (due > Date.now()) await sleep(due - Date.now());
    }
    const fields = { n: i, v: i * 0.25, s: `p-${String(i).padStart(6, "0")}-` + "x".repeat(pad) };
    const tags = { client: "js" };
    if (a.mode === "nacks" && i === first + 3) tags.device = "someone-else";
    if (a.mode === "nacks" && i === first + 5) fields.v = "five";
    if (a.mode === "nacks" && i === first + 7) fields.s = "x".repeat(5000);
    const ts = a["auto-ts"] ? undefined : Number(a.ts0) + i;
    await c.send({ measurement: "clients", fields, tags, ts });
    i += 1;
    sent += 1;
    if (sent % 10 === 0) out({ progress: sent });
  }
  if (a.mode === "hold") {
    out({ held: sent, stats: c.stats });
    await sleep(3_600_000);
  }
  await c.flush(Number(a["flush-timeout"]) * 1000);
} catch (e) {
  if (e instanceof AuthError) result = { result: "auth_error", error: e.message, status: e.status, close_code: e.closeCode };
  else if (e instanceof DeliveryFailedError)
    result = { result: "failed", error: e.message, failures: e.failures.map(({ seq, error, detail }) => ({ seq, error, detail })) };
  else if (e instanceof FlushTimeoutError) result = { result: "timeout", error: e.message };
  else result = { result: "error", error: String(e?.stack ?? e) };
}
result.stats = { ...c.stats };
await c.close();
out(result);
process.exit(0);
