// Strict deterministic CBOR (SPEC §4) on top of cborg. Decoding walks cborg's tokenizer (strict
// options: minimal integers, definite lengths, no undefined/NaN/Infinity) so that each structure
// checks types, lengths and key order in the order the reference decoder does, then re-encodes
// the value with cborg and compares bytes, as the reference implementation does.

import { Tokenizer, Type, Token, encode as cborgEncode, rfc8949EncodeOptions } from 'cborg';
import { DecodeError, type DecodeKind } from './errors.js';
import { MAX_MAP_ENTRIES } from './constants.js';

const STRICT = {
  strict: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowNaN: false,
  allowInfinity: false,
  allowBigInt: false,
  rejectDuplicateMapKeys: true,
  retainStringBytes: true,
} as const;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A CBOR value this package encodes: a subset without floats, tags or null. */
export type CborValue =
  | number | boolean | string | Uint8Array | CborValue[] | Map<number | string, CborValue>;

/** Deterministic encoding (RFC 8949 §4.2.1): shortest arguments, definite lengths, sorted keys. */
export function encodeCbor(value: CborValue): Uint8Array {
  return cborgEncode(value, rfc8949EncodeOptions);
}

/** Reads one token at a time, classifying every refusal with a SPEC §4 kind. */
export class CborReader {
  private readonly tokens: InstanceType<typeof Tokenizer>;
  constructor(private readonly data: Uint8Array) {
    this.tokens = new Tokenizer(data, STRICT);
  }

  pos(): number {
    return this.tokens.pos();
  }

  /**
   * The next token. The initial byte is classified here before cborg reads it, so that the kind
   * never depends on cborg's message text: indefinite lengths and simple values are the wrong
   * type, a non-minimal argument is non-canonical, anything cut short is malformed.
   */
  next(ctx: string): Token {
    const pos = this.tokens.pos();
    const initial = this.data[pos];
    if (initial === undefined) throw new DecodeError('malformed', ctx);
    const major = initial >> 5;
    const info = initial & 0x1f;
    if (info >= 28 && info <= 30) throw new DecodeError('malformed', ctx);
    if (info === 31) throw new DecodeError('wrong_type', ctx);
    if (major === 7 && info !== 20 && info !== 21 && info < 25) {
      // null, undefined and simple values: no field of the spec has them.
      throw new DecodeError('wrong_type', ctx);
    }
    if (major !== 7 && info >= 24) {
      const size = 1 << (info - 24);
      if (pos + 1 + size > this.data.length) throw new DecodeError('malformed', ctx);
      let arg = 0;
      for (let i = 0; i < size; i++) arg = arg * 256 + this.data[pos + 1 + i]!;
      const minimum = [24, 0x100, 0x10000, 0x100000000][info - 24]!;
      if (arg < minimum) throw new DecodeError('non_canonical', ctx);
    }
    let token: Token;
    try {
      token = this.tokens.next();
    } catch {
      // What is left: a string running past the end, or a 64-bit length.
      throw new DecodeError('malformed', ctx);
    }
    if (token.type === Type.string) {
      try {
        UTF8.decode(token.byteValue);
      } catch {
        throw new DecodeError('malformed', ctx);
      }
    }
    return token;
  }

  private expect(ctx: string, type: Type): Token {
    const token = this.next(ctx);
    if (token.type !== type) throw new DecodeError('wrong_type', ctx);
    return token;
  }

  uint(ctx: string): number {
    return this.expect(ctx, Type.uint).value as number;
  }

  /** A signed integer (major type 0 or 1). */
  int(ctx: string): number {
    const token = this.next(ctx);
    if (token.type !== Type.uint && token.type !== Type.negint) throw new DecodeError('wrong_type', ctx);
    return token.value as number;
  }

  bool(ctx: string): boolean {
    const token = this.next(ctx);
    if (token.type === Type.true) return true;
    if (token.type === Type.false) return false;
    throw new DecodeError('wrong_type', ctx);
  }

