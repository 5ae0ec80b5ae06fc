// The example page's contract (contracts.md), checked in Node: web/example/app.js runs against a
// minimal DOM and a Web Bluetooth stand-in whose GATT is the real device engine behind
// `localcert-device bridge`, with the real issuer and RP backend. The first GATT connection
// drops before the service is found (BlueZ's silent "Connected"), so the page must reconnect.
// The real browser over real BlueZ is tests/webbluetooth-vm.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ORIGIN, type Bridge, type Roles, pageFetch, startRoles } from './harness.js';
import { REPO_ROOT } from './util.js';
import { SERVICE_UUID, CONTROL_POINT_UUID, STATUS_UUID, INFO_UUID } from '../src/constants.js';

let roles: Roles;
before(async () => {
  roles = await startRoles(185);
}, { timeout: 180_000 });
after(() => roles?.stop());

/** navigator.bluetooth whose one device is the bridge; its first connection drops. */
function bluetoothOver(bridge: Bridge) {
  const device = new EventTarget() as EventTarget & Record<string, unknown>;
  let link = bridge.link();
  let connects = 0;
  const cp = { properties: { write: true, writeWithoutResponse: true, notify: false, read: false },
    writeValueWithoutResponse: async (v: Uint8Array) => link.write(new Uint8Array(v)),
    writeValueWithResponse: async (v: Uint8Array) => link.write(new Uint8Array(v)) };
  const status = Object.assign(new EventTarget(), {
    properties: { write: false, writeWithoutResponse: false, notify: true, read: false },
    value: null as DataView | null,
    startNotifications: async () => {
      await link.subscribe((v) => {
        status.value = new DataView(v.buffer, v.byteOffset, v.byteLength);
        status.dispatchEvent(new Event('characteristicvaluechanged'));
      }, () => device.dispatchEvent(new Event('gattserverdisconnected')));
      return status;
    },
    stopNotifications: async () => status,
  });
  const info = { properties: { write: false, writeWithoutResponse: false, notify: false, read: true },
    readValue: async () => new DataView(bridge.info.slice().buffer) };
  const server = {
    connected: false,
    connect: async () => { connects++; server.connected = true; link = bridge.link(); return server; },
    disconnect: () => { server.connected = false; void link.close(); },
    getPrimaryService: async (uuid: string) => {
      assert.equal(uuid, SERVICE_UUID);
      if (connects === 1) {
        server.connected = false;
        device.dispatchEvent(new Event('gattserverdisconnected'));
        throw Object.assign(new Error('GATT Server is disconnected. Cannot retrieve services.'), { name: 'NetworkError' });
      }
      const chars: Record<string, unknown> = { [CONTROL_POINT_UUID]: cp, [STATUS_UUID]: status, [INFO_UUID]: info };
      return { getCharacteristic: async (u: string) => chars[u] };
    },
  };
  device.id = 'bridge';
  device.gatt = server;
  return { getAvailability: async () => true, requestDevice: async () => device };
}

/** Just enough DOM for app.js. */
function fakeDocument() {
  const listeners: Record<string, () => void> = {};
  const element = () => ({ textContent: '', disabled: false, addEventListener: (t: string, f: () => void) => { listeners[t] = f; } });
  const elements: Record<string, ReturnType<typeof element>> = { provision: element(), status: element(), result: element() };
  return { document: { title: 'localcert example', getElementById: (id: string) => elements[id] }, elements, click: () => listeners.click!() };
}

async function until(what: string, cond: () => boolean, ms: number) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${roles.tails()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('the example page: READY, WORKING, DONE, and #result as the contract says', { timeout: 120_000 }, async () => {
  const { fetchFn, seenFingerprints } = pageFetch(roles);
  const page = fakeDocument();
  Object.assign(globalThis, {
    document: page.document,
    location: { search: `?backend=${encodeURIComponent(roles.rpBase)}&path=/status`, origin: ORIGIN },
    fetch: fetchFn,
  });
  Object.defineProperty(globalThis, 'navigator', { value: { bluetooth: bluetoothOver(roles.bridge) }, configurable: true });
  register(new URL('./page-hooks.js', import.meta.url));
  await import(pathToFileURL(join(REPO_ROOT, 'web', 'example', 'app.js')).href);
  await until('title READY', () => page.document.title === 'READY', 10_000);
  assert.equal(page.elements.provision!.disabled, false);
  page.click();
  assert.equal(page.document.title, 'WORKING');
  await until('title DONE or FAIL', () => ['DONE', 'FAIL'].includes(page.document.title), 60_000);
  const result = JSON.parse(page.elements.result!.textContent);
  assert.equal(page.document.title, 'DONE', JSON.stringify(result));
  assert.match(result.name, /^media-server-vod-example-test-[0-9a-z]{6}-[0-9a-z]{4}\.local$/);
  assert.equal(result.url, `https://${result.name}:${roles.bridge.httpsPort}/`);
  assert.deepEqual(seenFingerprints, [result.fingerprint]);
  assert.equal(result.device_answer.status, 200);
  assert.equal(result.device_answer.allow_origin, ORIGIN);
  assert.equal(typeof result.device_answer.body, 'string');
  assert.equal(result.connect_attempts, 2, 'the page reconnected after the dropped link');
  assert.deepEqual(result.steps.map((s: { step: string }) => s.step),
    ['config', 'choose', 'connect', 'info', 'flow', 'attest', 'attestation', 'install', 'installed', 'fetch', 'done']);
  assert.ok(result.steps.every((s: { ms: number }) => Number.isInteger(s.ms) && s.ms >= 0));

  // A second click provisions again (a new flow replaces the binding for the origin).
  page.click();
  await until('title DONE or FAIL again', () => ['DONE', 'FAIL'].includes(page.document.title) && page.elements.provision!.disabled === false, 60_000);
  assert.equal(page.document.title, 'DONE', page.elements.result!.textContent);

  // A refusal is reported as {"error": {name, code, message}}: the user's session is gone.
  Object.assign(globalThis, { fetch: pageFetch(roles, { token: undefined }).fetchFn });
  page.click();
  await until('title FAIL', () => page.document.title === 'FAIL', 60_000);
  const failure = JSON.parse(page.elements.result!.textContent);
  assert.deepEqual(failure.error.name, 'UnauthenticatedError');
  assert.deepEqual(failure.error.code, 'unauthenticated');
  assert.equal(typeof failure.error.message, 'string');
});
