// Messages (SPEC §5): requests are an operation byte and a CBOR map, responses a status byte
// and a CBOR map. Every decoder is strict as SPEC §4 says and checks each field's rule.

import {
  CERTIFICATE_ID_LEN, DIGEST_LEN, FINGERPRINT_LEN, MAX_BINDINGS, MAX_CERTIFICATE_LEN, MAX_CHAIN_LEN,
  MAX_CORS_ITEMS, MAX_CORS_MAX_AGE, MAX_ERROR_MESSAGE_LEN, MAX_KNOWN_ISSUERS, MAX_ORIGIN_LEN,
  MAX_PIN_LEN, MAX_PRODUCT_LEN, MAX_TOKEN_LEN, MAX_URL_LEN, MAX_USER_HANDLE_LEN, MIN_PIN_LEN,
  P256_POINT_LEN, RAW_SIGNATURE_LEN,
} from './constants.js';
import { type CborReader, type CborValue, decodeCanonical, encodeCbor, required } from './cbor.js';
import { DecodeError, ERROR_CODES } from './errors.js';
import { parseDeviceLabel, parseLocalName, parseOrigin } from './names.js';

/** Operation bytes (SPEC §5). */
export const Operation = Object.freeze({ GET_INFO: 1, ATTEST: 2, INSTALL: 3, LIST: 4, REMOVE: 5 } as const);
export type Operation = (typeof Operation)[keyof typeof Operation];

/** Presence methods of InfoResponse: 0 none, 1 button, 2 PIN. */
export type Presence = 0 | 1 | 2;

export interface InfoResponse {
  revision: number;
  product: string;
  deviceLabel: string;
  attestationChain: Uint8Array[];
  presence: Presence;
  bindings: number;
  maxBindings: number;
  /** Ids (first 8 bytes of SHA-256) of the issuer certificates the device holds: INSTALL omits them. */
  knownIssuers: Uint8Array[];
}
export interface AttestRequest {
  origin: string;
  userHandle: Uint8Array;
  /** SHA-256 of the ACME key authorization (the RP backend gives it). */
  keyAuthorizationHash: Uint8Array;
  deviceLabel: string;
  pin?: string | undefined;
}
/** The CSR and the transcript signature in parts; the RP backend rebuilds both (SPEC §5.2). */
export interface AttestResponse {
  /** The new TLS key: an uncompressed P-256 point (65 bytes). */
  publicKey: Uint8Array;
  /** Raw r||s signature by the TLS key over the CSR's request info. */
  csrSignature: Uint8Array;
  /** Raw r||s signature by the attestation key over the transcript. */
  signature: Uint8Array;
}
export interface CorsPolicy {
  methods: string[];
  allowHeaders: string[];
  exposeHeaders: string[];
  allowCredentials: boolean;
  maxAge: number;
}
export interface InstallRequest {
  chain: Uint8Array[];
  cors: CorsPolicy;
  starUrl?: string | undefined;
}
export interface InstallResponse {
  httpsPort: number;
}
export interface BindingSummary {
  origin: string;
  name: string;
  fingerprint: Uint8Array;
  notAfter: number;
  star: boolean;
}
export interface RemoveRequest {
  origin: string;
}
export interface RemoveResponse {
  name: string;
}

export type Request =
  | { kind: 'get_info' }
  | { kind: 'attest'; value: AttestRequest }
  | { kind: 'install'; value: InstallRequest }
  | { kind: 'list' }
  | { kind: 'remove'; value: RemoveRequest };

export type Response =
  | { kind: 'info'; value: InfoResponse }
  | { kind: 'attest'; value: AttestResponse }
  | { kind: 'install'; value: InstallResponse }
  | { kind: 'list'; value: BindingSummary[] }
  | { kind: 'remove'; value: RemoveResponse }
  | { kind: 'error'; code: number; message?: string | undefined };

const OPERATION_OF: Record<Request['kind'], Operation> = {
  get_info: Operation.GET_INFO, attest: Operation.ATTEST, install: Operation.INSTALL,
  list: Operation.LIST, remove: Operation.REMOVE,
};

export function operationOf(request: Request): Operation {
  return OPERATION_OF[request.kind];
}

