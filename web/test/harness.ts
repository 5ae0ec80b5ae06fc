// Brings up the real roles on loopback for the end-to-end test: the issuer (`localcert issuer
// init/rp add/serve`), the device engine through `localcert-device bridge` (one BLE session over
// stdio, HTTPS as in `run`) and the RP backend (`localcert rp serve`). Binaries come from
// target/debug (built by `npm test`'s pretest) or LOCALCERT_BIN_DIR; a missing one is a failure.

import { type ChildProcess, spawn, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Link } from '../src/session.js';
import { REPO_ROOT, hex, unhex } from './util.js';

export const ORIGIN = 'https://vod.example.test';
export const USER_TOKEN = 'web-test-token-0123456789';
export const USER_HANDLE = 'user-42';
/** Node's own fetch, kept before a test puts a page's fetch in its place. */
const nodeFetch = globalThis.fetch;
const BIN_DIR = process.env.LOCALCERT_BIN_DIR ?? join(REPO_ROOT, 'target', 'debug');

export function binary(name: string): string {
  const path = join(BIN_DIR, name);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: build it with \`cargo build -p localcert -p localcert-device\` from the repository root (npm test's pretest does), or set LOCALCERT_BIN_DIR`);
  }
  return path;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A child process whose output is kept for the failure message. */
class Child {
  readonly log: string[] = [];
  readonly exited: Promise<number | null>;
  constructor(readonly name: string, readonly proc: ChildProcess) {
    const keep = (prefix: string) => (line: string) => {
      this.log.push(`${prefix} ${line}`);
      if (this.log.length > 400) this.log.shift();
    };
    if (proc.stderr) createInterface({ input: proc.stderr }).on('line', keep('[err]'));
    this.exited = new Promise((r) => proc.once('exit', (code) => r(code)));
  }
  tail(): string {
    return `--- ${this.name} (last lines) ---\n${this.log.slice(-40).join('\n')}`;
  }
  stop(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
  }
}

async function waitFor<T>(what: string, child: Child, poll: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child.proc.exitCode !== null) throw new Error(`${child.name} exited (${child.proc.exitCode}) before ${what}\n${child.tail()}`);
    const v = await poll().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${child.name}: no ${what} within ${ms} ms\n${child.tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The device engine behind `localcert-device bridge`, speaking the contract's line protocol. */
export class Bridge {
  readonly child: Child;
  private lines: string[] = [];
  private waiters: (() => void)[] = [];
  private onValue: ((v: Uint8Array) => void) | undefined;
  private onDrop: (() => void) | undefined;
  httpsPort = 0;
  info: Uint8Array = new Uint8Array(0);
  writes = 0;
  cancels = 0;
  continuations = 0;
  longestWrite = 0;

  constructor(config: string, mtu: number) {
    const proc = spawn(binary('localcert-device'), ['bridge', '--config', config, '--mtu', String(mtu)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, LOCALCERT_LOG: process.env.LOCALCERT_LOG ?? 'info' },
    });
    this.child = new Child('localcert-device bridge', proc);
    createInterface({ input: proc.stdout! }).on('line', (line) => this.onLine(line));
    void this.child.exited.then(() => this.onDrop?.());
  }

  private lastLine = 0;

  private async quiet(ms: number): Promise<void> {
    do await new Promise((r) => setTimeout(r, ms));
    while (Date.now() - this.lastLine < ms);
  }

  private onLine(line: string): void {
    this.lastLine = Date.now();
    this.child.log.push(`[out] ${line}`);
    if (line.startsWith('notify ')) return this.onValue?.(unhex(line.slice(7)));
    this.lines.push(line);
    this.waiters.splice(0).forEach((w) => w());
  }

  private async expectLine(prefix: string): Promise<string> {
    return waitFor(`a "${prefix}" line`, this.child, async () => {
      const i = this.lines.findIndex((l) => l.startsWith(prefix));
      if (i < 0) return undefined;
      return this.lines.splice(i, 1)[0]!.slice(prefix.length);
    }, 120_000);
  }

  async ready(): Promise<void> {
    this.httpsPort = Number(await this.expectLine('ready '));
    this.info = unhex(await this.expectLine('info '));
  }

  private send(line: string): void {
    this.child.proc.stdin!.write(`${line}\n`);
  }

  /** A Link over this bridge: each link is one BLE session. */
  link(): Link {
    return {
      readInfo: async () => this.info,
      write: async (f) => {
        this.writes++;
        if (f[0] === 0xbe) this.cancels++;
        if ((f[0]! & 0x80) === 0) this.continuations++;
        this.longestWrite = Math.max(this.longestWrite, f.length);
        this.send(`write ${hex(f)}`);
      },
      subscribe: async (onValue, onDisconnect) => {
        this.onValue = onValue;
        this.onDrop = onDisconnect;
        this.send('subscribe');
      },
      close: async () => {
        this.onValue = undefined;
        this.onDrop = undefined;
        this.send('disconnect');
        // stdout does not say where a session ends: a notification the device sent before it
        // read `disconnect` (e.g. its answer to a CANCEL) may still be in the pipe. Drop what
        // arrives until the pipe has been quiet a while, as a dropped BLE link would.
        await this.quiet(200);
      },
    };
  }

  stop(): void {
    this.child.proc.stdin?.end();
    this.child.stop();
  }
}

