// The central side of SPEC §3.3 over any Link: one request at a time, reassembly of
// notifications, KEEPALIVE, the response timeout, CANCEL on abort or timeout, and refusal of
// anything the device must not send. The same code runs over Web Bluetooth and over the device
// engine's stdio bridge in the Node tests.

import { FRAGMENT_TIMEOUT_MS, MIN_FRAGMENT_LEN, PROTOCOL_REVISION, RESPONSE_TIMEOUT_MS } from './constants.js';
import {
  AbortedError, DeviceInfoError, DisconnectedError, LocalcertError, ResponseTimeoutError,
  UnexpectedFrameError, UnsolicitedResponseError, deviceError,
} from './errors.js';
import { Command, type Frame, KeepAlive, Reassembler, fragment } from './frame.js';
import { type Request, type Response, decodeResponse, encodeRequest, operationOf } from './messages.js';
import { type GattInfo, decodeInfo } from './objects.js';

/** A GATT connection to the service: the three characteristics, nothing else. */
export interface Link {
  /** Reads the info characteristic. */
  readInfo(): Promise<Uint8Array>;
  /** Writes one fragment to the control point (with or without response, as the link sees fit). */
  write(fragment: Uint8Array): Promise<void>;
  /** Turns status notifications on; `onDisconnect` is called once if the link drops. */
  subscribe(onValue: (value: Uint8Array) => void, onDisconnect: () => void): Promise<void>;
  /** Ends the connection. */
  close(): Promise<void>;
}