// ---- field rules ----

const TCHAR = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const isToken = (s: string): boolean => s !== '*' && TCHAR.test(s);
const isHeaderName = (s: string): boolean => isToken(s) && !/[A-Z]/.test(s);
const isHttpsUrl = (s: string): boolean => s.startsWith('https://') && s.length > 8 && /^[\x21-\x7e]+$/.test(s);

function checked<T>(ctx: string, parse: () => T, kind: 'invalid_value' | 'invalid_origin' | 'invalid_label' = 'invalid_value'): T {
  try {
    return parse();
  } catch {
    throw new DecodeError(kind, ctx);
  }
}
/** An Origin field: a bad one is invalid_origin (INVALID_ORIGIN, SPEC §4). */
const origin = (r: CborReader, ctx: string): string => {
  const s = r.text(ctx, 1, MAX_ORIGIN_LEN);
  return checked(ctx, () => parseOrigin(s).serialized, 'invalid_origin');
};
const localName = (r: CborReader, ctx: string): string => {
  const s = r.text(ctx, 1, 128);
  return checked(ctx, () => parseLocalName(s));
};
/** A Label field: a bad one is invalid_label (INVALID_LABEL, SPEC §4). */
const deviceLabel = (r: CborReader, ctx: string): string => {
  const s = r.text(ctx, 1, 64);
  return checked(ctx, () => parseDeviceLabel(s), 'invalid_label');
};
const certificates = (r: CborReader, ctx: string): Uint8Array[] =>
  r.bytesArray(ctx, [1, MAX_CHAIN_LEN], [1, MAX_CERTIFICATE_LEN]);

// ---- maps: encode ----

type IntMap = Map<number, CborValue>;

function infoMap(v: InfoResponse): IntMap {
  return new Map<number, CborValue>([
    [1, v.revision], [2, v.product], [3, v.deviceLabel], [4, v.attestationChain],
    [5, v.presence], [6, v.bindings], [7, v.maxBindings], [8, v.knownIssuers],
  ]);
}
function attestRequestMap(v: AttestRequest): IntMap {
  const m = new Map<number, CborValue>([
    [1, v.origin], [2, v.userHandle], [3, v.keyAuthorizationHash], [4, v.deviceLabel],
  ]);
  if (v.pin !== undefined) m.set(5, v.pin);
  return m;
}
const attestResponseMap = (v: AttestResponse): IntMap =>
  new Map<number, CborValue>([[1, v.publicKey], [2, v.csrSignature], [3, v.signature]]);
const corsMap = (v: CorsPolicy): IntMap =>
  new Map<number, CborValue>([
    [1, v.methods], [2, v.allowHeaders], [3, v.exposeHeaders], [4, v.allowCredentials], [5, v.maxAge],
  ]);
function installRequestMap(v: InstallRequest): IntMap {
  const m = new Map<number, CborValue>([[1, v.chain], [2, corsMap(v.cors)]]);
  if (v.starUrl !== undefined) m.set(3, v.starUrl);
  return m;
}
const installResponseMap = (v: InstallResponse): IntMap => new Map<number, CborValue>([[1, v.httpsPort]]);
const bindingMap = (v: BindingSummary): IntMap =>
  new Map<number, CborValue>([[1, v.origin], [2, v.name], [3, v.fingerprint], [4, v.notAfter], [5, v.star]]);
const listMap = (v: BindingSummary[]): IntMap => new Map<number, CborValue>([[1, v.map(bindingMap)]]);
const nameMap = (name: string): IntMap => new Map<number, CborValue>([[1, name]]);
const originMap = (o: string): IntMap => new Map<number, CborValue>([[1, o]]);

// ---- maps: decode ----

