// Origins (SPEC §8.1), device labels (§8.2) and `.local` names (§8.3): parsing and derivation,
// so that a page can check the name its backend and its device agree on.

import {
  DEVICE_TAG_LEN, MAX_DEVICE_LABEL_LEN, MAX_ORIGIN_LEN, MAX_ORIGIN_SLUG_LEN, ORIGIN_HASH_LEN,
} from './constants.js';
import { NameError, OriginError } from './errors.js';

const SCHEME = 'https://';
const LOCAL_SUFFIX = '.local';
const MAX_NAME_LABEL_LEN = 63;
const BASE32 = '0123456789abcdefghjkmnpqrstvwxyz';
const ORIGIN_HASH_DOMAIN = 'localcert origin tag v1\0';
const DEVICE_TAG_DOMAIN = 'localcert device tag v1\0';
const ASCII = new TextEncoder();

const isLdh = (s: string): boolean => /^[a-z0-9-]*$/.test(s);

/** A parsed origin: its serialization, host and port (undefined for 443). */
export interface Origin {
  readonly serialized: string;
  readonly host: string;
  readonly port: number | undefined;
}

/** Parses an ASCII-serialized secure origin, refusing anything a browser would not produce. */
export function parseOrigin(s: string): Origin {
  if (ASCII.encode(s).length > MAX_ORIGIN_LEN) throw new OriginError('too_long', s);
  if (!s.startsWith(SCHEME)) {
    throw new OriginError(s.slice(0, SCHEME.length).toLowerCase() === SCHEME ? 'not_serialized' : 'not_https', s);
  }
  const rest = s.slice(SCHEME.length);
  if (/[/?#@]/.test(rest)) throw new OriginError('not_an_origin', s);
  if (/[^\x00-\x7f]/.test(rest) || /[A-Z]/.test(rest)) throw new OriginError('not_serialized', s);
  if (rest.startsWith('[')) throw new OriginError('ip_address', s);
  const colon = rest.indexOf(':');
  const host = colon < 0 ? rest : rest.slice(0, colon);
  let port: number | undefined;
  if (colon >= 0) {
    const p = rest.slice(colon + 1);
    if (!/^[0-9]+$/.test(p) || p.startsWith('0') || p.length > 5) throw new OriginError('invalid_port', s);
    port = Number(p);
    if (port > 65535 || port === 443) throw new OriginError('invalid_port', s);
  }
  if (host.length === 0 || host.length > 253) throw new OriginError('invalid_host', s);
  const labels = host.split('.');
  for (const label of labels) {
    if (label.length === 0 || label.length > 63 || !isLdh(label)) throw new OriginError('invalid_host', s);
    if (label.startsWith('-') || label.endsWith('-')) throw new OriginError('invalid_host', s);
  }
  // No top-level domain is all digits: such a host is an IPv4 address (or a shorthand for one).
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) throw new OriginError('ip_address', s);
  return { serialized: s, host, port };
}

/** Checks a device label (SPEC §8.2) and returns it. */
export function parseDeviceLabel(s: string): string {
  if (s.length === 0 || ASCII.encode(s).length > MAX_DEVICE_LABEL_LEN) throw new NameError('length', s);
  if (!isLdh(s)) throw new NameError('character', s);
  if (s.startsWith('-') || s.endsWith('-') || s.includes('--')) throw new NameError('hyphen', s);
  return s;
}

/** Lower-case; each run of characters outside a-z0-9 becomes one '-'; cut to `max`; trim. */
function slugify(s: string, max: number): string {
  let out = '';
  for (const ch of s) {
    // Only ASCII letters are lower-cased: any other character is outside a-z0-9.
    const c = /^[A-Z]$/.test(ch) ? ch.toLowerCase() : ch;
    if (/^[a-z0-9]$/.test(c)) out += c;
    else if (out.length > 0 && !out.endsWith('-')) out += '-';
  }
  return out.slice(0, max).replace(/-+$/, '');
}

/** The label a device suggests from its product name (SPEC §8.2). */
export function deviceLabelFromText(text: string): string {
  return slugify(text, MAX_DEVICE_LABEL_LEN) || 'device';
}

/** Checks a name: one label of up to 63 LDH bytes, then `.local` (SPEC §8.3). */
export function parseLocalName(s: string): string {
  if (!s.endsWith(LOCAL_SUFFIX)) throw new NameError('not_single_label_local', s);
  const label = s.slice(0, -LOCAL_SUFFIX.length);
  if (label.includes('.')) throw new NameError('not_single_label_local', s);
  if (label.length === 0 || ASCII.encode(label).length > MAX_NAME_LABEL_LEN) throw new NameError('length', s);
  if (!isLdh(label)) throw new NameError('character', s);
  if (label.startsWith('-') || label.endsWith('-')) throw new NameError('hyphen', s);
  return s;
}

async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const joined = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', joined));
}

/** Crockford base32, lower case, 5 bits at a time from the most significant bit. */
export function base32Prefix(digest: Uint8Array, len: number): string {
  let out = '';
  for (let i = 0; i < len; i++) {
    const bit = i * 5;
    const hi = digest[bit >> 3] ?? 0;
    const lo = digest[(bit >> 3) + 1] ?? 0;
    out += BASE32[(((hi << 8) | lo) >> (11 - (bit % 8))) & 0x1f];
  }
  return out;
}

/** The origin tag: slug(host[-port]) cut to 30, '-', 6 base32 characters of a hash. */
export async function originTag(origin: string): Promise<string> {
  const o = parseOrigin(origin);
  const slug = slugify(o.port === undefined ? o.host : `${o.host}-${o.port}`, MAX_ORIGIN_SLUG_LEN);
  const digest = await sha256(ASCII.encode(ORIGIN_HASH_DOMAIN), ASCII.encode(o.serialized));
  return `${slug}-${base32Prefix(digest, ORIGIN_HASH_LEN)}`;
}

/** The device tag: 4 base32 characters of a hash of the attestation certificate DER. */
export async function deviceTag(attestationCertificate: Uint8Array): Promise<string> {
  const digest = await sha256(ASCII.encode(DEVICE_TAG_DOMAIN), attestationCertificate);
  return base32Prefix(digest, DEVICE_TAG_LEN);
}

/** The revision 1 name of a device for an origin (SPEC §8.3). */
export async function deriveName(deviceLabel: string, origin: string, attestationCertificate: Uint8Array): Promise<string> {
  parseDeviceLabel(deviceLabel);
  return `${deviceLabel}-${await originTag(origin)}-${await deviceTag(attestationCertificate)}${LOCAL_SUFFIX}`;
}

/**
 * Checks that `name` is in `origin`'s namespace and carries this device's tag; returns the
 * device label it starts with.
 */
export async function checkDeviceName(name: string, origin: string, attestationCertificate: Uint8Array): Promise<string> {
  parseLocalName(name);
  const label = name.slice(0, -LOCAL_SUFFIX.length);
  const suffix = `-${await originTag(origin)}-`;
  const tag = label.slice(-DEVICE_TAG_LEN);
  const rest = label.slice(0, -DEVICE_TAG_LEN);
  const isTag = tag.length === DEVICE_TAG_LEN && [...tag].every((c) => BASE32.includes(c));
  if (!isTag || !rest.endsWith(suffix)) throw new NameError('outside_origin_namespace', name);
  const deviceLabel = rest.slice(0, -suffix.length);
  try {
    parseDeviceLabel(deviceLabel);
  } catch {
    throw new NameError('outside_origin_namespace', name);
  }
  if (tag !== (await deviceTag(attestationCertificate))) throw new NameError('wrong_device', name);
  return deviceLabel;
}