/** Time, injectable so that tests drive the timeouts. */
export interface Clock {
  now(): number;
  setTimeout(f: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** KEEPALIVE status as a page shows it. */
export type KeepAliveStatus = 'processing' | 'user_presence_needed';

/** How a session is opened. */
export interface OpenOptions {
  clock?: Clock | undefined;
  /** The ATT MTU, where the stack tells it (Web Bluetooth does not). */
  attMtu?: number | undefined;
}

export interface RequestOptions {
  /** Aborting sends CANCEL and rejects with AbortedError. */
  signal?: AbortSignal | undefined;
  /** Called for each KEEPALIVE, e.g. to tell the user to press the device's button. */
  onKeepAlive?: ((status: KeepAliveStatus) => void) | undefined;
  /** Response timeout (SPEC §3.3: 5 s); a KEEPALIVE restarts it. */
  timeoutMs?: number | undefined;
}

/** A response with the exact bytes it came in (the RP backend decodes those). */
export interface Answer {
  response: Response;
  bytes: Uint8Array;
}

interface Pending {
  kind: 'msg' | 'ping';
  request?: Request;
  pingData?: Uint8Array;
  resolve(frame: Frame): void;
  reject(error: unknown): void;
  onKeepAlive?: ((status: KeepAliveStatus) => void) | undefined;
  timeoutMs: number;
}

export class Session {
  readonly info: GattInfo;
  readonly fragmentLen: number;
  private readonly reassembler = new Reassembler();
  private pending: Pending | undefined;
  /** An error seen while no request was outstanding: the next request fails with it. */
  private poisoned: unknown;
  /**
   * After a CANCEL the device still answers the abandoned request (CANCELLED, or the response
   * if it was done): that answer is dropped, and the next request waits for it (SPEC §3.3: one
   * request at a time), at most RESPONSE_TIMEOUT.
   */
  private abandoned: { done: Promise<void>; finish: () => void; timer: unknown } | undefined;
  private responseTimer: unknown;
  private fragmentTimer: unknown;
  private writes: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(private readonly link: Link, info: GattInfo, private readonly clock: Clock, attMtu?: number) {
    this.info = info;
    // Web Bluetooth does not expose the MTU: the device's max_fragment_len is the size (SPEC §2.1).
    this.fragmentLen = attMtu === undefined ? info.maxFragmentLen : Math.min(info.maxFragmentLen, Math.max(attMtu - 5, 18));
  }

  /** Reads and checks the info characteristic, then subscribes to the status characteristic. */
  static async open(link: Link, options: OpenOptions = {}): Promise<Session> {
    const info = await readInfo(link);
    const session = new Session(link, info, options.clock ?? systemClock, options.attMtu);
    await link.subscribe((v) => session.onNotification(v), () => session.onDisconnect());
    return session;
  }

  /**
   * Opens the session with its first request: one that fits in a single fragment of the
   * smallest size (GET_INFO, LIST) is written beside the info read, so the two share connection
   * events instead of taking a turn each (SPEC §2.1 MAY; the Rust UA does the same). The status
   * characteristic is subscribed first, so the answer cannot be missed; notifications that
   * arrive before info has been read and checked are held, then handled in order. A longer
   * request goes after the info read, as with `open` then `request`.
   */
  static async openWith(link: Link, request: Request, options: OpenOptions & RequestOptions = {}): Promise<{ session: Session; answer: Answer }> {
    const data = encodeRequest(request);
    const early = fragment(Command.MSG, data, MIN_FRAGMENT_LEN);
    if (early.length !== 1) {
      const session = await Session.open(link, options);
      return { session, answer: await session.request(request, options) };
    }
    if (options.signal?.aborted) throw new AbortedError(options.signal.reason);
    let session: Session | undefined;
    const held: Uint8Array[] = [];
    let dropped = false;
    await link.subscribe(
      (v) => (session ? session.onNotification(v) : held.push(v)),
      () => (session ? session.onDisconnect() : (dropped = true)),
    );
    const write = link.write(early[0]!).catch((e) => {
      throw e instanceof LocalcertError ? e : new DisconnectedError('a write to the control point failed', { cause: e });
    });
    // Both are under way before either is awaited: the write and the read share events.
    const [info] = await Promise.all([readInfo(link), write]);
    const opened = new Session(link, info, options.clock ?? systemClock, options.attMtu);
    session = opened;
    const answer = opened.exchange({ kind: 'msg', request }, Command.MSG, data, options, true);
    if (dropped) opened.onDisconnect();
    for (const v of held.splice(0)) opened.onNotification(v);
    try {
      return { session: opened, answer: opened.answerOf(request, await answer) };
    } catch (e) {
      await opened.close().catch(() => undefined);
      throw e;
    }
  }

  /** Sends a request and waits for its response (or a typed error). */
  async request(request: Request, options: RequestOptions = {}): Promise<Answer> {
    const frame = await this.exchange({ kind: 'msg', request }, Command.MSG, encodeRequest(request), options);
    return this.answerOf(request, frame);
  }

  private answerOf(request: Request, frame: Frame): Answer {
    const response = decodeResponse(operationOf(request), frame.data);
    if (response.kind === 'error') {
      throw deviceError(response.code, 'response', response.message) ?? new UnexpectedFrameError(`status 0x${response.code.toString(16)}`);
    }
    return { response, bytes: frame.data };
  }

  /** PING: the device echoes the data (SPEC §3.1). */
  async ping(data: Uint8Array, options: RequestOptions = {}): Promise<void> {
    await this.exchange({ kind: 'ping', pingData: data }, Command.PING, data, options);
  }

  /** Sends a frame (unless `sent`: `openWith` wrote it already) and waits for the answer. */
  private async exchange(what: Pick<Pending, 'kind' | 'request' | 'pingData'>, cmd: Command, data: Uint8Array, options: RequestOptions, sent = false): Promise<Frame> {
    const signal = options.signal;
    const refusal = (): unknown => {
      if (signal?.aborted) return new AbortedError(signal.reason);
      if (this.closed) return new DisconnectedError('the session is closed');
      if (this.poisoned !== undefined) return this.poisoned;
      if (this.pending) return new LocalcertError('request_in_progress', 'one request at a time (SPEC §3.3)');
      // The device said how long a message it takes (info, SPEC §2).
      if (data.length > this.info.maxMessageLen) {
        return new LocalcertError('message_too_long', `a ${data.length}-byte message is longer than the device takes (${this.info.maxMessageLen})`);
      }
      return undefined;
    };
    let refused = refusal();
    if (refused === undefined && this.abandoned) {
      await this.abandoned.done;
      refused = refusal();
    }
    if (refused !== undefined) throw refused;
    const fragments = sent ? [] : fragment(cmd, data, this.fragmentLen);
    return new Promise<Frame>((resolve, reject) => {
      const onAbort = () => this.abandon(new AbortedError(signal?.reason));
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        this.clock.clearTimeout(this.responseTimer);
        this.clock.clearTimeout(this.fragmentTimer);
        this.pending = undefined;
      };
      this.pending = {
        ...what,
        resolve: (f) => { done(); resolve(f); },
        reject: (e) => { done(); reject(e); },
        onKeepAlive: options.onKeepAlive,
        timeoutMs: options.timeoutMs ?? RESPONSE_TIMEOUT_MS,
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.reassembler.reset();
      this.armResponseTimer();
      for (const f of fragments) this.enqueueWrite(f);
    });
  }

  private enqueueWrite(f: Uint8Array): void {
    this.writes = this.writes.then(async () => {
      if (this.closed) return;
      await this.link.write(f);
      // A fragment the link took is progress: the response timeout counts from the last one
      // (at MTU 23 an INSTALL is ~120 writes, which may take longer than the timeout itself).
      this.armResponseTimer();
    }).catch((e) => {
      this.pending?.reject(e instanceof LocalcertError ? e : new DisconnectedError('a write to the control point failed', { cause: e }));
    });
  }

  private armResponseTimer(): void {
    const pending = this.pending;
    if (!pending) return;
    this.clock.clearTimeout(this.responseTimer);
    this.responseTimer = this.clock.setTimeout(() => {
      // A frame left unfinished is the more precise diagnosis (SPEC §3.2 timeout).
      try {
        this.reassembler.handleTimeout(this.clock.now());
      } catch (e) {
        return this.abandon(e as LocalcertError);
      }
      this.abandon(new ResponseTimeoutError(pending.timeoutMs));
    }, pending.timeoutMs);
  }

  /** Gives up on the request in progress: CANCEL to the device, the typed error to the caller. */
  private abandon(error: LocalcertError): void {
    if (!this.pending) return;
    if (this.pending.kind === 'msg' && !this.abandoned) {
      let finish = () => {};
      const done = new Promise<void>((r) => { finish = r; });
      const abandoned = {
        done,
        finish: () => {
          this.clock.clearTimeout(abandoned.timer);
          if (this.abandoned === abandoned) this.abandoned = undefined;
          finish();
        },
        timer: undefined as unknown,
      };
      abandoned.timer = this.clock.setTimeout(() => abandoned.finish(), RESPONSE_TIMEOUT_MS);
      this.abandoned = abandoned;
    }
    this.reassembler.reset();
    this.enqueueWrite(fragment(Command.CANCEL, new Uint8Array(0), this.fragmentLen)[0]!);
    this.pending.reject(error);
  }

  private fail(error: unknown): void {
    if (this.pending) this.pending.reject(error);
    else this.poisoned ??= error;
  }

  private onNotification(value: Uint8Array): void {
    if (this.closed) return;
    const now = this.clock.now();
    let frame: Frame | undefined;
    try {
      frame = this.reassembler.handleFragment(now, value);
    } catch (e) {
      // A malformed notification fails the request; the device is told to stop working on it.
      if (this.pending) this.abandon(e as LocalcertError);
      else this.fail(e);
      return;
    }
    this.clock.clearTimeout(this.fragmentTimer);
    // Any accepted fragment is a sign of life for the request in progress.
    this.armResponseTimer();
    if (!frame) {
      this.fragmentTimer = this.clock.setTimeout(() => this.onFragmentTimeout(), FRAGMENT_TIMEOUT_MS);
      return;
    }
    this.onFrame(frame);
  }

  private onFragmentTimeout(): void {
    try {
      this.reassembler.handleTimeout(this.clock.now());
    } catch (e) {
      if (this.pending) this.abandon(e as LocalcertError);
      else this.fail(e);
    }
  }

  private onFrame(frame: Frame): void {
    const pending = this.pending;
    switch (frame.cmd) {
      case Command.KEEPALIVE: {
        const status = frame.data.length === 1 ? frame.data[0] : undefined;
        if (status !== KeepAlive.PROCESSING && status !== KeepAlive.USER_PRESENCE_NEEDED) {
          return this.fail(new UnexpectedFrameError('KEEPALIVE without a valid status byte'));
        }
        if (!pending) return; // a late keep-alive for an abandoned request
        this.armResponseTimer();
        pending.onKeepAlive?.(status === KeepAlive.PROCESSING ? 'processing' : 'user_presence_needed');
        return;
      }
      case Command.MSG:
        if (this.abandoned) return this.abandoned.finish();
        if (pending?.kind === 'msg') return pending.resolve(frame);
        return this.fail(new UnsolicitedResponseError());
      case Command.ERROR: {
        if (this.abandoned) return this.abandoned.finish();
        const code = frame.data.length === 1 ? frame.data[0]! : 0;
        const error = deviceError(code, 'frame') ?? new UnexpectedFrameError('ERROR frame without a valid code');
        return this.fail(error);
      }
      case Command.PING: {
        const same = pending?.kind === 'ping' && pending.pingData !== undefined &&
          pending.pingData.length === frame.data.length && pending.pingData.every((b, i) => b === frame.data[i]);
        if (same) return pending!.resolve(frame);
        return this.fail(new UnexpectedFrameError('PING the page did not send'));
      }
      default:
        return this.fail(new UnexpectedFrameError(`command 0x${frame.cmd.toString(16)} from the device`));
    }
  }

  private onDisconnect(): void {
    if (this.closed) return;
    this.closed = true;
    this.abandoned?.finish();
    this.reassembler.reset();
    this.pending?.reject(new DisconnectedError());
  }

  /** Ends the connection (a pending request fails with DisconnectedError). */
  async close(): Promise<void> {
    this.onDisconnect();
    await this.writes;
    await this.link.close();
  }
}

/** Reads the info characteristic and checks it (SPEC §2): range, then the revision. */
async function readInfo(link: Link): Promise<GattInfo> {
  let info: GattInfo;
  try {
    info = decodeInfo(await link.readInfo());
  } catch (e) {
    if (e instanceof LocalcertError && !(e instanceof DisconnectedError)) {
      throw new DeviceInfoError(`the device's info characteristic is refused: ${e.message}`, { cause: e });
    }
    throw e;
  }
  if (info.revision !== PROTOCOL_REVISION) {
    throw new DeviceInfoError(`the device speaks protocol revision ${info.revision}, this package speaks ${PROTOCOL_REVISION}`);
  }
  return info;
}