function decodeInfo(r: CborReader): InfoResponse {
  const C = 'InfoResponse';
  const v: Partial<InfoResponse> = {};
  r.intMap(C, (key) => {
    switch (key) {
      case 1: v.revision = r.uint(`${C}.revision`); break;
      case 2: v.product = r.text(`${C}.product`, 1, MAX_PRODUCT_LEN); break;
      case 3: v.deviceLabel = deviceLabel(r, `${C}.device_label`); break;
      case 4: v.attestationChain = certificates(r, `${C}.attestation_chain`); break;
      case 5: {
        const p = r.uint(`${C}.presence`);
        if (p > 2) throw new DecodeError('invalid_value', `${C}.presence`);
        v.presence = p as Presence;
        break;
      }
      case 6: v.bindings = r.uint(`${C}.bindings`); break;
      case 7: v.maxBindings = r.uint(`${C}.max_bindings`); break;
      case 8: {
        const n = r.arrayLen(`${C}.known_issuers`, 0, MAX_KNOWN_ISSUERS);
        v.knownIssuers = [];
        for (let i = 0; i < n; i++) v.knownIssuers.push(r.bytes(`${C}.known_issuers`, CERTIFICATE_ID_LEN, CERTIFICATE_ID_LEN));
        break;
      }
      default: return false;
    }
    return true;
  });
  return {
    revision: required(v.revision, C), product: required(v.product, C),
    deviceLabel: required(v.deviceLabel, C), attestationChain: required(v.attestationChain, C),
    presence: required(v.presence, C), bindings: required(v.bindings, C),
    maxBindings: required(v.maxBindings, C), knownIssuers: required(v.knownIssuers, C),
  };
}

function decodeAttestRequest(r: CborReader): AttestRequest {
  const C = 'AttestRequest';
  const v: Partial<AttestRequest> = {};
  r.intMap(C, (key) => {
    switch (key) {
      case 1: v.origin = origin(r, `${C}.origin`); break;
      case 2: v.userHandle = r.bytes(`${C}.user_handle`, 1, MAX_USER_HANDLE_LEN); break;
      case 3: v.keyAuthorizationHash = r.bytes(`${C}.key_authorization_hash`, DIGEST_LEN, DIGEST_LEN); break;
      case 4: v.deviceLabel = deviceLabel(r, `${C}.device_label`); break;
      case 5: v.pin = r.text(`${C}.pin`, MIN_PIN_LEN, MAX_PIN_LEN); break;
      default: return false;
    }
    return true;
  });
  const out: AttestRequest = {
    origin: required(v.origin, C), userHandle: required(v.userHandle, C),
    keyAuthorizationHash: required(v.keyAuthorizationHash, C), deviceLabel: required(v.deviceLabel, C),
  };
  if (v.pin !== undefined) out.pin = v.pin;
  return out;
}

function decodeAttestResponse(r: CborReader): AttestResponse {
  const C = 'AttestResponse';
  const v: Partial<AttestResponse> = {};
  r.intMap(C, (key) => {
    if (key === 1) {
      const point = r.bytes(`${C}.public_key`, P256_POINT_LEN, P256_POINT_LEN);
      // Uncompressed SEC1; whether it is on the curve is the verifier's check.
      if (point[0] !== 0x04) throw new DecodeError('invalid_value', `${C}.public_key`);
      v.publicKey = point;
    } else if (key === 2) v.csrSignature = r.bytes(`${C}.csr_signature`, RAW_SIGNATURE_LEN, RAW_SIGNATURE_LEN);
    else if (key === 3) v.signature = r.bytes(`${C}.signature`, RAW_SIGNATURE_LEN, RAW_SIGNATURE_LEN);
    else return false;
    return true;
  });
  return { publicKey: required(v.publicKey, C), csrSignature: required(v.csrSignature, C), signature: required(v.signature, C) };
}

function decodeCors(r: CborReader): CorsPolicy {
  const C = 'CorsPolicy';
  const v: Partial<CorsPolicy> = {};
  const list = (ctx: string, min: number, valid: (s: string) => boolean) =>
    r.textArray(ctx, [min, MAX_CORS_ITEMS], MAX_TOKEN_LEN, valid);
  r.intMap(C, (key) => {
    switch (key) {
      case 1: v.methods = list(`${C}.methods`, 1, isToken); break;
      case 2: v.allowHeaders = list(`${C}.allow_headers`, 0, isHeaderName); break;
      case 3: v.exposeHeaders = list(`${C}.expose_headers`, 0, isHeaderName); break;
      case 4: v.allowCredentials = r.bool(`${C}.allow_credentials`); break;
      case 5: {
        const age = r.uint(`${C}.max_age`);
        if (age > MAX_CORS_MAX_AGE) throw new DecodeError('invalid_value', `${C}.max_age`);
        v.maxAge = age;
        break;
      }
      default: return false;
    }
    return true;
  });
  return {
    methods: required(v.methods, C), allowHeaders: required(v.allowHeaders, C),
    exposeHeaders: required(v.exposeHeaders, C), allowCredentials: required(v.allowCredentials, C),
    maxAge: required(v.maxAge, C),
  };
}

