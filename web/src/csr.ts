// The CSR of an ATTEST from its parts (SPEC §5.2): the device sends its new P-256 key and raw
// signatures, and whoever holds the name (the RP backend) rebuilds the exact DER the device
// signed. Also the raw r||s to DER conversion the attestation object needs (§7.2).

import { P256_POINT_LEN, RAW_SIGNATURE_LEN } from './constants.js';
import { derHeader } from './objects.js';

/** DER of a P-256 SubjectPublicKeyInfo before its point. */
const P256_SPKI_PREFIX = [
  0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
  0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/** OID 1.2.840.113549.1.9.14 (extensionRequest). */
const EXTENSION_REQUEST_OID = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/** OID 2.5.29.17 (subjectAltName). */
const SUBJECT_ALT_NAME_OID = [0x06, 0x03, 0x55, 0x1d, 0x11];
/** AlgorithmIdentifier ecdsa-with-SHA256, no parameters. */
const ECDSA_WITH_SHA256 = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

const tlv = (tag: number, value: number[]): number[] => [...derHeader(tag, value.length), ...value];

function expectLength(bytes: Uint8Array, len: number, what: string): void {
  if (bytes.length !== len) throw new RangeError(`${what}: ${bytes.length} bytes, expected ${len}`);
}

/** The DER SubjectPublicKeyInfo of an uncompressed P-256 point. */
export function p256Spki(point: Uint8Array): Uint8Array {
  expectLength(point, P256_POINT_LEN, 'P-256 point');
  return Uint8Array.from([...P256_SPKI_PREFIX, ...point]);
}

/** The CertificationRequestInfo the TLS key signs: version 0, empty subject, the key, SAN dNSNames. */
export function csrRequestInfo(point: Uint8Array, names: string[]): Uint8Array {
  const generalNames = names.flatMap((n) => tlv(0x82, [...new TextEncoder().encode(n)]));
  const san = [...SUBJECT_ALT_NAME_OID, ...tlv(0x04, tlv(0x30, generalNames))];
  const attribute = tlv(0x30, [...EXTENSION_REQUEST_OID, ...tlv(0x31, tlv(0x30, tlv(0x30, san)))]);
  return Uint8Array.from(tlv(0x30, [0x02, 0x01, 0x00, 0x30, 0x00, ...p256Spki(point), ...tlv(0xa0, attribute)]));
}

/** The whole CSR: the request info and its raw signature. */
export function assembleCsr(requestInfo: Uint8Array, signature: Uint8Array): Uint8Array {
  const bits = [0x00, ...derSignature(signature)];
  return Uint8Array.from(tlv(0x30, [...requestInfo, ...ECDSA_WITH_SHA256, ...tlv(0x03, bits)]));
}

/** The DER ECDSA-Sig-Value of a raw r||s signature. */
export function derSignature(raw: Uint8Array): Uint8Array {
  expectLength(raw, RAW_SIGNATURE_LEN, 'raw signature');
  const uint = (b: Uint8Array): number[] => {
    let start = 0;
    while (start < b.length && b[start] === 0) start++;
    const value = [...b.subarray(start)];
    if (value.length === 0 || (value[0]! & 0x80) !== 0) value.unshift(0);
    return tlv(0x02, value);
  };
  return Uint8Array.from(tlv(0x30, [...uint(raw.subarray(0, 32)), ...uint(raw.subarray(32))]));
}
