// Session.openWith: the first request beside the info read (SPEC §2.1 MAY), and its refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeLink, ManualClock, settle } from './fakes.js';
import { Session } from '../src/session.js';
import { Command, fragment } from '../src/frame.js';
import { encodeInfo } from '../src/objects.js';
import { encodeRequest, encodeResponse } from '../src/messages.js';
import { DeviceInfoError, DisconnectedError, NotFoundError } from '../src/errors.js';
import { hex } from './util.js';

const LIST_EMPTY = encodeResponse({ kind: 'list', value: [] });

/** A FakeLink whose info read answers only when `answerInfo` is called; it logs what happens. */
class SlowInfoLink extends FakeLink {
  events: string[] = [];
  private release: (() => void) | undefined;
  override async readInfo(): Promise<Uint8Array> {
    this.events.push('read info');
    await new Promise<void>((r) => { this.release = r; });
    this.events.push('info answered');
    return this.info;
  }
  override async write(f: Uint8Array): Promise<void> {
    this.events.push(`write ${hex(f)}`);
    return super.write(f);
  }
  override async subscribe(onValue: (v: Uint8Array) => void, onDisconnect: () => void): Promise<void> {
    this.events.push('subscribe');
    return super.subscribe(onValue, onDisconnect);
  }
  answerInfo(): void {
    this.release?.();
  }
}

test('GET_INFO and LIST fit in one 18-byte fragment, so they can go beside the info read', () => {
  for (const kind of ['get_info', 'list'] as const) {
    assert.equal(fragment(Command.MSG, encodeRequest({ kind }), 18).length, 1, kind);
  }
});

test('the first request is written before info has answered; an answer that comes first is held', async () => {
  const link = new SlowInfoLink();
  link.onWrite = () => link.notify(...fragment(Command.MSG, LIST_EMPTY, 18));
  const opening = Session.openWith(link, { kind: 'list' }, { clock: new ManualClock() });
  await settle();
  const request = hex(fragment(Command.MSG, encodeRequest({ kind: 'list' }), 18)[0]!);
  assert.deepEqual(link.events, ['subscribe', `write ${request}`, 'read info'], 'subscribed, then the request and the read together');
  link.answerInfo();
  const { session, answer } = await opening;
  assert.deepEqual(answer.response, { kind: 'list', value: [] });
  assert.equal(link.writes.length, 1, 'the request was written once');
  assert.equal(session.fragmentLen, 18);
  // The session goes on as usual.
  const next = session.request({ kind: 'list' });
  assert.deepEqual((await next).response, { kind: 'list', value: [] });
});

test('a request longer than one 18-byte fragment goes after the info read, in the device\'s size', async () => {
  const link = new SlowInfoLink();
  link.info = encodeInfo({ revision: 2, maxFragmentLen: 40, maxMessageLen: 8192 });
  const origin = 'https://a-rather-long-origin.example.com:8443';
  const opening = Session.openWith(link, { kind: 'remove', value: { origin } }, { clock: new ManualClock() });
  await settle();
  assert.deepEqual(link.events, ['read info'], 'nothing written before info answered');
  link.answerInfo();
  await settle();
  assert.ok(link.writes.length > 1 && link.writes[0]!.length === 40, 'fragments of the device\'s max_fragment_len');
  link.notify(...fragment(Command.MSG, encodeResponse({ kind: 'remove', value: { name: 'tv.local' } }), 40));
  const { answer } = await opening;
  assert.equal(answer.response.kind, 'remove');
});

test('an info refused after the early request is a DeviceInfoError; the early answer is not used', async () => {
  for (const info of [
    encodeInfo({ revision: 3, maxFragmentLen: 18, maxMessageLen: 8192 }),
    encodeInfo({ revision: 2, maxFragmentLen: 17, maxMessageLen: 8192 }),
  ]) {
    const link = new SlowInfoLink();
    link.info = info;
    link.onWrite = () => link.notify(...fragment(Command.MSG, LIST_EMPTY, 18));
    const opening = Session.openWith(link, { kind: 'list' }, { clock: new ManualClock() });
    await settle();
    link.answerInfo();
    await assert.rejects(opening, DeviceInfoError);
  }
});

test('a link that drops before info answers fails the first request with DisconnectedError', async () => {
  const link = new SlowInfoLink();
  const opening = Session.openWith(link, { kind: 'list' }, { clock: new ManualClock() });
  await settle();
  link.drop();
  link.answerInfo();
  await assert.rejects(opening, DisconnectedError);
});

test('a failed early write is a DisconnectedError', async () => {
  const link = new FakeLink();
  link.write = async () => { throw new Error('GATT operation failed'); };
  await assert.rejects(Session.openWith(link, { kind: 'list' }, { clock: new ManualClock() }), DisconnectedError);
});

test('a refusal answering the early request is its typed error, and the session is closed', async () => {
  const link = new FakeLink();
  link.onWrite = () => link.notify(...fragment(Command.MSG, encodeResponse({ kind: 'error', code: 0x1a, message: 'no binding' }), 18));
  await assert.rejects(Session.openWith(link, { kind: 'list' }, { clock: new ManualClock() }), NotFoundError);
  await settle();
  assert.ok(link.closed, 'the link was closed');
});