function decodeInstallRequest(r: CborReader): InstallRequest {
  const C = 'InstallRequest';
  const v: Partial<InstallRequest> = {};
  r.intMap(C, (key) => {
    if (key === 1) v.chain = certificates(r, `${C}.chain`);
    else if (key === 2) v.cors = decodeCors(r);
    else if (key === 3) {
      const url = r.text(`${C}.star_url`, 1, MAX_URL_LEN);
      if (!isHttpsUrl(url)) throw new DecodeError('invalid_value', `${C}.star_url`);
      v.starUrl = url;
    } else return false;
    return true;
  });
  const out: InstallRequest = { chain: required(v.chain, C), cors: required(v.cors, C) };
  if (v.starUrl !== undefined) out.starUrl = v.starUrl;
  return out;
}

function fingerprint(r: CborReader, ctx: string): Uint8Array {
  return r.bytes(ctx, FINGERPRINT_LEN, FINGERPRINT_LEN);
}

function decodeInstallResponse(r: CborReader): InstallResponse {
  const C = 'InstallResponse';
  const v: Partial<InstallResponse> = {};
  r.intMap(C, (key) => {
    if (key !== 1) return false;
    const port = r.uint(`${C}.https_port`);
    if (port === 0 || port > 65535) throw new DecodeError('invalid_value', `${C}.https_port`);
    v.httpsPort = port;
    return true;
  });
  return { httpsPort: required(v.httpsPort, C) };
}

function decodeBinding(r: CborReader): BindingSummary {
  const C = 'BindingSummary';
  const v: Partial<BindingSummary> = {};
  r.intMap(C, (key) => {
    switch (key) {
      case 1: v.origin = origin(r, `${C}.origin`); break;
      case 2: v.name = localName(r, `${C}.name`); break;
      case 3: v.fingerprint = fingerprint(r, `${C}.fingerprint`); break;
      case 4: v.notAfter = r.uint(`${C}.not_after`); break;
      case 5: v.star = r.bool(`${C}.star`); break;
      default: return false;
    }
    return true;
  });
  return {
    origin: required(v.origin, C), name: required(v.name, C), fingerprint: required(v.fingerprint, C),
    notAfter: required(v.notAfter, C), star: required(v.star, C),
  };
}

function decodeList(r: CborReader): BindingSummary[] {
  const C = 'ListResponse';
  let bindings: BindingSummary[] | undefined;
  r.intMap(C, (key) => {
    if (key !== 1) return false;
    const n = r.arrayLen(C, 0, MAX_BINDINGS);
    bindings = [];
    for (let i = 0; i < n; i++) bindings.push(decodeBinding(r));
    return true;
  });
  return required(bindings, C);
}

/** A map with the single text field 1 (RemoveRequest, RemoveResponse, ErrorResponse). */
function decodeSingle<T>(ctx: string, field: (r: CborReader) => T): (r: CborReader) => T {
  return (r) => {
    let value: T | undefined;
    r.intMap(ctx, (key) => {
      if (key !== 1) return false;
      value = field(r);
      return true;
    });
    return required(value, ctx);
  };
}

// ---- messages ----

function withPrefix(byte: number, body?: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + (body?.length ?? 0));
  out[0] = byte;
  if (body) out.set(body, 1);
  return out;
}

/** The bytes of a request: operation byte, then the CBOR map. */
export function encodeRequest(request: Request): Uint8Array {
  const op = operationOf(request);
  switch (request.kind) {
    case 'get_info':
    case 'list':
      return withPrefix(op);
    case 'attest': return withPrefix(op, encodeCbor(attestRequestMap(request.value)));
    case 'install': return withPrefix(op, encodeCbor(installRequestMap(request.value)));
    case 'remove': return withPrefix(op, encodeCbor(originMap(request.value.origin)));
  }
}

