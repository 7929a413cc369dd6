// RFC 8949 Appendix A vectors for what the client encodes and decodes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encode, decode } from "../src/cbor.js";

const hex = (u8) => Buffer.from(u8).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));

test("encodes the RFC 8949 examples", () => {
  const cases = [
    [0, "00"], [1, "01"], [23, "17"], [24, "1818"], [100, "1864"], [1000, "1903e8"],
    [1000000, "1a000f4240"], [1000000000000, "1b000000e8d4a51000"], [-1, "20"],
    [-1000, "3903e7"], [1.1, "fb3ff199999999999a"], [-4.1, "fbc010666666666666"],
    [false, "f4"], [true, "f5"], [null, "f6"], ["", "60"], ["a", "6161"],
    ["\u00fc", "62c3bc"], ["\u6c34", "63e6b0b4"], ["\ud800\udd51", "64f0908591"],
    [[1, [2, 3]], "8201820203"], [{ a: 1, b: [2, 3] }, "a26161016162820203"],
    [1732492800123, "1b00000193609e307b"],
  ];
  for (const [v, h] of cases) assert.equal(hex(encode(v)), h, JSON.stringify(v));
});

test("decodes half, single and double floats, big integers and tags", () => {
  assert.equal(decode(unhex("f93c00")), 1.0);
  assert.equal(decode(unhex("f97bff")), 65504.0);
  assert.equal(decode(unhex("fa47c35000")), 100000.0);
  assert.equal(decode(unhex("f90001")), 5.960464477539063e-8);
  assert.equal(decode(unhex("fb7e37e43c8800759c")), 1.0e300);
  assert.equal(decode(unhex("1bffffffffffffffff")), 18446744073709551615n);
  assert.equal(decode(unhex("c11a514b67b0")), 1363896240);
  assert.deepEqual(decode(unhex("a26161016162820203")), { a: 1, b: [2, 3] });
});

test("round-trips a downlink and refuses truncated input", () => {
  const v = { nack: 43, error: "invalid_field", detail: "fields.t \u00e9 \"NaN\"" };
  assert.deepEqual(decode(encode(v)), v);
  assert.throws(() => decode(unhex("62c3")), /truncated/);
  assert.throws(() => decode(unhex("0101")), /trailing/);
});
