// Framing (SPEC §3): a frame is split into fragments, one characteristic value each. Sans-IO:
// the caller passes `now` (milliseconds) and fragments in, and gets frames or errors out.

import {
  FRAGMENT_TIMEOUT_MS, MAX_MESSAGE_LEN, MAX_SEQUENCE, MAX_VALUE_LEN, MIN_FRAGMENT_LEN,
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
  cmd: Command;
  declared: number;
  data: Uint8Array;
  filled: number;
  nextSeq: number;
  deadline: number;
}

/** Reassembles fragments with every receiver rule of SPEC §3.2; any error drops the frame. */
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
    const interrupted = this.partial !== undefined;
    this.partial = undefined;
    if (interrupted && first !== Command.CANCEL) throw new FrameError('interrupted');
    if (declared > MAX_MESSAGE_LEN) throw new FrameError('message_too_long', `${declared} bytes`);
    const data = fragment.subarray(3);
    if (data.length > declared) throw new FrameError('overrun');
    const partial: Partial = {
      cmd: first as Command,
      declared,
      data: new Uint8Array(declared),
      filled: 0,
      nextSeq: 0,
      deadline: now + FRAGMENT_TIMEOUT_MS,
    };
    return this.append(partial, data);
  }

  private continuation(now: number, seq: number, data: Uint8Array): Frame | undefined {
    const partial = this.partial;
    this.partial = undefined;
    if (!partial) throw new FrameError('unexpected_continuation');
    if (seq !== partial.nextSeq) throw new FrameError('sequence_gap', `expected ${partial.nextSeq}, got ${seq}`);
    if (partial.filled + data.length > partial.declared) throw new FrameError('overrun');
    partial.nextSeq = seq === MAX_SEQUENCE ? 0 : seq + 1;
    partial.deadline = now + FRAGMENT_TIMEOUT_MS;
    return this.append(partial, data);
  }

  private append(partial: Partial, data: Uint8Array): Frame | undefined {
    partial.data.set(data, partial.filled);
    partial.filled += data.length;
    if (partial.filled === partial.declared) return { cmd: partial.cmd, data: partial.data };
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