/** Decodes a request (as a device would; used to hold this package to the vectors). */
export function decodeRequest(bytes: Uint8Array): Request {
  const op = bytes[0];
  if (op === undefined) throw new DecodeError('empty', 'Request');
  const body = bytes.subarray(1);
  const noBody = <R extends Request>(request: R): R => {
    if (body.length !== 0) throw new DecodeError('trailing_bytes', 'Request');
    return request;
  };
  switch (op) {
    case Operation.GET_INFO: return noBody({ kind: 'get_info' });
    case Operation.LIST: return noBody({ kind: 'list' });
    case Operation.ATTEST:
      return { kind: 'attest', value: decodeCanonical(body, 'AttestRequest', decodeAttestRequest, (v) => encodeCbor(attestRequestMap(v))) };
    case Operation.INSTALL:
      return { kind: 'install', value: decodeCanonical(body, 'InstallRequest', decodeInstallRequest, (v) => encodeCbor(installRequestMap(v))) };
    case Operation.REMOVE: {
      const decode = decodeSingle('RemoveRequest', (r) => origin(r, 'RemoveRequest.origin'));
      return { kind: 'remove', value: { origin: decodeCanonical(body, 'RemoveRequest', decode, (o) => encodeCbor(originMap(o))) } };
    }
    default:
      throw new DecodeError('unknown_operation', 'Request');
  }
}

/** The bytes of a response: status byte, then the CBOR map. */
export function encodeResponse(response: Response): Uint8Array {
  switch (response.kind) {
    case 'info': return withPrefix(0, encodeCbor(infoMap(response.value)));
    case 'attest': return withPrefix(0, encodeCbor(attestResponseMap(response.value)));
    case 'install': return withPrefix(0, encodeCbor(installResponseMap(response.value)));
    case 'list': return withPrefix(0, encodeCbor(listMap(response.value)));
    case 'remove': return withPrefix(0, encodeCbor(nameMap(response.value.name)));
    case 'error':
      return withPrefix(response.code, response.message === undefined ? undefined : encodeCbor(nameMap(response.message)));
  }
}

/** Decodes the response to a request of `operation` (a response does not repeat it, SPEC §5). */
export function decodeResponse(operation: Operation, bytes: Uint8Array): Response {
  const status = bytes[0];
  if (status === undefined) throw new DecodeError('empty', 'Response');
  const body = bytes.subarray(1);
  if (status !== 0) {
    if (ERROR_CODES[status] === undefined) throw new DecodeError('unknown_status', 'Response');
    if (body.length === 0) return { kind: 'error', code: status };
    const decode = decodeSingle('ErrorResponse', (r) => r.text('ErrorResponse', 0, MAX_ERROR_MESSAGE_LEN));
    const message = decodeCanonical(body, 'ErrorResponse', decode, (m) => encodeCbor(nameMap(m)));
    return { kind: 'error', code: status, message };
  }
  switch (operation) {
    case Operation.GET_INFO:
      return { kind: 'info', value: decodeCanonical(body, 'InfoResponse', decodeInfo, (v) => encodeCbor(infoMap(v))) };
    case Operation.ATTEST:
      return { kind: 'attest', value: decodeCanonical(body, 'AttestResponse', decodeAttestResponse, (v) => encodeCbor(attestResponseMap(v))) };
    case Operation.INSTALL:
      return { kind: 'install', value: decodeCanonical(body, 'InstallResponse', decodeInstallResponse, (v) => encodeCbor(installResponseMap(v))) };
    case Operation.LIST:
      return { kind: 'list', value: decodeCanonical(body, 'ListResponse', decodeList, (v) => encodeCbor(listMap(v))) };
    case Operation.REMOVE: {
      const decode = decodeSingle('RemoveResponse', (r) => localName(r, 'RemoveResponse.name'));
      return { kind: 'remove', value: { name: decodeCanonical(body, 'RemoveResponse', decode, (n) => encodeCbor(nameMap(n))) } };
    }
  }
}
