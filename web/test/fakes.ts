// A scripted Link and a manual clock, for the session's refusal tests.
import type { Clock, Link } from '../src/session.js';
import { encodeInfo } from '../src/objects.js';

export class ManualClock implements Clock {
  private t = 0;
  private timers = new Map<number, { at: number; f: () => void }>();
  private nextId = 1;
  now(): number {
    return this.t;
  }
  setTimeout(f: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, f });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Moves time on, firing due timers in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, v]) => v.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].f();
    }
    this.t = end;
  }
}

export class FakeLink implements Link {
  writes: Uint8Array[] = [];
  info: Uint8Array = encodeInfo({ revision: 2, maxFragmentLen: 18, maxMessageLen: 8192 });
  private onValue: ((v: Uint8Array) => void) | undefined;
  private onDisconnect: (() => void) | undefined;
  closed = false;
  /** Called after each write, e.g. to answer a request. */
  onWrite: ((f: Uint8Array) => void) | undefined;

  async readInfo(): Promise<Uint8Array> {
    return this.info;
  }
  async write(f: Uint8Array): Promise<void> {
    this.writes.push(f);
    this.onWrite?.(f);
  }
  async subscribe(onValue: (v: Uint8Array) => void, onDisconnect: () => void): Promise<void> {
    this.onValue = onValue;
    this.onDisconnect = onDisconnect;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  notify(...values: Uint8Array[]): void {
    for (const v of values) this.onValue?.(v);
  }
  drop(): void {
    this.onDisconnect?.();
  }
}

/** Lets queued writes and promise callbacks run. */
export const settle = () => new Promise((r) => setImmediate(r));
