// The session's refusals: malformed notifications, info out of range, a response to a request
// never sent, ERROR frames, KEEPALIVE, the response timeout and abort (both send CANCEL),
// a dropped link.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeLink, ManualClock, settle } from './fakes.js';
import { Session } from '../src/session.js';
import { Command, fragment } from '../src/frame.js';
import { encodeInfo } from '../src/objects.js';
import { encodeCbor } from '../src/cbor.js';
import { encodeResponse } from '../src/messages.js';
import {
  AbortedError, DecodeError, DeviceInfoError, DisconnectedError, FrameError, LocalcertError,
  PinInvalidError, ResponseTimeoutError, UnexpectedFrameError, UnsolicitedResponseError,
  InvalidSequenceError, UserDeniedError,
} from '../src/errors.js';
import { hex } from './util.js';

const CANCEL = 'be0000';
const LIST_EMPTY = encodeResponse({ kind: 'list', value: [] });
const msg = (data: Uint8Array) => fragment(Command.MSG, data, 18);

async function open(link = new FakeLink(), clock = new ManualClock()) {
  return { link, clock, session: await Session.open(link, { clock }) };
}

test('info out of range is refused with DeviceInfoError, before any subscription', async () => {
  const cases: [string, Uint8Array][] = [
    ['revision 0', encodeInfo({ revision: 0, maxFragmentLen: 18, maxMessageLen: 8192 })],
    ['fragment 17', encodeInfo({ revision: 2, maxFragmentLen: 17, maxMessageLen: 8192 })],
    ['fragment 513', encodeInfo({ revision: 2, maxFragmentLen: 513, maxMessageLen: 8192 })],
    ['message 0', encodeInfo({ revision: 2, maxFragmentLen: 18, maxMessageLen: 0 })],
    ['revision 1', encodeInfo({ revision: 1, maxFragmentLen: 18, maxMessageLen: 8192 })],
    ['revision 3', encodeInfo({ revision: 3, maxFragmentLen: 18, maxMessageLen: 8192 })],
    ['unknown key', encodeCbor(new Map([[1, 1], [2, 18], [3, 8192], [4, 0]]))],
    ['not CBOR', Uint8Array.of(0xff)],
  ];
  for (const [what, info] of cases) {
    const link = new FakeLink();
    link.info = info;
    await assert.rejects(Session.open(link), DeviceInfoError, what);
  }
});

test('fragments are sized from max_fragment_len', async () => {
  const link = new FakeLink();
  link.info = encodeInfo({ revision: 2, maxFragmentLen: 40, maxMessageLen: 8192 });
  const { session } = await open(link);
  assert.equal(session.fragmentLen, 40);
  const p = session.request({ kind: 'remove', value: { origin: 'https://a-rather-long-origin.example.com:8443' } });
  await settle();
  assert.ok(link.writes.length > 1);
  assert.ok(link.writes.every((w) => w.length <= 40));
  assert.equal(link.writes[0]!.length, 40);
  link.notify(...fragment(Command.MSG, encodeResponse({ kind: 'remove', value: { name: 'tv.local' } }), 40));
  assert.equal((await p).response.kind, 'remove');
});

test('a request longer than the device\'s max_message_len is not sent', async () => {
  const link = new FakeLink();
  link.info = encodeInfo({ revision: 2, maxFragmentLen: 18, maxMessageLen: 20 });
  const { session } = await open(link);
  await assert.rejects(session.request({ kind: 'remove', value: { origin: 'https://vod.example.com' } }),
    (e) => e instanceof LocalcertError && e.code === 'message_too_long');
  assert.equal(link.writes.length, 0);
});

test('a response to a request never sent is refused, and the next request fails with it', async () => {
  const { link, session } = await open();
  link.notify(...msg(LIST_EMPTY));
  await assert.rejects(session.request({ kind: 'list' }), UnsolicitedResponseError);
  assert.equal(link.writes.length, 0, 'nothing was sent after the refusal');
});

test('a second response to one request is refused', async () => {
  const { link, session } = await open();
  link.onWrite = () => link.notify(...msg(LIST_EMPTY), ...msg(LIST_EMPTY));
  const first = await session.request({ kind: 'list' });
  assert.equal(first.response.kind, 'list');
  await assert.rejects(session.request({ kind: 'list' }), UnsolicitedResponseError);
});

