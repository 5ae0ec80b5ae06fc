// The page API: provision() relays between the device (over BLE) and the origin's RP backend
// (which holds the ACME account), then calls the device over HTTPS; list() and remove() speak to
// the device alone.

import { SERVICE_UUID } from './constants.js';
import {
  AbortedError, BackendProtocolError, LocalcertError, VerificationError, backendError,
} from './errors.js';
import type { BindingSummary, CorsPolicy, InfoResponse, Request } from './messages.js';
import { deriveName, parseDeviceLabel, parseOrigin } from './names.js';
import { type Answer, type Clock, type Link, type RequestOptions, Session } from './session.js';
import { type ConnectOptions, bluetooth, chooseDevice, connect } from './webbluetooth.js';

/** The steps provision() goes through, in order ('presence' only when the device asks). */
export type Step =
  | 'config' | 'choose' | 'connect' | 'info' | 'flow' | 'attest' | 'presence' | 'attestation'
  | 'install' | 'installed' | 'fetch' | 'done';

type FetchLike = (input: string, init?: RequestInit) => Promise<globalThis.Response>;

interface CommonOptions {
  signal?: AbortSignal | undefined;
  onStep?: ((step: Step) => void) | undefined;
  /** A connected Link instead of the Web Bluetooth chooser (tests, other transports). */
  link?: (() => Promise<Link>) | undefined;
  connect?: ConnectOptions | undefined;
  clock?: Clock | undefined;
}

export interface ProvisionOptions extends CommonOptions {
  /** Base URL of the RP backend API (default '/localcert'). */
  backend?: string | undefined;
  /** The PIN, for a device whose presence method is 2. */
  pin?: string | undefined;
  /** The device label to ask for (default: the one the device suggests). */
  label?: string | undefined;
  /** Ask for a STAR (auto-renewed) certificate. */
  star?: boolean | undefined;
  /** The device path fetched after provisioning (default '/'). */
  path?: string | undefined;
  /** fetch() for the backend and the device (default globalThis.fetch). */
  fetch?: FetchLike | undefined;
  /** The page's origin, checked against the backend's (default location.origin when there is one). */
  origin?: string | undefined;
}

export interface DeviceAnswer {
  status: number;
  body: string;
  /**
   * Access-Control-Allow-Origin when the page may read it, else null: browsers hide it unless
   * the device's CORS policy lists it in expose_headers.
   */
  allowOrigin: string | null;
  /** The fetch Response type: 'cors' in a browser means its CORS check of the device passed. */
  responseType: string;
}

export interface ProvisionResult {
  name: string;
  url: string;
  fingerprint: string;
  deviceAnswer: DeviceAnswer;
  connectAttempts: number;
}

// ---- small helpers ----

export function base64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64url(s: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new BackendProtocolError('the backend sent a value that is not base64url');
  const b = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}


function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError(signal.reason);
}

/** A JSON field of the expected type, or BackendProtocolError. */
function field<T>(obj: unknown, key: string, type: 'string' | 'number' | 'boolean' | 'object'): T {
  const v = (obj as Record<string, unknown> | null)?.[key];
  if (typeof v !== type || v === null) throw new BackendProtocolError(`the backend's answer has no ${type} "${key}"`);
  return v as T;
}

