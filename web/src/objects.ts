// Structures beside the messages: the info characteristic (SPEC §2), the attestation object
// (§7.2), the transcript (§7.1) and the origin-binding extension (§8.4). A page reads the info;
// the others let it inspect what its device and issuer produce.

import {
  CERTIFICATE_ID_LEN, MAX_CERTIFICATE_LEN, MAX_CHAIN_LEN, MAX_SIGNATURE_LEN, MAX_SPKI_LEN, MAX_USER_HANDLE_LEN,
  MAX_VALUE_LEN, MIN_FRAGMENT_LEN,
} from './constants.js';
import { type CborValue, decodeCanonical, encodeCbor, required } from './cbor.js';
import { DecodeError } from './errors.js';
import { parseOrigin } from './names.js';

/** The info characteristic: protocol revision and the device's limits on this connection. */
export interface GattInfo {
  revision: number;
  maxFragmentLen: number;
  maxMessageLen: number;
}

const infoMap = (v: GattInfo) =>
  new Map<number, CborValue>([[1, v.revision], [2, v.maxFragmentLen], [3, v.maxMessageLen]]);

export function encodeInfo(info: GattInfo): Uint8Array {
  return encodeCbor(infoMap(info));
}

/**
 * Decodes the info value and refuses one out of range (SPEC §2): revision 0,
 * max_fragment_len outside 18..=512, max_message_len 0.
 */
export function decodeInfo(bytes: Uint8Array): GattInfo {
  const C = 'GattInfo';
  const info = decodeCanonical(bytes, C, (r) => {
    const v: Partial<GattInfo> = {};
    r.intMap(C, (key) => {
      if (key === 1) v.revision = r.uint(C);
      else if (key === 2) v.maxFragmentLen = r.uint(C);
      else if (key === 3) v.maxMessageLen = r.uint(C);
      else return false;
      return true;
    });
    return { revision: required(v.revision, C), maxFragmentLen: required(v.maxFragmentLen, C), maxMessageLen: required(v.maxMessageLen, C) };
  }, encodeInfo);
  const fragmentOk = info.maxFragmentLen >= MIN_FRAGMENT_LEN && info.maxFragmentLen <= MAX_VALUE_LEN;
  if (info.revision === 0 || !fragmentOk || info.maxMessageLen === 0) throw new DecodeError('invalid_value', C);
  return info;
}

// ---- attestation object ----

export const ATTESTATION_FORMAT = 'localcert-v1';
export const COSE_ES256 = -7;

export interface AttestationObject {
  sig: Uint8Array;
  x5c: Uint8Array[];
  spki: Uint8Array;
  userHandle: Uint8Array;
}

export function encodeAttestationObject(v: AttestationObject): Uint8Array {
  const stmt = new Map<string, CborValue>([
    ['alg', COSE_ES256], ['sig', v.sig], ['x5c', v.x5c], ['spki', v.spki], ['userHandle', v.userHandle],
  ]);
  return encodeCbor(new Map<string, CborValue>([['fmt', ATTESTATION_FORMAT], ['attStmt', stmt]]));
}

export function decodeAttestationObject(bytes: Uint8Array): AttestationObject {
  return decodeCanonical(bytes, 'AttestationObject', (r) => {
    const out: Partial<AttestationObject> = {};
    r.textMap('AttestationObject', ['fmt', 'attStmt'], (key) => {
      if (key === 'fmt') {
        if (r.text('AttestationObject.fmt', 1, 64) !== ATTESTATION_FORMAT) {
          throw new DecodeError('invalid_value', 'AttestationObject.fmt');
        }
        return;
      }
      r.textMap('AttestationObject.attStmt', ['alg', 'sig', 'x5c', 'spki', 'userHandle'], (k) => {
        switch (k) {
          case 'alg':
            if (r.int('attStmt.alg') !== COSE_ES256) throw new DecodeError('invalid_value', 'attStmt.alg');
            break;
          case 'sig': out.sig = r.bytes('attStmt.sig', 1, MAX_SIGNATURE_LEN); break;
          case 'x5c': out.x5c = r.bytesArray('attStmt.x5c', [1, MAX_CHAIN_LEN], [1, MAX_CERTIFICATE_LEN]); break;
          case 'spki': out.spki = r.bytes('attStmt.spki', 1, MAX_SPKI_LEN); break;
          case 'userHandle': out.userHandle = r.bytes('attStmt.userHandle', 1, MAX_USER_HANDLE_LEN); break;
        }
      });
    });
    const C = 'AttestationObject';
    return { sig: required(out.sig, C), x5c: required(out.x5c, C), spki: required(out.spki, C), userHandle: required(out.userHandle, C) };
  }, encodeAttestationObject);
}

