// A small CBOR (RFC 8949) encoder and decoder for what wsingest exchanges:
// maps with text keys, text, numbers, booleans, null, arrays and byte
// strings. No dependency, so the same file runs in browsers and Node.
//
// Numbers: a safe integer is encoded as a CBOR integer (major 0/1), anything
// else as a float64. Decoding accepts half, single and double floats and
// integers up to 2^64 (BigInt above Number.MAX_SAFE_INTEGER).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  byte(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }
  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  head(major, n) {
    const m = major << 5;
    if (n < 24) {
      this.byte(m | n);
    } else if (n < 0x100) {
      this.ensure(2);
      this.buf[this.len++] = m | 24;
      this.buf[this.len++] = n;
    } else if (n < 0x10000) {
      this.ensure(3);
      this.buf[this.len++] = m | 25;
      this.view.setUint16(this.len, n);
      this.len += 2;
    } else if (n < 0x100000000) {
      this.ensure(5);
      this.buf[this.len++] = m | 26;
      this.view.setUint32(this.len, n);
      this.len += 4;
    } else {
      this.ensure(9);
      this.buf[this.len++] = m | 27;
      this.view.setUint32(this.len, Math.floor(n / 0x100000000));
      this.view.setUint32(this.len + 4, n >>> 0);
      this.len += 8;
    }
  }
  value(v) {
    if (v === null || v === undefined) {
      this.byte(0xf6);
    } else if (v === true) {
      this.byte(0xf5);
    } else if (v === false) {
      this.byte(0xf4);
    } else if (typeof v === "number") {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) {
        if (v >= 0) this.head(0, v);
        else this.head(1, -1 - v);
      } else {
        this.ensure(9);
        this.buf[this.len++] = 0xfb;
        this.view.setFloat64(this.len, v);
        this.len += 8;
      }
    } else if (typeof v === "bigint") {
      if (v >= 0n && v < 2n ** 64n) this.head(0, Number(v)); // exact below 2^53
      else throw new RangeError("cbor: bigint out of range");
    } else if (typeof v === "string") {
      const b = textEncoder.encode(v);
      this.head(3, b.length);
      this.bytes(b);
    } else if (v instanceof Uint8Array) {
      this.head(2, v.length);
      this.bytes(v);
    } else if (Array.isArray(v)) {
      this.head(4, v.length);
      for (const x of v) this.value(x);
    } else if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      this.head(5, keys.length);
      for (const k of keys) {
        this.value(k);
        this.value(v[k]);
      }
    } else {
      throw new TypeError(`cbor: cannot encode ${typeof v}`);
    }
  }
}

/** Encode `value` as CBOR; returns a Uint8Array. */
export function encode(value) {
  const w = new Writer();
  w.value(value);
  return w.buf.slice(0, w.len);
}

function half(h) {
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Decode one CBOR item from `bytes` (Uint8Array or ArrayBuffer). */
export function decode(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let pos = 0;
  const need = (n) => {
    if (pos + n > b.length) throw new RangeError("cbor: truncated");
  };
  const arg = (info) => {
    if (info < 24) return info;
    if (info === 24) { need(1); return b[pos++]; }
    if (info === 25) { need(2); const v = view.getUint16(pos); pos += 2; return v; }
    if (info === 26) { need(4); const v = view.getUint32(pos); pos += 4; return v; }
    if (info === 27) {
      need(8);
      const hi = view.getUint32(pos);
      const lo = view.getUint32(pos + 4);
      pos += 8;
      const n = hi * 0x100000000 + lo;
      return Number.isSafeInteger(n) ? n : (BigInt(hi) << 32n) | BigInt(lo);
    }
    throw new RangeError(`cbor: unsupported length encoding ${info}`);
  };
  const item = (depth) => {
    if (depth > 64) throw new RangeError("cbor: nested too deep");
    need(1);
    const ib = b[pos++];
    const major = ib >> 5;
    const info = ib & 0x1f;
    switch (major) {
      case 0: return arg(info);
      case 1: { const n = arg(info); return typeof n === "bigint" ? -1n - n : -1 - n; }
      case 2: { const n = Number(arg(info)); need(n); const v = b.slice(pos, pos + n); pos += n; return v; }
      case 3: { const n = Number(arg(info)); need(n); const v = textDecoder.decode(b.subarray(pos, pos + n)); pos += n; return v; }
      case 4: { const n = Number(arg(info)); const a = []; for (let i = 0; i < n; i++) a.push(item(depth + 1)); return a; }
      case 5: {
        const n = Number(arg(info));
        const o = {};
        for (let i = 0; i < n; i++) {
          const k = item(depth + 1);
          o[String(k)] = item(depth + 1);
        }
        return o;
      }
      case 6: arg(info); return item(depth + 1); // a tag: its content
      default:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22 || info === 23) return null;
        if (info === 25) { need(2); const v = half(view.getUint16(pos)); pos += 2; return v; }
        if (info === 26) { need(4); const v = view.getFloat32(pos); pos += 4; return v; }
        if (info === 27) { need(8); const v = view.getFloat64(pos); pos += 8; return v; }
        throw new RangeError(`cbor: unsupported simple value ${info}`);
    }
  };
  const v = item(0);
  if (pos !== b.length) throw new RangeError("cbor: trailing bytes");
  return v;
}