class Backend {
  constructor(private readonly base: string, private readonly fetchFn: FetchLike, private readonly signal: AbortSignal | undefined) {}

  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const init: RequestInit = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
    if (this.signal) init.signal = this.signal;
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { accept: 'application/json', 'content-type': 'application/json' };
    }
    let res: globalThis.Response;
    try {
      res = await this.fetchFn(`${this.base}${path}`, init);
    } catch (e) {
      checkAborted(this.signal);
      throw new BackendProtocolError(`the backend could not be reached (${method} ${path}): ${(e as Error).message}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new BackendProtocolError(`the backend answered ${res.status} without JSON (${method} ${path})`);
    }
    if (!res.ok) {
      const code = (json as { error?: unknown }).error;
      const detail = (json as { detail?: unknown }).detail;
      if (typeof code !== 'string') throw new BackendProtocolError(`the backend answered ${res.status} without an error code`);
      throw backendError(res.status, code, typeof detail === 'string' ? detail : '');
    }
    return json;
  }
}

function corsFromJson(c: unknown): CorsPolicy {
  const list = (k: string): string[] => {
    const v = field<unknown[]>(c, k, 'object');
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new BackendProtocolError(`cors.${k} is not a list of strings`);
    return v as string[];
  };
  return {
    methods: list('methods'), allowHeaders: list('allow_headers'), exposeHeaders: list('expose_headers'),
    allowCredentials: field<boolean>(c, 'allow_credentials', 'boolean'), maxAge: field<number>(c, 'max_age', 'number'),
  };
}

/**
 * Connects and opens the session with its first request; the link is closed if that fails.
 * With `early`, the request goes beside the info read when it fits in one fragment (SPEC §2.1).
 * Provisioning does not use it: its GET_INFO answer is two notifications at MTU 517, and in 2 of
 * 8 browser runs against BlueZ 5.66 both were lost when they met the info read's answer (see
 * tests/webbluetooth-vm/README.md, traps); LIST and REMOVE answers are one notification.
 */
async function openSession(options: CommonOptions, first: Request, req: RequestOptions, early: boolean, onConnected?: () => void): Promise<{ session: Session; answer: Answer; connectAttempts: number }> {
  let link: Link;
  let connectAttempts = 1;
  if (options.link) {
    options.onStep?.('connect');
    link = await options.link();
  } else {
    options.onStep?.('choose');
    const device = await chooseDevice(bluetooth());
    checkAborted(options.signal);
    options.onStep?.('connect');
    const wb = await connect(device, options.connect);
    connectAttempts = wb.connectAttempts;
    link = wb;
  }
  try {
    checkAborted(options.signal);
    onConnected?.();
    const open = { ...req, clock: options.clock };
    if (early) return { ...(await Session.openWith(link, first, open)), connectAttempts };
    const session = await Session.open(link, open);
    try {
      return { session, answer: await session.request(first, req), connectAttempts };
    } catch (e) {
      await session.close().catch(() => undefined);
      throw e;
    }
  } catch (e) {
    await link.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Provisions a device for this origin: BLE GET_INFO, backend flow, ATTEST (the user may have to
 * press the device's button), backend attestation, INSTALL, backend installed, then a fetch() of
 * the device over HTTPS. Resolves with the name, URL and certificate fingerprint.
 */
export async function provision(options: ProvisionOptions = {}): Promise<ProvisionResult> {
  const fetchFn: FetchLike = options.fetch ?? ((i, init) => globalThis.fetch(i, init));
  const backend = new Backend(options.backend ?? '/localcert', fetchFn, options.signal);
  const step = (s: Step) => options.onStep?.(s);
  const req: RequestOptions = { signal: options.signal };
  if (options.label !== undefined) parseDeviceLabel(options.label);

  step('config');
  const config = await backend.call('GET', '/config');
  const origin = field<string>(config, 'origin', 'string');
  if (field<string>(config, 'service', 'string').toLowerCase() !== SERVICE_UUID) {
    throw new BackendProtocolError('the backend serves another GATT service');
  }
  const pageOrigin = options.origin ?? (globalThis as { location?: { origin?: string } }).location?.origin;
  if (pageOrigin !== undefined && pageOrigin !== origin) {
    throw new VerificationError('origin_mismatch', `the backend is for ${origin}, this page is ${pageOrigin}`);
  }
  parseOrigin(origin);

  const { session, answer: infoAnswer, connectAttempts } = await openSession(options, { kind: 'get_info' }, req, false, () => step('info'));
  let installed: unknown;
  let issuedFingerprint = '';
  try {
    const info = (infoAnswer.response as { value: InfoResponse }).value;

    step('flow');
    const flowBody: Record<string, unknown> = { info: base64url(infoAnswer.bytes) };
    if (options.label !== undefined) flowBody.label = options.label;
    if (options.star) flowBody.star = true;
    const flow = await backend.call('POST', '/flows', flowBody);
    const flowId = (flow as { flow?: unknown }).flow;
    if (typeof flowId !== 'string' && typeof flowId !== 'number') throw new BackendProtocolError('the backend\'s answer has no flow id');
    const name = field<string>(flow, 'name', 'string');
    const attest = field<object>(flow, 'attest', 'object');
    const attestOrigin = field<string>(attest, 'origin', 'string');
    const deviceLabel = field<string>(attest, 'device_label', 'string');
    if (attestOrigin !== origin) throw new VerificationError('origin_mismatch', `the flow is for ${attestOrigin}, the backend for ${origin}`);
    // The page derives the name itself (SPEC §8.3) from what the device said over BLE.
    const deviceCert = info.attestationChain[0]!;
    const expected = await deriveName(deviceLabel, origin, deviceCert);
    if (expected !== name) throw new VerificationError('name_mismatch', `the backend asks for ${name}, the device's name for ${origin} is ${expected}`);

    step('attest');
    let askedPresence = false;
    const attestAnswer = await session.request({
      kind: 'attest',
      value: {
        origin, userHandle: fromBase64url(field<string>(attest, 'user_handle', 'string')),
        keyAuthorizationHash: fromBase64url(field<string>(attest, 'key_authorization_hash', 'string')), deviceLabel,
        pin: options.pin,
      },
    }, {
      ...req,
      onKeepAlive: (s) => {
        if (s === 'user_presence_needed' && !askedPresence) {
          askedPresence = true;
          step('presence');
        }
      },
    });

    step('attestation');
    const issued = await backend.call('POST', `/flows/${encodeURIComponent(String(flowId))}/attestation`, { attest: base64url(attestAnswer.bytes) });
    const install = field<object>(issued, 'install', 'object');
    issuedFingerprint = field<string>(issued, 'fingerprint', 'string').toLowerCase();
    if (field<string>(issued, 'name', 'string') !== name) throw new VerificationError('name_mismatch', 'the backend issued for another name');
    const chain = field<unknown[]>(install, 'chain', 'object');
    if (!Array.isArray(chain) || !chain.every((c) => typeof c === 'string')) throw new BackendProtocolError('install.chain is not a list of base64url strings');
    const starUrl = (install as { star_url?: unknown }).star_url;

    step('install');
    const installAnswer = await session.request({
      kind: 'install',
      value: {
        chain: (chain as string[]).map(fromBase64url), cors: corsFromJson(field<object>(install, 'cors', 'object')),
        starUrl: typeof starUrl === 'string' ? starUrl : undefined,
      },
    }, req);
    // Success means the device checked the leaf against its pending key and name (SPEC §5.3);
    // the fetch() below then meets the certificate itself.

    step('installed');
    installed = await backend.call('POST', `/flows/${encodeURIComponent(String(flowId))}/installed`, { install: base64url(installAnswer.bytes) });
  } finally {
    await session.close().catch(() => undefined);
  }

  const name = field<string>(installed, 'name', 'string');
  const url = field<string>(installed, 'url', 'string');
  const fingerprint = field<string>(installed, 'fingerprint', 'string');
  if (fingerprint.toLowerCase() !== issuedFingerprint) throw new VerificationError('fingerprint_mismatch', 'the backend completed the flow for another certificate than it issued');
  step('fetch');
  const deviceAnswer = await fetchDevice(fetchFn, new URL(options.path ?? '/', url).href, options.signal);
  step('done');
  return { name, url, fingerprint, deviceAnswer, connectAttempts };
}

