// The Node on-disk buffer: every message the client takes is appended to
// `buffer.log` in the directory before `send` resolves, and marked done
// once acked or refused for good; a process started later on the same
// directory resends what was never answered, with the same seq, ts and
// bytes. The file format is the Python client's (clients/python,
// diskbuffer.py), record by record:
//
//   magic "WSB1" | body length u32 LE | crc32(body) u32 LE | body
//   body = kind u8 | seq u64 LE | rest
//     kind 1 message: rest = points u32 LE | binary u8 | frame bytes
//     kind 2 done;  kind 3 next seq (after a compaction)
//
// Appends are synchronous writes on an append-mode descriptor: a crash or
// kill -9 of the process loses nothing; `fsync: true` also survives power
// loss. A torn tail is cut off on load. LOCK holds the pid of the process
// using the directory.

import fs from "node:fs";
import path from "node:path";

const MAGIC = Buffer.from("WSB1");
const KIND_MESSAGE = 1;
const KIND_DONE = 2;
const KIND_NEXT = 3;
const COMPACT_MIN_BYTES = 1 << 20;

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32(buf) {
  let c = -1;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

function record(kind, seq, rest = Buffer.alloc(0)) {
  const body = Buffer.alloc(9 + rest.length);
  body.writeUInt8(kind, 0);
  body.writeBigUInt64LE(BigInt(seq), 1);
  rest.copy(body, 9);
  const head = Buffer.alloc(12);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(body.length, 4);
  head.writeUInt32LE(crc32(body), 8);
  return Buffer.concat([head, body]);
}

function messageRecord(seq, frame, points) {
  const binary = typeof frame !== "string";
  const raw = binary ? Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength) : Buffer.from(frame, "utf8");
  const rest = Buffer.alloc(5 + raw.length);
  rest.writeUInt32LE(points, 0);
  rest.writeUInt8(binary ? 1 : 0, 4);
  raw.copy(rest, 5);
  return record(KIND_MESSAGE, seq, rest);
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

export class FileBuffer {
  constructor(dir, { fsync = false } = {}) {
    this.dir = dir;
    this.file = path.join(dir, "buffer.log");
    this.fsync = fsync;
    fs.mkdirSync(dir, { recursive: true });
    this.lockPath = path.join(dir, "LOCK.node");
    this._lock();
    this.fd = -1;
    this.bytes = 0;
    this.liveBytes = 0;
    this.liveSizes = new Map();
  }

  _lock() {
    for (let i = 0; i < 2; i++) {
      try {
        const fd = fs.openSync(this.lockPath, "wx");
        fs.writeSync(fd, String(process.pid));
        fs.closeSync(fd);
        return;
      } catch (e) {
        if (e.code !== "EEXIST") throw e;
        const pid = Number(fs.readFileSync(this.lockPath, "utf8"));
        if (pid && pid !== process.pid && pidAlive(pid)) {
          throw new Error(`buffer directory ${this.dir} is in use by process ${pid}`);
        }
        fs.rmSync(this.lockPath, { force: true }); // left by a dead process
      }
    }
    throw new Error(`cannot lock buffer directory ${this.dir}`);
  }

  /** The pending messages in seq order, and the next seq. */
  load() {
    let data;
    try {
      data = fs.readFileSync(this.file);
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
      data = Buffer.alloc(0);
    }
    const pending = new Map();
    let nextSeq = 1;
    let pos = 0;
    let good = 0;
    while (pos + 12 <= data.length) {
      if (!data.subarray(pos, pos + 4).equals(MAGIC)) break;
      const len = data.readUInt32LE(pos + 4);
      const crc = data.readUInt32LE(pos + 8);
      const end = pos + 12 + len;
      if (end > data.length || len < 9) break;
      const body = data.subarray(pos + 12, end);
      if (crc32(body) !== crc) break;
      const kind = body.readUInt8(0);
      const seq = Number(body.readBigUInt64LE(1));
      if (kind === KIND_MESSAGE) {
        const points = body.readUInt32LE(9);
        const binary = body.readUInt8(13) === 1;
        const raw = body.subarray(14);
        const frame = binary ? new Uint8Array(raw) : raw.toString("utf8");
        pending.set(seq, { seq, frame, points, size: end - pos });
        nextSeq = Math.max(nextSeq, seq + 1);
      } else if (kind === KIND_DONE) {
        pending.delete(seq);
        nextSeq = Math.max(nextSeq, seq + 1);
      } else if (kind === KIND_NEXT) {
        nextSeq = Math.max(nextSeq, seq);
      } else {
        break;
      }
      pos = end;
      good = end;
    }
    this.fd = fs.openSync(this.file, "a");
    if (good < data.length) fs.ftruncateSync(this.fd, good);
    this.bytes = good;
    for (const p of pending.values()) {
      this.liveSizes.set(p.seq, p.size);
      this.liveBytes += p.size;
    }
    const list = [...pending.values()].sort((a, b) => a.seq - b.seq);
    return { pending: list, nextSeq };
  }

  _write(rec) {
    fs.writeSync(this.fd, rec);
    this.bytes += rec.length;
    if (this.fsync) fs.fdatasyncSync(this.fd);
  }

  append(seq, frame, points) {
    const rec = messageRecord(seq, frame, points);
    this._write(rec);
    this.liveSizes.set(seq, rec.length);
    this.liveBytes += rec.length;
  }

  /** `seq` is answered; `pending` (seq -> {frame, points}) is what is left. */
  done(seq, pending) {
    this._write(record(KIND_DONE, seq));
    this.liveBytes -= this.liveSizes.get(seq) ?? 0;
    this.liveSizes.delete(seq);
    if (this.bytes > COMPACT_MIN_BYTES && this.bytes > 4 * this.liveBytes) this._compact(pending, seq + 1);
  }

  _compact(pending, nextSeq) {
    let top = nextSeq;
    for (const s of pending.keys()) top = Math.max(top, s + 1);
    const recs = [record(KIND_NEXT, top)];
    const sizes = new Map();
    for (const s of [...pending.keys()].sort((a, b) => a - b)) {
      const m = pending.get(s);
      const rec = messageRecord(s, m.frame, m.points);
      sizes.set(s, rec.length);
      recs.push(rec);
    }
    const data = Buffer.concat(recs);
    const tmp = this.file + ".tmp";
    const fd = fs.openSync(tmp, "w");
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, this.file);
    const dfd = fs.openSync(this.dir, "r");
    fs.fsyncSync(dfd);
    fs.closeSync(dfd);
    fs.closeSync(this.fd);
    this.fd = fs.openSync(this.file, "a");
    this.bytes = data.length;
    this.liveSizes = sizes;
    this.liveBytes = data.length;
  }

  close() {
    if (this.fd >= 0) {
      if (this.fsync) fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = -1;
    }
    fs.rmSync(this.lockPath, { force: true });
  }
}
