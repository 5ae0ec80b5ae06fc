// Holds this package to every file of protocol/vectors/, in both directions: vector bytes decode
// to the expected values, values encode to exactly the vector bytes, and every malformed input
// fails with exactly the error the file names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hex, unhex, vectors } from './util.js';
import { Command, Reassembler, fragment } from '../src/frame.js';
import { fragmentLen } from '../src/constants.js';
import {
  Operation, decodeRequest, decodeResponse, encodeRequest, encodeResponse, type Response, type Request,
} from '../src/messages.js';
import {
  decodeAttestationObject, decodeInfo, decodeOriginBinding, encodeAttestationObject, encodeInfo,
  encodeOriginBinding, ORIGIN_BINDING_OID_DER, certificateId, keyAuthorizationHash, transcriptBytes,
} from '../src/objects.js';
import { assembleCsr, csrRequestInfo, derSignature, p256Spki } from '../src/csr.js';
import {
  checkDeviceName, deriveName, deviceLabelFromText, deviceTag, originTag, parseDeviceLabel,
  parseLocalName, parseOrigin,
} from '../src/names.js';
import { DecodeError, FrameError, NameError, OriginError } from '../src/errors.js';

const COMMANDS: Record<string, number> = { MSG: Command.MSG, CANCEL: Command.CANCEL, KEEPALIVE: Command.KEEPALIVE, ERROR: Command.ERROR };

test('framing.json: fragments at every MTU, both directions', () => {
  const file = vectors('framing.json');
  assert.ok(file.cases.length >= 27);
  for (const c of file.cases) {
    assert.equal(fragmentLen(c.mtu), c.fragment_len);
    const data = unhex(c.data);
    const frags = fragment(COMMANDS[c.command] as Command, data, c.fragment_len);
    assert.deepEqual(frags.map(hex), c.fragments, `${c.command} ${c.data.length / 2} bytes at MTU ${c.mtu}`);
    const parts = c.fragments.map(unhex);
    const arrived = (c.arrival as number[]).map((i) => parts[i]!);
    for (const order of [parts, arrived]) {
      const r = new Reassembler();
      for (const f of order.slice(0, -1)) assert.equal(r.handleFragment(0, f), undefined);
      const frame = r.handleFragment(0, order[order.length - 1]!);
      assert.ok(frame);
      assert.equal(frame.cmd, COMMANDS[c.command]);
      assert.equal(hex(frame.data), c.data);
      assert.ok(r.isIdle());
    }
  }
});

/** Decoded values are compared through their encoding plus a JSON view, so bytes compare by value. */
const view = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? `h'${hex(x)}'` : x)));

const KEY_AUTHORIZATION = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ';

async function expectedRequest(name: string): Promise<Request> {
  const attest = { origin: 'https://vod.example.com', userHandle: new TextEncoder().encode('user-42'), keyAuthorizationHash: await keyAuthorizationHash(KEY_AUTHORIZATION), deviceLabel: 'media-server-1' };
  const cors = { methods: ['GET', 'POST'], allowHeaders: ['content-type'], exposeHeaders: [] as string[], allowCredentials: false, maxAge: 600 };
  switch (name) {
    case 'get_info': return { kind: 'get_info' };
    case 'attest': return { kind: 'attest', value: attest };
    case 'attest_with_pin': return { kind: 'attest', value: { ...attest, pin: '123456' } };
    case 'install': return { kind: 'install', value: { chain: [unhex('30820100'), unhex('308180')], cors } };
    case 'install_star': return { kind: 'install', value: { chain: [unhex('30820100')], cors: { ...cors, exposeHeaders: ['x-request-id'], allowCredentials: true }, starUrl: 'https://issuer.test:8443/acme/star/3f9c' } };
    case 'list': return { kind: 'list' };
    case 'remove': return { kind: 'remove', value: { origin: 'https://vod.example.com' } };
  }
  throw new Error(`no expected value for request ${name}`);
}