// ---- transcript ----

export interface TranscriptInput {
  /** SHA-256 of the ACME key authorization, as ATTEST carries it ({@link keyAuthorizationHash}). */
  keyAuthorizationHash: Uint8Array;
  origin: string;
  userHandle: Uint8Array;
  csrSpki: Uint8Array;
  names: string[];
}

const sha256 = async (b: Uint8Array) => new Uint8Array(await crypto.subtle.digest('SHA-256', new Uint8Array(b)));

/** SHA-256 of an ACME key authorization: ATTEST's key 3 and the transcript's second element. */
export async function keyAuthorizationHash(keyAuthorization: string): Promise<Uint8Array> {
  return sha256(new TextEncoder().encode(keyAuthorization));
}

/** A certificate's id in GET_INFO's known_issuers: the first 8 bytes of SHA-256 of its DER. */
export async function certificateId(der: Uint8Array): Promise<Uint8Array> {
  return (await sha256(der)).slice(0, CERTIFICATE_ID_LEN);
}

/** The bytes the device's attestation key signs (SPEC §7.1). */
export async function transcriptBytes(t: TranscriptInput): Promise<Uint8Array> {
  return encodeCbor([
    'localcert attestation v1',
    t.keyAuthorizationHash,
    t.origin,
    t.userHandle,
    await sha256(t.csrSpki),
    t.names,
  ]);
}

// ---- origin-binding extension (DER) ----

export const ORIGIN_BINDING_OID = '2.25.123252009050424329067405108796839169409';
/** DER content octets of the OID: compare as bytes, the arc is wider than 64 bits (SPEC §8.4). */
export const ORIGIN_BINDING_OID_DER = Uint8Array.from([
  0x69, 0x81, 0xb9, 0xb9, 0xbc, 0xcd, 0xdc, 0x89, 0x8a, 0xba, 0xdf, 0x8a, 0xd1, 0xcf, 0xbb, 0xa0,
  0xee, 0xa0, 0x9b, 0x01,
]);

export interface OriginBinding {
  origin: string;
  userHandleDigest: Uint8Array;
}

/** A DER tag and definite, minimal length (values here are under 64 KiB). */
export function derHeader(tag: number, len: number): number[] {
  if (len < 0x80) return [tag, len];
  if (len < 0x100) return [tag, 0x81, len];
  return [tag, 0x82, len >> 8, len & 0xff];
}

export function encodeOriginBinding(v: OriginBinding): Uint8Array {
  const origin = new TextEncoder().encode(v.origin);
  const body = [...derHeader(0x16, origin.length), ...origin, ...derHeader(0x04, v.userHandleDigest.length), ...v.userHandleDigest];
  return Uint8Array.from([...derHeader(0x30, body.length), ...body]);
}

/** Reads one DER TLV at `at` (definite, minimal length), or throws malformed. */
function derTlv(d: Uint8Array, at: number, tag: number): { start: number; end: number } {
  const C = 'OriginBinding';
  if (d[at] !== tag) throw new DecodeError('malformed', C);
  const first = d[at + 1];
  if (first === undefined) throw new DecodeError('malformed', C);
  let len = first;
  let start = at + 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 2) throw new DecodeError('malformed', C);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (d[start + i] ?? NaN);
    start += n;
    if (Number.isNaN(len) || len < 0x80 || (n === 2 && len < 0x100)) throw new DecodeError('malformed', C);
  }
  const end = start + len;
  if (end > d.length) throw new DecodeError('malformed', C);
  return { start, end };
}

/** Decodes the extension value: SEQUENCE { IA5String origin, OCTET STRING (32) digest }. */
export function decodeOriginBinding(der: Uint8Array): OriginBinding {
  const C = 'OriginBinding';
  const seq = derTlv(der, 0, 0x30);
  if (seq.end !== der.length) throw new DecodeError('malformed', C);
  const o = derTlv(der, seq.start, 0x16);
  const digest = derTlv(der, o.end, 0x04);
  if (digest.end !== seq.end) throw new DecodeError('malformed', C);
  const originBytes = der.subarray(o.start, o.end);
  if (originBytes.some((b) => b > 0x7f)) throw new DecodeError('malformed', C);
  const origin = new TextDecoder().decode(originBytes);
  try {
    parseOrigin(origin);
  } catch {
    throw new DecodeError('invalid_value', C);
  }
  if (digest.end - digest.start !== 32) throw new DecodeError('bad_length', C);
  return { origin, userHandleDigest: der.slice(digest.start, digest.end) };
}