export interface Roles {
  dir: string;
  issuerRoot: string;
  /** Starts one more device (its own store) on the same issuer, e.g. at another MTU. */
  addDevice(mtu: number, name: string, presence?: string): Promise<Bridge>;
  bridge: Bridge;
  rpBase: string;
  children: Child[];
  stop(): void;
  tails(): string;
}

interface Issuer {
  child: Child;
  directory: string;
  root: string;
  tlsRoot: string;
  eab: { kid: string; key: string };
}

/** `localcert issuer init`, `rp add ORIGIN`, `serve` on a free loopback port. */
export async function startIssuer(dir: string): Promise<Issuer> {
  const localcert = binary('localcert');
  const issuerDir = join(dir, 'issuer');
  mkdirSync(issuerDir);
  const issuerPort = await freePort();
  const run = (args: string[]) => execFileSync(localcert, args, { cwd: issuerDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  run(['issuer', 'init', '--listen', `127.0.0.1:${issuerPort}`, '--manufacturer-root', join(REPO_ROOT, 'fixtures/manufacturer/root.pem')]);
  const rp = run(['issuer', 'rp', 'add', ORIGIN]);
  const kid = /EAB kid:\s*(\S+)/.exec(rp)?.[1];
  const key = /EAB HMAC:\s*(\S+)/.exec(rp)?.[1];
  if (!kid || !key) throw new Error('issuer rp add printed no EAB credentials');
  const child = new Child('localcert issuer serve', spawn(localcert, ['issuer', 'serve'], { cwd: issuerDir, stdio: ['ignore', 'pipe', 'pipe'] }));
  let directory: string | undefined;
  createInterface({ input: child.proc.stdout! }).on('line', (l) => {
    child.log.push(`[out] ${l}`);
    directory ??= /ACME directory:\s*(\S+)/.exec(l)?.[1];
  });
  try {
    directory = await waitFor('the ACME directory line', child, async () => directory);
  } catch (e) {
    child.stop();
    throw e;
  }
  return {
    child, directory, root: join(issuerDir, 'state', 'root.pem'), tlsRoot: join(issuerDir, 'state', 'tls.pem'),
    eab: { kid, key },
  };
}

/** The device (fixture credential device-1, presence auto) behind `localcert-device bridge`. */
export async function startDevice(dir: string, issuerRoot: string, mtu: number, name = 'device', presence = 'presence = "auto"'): Promise<Bridge> {
  const deviceDir = join(dir, name);
  mkdirSync(deviceDir);
  const cred = join(REPO_ROOT, 'fixtures/devices/device-1');
  copyFileSync(join(cred, 'attestation.pem'), join(deviceDir, 'attestation.pem'));
  copyFileSync(join(cred, 'attestation.key.pem'), join(deviceDir, 'attestation.key.pem'));
  chmodSync(join(deviceDir, 'attestation.key.pem'), 0o600);
  const deviceConfig = join(deviceDir, 'device.toml');
  writeFileSync(deviceConfig, [
    'product = "Media Server"',
    `store_dir = "${join(deviceDir, 'store')}"`,
    `attestation_key = "${join(deviceDir, 'attestation.key.pem')}"`,
    `attestation_chain = "${join(deviceDir, 'attestation.pem')}"`,
    `issuer_roots = "${issuerRoot}"`,
    // The issuing intermediate beside the root: INSTALL carries the leaf alone (SPEC §5.3).
    `issuer_intermediates = "${join(dirname(issuerRoot), 'intermediate.pem')}"`,
    presence,
    `https_port = ${await freePort()}`,
    'https_listen = "127.0.0.1"',
    '[ble]', 'enabled = false',
    '[mdns]', 'enabled = false', '',
  ].join('\n'), { mode: 0o600 });
  const bridge = new Bridge(deviceConfig, mtu);
  try {
    await bridge.ready();
  } catch (e) {
    bridge.stop();
    throw e;
  }
  return bridge;
}

/** The RP backend, plain HTTP on loopback, serving web/ as its static directory. */
export async function startRp(dir: string, issuer: Issuer): Promise<{ child: Child; base: string }> {
  const rpDir = join(dir, 'rp');
  mkdirSync(rpDir);
  // The EAB key stays in a file of mode 0600, never on a command line.
  writeFileSync(join(rpDir, 'eab.key'), `${issuer.eab.key}\n`, { mode: 0o600 });
  const rpPort = await freePort();
  const rpConfig = join(rpDir, 'rp.toml');
  writeFileSync(rpConfig, [
    `origin = "${ORIGIN}"`,
    `listen = "127.0.0.1:${rpPort}"`,
    'plain_http = true',
    `static_dir = "${join(REPO_ROOT, 'web')}"`,
    '[acme]',
    `directory = "${issuer.directory}"`,
    `tls_root = "${issuer.tlsRoot}"`,
    `eab_kid = "${issuer.eab.kid}"`,
    `eab_key_file = "${join(rpDir, 'eab.key')}"`,
    '[[users]]',
    `token = "${USER_TOKEN}"`,
    `handle = "${USER_HANDLE}"`, '',
  ].join('\n'), { mode: 0o600 });
  const child = new Child('localcert rp serve', spawn(binary('localcert'), ['rp', 'serve', '--config', rpConfig], { cwd: rpDir, stdio: ['ignore', 'pipe', 'pipe'] }));
  createInterface({ input: child.proc.stdout! }).on('line', (l) => child.log.push(`[out] ${l}`));
  const base = `http://127.0.0.1:${rpPort}/localcert`;
  try {
    await waitFor('an answer to GET /localcert/config', child, async () => ((await nodeFetch(`${base}/config`)).ok ? true : undefined));
  } catch (e) {
    child.stop();
    throw e;
  }
  return { child, base };
}

/** Sets up and starts issuer, device bridge and RP backend in a fresh directory. */
export async function startRoles(mtu = 185): Promise<Roles> {
  binary('localcert');
  binary('localcert-device');
  const dir = mkdtempSync(join(tmpdir(), 'localcert-web-e2e-'));
  const children: Child[] = [];
  let bridge: Bridge | undefined;
  const stop = () => {
    children.forEach((c) => c.stop());
    bridge?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const issuer = await startIssuer(dir);
    children.push(issuer.child);
    bridge = await startDevice(dir, issuer.root, mtu);
    const rp = await startRp(dir, issuer);
    children.push(rp.child);
    const all = [...children, bridge.child];
    const extra: Bridge[] = [];
    const addDevice = async (m: number, name: string, presence?: string) => {
      const b = await startDevice(dir, issuer.root, m, name, presence);
      extra.push(b);
      all.push(b.child);
      return b;
    };
    const stopAll = () => {
      extra.forEach((b) => b.stop());
      stop();
    };
    return { dir, issuerRoot: issuer.root, addDevice, bridge, rpBase: rp.base, children, stop: stopAll, tails: () => all.map((c) => c.tail()).join('\n') };
  } catch (e) {
    stop();
    throw e;
  }
}

/**
 * fetch() as the page's browser would do it: backend calls carry the page's Origin and the user's
 * session; device calls go to the loopback address with the issuer root as the only trust anchor
 * and the `.local` name as the TLS server name.
 */
export function pageFetch(roles: Roles, opts: { origin?: string; token?: string | undefined } = {}) {
  const origin = opts.origin ?? ORIGIN;
  const token = 'token' in opts ? opts.token : USER_TOKEN;
  const ca = readFileSync(roles.issuerRoot, 'utf8');
  const seenFingerprints: string[] = [];
  const fetchFn = async (input: string, init?: RequestInit): Promise<Response> => {
    if (input.startsWith(roles.rpBase)) {
      const headers = new Headers(init?.headers);
      if (init?.method === 'POST') headers.set('origin', origin);
      if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
      return nodeFetch(input, { ...init, headers });
    }
    const url = new URL(input);
    return new Promise((resolve, reject) => {
      const req = httpsRequest({
        host: url.hostname, servername: url.hostname, port: url.port, path: url.pathname, method: 'GET', ca,
        headers: { origin },
        // The `.local` name resolves to the device's loopback address (mDNS is off here).
        lookup: ((_h: string, o: { all?: boolean }, cb: (...a: unknown[]) => void) =>
          (o?.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4))) as never,
      }, (res) => {
        const cert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate();
        seenFingerprints.push(cert.fingerprint256.replace(/:/g, '').toLowerCase());
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers.set(k, v);
          resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0, headers }));
        });
      });
      req.on('error', reject);
      req.end();
    });
  };
  return { fetchFn, seenFingerprints };
}
