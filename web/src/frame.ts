// Framing (SPEC §3): a frame is split into fragments, one characteristic value each. Sans-IO:
// the caller passes `now` (milliseconds) and fragments in, and gets frames or errors out.

import {
  FRAGMENT_TIMEOUT_MS, MAX_MESSAGE_LEN, MAX_SEQUENCE, MAX_VALUE_LEN, MIN_FRAGMENT_LEN, REORDER_WINDOW,
} from './constants.js';
import { FrameError } from './errors.js';

/** Frame commands (SPEC §3.1). */
export const Command = Object.freeze({
  PING: 0x81,
  KEEPALIVE: 0x82,
  MSG: 0x83,
  CANCEL: 0xbe,
  ERROR: 0xbf,
} as const);
export type Command = (typeof Command)[keyof typeof Command];

const COMMANDS: readonly number[] = Object.values(Command);

/** KEEPALIVE data byte. */
export const KeepAlive = Object.freeze({ PROCESSING: 0x01, USER_PRESENCE_NEEDED: 0x02 } as const);

/** One reassembled frame. */
export interface Frame {
  readonly cmd: Command;
  readonly data: Uint8Array;
}

/** Splits a frame into fragments of at most `fragmentLen` bytes (clamped to 18..=512). */
export function fragment(cmd: Command, data: Uint8Array, fragmentLen: number): Uint8Array[] {
  if (data.length > MAX_MESSAGE_LEN) throw new FrameError('message_too_long', `${data.length} bytes`);
  const len = Math.min(Math.max(fragmentLen, MIN_FRAGMENT_LEN), MAX_VALUE_LEN);
  const first = data.subarray(0, len - 3);
  const out = [Uint8Array.of(cmd, data.length >> 8, data.length & 0xff, ...first)];
  let seq = 0;
  for (let at = first.length; at < data.length; at += len - 1) {
    out.push(Uint8Array.of(seq, ...data.subarray(at, at + len - 1)));
    seq = seq === MAX_SEQUENCE ? 0 : seq + 1;
  }
  return out;
}

interface Partial {
  /** CMD and LEN, once the initial fragment has arrived. */
  head: { cmd: Command; declared: number } | undefined;
  /** The data of positions 0..next, in order (sized to LEN once the initial has arrived). */
  data: Uint8Array;
  filled: number;
  /** The first position not received yet (0: the initial fragment). */
  next: number;
  /** Continuations received past `next`, by position. */
  ahead: Map<number, Uint8Array>;
  aheadLen: number;
  deadline: number;
}

const SEQ_MODULUS = MAX_SEQUENCE + 1;

function emptyPartial(now: number): Partial {
  return {
    head: undefined, data: new Uint8Array(0), filled: 0, next: 0, ahead: new Map(), aheadLen: 0,
    deadline: now + FRAGMENT_TIMEOUT_MS,
  };
}

/**
 * Reassembles fragments with every receiver rule of SPEC §3.2; any error drops the frame.
 * Fragments of a frame may arrive out of order (Enhanced ATT): each goes to its position,
 * 0 for the initial fragment and n for the continuation with SEQ (n - 1) mod 128, up to
 * REORDER_WINDOW positions past the first one missing.
 */
export class Reassembler {
  private partial: Partial | undefined;

  /** Handles one fragment: a complete frame, undefined (more to come), or throws FrameError. */
  handleFragment(now: number, fragment: Uint8Array): Frame | undefined {
    if (this.partial && now >= this.partial.deadline) {
      // The sender stalled; what it sends now starts afresh.
      this.partial = undefined;
    }
    try {
      return this.accept(now, fragment);
    } catch (e) {
      this.partial = undefined;
      throw e;
    }
  }

