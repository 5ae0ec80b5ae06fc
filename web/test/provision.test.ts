// provision()'s own checks with a scripted backend and device: backend refusals become typed
// errors, and a backend that asks for a name this device would not have, or serves another
// origin or GATT service, is refused before anything is sent to the device.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeLink } from './fakes.js';
import { provision } from '../src/provision.js';
import { Command, fragment } from '../src/frame.js';
import { encodeResponse } from '../src/messages.js';
import { SERVICE_UUID } from '../src/constants.js';
import {
  BackendError, BackendProtocolError, BadRequestError, BodyTooLargeError, DeviceInvalidError,
  FlowStateError, ForbiddenOriginError, IssuerError, RateLimitedError, UnauthenticatedError,
  UnknownFlowError, VerificationError, backendError,
} from '../src/errors.js';
import { unhex } from './util.js';

const ORIGIN = 'https://vod.example.com';
const CERT = unhex('30822073616d706c6520646576696365206174746573746174696f6e206365727469666963617465');
const INFO = encodeResponse({ kind: 'info', value: { revision: 2, product: 'Media Server 1', deviceLabel: 'media-server-1', attestationChain: [CERT], presence: 0, bindings: 0, maxBindings: 8, knownIssuers: [] } });

function device(): FakeLink {
  const link = new FakeLink();
  link.onWrite = (f) => { if (f[0] === Command.MSG && f[3] === 0x01) link.notify(...fragment(Command.MSG, INFO, 18)); };
  return link;
}

function backend(answers: Record<string, [number, unknown]>) {
  const calls: string[] = [];
  const fetchFn = async (url: string, init?: RequestInit) => {
    const path = url.replace('/localcert', '');
    calls.push(`${init?.method} ${path}`);
    const [status, body] = answers[path] ?? [404, { error: 'unknown_flow', detail: 'no' }];
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
  };
  return { fetchFn, calls };
}

const CONFIG: [number, unknown] = [200, { origin: ORIGIN, service: SERVICE_UUID }];

test('every backend error code is its own class, unknown codes a BackendError', () => {
  const classes: [string, typeof BackendError][] = [
    ['forbidden_origin', ForbiddenOriginError], ['unauthenticated', UnauthenticatedError],
    ['rate_limited', RateLimitedError], ['body_too_large', BodyTooLargeError],
    ['bad_request', BadRequestError], ['unknown_flow', UnknownFlowError], ['flow_state', FlowStateError],
    ['device_invalid', DeviceInvalidError], ['issuer', IssuerError],
  ];
  for (const [code, Class] of classes) {
    const e = backendError(400, code, 'd');
    assert.ok(e instanceof Class && e.code === code && e.name === Class.name, code);
  }
  const other = backendError(500, 'teapot', 'd');
  assert.equal(other.constructor, BackendError);
});

test('a backend refusal of the flow is a typed error and the device session is closed', async () => {
  const link = device();
  const { fetchFn } = backend({ '/config': CONFIG, '/flows': [429, { error: 'rate_limited', detail: 'slow down' }] });
  await assert.rejects(provision({ backend: '/localcert', origin: ORIGIN, fetch: fetchFn, link: async () => link }),
    (e) => e instanceof RateLimitedError && e.status === 429 && e.detail === 'slow down');
  assert.ok(link.closed);
});

test('a backend asking for a name this device would not have is refused before ATTEST', async () => {
  const link = device();
  const { fetchFn, calls } = backend({
    '/config': CONFIG,
    '/flows': [201, { flow: 'f1', name: 'media-server-1-vod-example-com-hp65xr-zzzz.local', attest: { origin: ORIGIN, user_handle: 'dXNlcg', key_authorization_hash: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', device_label: 'media-server-1' } }],
  });
  await assert.rejects(provision({ backend: '/localcert', origin: ORIGIN, fetch: fetchFn, link: async () => link }),
    (e) => e instanceof VerificationError && e.code === 'name_mismatch');
  assert.deepEqual(calls, ['GET /config', 'POST /flows']);
  assert.equal(link.writes.filter((w) => w[0] === Command.MSG).length, 1, 'only GET_INFO went to the device');
});

test('a backend for another origin or another service is refused before any BLE', async () => {
  let opened = 0;
  const link = async () => { opened++; return device(); };
  await assert.rejects(provision({ origin: 'https://other.example', fetch: backend({ '/config': CONFIG }).fetchFn, link }),
    (e) => e instanceof VerificationError && e.code === 'origin_mismatch');
  await assert.rejects(provision({ origin: ORIGIN, fetch: backend({ '/config': [200, { origin: ORIGIN, service: '0000180d-0000-1000-8000-00805f9b34fb' }] }).fetchFn, link }),
    BackendProtocolError);
  await assert.rejects(provision({ origin: ORIGIN, fetch: async () => new Response('<html>', { status: 502 }), link }), BackendProtocolError);
  assert.equal(opened, 0);
});