const NAME = 'media-server-1-vod-example-com-hp65xr-f1jk.local';
const AB = new Uint8Array(32).fill(0xab);
const DEVICE_CERT = unhex('30822073616d706c6520646576696365206174746573746174696f6e206365727469666963617465');

/** The P-256 generator point: the samples' TLS key. */
const GENERATOR = unhex('046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5');
const ATTEST_ANSWER = {
  publicKey: GENERATOR,
  csrSignature: Uint8Array.from({ length: 64 }, (_, i) => i + 1),
  signature: Uint8Array.from({ length: 64 }, (_, i) => 0xff - i),
};

async function expectedResponse(name: string): Promise<Response> {
  switch (name) {
    case 'info': return { kind: 'info', value: { revision: 2, product: 'Media Server 1', deviceLabel: 'media-server-1', attestationChain: [DEVICE_CERT, new TextEncoder().encode('batch certificate')], presence: 1, bindings: 1, maxBindings: 8, knownIssuers: [await certificateId(new TextEncoder().encode('issuing intermediate'))] } };
    case 'attest': return { kind: 'attest', value: ATTEST_ANSWER };
    case 'install': return { kind: 'install', value: { httpsPort: 8443 } };
    case 'list': return { kind: 'list', value: [{ origin: 'https://vod.example.com', name: NAME, fingerprint: AB, notAfter: 1795000000, star: true }] };
    case 'list_empty': return { kind: 'list', value: [] };
    case 'remove': return { kind: 'remove', value: { name: NAME } };
    case 'error': return { kind: 'error', code: 0x12 };
    case 'error_with_message': return { kind: 'error', code: 0x17, message: 'leaf key is not the pending key' };
  }
  throw new Error(`no expected value for response ${name}`);
}

test('messages.json: every request and response, both directions', async () => {
  const file = vectors('messages.json');
  let requests = 0;
  let responses = 0;
  for (const c of file.cases) {
    const bytes = unhex(c.hex);
    if (c.kind === 'request') {
      const expected = await expectedRequest(c.name);
      assert.equal(hex(encodeRequest(expected)), c.hex, `encode ${c.name}`);
      assert.deepEqual(view(decodeRequest(bytes)), view(expected), `decode ${c.name}`);
      requests++;
    } else {
      const expected = await expectedResponse(c.name);
      assert.equal(hex(encodeResponse(expected)), c.hex, `encode ${c.name}`);
      assert.deepEqual(view(decodeResponse(c.operation as Operation, bytes)), view(expected), `decode ${c.name}`);
      responses++;
    }
  }
  assert.equal(requests, 7);
  assert.equal(responses, 8);
});

test('transcripts.json: the bytes to sign, rebuilt from the inputs', async () => {
  const file = vectors('transcripts.json');
  assert.equal(file.cases.length, 2);
  for (const c of file.cases) {
    const hash = await keyAuthorizationHash(c.key_authorization);
    assert.equal(hex(hash), c.key_authorization_hash);
    const bytes = await transcriptBytes({ keyAuthorizationHash: hash, origin: c.origin, userHandle: unhex(c.user_handle), csrSpki: unhex(c.csr_spki), names: c.names });
    assert.equal(hex(bytes), c.hex);
  }
});

test('names.json: labels, origin tags, device tags and names, both directions', async () => {
  const file = vectors('names.json');
  assert.equal(file.cases.length, 25);
  for (const c of file.cases) {
    const cert = unhex(c.device_certificate);
    assert.equal(deviceLabelFromText(c.label_text), c.device_label, c.label_text);
    assert.equal(await originTag(c.origin), c.origin_tag, c.origin);
    assert.equal(await deviceTag(cert), c.device_tag);
    assert.equal(await deriveName(c.device_label, c.origin, cert), c.name);
    assert.equal(await checkDeviceName(c.name, c.origin, cert), c.device_label);
    assert.ok(c.name.length - '.local'.length <= 63);
  }
});