  private accept(now: number, fragment: Uint8Array): Frame | undefined {
    const first = fragment[0];
    if (first === undefined) throw new FrameError('empty_fragment');
    if (fragment.length > MAX_VALUE_LEN) throw new FrameError('fragment_too_long');
    if ((first & 0x80) === 0) return this.continuation(now, first, fragment.subarray(1));
    if (!COMMANDS.includes(first)) throw new FrameError('unknown_command', `0x${first.toString(16)}`);
    if (fragment.length < 3) throw new FrameError('truncated_header');
    const declared = (fragment[1]! << 8) | fragment[2]!;
    const data = fragment.subarray(3);
    if (first === Command.KEEPALIVE && data.length === declared && this.partial) {
      // A keep-alive sent just before a response may arrive among the response's fragments:
      // it is whole, so the frame in progress stays.
      return { cmd: first, data: data.slice() };
    }
    let partial = this.partial;
    this.partial = undefined;
    if (partial && first === Command.CANCEL) partial = undefined;
    if (partial?.head) throw new FrameError('interrupted');
    partial ??= emptyPartial(now);
    if (declared > MAX_MESSAGE_LEN) throw new FrameError('message_too_long', `${declared} bytes`);
    if (data.length + partial.aheadLen > declared) throw new FrameError('overrun');
    partial.head = { cmd: first as Command, declared };
    partial.data = new Uint8Array(declared);
    partial.data.set(data);
    partial.filled = data.length;
    partial.next = 1;
    partial.deadline = now + FRAGMENT_TIMEOUT_MS;
    return this.settle(partial);
  }

  private continuation(now: number, seq: number, data: Uint8Array): Frame | undefined {
    const partial = this.partial ?? emptyPartial(now);
    this.partial = undefined;
    // The position is ≡ SEQ + 1 (mod 128): the first such at or after the first one missing.
    const base = Math.max(partial.next, 1);
    const position = base + ((seq + 1 + SEQ_MODULUS - (base % SEQ_MODULUS)) % SEQ_MODULUS);
    if (position - partial.next >= REORDER_WINDOW) {
      if (!partial.head) throw new FrameError('unexpected_continuation', `sequence ${seq}`);
      const expected = (base - 1) % SEQ_MODULUS;
      throw new FrameError('sequence_gap', `expected ${expected} or up to ${REORDER_WINDOW - 1} after it, got ${seq}`);
    }
    if (partial.ahead.has(position)) throw new FrameError('duplicate_continuation', `sequence ${seq}`);
    if (partial.head && partial.filled + partial.aheadLen + data.length > partial.head.declared) {
      throw new FrameError('overrun');
    }
    partial.ahead.set(position, data.slice());
    partial.aheadLen += data.length;
    partial.deadline = now + FRAGMENT_TIMEOUT_MS;
    return this.settle(partial);
  }

  /** Keeps `partial` in progress, or returns its frame once every byte is in place. */
  private settle(partial: Partial): Frame | undefined {
    if (!partial.head) {
      this.partial = partial;
      return undefined;
    }
    for (let chunk = partial.ahead.get(partial.next); chunk; chunk = partial.ahead.get(partial.next)) {
      partial.ahead.delete(partial.next);
      partial.aheadLen -= chunk.length;
      partial.data.set(chunk, partial.filled);
      partial.filled += chunk.length;
      partial.next += 1;
    }
    if (partial.filled === partial.head.declared) return { cmd: partial.head.cmd, data: partial.data };
    this.partial = partial;
    return undefined;
  }

  /** When the frame in progress times out, if one is in progress. */
  pollTimeout(): number | undefined {
    return this.partial?.deadline;
  }

  /** Throws FrameError('timeout') (and goes idle) when the frame in progress is overdue. */
  handleTimeout(now: number): void {
    if (this.partial && now >= this.partial.deadline) {
      this.partial = undefined;
      throw new FrameError('timeout');
    }
  }

  isIdle(): boolean {
    return this.partial === undefined;
  }

  reset(): void {
    this.partial = undefined;
  }
}