test('malformed notifications fail the request with the §3.2 kind, and CANCEL is sent', async () => {
  const cases: [string, Uint8Array[]][] = [
    ['empty_fragment', [new Uint8Array(0)]],
    ['fragment_too_long', [new Uint8Array(513).fill(0x83)]],
    ['unknown_command', [Uint8Array.of(0x90, 0, 0)]],
    ['truncated_header', [Uint8Array.of(0x83, 0)]],
    ['message_too_long', [Uint8Array.of(0x83, 0x20, 0x01)]],
    ['overrun', [Uint8Array.of(0x83, 0, 1, 1, 2)]],
    ['unexpected_continuation', [Uint8Array.of(0x0f, 1)]],
    ['sequence_gap', [Uint8Array.of(0x83, 0, 64, 1), Uint8Array.of(0, 2), Uint8Array.of(0x11, 3)]],
    ['duplicate_continuation', [Uint8Array.of(0x83, 0, 9, 1), Uint8Array.of(1, 2), Uint8Array.of(1, 3)]],
    ['interrupted', [Uint8Array.of(0x83, 0, 9, 1), Uint8Array.of(0x83, 0, 1, 1)]],
  ];
  for (const [kind, frags] of cases) {
    const { link, session } = await open();
    const p = session.request({ kind: 'list' });
    await settle();
    link.notify(...frags);
    await assert.rejects(p, (e) => e instanceof FrameError && e.kind === kind, kind);
    await settle();
    assert.equal(hex(link.writes[link.writes.length - 1]!), CANCEL, `${kind}: CANCEL sent`);
  }
});

test('a frame left unfinished for 5 s fails with the timeout kind', async () => {
  const { link, clock, session } = await open();
  const p = session.request({ kind: 'list' });
  await settle();
  link.notify(Uint8Array.of(0x83, 0, 40, 0, 1));
  clock.advance(4999);
  link.notify(Uint8Array.of(0, 1, 2)); // restarts the fragment timeout
  clock.advance(4999);
  assert.equal(link.writes.length, 1, 'still waiting 4999 ms after the last fragment');
  clock.advance(1);
  await assert.rejects(p, (e) => e instanceof FrameError && e.kind === 'timeout');
  await settle();
  assert.equal(hex(link.writes[link.writes.length - 1]!), CANCEL);
});

test('a response that does not decode is a DecodeError', async () => {
  const { link, session } = await open();
  const p = session.request({ kind: 'list' });
  await settle();
  link.notify(...msg(Uint8Array.of(0x00, 0xa1, 0x01, 0x91)));
  await assert.rejects(p, (e) => e instanceof DecodeError && e.kind === 'bad_length');
});

test('error statuses and ERROR frames are typed §6 errors', async () => {
  const { link, session } = await open();
  let p = session.request({ kind: 'list' });
  await settle();
  link.notify(...msg(encodeResponse({ kind: 'error', code: 0x14, message: 'wrong' })));
  await assert.rejects(p, (e) => e instanceof PinInvalidError && e.code === 'PIN_INVALID' && e.source === 'response');
  p = session.request({ kind: 'list' });
  await settle();
  link.notify(Uint8Array.of(0xbf, 0, 1, 0x04));
  await assert.rejects(p, (e) => e instanceof InvalidSequenceError && e.source === 'frame');
  p = session.request({ kind: 'list' });
  await settle();
  link.notify(Uint8Array.of(0xbf, 0, 1, 0x42));
  await assert.rejects(p, UnexpectedFrameError);
});

test('KEEPALIVE calls back and keeps the request alive; silence for 5 s cancels', async () => {
  const { link, clock, session } = await open();
  const seen: string[] = [];
  const p = session.request({ kind: 'attest', value: { origin: 'https://a.test', userHandle: Uint8Array.of(1), keyAuthorizationHash: new Uint8Array(32), deviceLabel: 'tv' } }, { onKeepAlive: (s) => seen.push(s) });
  await settle();
  for (let i = 0; i < 10; i++) {
    clock.advance(1000);
    link.notify(Uint8Array.of(0x82, 0, 1, i < 5 ? 0x02 : 0x01));
  }
  assert.deepEqual(seen, [...Array(5).fill('user_presence_needed'), ...Array(5).fill('processing')]);
  clock.advance(4999);
  link.notify(Uint8Array.of(0x82, 0, 1, 0x01));
  clock.advance(5000);
  await assert.rejects(p, ResponseTimeoutError);
  await settle();
  assert.equal(hex(link.writes[link.writes.length - 1]!), CANCEL);
  // The device answers the cancelled request with CANCELLED: dropped, not unsolicited.
  link.notify(...msg(Uint8Array.of(0x1c)));
  link.onWrite = (f) => { if (f[0] === 0x83) link.notify(...msg(LIST_EMPTY)); };
  assert.equal((await session.request({ kind: 'list' })).response.kind, 'list');
});