/** GETs the device over HTTPS from the page's origin (CORS decides whether the page may read it). */
async function fetchDevice(fetchFn: FetchLike, url: string, signal: AbortSignal | undefined): Promise<DeviceAnswer> {
  const init: RequestInit = { method: 'GET', mode: 'cors', credentials: 'omit' };
  if (signal) init.signal = signal;
  let res: globalThis.Response;
  try {
    res = await fetchFn(url, init);
  } catch (e) {
    checkAborted(signal);
    throw new LocalcertError('device_unreachable', `the provisioned device did not answer over HTTPS at ${url}: ${(e as Error).message}`, { cause: e });
  }
  return { status: res.status, body: await res.text(), allowOrigin: res.headers.get('access-control-allow-origin'), responseType: res.type };
}

/** The device's bindings (LIST over BLE). */
export async function list(options: CommonOptions = {}): Promise<BindingSummary[]> {
  const { session, answer } = await openSession(options, { kind: 'list' }, { signal: options.signal }, true);
  try {
    return (answer.response as { value: BindingSummary[] }).value;
  } finally {
    await session.close().catch(() => undefined);
  }
}

/** Removes the device's binding for `origin` (REMOVE over BLE); resolves with the name removed. */
export async function remove(origin: string, options: CommonOptions = {}): Promise<string> {
  parseOrigin(origin);
  const { session, answer } = await openSession(options, { kind: 'remove', value: { origin } }, { signal: options.signal }, true);
  try {
    return (answer.response as { value: { name: string } }).value.name;
  } finally {
    await session.close().catch(() => undefined);
  }
}
