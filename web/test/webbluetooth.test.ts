// The Web Bluetooth adapter against a fake GATT: the bounded reconnect when the link drops right
// after connect() (BlueZ's silent "Connected"), the write type chosen from the characteristic's
// properties, notifications and disconnection, and the chooser's refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseDevice, connect } from '../src/webbluetooth.js';
import { CONTROL_POINT_UUID, INFO_UUID, SERVICE_UUID, STATUS_UUID } from '../src/constants.js';
import { BluetoothUnavailableError, ChooserCancelledError, DisconnectedError } from '../src/errors.js';

const domError = (name: string, message: string) => Object.assign(new Error(message), { name });

class FakeCharacteristic extends EventTarget {
  value: DataView | null = null;
  writes: { how: 'with' | 'without'; bytes: number[] }[] = [];
  notifying = false;
  constructor(readonly properties: { write: boolean; writeWithoutResponse: boolean; notify: boolean; read: boolean }, private readonly content = new Uint8Array(0)) {
    super();
  }
  async readValue() { return new DataView(this.content.buffer.slice(0)); }
  async writeValueWithResponse(v: BufferSource) { this.writes.push({ how: 'with', bytes: [...new Uint8Array(v as ArrayBuffer)] }); }
  async writeValueWithoutResponse(v: BufferSource) { this.writes.push({ how: 'without', bytes: [...new Uint8Array(v as ArrayBuffer)] }); }
  async startNotifications() { this.notifying = true; return this; }
  async stopNotifications() { this.notifying = false; return this; }
  emit(bytes: number[]) {
    this.value = new DataView(Uint8Array.from(bytes).buffer);
    this.dispatchEvent(new Event('characteristicvaluechanged'));
  }
}

function fakeDevice(opts: { dropFirst: number; writeWithoutResponse: boolean; failWith?: string }) {
  const cp = new FakeCharacteristic({ write: true, writeWithoutResponse: opts.writeWithoutResponse, notify: false, read: false });
  const status = new FakeCharacteristic({ write: false, writeWithoutResponse: false, notify: true, read: false });
  const info = new FakeCharacteristic({ write: false, writeWithoutResponse: false, notify: false, read: true }, Uint8Array.of(0xa3, 1, 1, 2, 0x12, 3, 0x19, 0x20, 0));
  let connects = 0;
  const device = new EventTarget() as EventTarget & { id: string; gatt: unknown };
  const server = {
    connected: false,
    async connect() { connects++; server.connected = true; return server; },
    disconnect() { server.connected = false; },
    async getPrimaryService(uuid: string) {
      assert.equal(uuid, SERVICE_UUID);
      if (opts.failWith) throw domError(opts.failWith, 'nope');
      if (connects <= opts.dropFirst) {
        server.connected = false;
        throw domError('NetworkError', 'GATT Server is disconnected. Cannot retrieve services.');
      }
      return { async getCharacteristic(u: string) { return ({ [CONTROL_POINT_UUID]: cp, [STATUS_UUID]: status, [INFO_UUID]: info } as Record<string, FakeCharacteristic>)[u]!; } };
    },
  };
  device.id = 'fake';
  device.gatt = server;
  return { device: device as never, cp, status, server, connects: () => connects };
}

test('connect() reconnects when the link drops before the service is found, a bounded number of times', async () => {
  const twice = fakeDevice({ dropFirst: 2, writeWithoutResponse: true });
  const attempts: number[] = [];
  const link = await connect(twice.device, { attempts: 3, retryDelayMs: 1, onAttempt: (n) => attempts.push(n) });
  assert.equal(link.connectAttempts, 3);
  assert.deepEqual(attempts, [1, 2, 3]);
  const always = fakeDevice({ dropFirst: 99, writeWithoutResponse: true });
  await assert.rejects(connect(always.device, { attempts: 3, retryDelayMs: 1 }), DisconnectedError);
  assert.equal(always.connects(), 3, 'no more than the allowed attempts');
  const other = fakeDevice({ dropFirst: 0, writeWithoutResponse: true, failWith: 'NotFoundError' });
  await assert.rejects(connect(other.device, { attempts: 3, retryDelayMs: 1 }), DisconnectedError);
  assert.equal(other.connects(), 1, 'only a dropped link is retried');
});

test('writes go without response when offered, else with response; notifications and disconnect reach the session', async () => {
  for (const without of [true, false]) {
    const d = fakeDevice({ dropFirst: 0, writeWithoutResponse: without });
    const link = await connect(d.device, { retryDelayMs: 1 });
    assert.deepEqual([...await link.readInfo()], [0xa3, 1, 1, 2, 0x12, 3, 0x19, 0x20, 0]);
    await link.write(Uint8Array.of(0x83, 0, 1, 1));
    assert.deepEqual(d.cp.writes, [{ how: without ? 'without' : 'with', bytes: [0x83, 0, 1, 1] }]);
    const seen: number[][] = [];
    let dropped = 0;
    await link.subscribe((v) => seen.push([...v]), () => dropped++);
    assert.ok(d.status.notifying);
    d.status.emit([0x82, 0, 1, 1]);
    assert.deepEqual(seen, [[0x82, 0, 1, 1]]);
    (d.device as unknown as EventTarget).dispatchEvent(new Event('gattserverdisconnected'));
    assert.equal(dropped, 1);
    await link.close();
  }
});

test('the chooser: a dismissed chooser and a missing adapter are distinct typed errors', async () => {
  const dismissed = { getAvailability: async () => true, requestDevice: async () => { throw domError('NotFoundError', 'User cancelled the requestDevice() chooser.'); } };
  await assert.rejects(chooseDevice(dismissed), ChooserCancelledError);
  const noAdapter = { getAvailability: async () => false, requestDevice: async () => { throw domError('NotFoundError', 'Bluetooth adapter not available.'); } };
  await assert.rejects(chooseDevice(noAdapter), BluetoothUnavailableError);
  const filters: unknown[] = [];
  const ok = { getAvailability: async () => true, requestDevice: async (o: unknown) => { filters.push(o); return new EventTarget() as never; } };
  await chooseDevice(ok);
  assert.deepEqual(filters, [{ filters: [{ services: [SERVICE_UUID] }] }]);
});
