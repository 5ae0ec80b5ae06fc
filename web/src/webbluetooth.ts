// The Web Bluetooth adapter: the device chooser, the GATT connection (with the reconnect that
// BlueZ's "silent Connected" race needs), and a Link over the three characteristics.

import { CONTROL_POINT_UUID, INFO_UUID, SERVICE_UUID, STATUS_UUID } from './constants.js';
import { BluetoothUnavailableError, ChooserCancelledError, DisconnectedError } from './errors.js';
import type { Link } from './session.js';

// The few Web Bluetooth types this file uses (TypeScript's DOM library does not have them).
export interface GattCharacteristic extends EventTarget {
  readonly properties: { readonly write: boolean; readonly writeWithoutResponse: boolean; readonly notify: boolean; readonly read: boolean };
  readonly value?: DataView | null;
  readValue(): Promise<DataView>;
  writeValueWithResponse(value: BufferSource): Promise<void>;
  writeValueWithoutResponse(value: BufferSource): Promise<void>;
  startNotifications(): Promise<GattCharacteristic>;
  stopNotifications(): Promise<GattCharacteristic>;
}
interface GattService {
  getCharacteristic(uuid: string): Promise<GattCharacteristic>;
}
interface GattServer {
  readonly connected: boolean;
  connect(): Promise<GattServer>;
  disconnect(): void;
  getPrimaryService(uuid: string): Promise<GattService>;
}
export interface BluetoothDeviceLike extends EventTarget {
  readonly id: string;
  readonly name?: string | undefined;
  readonly gatt?: GattServer | undefined;
}
export interface BluetoothLike {
  getAvailability(): Promise<boolean>;
  requestDevice(options: { filters: { services: string[] }[] }): Promise<BluetoothDeviceLike>;
}

/** `navigator.bluetooth`, or a typed error when the browser has none. */
export function bluetooth(): BluetoothLike {
  const b = (globalThis.navigator as { bluetooth?: BluetoothLike } | undefined)?.bluetooth;
  if (!b) throw new BluetoothUnavailableError('this browser has no Web Bluetooth (navigator.bluetooth), or the page is not a secure context');
  return b;
}

/** Opens the browser's device chooser, filtered on the localcert service: the user's consent. */
export async function chooseDevice(b: BluetoothLike = bluetooth()): Promise<BluetoothDeviceLike> {
  try {
    return await b.requestDevice({ filters: [{ services: [SERVICE_UUID] }] });
  } catch (e) {
    // Chromium rejects with NotFoundError when the user closes the chooser.
    if ((e as { name?: string }).name === 'NotFoundError' && !/adapter/i.test(String((e as Error).message))) {
      throw new ChooserCancelledError({ cause: e });
    }
    throw new BluetoothUnavailableError(`requestDevice failed: ${(e as Error).message}`, { cause: e });
  }
}

export interface ConnectOptions {
  /** Connection attempts in all (default 3): BlueZ may drop the link right after connect(). */
  attempts?: number;
  /** Pause between attempts in ms (default 1000). */
  retryDelayMs?: number;
  /** Called with the attempt number before each connect. */
  onAttempt?: (attempt: number) => void;
}

/**
 * Connects and finds the service. When the link drops before the service is found (BlueZ 5.66
 * emits no "Connected" when the ATT callback wins a race, and Chromium disconnects ~2 s later),
 * getPrimaryService fails with a NetworkError: connect again, a bounded number of times.
 */
export async function connect(device: BluetoothDeviceLike, options: ConnectOptions = {}): Promise<WebBluetoothLink> {
  const gatt = device.gatt;
  if (!gatt) throw new BluetoothUnavailableError('the chosen device has no GATT server');
  const attempts = Math.max(1, options.attempts ?? 3);
  for (let attempt = 1; ; attempt++) {
    options.onAttempt?.(attempt);
    try {
      const server = await gatt.connect();
      const service = await server.getPrimaryService(SERVICE_UUID);
      const [controlPoint, status, info] = await Promise.all([
        service.getCharacteristic(CONTROL_POINT_UUID),
        service.getCharacteristic(STATUS_UUID),
        service.getCharacteristic(INFO_UUID),
      ]);
      return new WebBluetoothLink(device, server, controlPoint, status, info, attempt);
    } catch (e) {
      const dropped = (e as { name?: string }).name === 'NetworkError';
      if (!dropped || attempt >= attempts) {
        try { gatt.disconnect(); } catch { /* already down */ }
        throw new DisconnectedError(`could not reach the localcert service (attempt ${attempt} of ${attempts}): ${(e as Error).message}`, { cause: e });
      }
      // Connect again only once the browser has seen the link go down (under load Chromium's
      // Disconnect may take seconds), so the next connect() does not meet the old link.
      await linkDown(device, gatt, DROP_WAIT_MS);
      await new Promise((r) => setTimeout(r, options.retryDelayMs ?? 1000));
    }
  }
}

/** How long a reconnect waits at most for the dropped link's `gattserverdisconnected`. */
const DROP_WAIT_MS = 5000;

function linkDown(device: BluetoothDeviceLike, gatt: { connected?: boolean }, maxMs: number): Promise<void> {
  if (gatt.connected === false) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      device.removeEventListener('gattserverdisconnected', done);
      resolve();
    };
    const timer = setTimeout(done, maxMs);
    device.addEventListener('gattserverdisconnected', done);
  });
}

/** A Link over Web Bluetooth characteristics. */
export class WebBluetoothLink implements Link {
  /** Writes go without response when the control point offers it (faster), else with. */
  readonly writeWithoutResponse: boolean;
  private onDisconnect: (() => void) | undefined;
  private readonly disconnected = () => this.onDisconnect?.();
  private readonly notified = (ev: Event) => {
    const v = (ev.target as GattCharacteristic).value;
    if (v) this.onValue?.(new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice());
  };
  private onValue: ((v: Uint8Array) => void) | undefined;

  constructor(
    private readonly device: BluetoothDeviceLike,
    private readonly server: GattServer,
    private readonly controlPoint: GattCharacteristic,
    private readonly status: GattCharacteristic,
    private readonly infoChar: GattCharacteristic,
    /** How many connects it took (1 unless the link dropped right after connect()). */
    readonly connectAttempts: number,
  ) {
    this.writeWithoutResponse = controlPoint.properties.writeWithoutResponse;
  }

  async readInfo(): Promise<Uint8Array> {
    const v = await this.infoChar.readValue();
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
  }

  async write(fragment: Uint8Array): Promise<void> {
    const value = new Uint8Array(fragment);
    if (this.writeWithoutResponse) await this.controlPoint.writeValueWithoutResponse(value);
    else await this.controlPoint.writeValueWithResponse(value);
  }

  async subscribe(onValue: (v: Uint8Array) => void, onDisconnect: () => void): Promise<void> {
    this.onValue = onValue;
    this.onDisconnect = onDisconnect;
    this.device.addEventListener('gattserverdisconnected', this.disconnected);
    this.status.addEventListener('characteristicvaluechanged', this.notified);
    await this.status.startNotifications();
  }

  async close(): Promise<void> {
    this.status.removeEventListener('characteristicvaluechanged', this.notified);
    this.device.removeEventListener('gattserverdisconnected', this.disconnected);
    if (this.server.connected) {
      try { await this.status.stopNotifications(); } catch { /* the link may be gone */ }
      this.server.disconnect();
    }
  }
}
