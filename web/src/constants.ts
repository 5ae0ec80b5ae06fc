// Constants of SPEC.md revision 2 (§2, §3, §5, §11), kept beside the codecs that use them.

/** The primary GATT service (SPEC §2). */
export const SERVICE_UUID = '52620000-f2e2-4679-934e-b35464ebab15';
/** Control point: request fragments, write / write without response. */
export const CONTROL_POINT_UUID = '52620001-f2e2-4679-934e-b35464ebab15';
/** Status: response, KEEPALIVE and ERROR fragments, notify. */
export const STATUS_UUID = '52620002-f2e2-4679-934e-b35464ebab15';
/** Info: CBOR {1: revision, 2: max_fragment_len, 3: max_message_len}, read. */
export const INFO_UUID = '52620003-f2e2-4679-934e-b35464ebab15';

export const PROTOCOL_REVISION = 2;
export const MIN_ATT_MTU = 23;
export const MAX_ATT_MTU = 517;
export const ATT_MARGIN = 5;
export const MAX_VALUE_LEN = 512;
export const MAX_MESSAGE_LEN = 8192;
export const MAX_SEQUENCE = 0x7f;
export const FRAGMENT_TIMEOUT_MS = 5000;
/** How far past the first missing position a fragment may arrive (SPEC §3.2). */
export const REORDER_WINDOW = 16;
export const KEEPALIVE_INTERVAL_MS = 1000;
export const RESPONSE_TIMEOUT_MS = 5000;
export const USER_PRESENCE_TIMEOUT_MS = 60_000;

export const MAX_USER_HANDLE_LEN = 64;
/** SHA-256 digests: the key authorization's hash in ATTEST. */
export const DIGEST_LEN = 32;
export const MIN_PIN_LEN = 4;
export const MAX_PIN_LEN = 32;
export const MAX_PRODUCT_LEN = 64;
export const MAX_CERTIFICATE_LEN = 2048;
export const MAX_CHAIN_LEN = 3;
/** An uncompressed SEC1 P-256 point (ATTEST's TLS key). */
export const P256_POINT_LEN = 65;
/** A raw r||s P-256 ECDSA signature (ATTEST's signatures). */
export const RAW_SIGNATURE_LEN = 64;
/** GET_INFO's known_issuers: at most 4 ids of 8 bytes. */
export const MAX_KNOWN_ISSUERS = 4;
export const CERTIFICATE_ID_LEN = 8;
export const MAX_URL_LEN = 512;
export const MAX_BINDINGS = 16;
export const MAX_CORS_ITEMS = 16;
export const MAX_TOKEN_LEN = 64;
export const MAX_CORS_MAX_AGE = 86_400;
export const MAX_ERROR_MESSAGE_LEN = 128;
export const FINGERPRINT_LEN = 32;
export const MAX_ORIGIN_LEN = 8 + 253 + 6;
export const MAX_DEVICE_LABEL_LEN = 20;
export const MAX_ORIGIN_SLUG_LEN = 30;
export const ORIGIN_HASH_LEN = 6;
export const DEVICE_TAG_LEN = 4;
export const MAX_SIGNATURE_LEN = 72;
export const MAX_SPKI_LEN = 512;
/** No structure of the spec has more than 16 keys; a larger map is refused before it is read. */
export const MAX_MAP_ENTRIES = 16;

/** SPEC §2.1: fragment_len(mtu) = min(clamp(mtu, 23, 517) - 5, 512). */
export function fragmentLen(attMtu: number): number {
  const mtu = Math.min(Math.max(attMtu, MIN_ATT_MTU), MAX_ATT_MTU);
  return Math.min(mtu - ATT_MARGIN, MAX_VALUE_LEN);
}

export const MIN_FRAGMENT_LEN = fragmentLen(MIN_ATT_MTU);
