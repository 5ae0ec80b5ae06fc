// Strictness beyond the vectors (SPEC §4): values no field has (floats, tags, null, undefined,
// simple values), indefinite lengths, reserved encodings and non-minimal lengths, each with its
// kind; and the canonical re-encoding check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRequest, decodeResponse, Operation } from '../src/messages.js';
import { decodeInfo } from '../src/objects.js';
import { DecodeError } from '../src/errors.js';

const kindOf = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof DecodeError, String(e));
    return e.kind;
  }
  return 'accepted';
};
// REMOVE {1: <value>}
const remove = (...value: number[]) => Uint8Array.of(0x05, 0xa1, 0x01, ...value);

test('values of types no field has are the wrong type', () => {
  const cases: [string, number[]][] = [
    ['float16', [0xf9, 0x3c, 0x00]], ['float32', [0xfa, 0, 0, 0, 0]], ['float64', [0xfb, 0, 0, 0, 0, 0, 0, 0, 0]],
    ['tag', [0xc0, 0x61, 0x61]], ['null', [0xf6]], ['undefined', [0xf7]], ['simple', [0xf8, 0x20]],
    ['simple 0', [0xe0]], ['true', [0xf5]], ['negative', [0x20]], ['bytes', [0x41, 0x61]], ['array', [0x80]],
    ['indefinite text', [0x7f, 0x61, 0x61, 0xff]], ['indefinite bytes', [0x5f, 0x41, 0x61, 0xff]], ['break', [0xff]],
  ];
  for (const [what, value] of cases) assert.equal(kindOf(() => decodeRequest(remove(...value))), 'wrong_type', what);
});

test('reserved and truncated encodings are malformed; non-minimal lengths are non-canonical', () => {
  assert.equal(kindOf(() => decodeRequest(remove(0x7c))), 'malformed', 'reserved additional info 28');
  assert.equal(kindOf(() => decodeRequest(remove(0x78))), 'malformed', 'length byte missing');
  assert.equal(kindOf(() => decodeRequest(remove(0x6e, 0x61))), 'malformed', 'text shorter than its length');
  assert.equal(kindOf(() => decodeRequest(remove(0x7b, 0, 0, 0, 0, 0, 0, 0, 1, 0x61))), 'non_canonical', '64-bit length of 1');
  const origin = [...new TextEncoder().encode('https://a.test')];
  assert.equal(kindOf(() => decodeRequest(remove(0x78, origin.length, ...origin))), 'non_canonical', 'text length in 2 bytes');
  assert.equal(kindOf(() => decodeRequest(Uint8Array.of(0x05, 0xb8, 0x01, 0x01, 0x6e, ...origin))), 'non_canonical', 'map length in 2 bytes');
  assert.equal(decodeRequest(remove(0x6e, ...origin)).kind, 'remove');
});

test('info: integers that are not minimal, unknown and missing keys', () => {
  assert.equal(kindOf(() => decodeInfo(Uint8Array.of(0xa3, 0x01, 0x01, 0x02, 0x18, 0x12, 0x03, 0x19, 0x20, 0x00))), 'non_canonical');
  assert.equal(kindOf(() => decodeInfo(Uint8Array.of(0xa2, 0x01, 0x01, 0x02, 0x12))), 'missing_key');
  assert.equal(kindOf(() => decodeInfo(Uint8Array.of(0xa1, 0x04, 0x01))), 'unknown_key');
  assert.equal(kindOf(() => decodeInfo(Uint8Array.of(0xa1, 0x61, 0x61, 0x01))), 'wrong_type');
});

test('an error message is for people: decoded strictly, never longer than 128 bytes', () => {
  const r = decodeResponse(Operation.LIST, Uint8Array.of(0x12, 0xa1, 0x01, 0x62, 0x68, 0x69));
  assert.deepEqual(r, { kind: 'error', code: 0x12, message: 'hi' });
  assert.equal(kindOf(() => decodeResponse(Operation.LIST, Uint8Array.of(0x12, 0xa1, 0x02, 0x62, 0x68, 0x69))), 'unknown_key');
  assert.equal(kindOf(() => decodeResponse(Operation.LIST, Uint8Array.of(0x12, 0xa1, 0x01, 0x62, 0xc3, 0x28))), 'malformed');
});
