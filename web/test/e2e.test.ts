// Item 7 of issue 10, the fast proof without a VM: provision() against the REAL device engine
// (localcert-device bridge), the real issuer and the real RP backend, all on loopback. Then
// list() and remove() over the same bridge, and the backend's refusals as typed errors.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ORIGIN, type Roles, pageFetch, startRoles } from './harness.js';
import { list, provision, remove, type Step } from '../src/provision.js';
import { deriveName } from '../src/names.js';
import { decodeResponse, Operation } from '../src/messages.js';
import { AbortedError, ForbiddenOriginError, NotFoundError, UnauthenticatedError } from '../src/errors.js';

let roles: Roles;

before(async () => {
  roles = await startRoles(185);
}, { timeout: 180_000 });

after(() => roles?.stop());

async function withTails<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    (e as Error).message += `\n${roles.tails()}`;
    throw e;
  }
}

test('provision() over the device bridge, real issuer and real RP backend; then fetch the device', { timeout: 120_000 }, () => withTails(async () => {
  const { fetchFn, seenFingerprints } = pageFetch(roles);
  const steps: Step[] = [];
  const result = await provision({
    backend: roles.rpBase, origin: ORIGIN, fetch: fetchFn, link: async () => roles.bridge.link(),
    onStep: (s) => steps.push(s),
  });
  // The name is the one the page derives itself from the device's certificate (SPEC §8.3).
  const info = await infoOverBridge();
  const expected = await deriveName('media-server', ORIGIN, info.attestationChain[0]!);
  assert.equal(result.name, expected);
  assert.equal(result.url, `https://${expected}:${roles.bridge.httpsPort}/`);
  assert.match(result.fingerprint, /^[0-9a-f]{64}$/);
  assert.deepEqual(steps, ['config', 'connect', 'info', 'flow', 'attest', 'attestation', 'install', 'installed', 'fetch', 'done']);
  assert.equal(result.deviceAnswer.status, 200);
  assert.equal(result.deviceAnswer.allowOrigin, ORIGIN, 'the device answers with CORS for the origin');
  assert.ok(result.deviceAnswer.body.length > 0);
  assert.deepEqual(seenFingerprints, [result.fingerprint], 'the device serves the certificate the backend issued');
  assert.ok(roles.bridge.continuations > 0, 'requests went over the bridge in several fragments');
  assert.equal(roles.bridge.longestWrite, 180, 'fragments of max_fragment_len at MTU 185');

  const bindings = await list({ link: async () => roles.bridge.link() });
  assert.equal(bindings.length, 1);
  assert.equal(bindings[0]!.origin, ORIGIN);
  assert.equal(bindings[0]!.name, expected);
  assert.equal(Buffer.from(bindings[0]!.fingerprint).toString('hex'), result.fingerprint);

  assert.equal(await remove(ORIGIN, { link: async () => roles.bridge.link() }), expected);
  assert.deepEqual(await list({ link: async () => roles.bridge.link() }), []);
  await assert.rejects(remove(ORIGIN, { link: async () => roles.bridge.link() }), NotFoundError);
}));

test('the same at ATT MTU 23: 18-byte fragments both ways', { timeout: 120_000 }, () => withTails(async () => {
  const small = await roles.addDevice(23, 'device-mtu23');
  const { fetchFn } = pageFetch(roles);
  const result = await provision({ backend: roles.rpBase, origin: ORIGIN, fetch: fetchFn, link: async () => small.link(), label: 'tv' });
  assert.match(result.name, /^tv-vod-example-test-[0-9a-z]{6}-[0-9a-z]{4}\.local$/);
  assert.equal(result.deviceAnswer.status, 200);
  assert.ok(small.continuations > 30, `requests went in many fragments (${small.continuations} continuations)`);
  assert.equal(small.longestWrite, 18, 'no fragment longer than the device\'s max_fragment_len at MTU 23');
  const [binding] = await list({ link: async () => small.link() });
  assert.equal(binding?.name, result.name);
}));

test('a STAR certificate: the device gets the renewal URL and lists the binding as STAR', { timeout: 120_000 }, () => withTails(async () => {
  const star = await roles.addDevice(247, 'device-star');
  const { fetchFn } = pageFetch(roles);
  const result = await provision({ backend: roles.rpBase, origin: ORIGIN, fetch: fetchFn, link: async () => star.link(), label: 'star', star: true });
  assert.equal(result.deviceAnswer.status, 200);
  const [binding] = await list({ link: async () => star.link() });
  assert.equal(binding?.name, result.name);
  assert.equal(binding?.star, true);
}));

test('aborting while the device waits for its user sends CANCEL; nothing is bound', { timeout: 120_000 }, () => withTails(async () => {
  // The device asks its user through a command that never answers in time.
  const slow = await roles.addDevice(185, 'device-button', 'presence = "command"\npresence_command = ["sh", "-c", "sleep 30", "presence"]');
  const { fetchFn } = pageFetch(roles);
  const ac = new AbortController();
  const steps: Step[] = [];
  await assert.rejects(provision({
    backend: roles.rpBase, origin: ORIGIN, fetch: fetchFn, link: async () => slow.link(), label: 'button', signal: ac.signal,
    onStep: (s) => {
      steps.push(s);
      if (s === 'presence') ac.abort();
    },
  }), AbortedError);
  assert.deepEqual(steps.slice(-2), ['attest', 'presence'], 'the device asked for its user (KEEPALIVE USER_PRESENCE_NEEDED)');
  assert.equal(slow.cancels, 1, 'CANCEL went to the device');
  assert.deepEqual(await list({ link: async () => slow.link() }), []);
}));

async function infoOverBridge() {
  const { Session } = await import('../src/session.js');
  const session = await Session.open(roles.bridge.link());
  try {
    const answer = await session.request({ kind: 'get_info' });
    const response = decodeResponse(Operation.GET_INFO, answer.bytes);
    assert.equal(response.kind, 'info');
    return (response as { kind: 'info'; value: import('../src/messages.js').InfoResponse }).value;
  } finally {
    await session.close();
  }
}

test('the real backend refuses another origin and a request without a session, as typed errors', { timeout: 60_000 }, () => withTails(async () => {
  const before = await list({ link: async () => roles.bridge.link() });
  const other = pageFetch(roles, { origin: 'https://evil.example.test' });
  await assert.rejects(
    provision({ backend: roles.rpBase, fetch: other.fetchFn, link: async () => roles.bridge.link() }),
    (e) => e instanceof ForbiddenOriginError && e.status === 403 && e.code === 'forbidden_origin',
  );
  const anonymous = pageFetch(roles, { token: undefined });
  await assert.rejects(
    provision({ backend: roles.rpBase, origin: ORIGIN, fetch: anonymous.fetchFn, link: async () => roles.bridge.link() }),
    (e) => e instanceof UnauthenticatedError && e.status === 401,
  );
  // The refused attempts changed nothing on the device.
  assert.deepEqual(await list({ link: async () => roles.bridge.link() }), before);
}));
