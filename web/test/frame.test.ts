// SPEC §3.2 reordering rules of the TypeScript reassembler, beyond the vectors: the window's
// edge, keep-alives among a response's fragments, early continuations and their timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command, Reassembler, fragment } from '../src/frame.js';
import { FRAGMENT_TIMEOUT_MS, MAX_MESSAGE_LEN, REORDER_WINDOW } from '../src/constants.js';
import { FrameError } from '../src/errors.js';

const kind = (k: string) => (e: unknown) => e instanceof FrameError && e.kind === k;

test('a frame comes back from fragments reversed in blocks of every size up to the window', () => {
  const data = Uint8Array.from({ length: MAX_MESSAGE_LEN }, (_, i) => (i * 13) & 0xff);
  const frags = fragment(Command.MSG, data, 18);
  for (let block = 1; block <= REORDER_WINDOW; block++) {
    const order: number[] = [];
    for (let at = 0; at < frags.length; at += block) {
      order.push(...frags.map((_, i) => i).slice(at, at + block).reverse());
    }
    const r = new Reassembler();
    let frame;
    for (const [n, i] of order.entries()) {
      frame = r.handleFragment(0, frags[i]!);
      if (n + 1 < order.length) assert.equal(frame, undefined, `block ${block}: complete early`);
    }
    assert.ok(frame, `block ${block}`);
    assert.deepEqual(frame.data, data);
    assert.ok(r.isIdle());
  }
});

test('the window is a hard edge, before and after the initial fragment', () => {
  const r = new Reassembler();
  assert.equal(r.handleFragment(0, Uint8Array.of(14, 1)), undefined);
  assert.throws(() => r.handleFragment(0, Uint8Array.of(15, 1)), kind('unexpected_continuation'));
  assert.ok(r.isIdle());
  assert.equal(r.handleFragment(0, Uint8Array.of(0x83, 0, 64, 1)), undefined);
  assert.equal(r.handleFragment(0, Uint8Array.of(15, 1)), undefined);
  assert.throws(() => r.handleFragment(0, Uint8Array.of(16, 1)), kind('sequence_gap'));
  assert.ok(r.isIdle());
});

test('a whole KEEPALIVE among a response\'s fragments is delivered and leaves the response be', () => {
  const r = new Reassembler();
  assert.equal(r.handleFragment(0, Uint8Array.of(0x83, 0, 4, 1)), undefined);
  assert.deepEqual(r.handleFragment(0, Uint8Array.of(0x82, 0, 1, 1)), { cmd: Command.KEEPALIVE, data: Uint8Array.of(1) });
  assert.deepEqual(r.handleFragment(0, Uint8Array.of(0, 2, 3, 4)), { cmd: Command.MSG, data: Uint8Array.of(1, 2, 3, 4) });
  assert.equal(r.handleFragment(0, Uint8Array.of(0x83, 0, 4, 1)), undefined);
  assert.throws(() => r.handleFragment(0, Uint8Array.of(0x82, 0, 2, 1)), kind('interrupted'));
});

test('early continuations count against LEN, time out, and CANCEL drops them', () => {
  const r = new Reassembler();
  assert.equal(r.handleFragment(0, Uint8Array.of(0, 2, 3)), undefined);
  assert.throws(() => r.handleFragment(0, Uint8Array.of(0x83, 0, 2, 1)), kind('overrun'));
  assert.equal(r.handleFragment(0, Uint8Array.of(3, 2, 3)), undefined);
  assert.equal(r.pollTimeout(), FRAGMENT_TIMEOUT_MS);
  assert.throws(() => r.handleTimeout(FRAGMENT_TIMEOUT_MS), kind('timeout'));
  assert.equal(r.handleFragment(0, Uint8Array.of(3, 2, 3)), undefined);
  assert.deepEqual(r.handleFragment(0, Uint8Array.of(0xbe, 0, 0)), { cmd: Command.CANCEL, data: new Uint8Array(0) });
  assert.ok(r.isIdle());
  assert.equal(r.handleFragment(0, Uint8Array.of(0x83, 0, 9, 1)), undefined);
  assert.equal(r.handleFragment(0, Uint8Array.of(1, 2)), undefined);
  assert.throws(() => r.handleFragment(0, Uint8Array.of(1, 2)), kind('duplicate_continuation'));
});