test('objects.json: origin binding, attestation object, certificate id, ATTEST parts and info values', async () => {
  const file = vectors('objects.json');
  const b = file.origin_binding;
  assert.equal(hex(ORIGIN_BINDING_OID_DER), b.oid_der_content);
  const decoded = decodeOriginBinding(unhex(b.der));
  assert.equal(decoded.origin, b.origin);
  assert.equal(hex(decoded.userHandleDigest), b.user_handle_digest);
  assert.equal(hex(encodeOriginBinding(decoded)), b.der);
  const att = decodeAttestationObject(unhex(file.attestation_object.hex));
  assert.equal(hex(att.sig), '3044022001');
  assert.equal(hex(att.x5c[0]!), hex(DEVICE_CERT));
  assert.equal(new TextDecoder().decode(att.userHandle), 'user-42');
  assert.equal(hex(encodeAttestationObject(att)), file.attestation_object.hex);
  assert.equal(hex(await certificateId(unhex(file.certificate_id.der))), file.certificate_id.id);
  // The CSR and the attestation object's signature, rebuilt from an ATTEST answer (SPEC §5.2).
  const parts = file.attest_parts;
  const answer = decodeResponse(Operation.ATTEST, unhex(parts.response));
  assert.equal(answer.kind, 'attest');
  const a = (answer as { value: typeof ATTEST_ANSWER }).value;
  assert.equal(hex(p256Spki(a.publicKey)), parts.spki);
  const requestInfo = csrRequestInfo(a.publicKey, parts.names);
  assert.equal(hex(requestInfo), parts.request_info);
  assert.equal(hex(assembleCsr(requestInfo, a.csrSignature)), parts.csr);
  assert.equal(hex(derSignature(a.signature)), parts.signature_der);
  const mtus = [[23, 18], [185, 180], [247, 242], [517, 512]] as const;
  file.info.forEach((c: { hex: string }, i: number) => {
    const info = decodeInfo(unhex(c.hex));
    assert.deepEqual(info, { revision: 2, maxFragmentLen: mtus[i]![1], maxMessageLen: 8192 });
    assert.equal(fragmentLen(mtus[i]![0]), info.maxFragmentLen);
    assert.equal(hex(encodeInfo(info)), c.hex);
  });
});

function errorFor(target: string, input: any): string {
  const attempt = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      if (e instanceof DecodeError || e instanceof FrameError) return e.kind;
      if (e instanceof OriginError || e instanceof NameError) return e.rule;
      throw e;
    }
    return 'accepted';
  };
  switch (target) {
    case 'request': return attempt(() => decodeRequest(unhex(input)));
    case 'response:install': return attempt(() => decodeResponse(Operation.INSTALL, unhex(input)));
    case 'response:info': return attempt(() => decodeResponse(Operation.GET_INFO, unhex(input)));
    case 'response:attest': return attempt(() => decodeResponse(Operation.ATTEST, unhex(input)));
    case 'response:list': return attempt(() => decodeResponse(Operation.LIST, unhex(input)));
    case 'attestation': return attempt(() => decodeAttestationObject(unhex(input)));
    case 'info': return attempt(() => decodeInfo(unhex(input)));
    case 'extension': return attempt(() => decodeOriginBinding(unhex(input)));
    case 'frames': {
      const r = new Reassembler();
      const frags = (input as string[]).map(unhex);
      for (const f of frags.slice(0, -1)) assert.equal(r.handleFragment(0, f), undefined);
      const kind = attempt(() => r.handleFragment(0, frags[frags.length - 1]!));
      assert.ok(r.isIdle(), 'an error leaves no partial frame');
      return kind;
    }
    case 'origin': return attempt(() => parseOrigin(input));
    case 'label': return attempt(() => parseDeviceLabel(input));
    case 'name': return attempt(() => parseLocalName(input));
  }
  throw new Error(`unknown target ${target}`);
}

test('malformed.json: every input fails with the recorded error', () => {
  const file = vectors('malformed.json');
  assert.ok(file.cases.length >= 60);
  const failures: string[] = [];
  for (const c of file.cases) {
    const got = errorFor(c.target, c.input);
    if (got !== c.error) failures.push(`${c.name}: expected ${c.error}, got ${got}`);
  }
  assert.deepEqual(failures, []);
});