test('after a CANCEL the next request waits for the abandoned answer, which is dropped', async () => {
  const { link, session } = await open();
  const ac = new AbortController();
  const first = session.request({ kind: 'list' }, { signal: ac.signal });
  await settle();
  ac.abort();
  await assert.rejects(first, AbortedError);
  const second = session.request({ kind: 'list' });
  await settle();
  assert.equal(link.writes.filter((w) => w[0] === 0x83).length, 1, 'nothing sent before the abandoned request is answered');
  link.notify(...msg(Uint8Array.of(0x1c)));
  await settle();
  assert.equal(link.writes.filter((w) => w[0] === 0x83).length, 2);
  link.notify(...msg(LIST_EMPTY));
  assert.deepEqual((await second).response, { kind: 'list', value: [] });
});

test('a device that never answers the abandoned request holds the next one back 5 s at most', async () => {
  const { link, clock, session } = await open();
  const ac = new AbortController();
  const first = session.request({ kind: 'list' }, { signal: ac.signal });
  await settle();
  ac.abort();
  await assert.rejects(first, AbortedError);
  const second = session.request({ kind: 'list' });
  clock.advance(4999);
  await settle();
  assert.equal(link.writes.filter((w) => w[0] === 0x83).length, 1);
  clock.advance(1);
  await settle();
  assert.equal(link.writes.filter((w) => w[0] === 0x83).length, 2);
  link.notify(...msg(LIST_EMPTY));
  assert.equal((await second).response.kind, 'list');
});

test('a KEEPALIVE with a bad status byte is refused', async () => {
  const { link, session } = await open();
  const p = session.request({ kind: 'list' });
  await settle();
  link.notify(Uint8Array.of(0x82, 0, 1, 0x07));
  await assert.rejects(p, UnexpectedFrameError);
});

test('an AbortSignal sends CANCEL and rejects with AbortedError', async () => {
  const { link, session } = await open();
  const ac = new AbortController();
  const p = session.request({ kind: 'list' }, { signal: ac.signal });
  await settle();
  ac.abort();
  await assert.rejects(p, AbortedError);
  await settle();
  assert.equal(hex(link.writes[link.writes.length - 1]!), CANCEL);
  const already = new AbortController();
  already.abort();
  await assert.rejects(session.request({ kind: 'list' }, { signal: already.signal }), AbortedError);
});

test('PING is echoed; a PING the page did not send is refused', async () => {
  const { link, session } = await open();
  link.onWrite = (f) => { if (f[0] === 0x81) link.notify(...fragment(Command.PING, Uint8Array.of(1, 2, 3), 18)); };
  await session.ping(Uint8Array.of(1, 2, 3));
  link.onWrite = undefined;
  link.notify(Uint8Array.of(0x81, 0, 1, 9));
  await assert.rejects(session.request({ kind: 'list' }), UnexpectedFrameError);
});

test('one request at a time; a dropped link fails the request', async () => {
  const { link, session } = await open();
  const p = session.request({ kind: 'list' });
  await assert.rejects(session.request({ kind: 'list' }), (e) => e instanceof LocalcertError && e.code === 'request_in_progress');
  link.drop();
  await assert.rejects(p, DisconnectedError);
  await assert.rejects(session.request({ kind: 'list' }), DisconnectedError);
});

test('USER_DENIED from the device is a UserDeniedError', async () => {
  const { link, session } = await open();
  link.onWrite = (f) => { if (f[0] === 0x83) link.notify(...msg(Uint8Array.of(0x12))); };
  await assert.rejects(session.request({ kind: 'list' }), UserDeniedError);
});

test('the response timeout counts from the last fragment written, not from the first', async () => {
  // A slow link: each write takes 1 s (at MTU 23 an INSTALL is ~120 writes).
  const clock = new ManualClock();
  class SlowLink extends FakeLink {
    override async write(f: Uint8Array): Promise<void> {
      await new Promise<void>((r) => clock.setTimeout(r, 1000));
      await super.write(f);
    }
  }
  const link = new SlowLink();
  const { session } = await open(link, clock);
  const origin = `https://${'a'.repeat(60)}.${'b'.repeat(60)}.example`;
  const p = session.request({ kind: 'remove', value: { origin } });
  let outcome: unknown;
  p.then((r) => { outcome = r; }, (e) => { outcome = e; });
  const fragments = () => link.writes.filter((w) => w[0] !== 0xbe).length;
  for (let i = 0; i < 20 && fragments() < 8; i++) {
    await settle();
    clock.advance(1000);
  }
  await settle();
  assert.ok(fragments() >= 8, `${fragments()} fragments written over ${fragments()} s`);
  assert.equal(outcome, undefined, 'still waiting: no timeout while the request was being written');
  assert.ok(!link.writes.some((w) => w[0] === 0xbe), 'no CANCEL');
  clock.advance(4000);
  link.notify(...msg(encodeResponse({ kind: 'remove', value: { name: 'tv.local' } })));
  assert.equal((await p).response.kind, 'remove');
});