  /** A text string of min..=max bytes (UTF-8 length, as SPEC limits are in bytes). */
  text(ctx: string, min: number, max: number): string {
    const token = this.expect(ctx, Type.string);
    const len = (token.byteValue as Uint8Array).length;
    if (len < min || len > max) throw new DecodeError('bad_length', ctx);
    return token.value as string;
  }

  bytes(ctx: string, min: number, max: number): Uint8Array {
    const token = this.expect(ctx, Type.bytes);
    const value = token.value as Uint8Array;
    if (value.length < min || value.length > max) throw new DecodeError('bad_length', ctx);
    return value.slice();
  }

  arrayLen(ctx: string, min: number, max: number): number {
    const n = this.expect(ctx, Type.array).value as number;
    if (n < min || n > max) throw new DecodeError('bad_length', ctx);
    return n;
  }

  bytesArray(ctx: string, items: [number, number], len: [number, number]): Uint8Array[] {
    const n = this.arrayLen(ctx, items[0], items[1]);
    const out: Uint8Array[] = [];
    for (let i = 0; i < n; i++) out.push(this.bytes(ctx, len[0], len[1]));
    return out;
  }

  textArray(ctx: string, items: [number, number], maxLen: number, valid: (s: string) => boolean): string[] {
    const n = this.arrayLen(ctx, items[0], items[1]);
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const s = this.text(ctx, 1, maxLen);
      if (!valid(s)) throw new DecodeError('invalid_value', ctx);
      out.push(s);
    }
    return out;
  }

  /** A map header: at most 16 entries, refused before any entry is read. */
  mapLen(ctx: string): number {
    const n = this.expect(ctx, Type.map).value as number;
    if (n > MAX_MAP_ENTRIES) throw new DecodeError('bad_length', ctx);
    return n;
  }

  /**
   * Walks a map with unsigned integer keys in strictly ascending order, calling `field` for
   * each key; `field` returns false for a key the structure does not define.
   */
  intMap(ctx: string, field: (key: number) => boolean): void {
    const n = this.mapLen(ctx);
    let last = -1;
    for (let i = 0; i < n; i++) {
      const key = this.uint(ctx);
      if (key <= last) throw new DecodeError('key_order', ctx);
      last = key;
      if (!field(key)) throw new DecodeError('unknown_key', ctx);
    }
  }

  /** A map whose text keys are exactly `keys`, in that (canonical) order. */
  textMap(ctx: string, keys: readonly string[], field: (key: string) => void): void {
    const n = this.expect(ctx, Type.map).value as number;
    if (n < keys.length) throw new DecodeError('missing_key', ctx);
    if (n > keys.length) throw new DecodeError('unknown_key', ctx);
    for (const expected of keys) {
      const key = this.text(ctx, 0, 64);
      if (key !== expected) throw new DecodeError(keys.includes(key) ? 'key_order' : 'unknown_key', ctx);
      field(key);
    }
  }
}

/** Unwraps a required field after a map walk. */
export function required<T>(value: T | undefined, ctx: string): T {
  if (value === undefined) throw new DecodeError('missing_key', ctx);
  return value;
}

/**
 * Decodes exactly one value from `bytes` with `decode`, refuses trailing bytes, then checks
 * that `reencode` gives the same bytes (anything else is not the deterministic encoding).
 */
export function decodeCanonical<T>(
  bytes: Uint8Array,
  ctx: string,
  decode: (r: CborReader) => T,
  reencode: (value: T) => Uint8Array,
): T {
  const reader = new CborReader(bytes);
  const value = decode(reader);
  if (reader.pos() !== bytes.length) throw new DecodeError('trailing_bytes', ctx);
  if (!bytesEqual(reencode(value), bytes)) throw new DecodeError('non_canonical', ctx);
  return value;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export type { DecodeKind };
