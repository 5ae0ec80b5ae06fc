// driver.js: one case of tests/webbluetooth-vm. Starts Debian's headless Chromium (its BlueZ
// backend reaches the VM's bluetoothd through DBUS_SYSTEM_BUS_ADDRESS), attaches playwright-core
// over CDP, sets the user's session cookie, opens the page, waits for title READY (Chromium has
// its adapter), clicks the page's button (requestDevice needs a user gesture) and answers the
// device chooser over CDP (DeviceAccess): select the device, or cancel as a user would.
// Then it waits for title DONE or FAIL and writes $LOGS/result.json: the page's #result, every
// answer of the backend (method, status, Origin sent, body), every request to a .local device,
// what the chooser showed and did, and timings. The verdict is check.py's, not this script's.
//
// Env: URL (the page), LOGS (case directory), CHOOSER (select|cancel), DEVICE_NAME (substring of
// the advertised name), BUTTON (#provision), BACKEND (/localcert, to record its answers),
// SESSION_TOKEN + COOKIE_HOSTS (comma-separated; the user's session cookie is set on each),
// RESOLVER_RULES (--host-resolver-rules), SERVE_PAGE (a file this driver serves at URL instead of
// the server: case d's page on another origin), CHROMIUM (/usr/bin/chromium), CDP_PORT (9222),
// PAGE_TIMEOUT_MS (240000). Exit: 0 when the page finished (DONE or FAIL), 1 when it did not,
// 2 on a harness error.
'use strict';
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) { console.error(`driver.js: ${name} is not set`); process.exit(2); }
  return value;
};
const URL_ = env('URL');
const LOGS = env('LOGS');
const CHOOSER = env('CHOOSER', 'select');
const WANT = env('DEVICE_NAME', 'localcert');
const BUTTON = env('BUTTON', '#provision');
const BACKEND = env('BACKEND', '/localcert');
const T0 = Date.now();
const say = (s) => console.log(`[driver +${((Date.now() - T0) / 1000).toFixed(1)}s] ${s}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function launch(userDataDir, port) {
  // Started here, not by chromium.launch, so that its stderr goes to chromium.log (Playwright's
  // logger does not get it); Playwright attaches over CDP.
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync',
    '--disable-background-networking', '--disable-component-update', '--disable-quic',
    '--enable-features=WebBluetooth', `--host-resolver-rules=${env('RESOLVER_RULES')}`,
    `--user-data-dir=${userDataDir}`, `--remote-debugging-port=${port}`, 'about:blank'];
  const exe = env('CHROMIUM', '/usr/bin/chromium');
  say(`launching ${exe} ${args.join(' ')}`);
  const logFd = fs.openSync(path.join(LOGS, 'chromium.log'), 'w');
  const proc = spawn(exe, args, { stdio: ['ignore', logFd, logFd] });
  proc.on('exit', (code, sig) => say(`chromium exited (${code ?? sig})`));
  const limit = Date.now() + 60000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/json/version`);
      if (r.ok) { say(`DevTools up: ${(await r.json()).Browser}`); return proc; }
    } catch { /* not yet */ }
    if (Date.now() > limit || proc.exitCode !== null) throw new Error('Chromium did not start (chromium.log)');
    await sleep(200);
  }
}

// The chooser: DeviceAccess is enabled on the page's own CDP session before the click. Chromium
// sends deviceRequestPrompted again each time its device list changes (first with no devices).
function answerChooser(cdp, record) {
  let answered = false;
  cdp.on('DeviceAccess.deviceRequestPrompted', async (ev) => {
    record.prompts.push({ at_ms: Date.now() - record.t_click, devices: ev.devices });
    say(`chooser ${ev.id}: ${JSON.stringify(ev.devices)}`);
    record.last_prompt = ev.id;
    if (answered) return;
    const dev = ev.devices.find((d) => (d.name || '').includes(WANT));
    if (!dev) return;
    answered = true;
    record.device = dev;
    try {
      if (CHOOSER === 'cancel') {
        await cdp.send('DeviceAccess.cancelPrompt', { id: ev.id });
      } else {
        await cdp.send('DeviceAccess.selectPrompt', { id: ev.id, deviceId: dev.id });
      }
      record.action = CHOOSER;
      record.answered_ms = Date.now() - record.t_click;
      say(`chooser: ${CHOOSER} ${dev.id} (${dev.name})`);
    } catch (e) {
      say(`chooser ${CHOOSER} failed: ${e.message}`);
      answered = false;
    }
  });
}

// A user whose chooser stays empty cancels it and clicks again (Chromium's desktop chooser has a
// "Re-scan" button; CDP's DeviceAccess has none). Seen once in CI: Chromium's scan never saw the
// device in 240 s, where it sees it within a second otherwise. Each rescan is counted in
// result.json (chooser.rescans) and in the case's line; the first scan's prompts stay recorded.
const RESCAN_MS = Number(env('RESCAN_MS', '20000'));
const MAX_RESCANS = 2;

async function clickUntilListed(page, cdp, record) {
  record.rescans = 0;
  for (;;) {
    await page.click(BUTTON, { timeout: 10000 });
    say(`clicked ${BUTTON}`);
    const limit = Date.now() + RESCAN_MS;
    while (!record.device && Date.now() < limit) await sleep(100);
    if (record.device || record.rescans >= MAX_RESCANS) return;
    record.rescans += 1;
    say(`chooser: no ${WANT} listed in ${RESCAN_MS} ms: cancel and click again (rescan ${record.rescans})`);
    await cdp.send('DeviceAccess.cancelPrompt', { id: record.last_prompt }).catch((e) => say(`cancelPrompt: ${e.message}`));
    await page.waitForFunction(() => document.title === 'FAIL', null, { timeout: 10000, polling: 100 });
  }
}

// Every answer of the backend and every request to a device (.local), for check.py.
function recordNetwork(page, out) {
  page.on('response', async (response) => {
    const req = response.request();
    const url = new URL(req.url());
    const entry = { method: req.method(), url: req.url(), status: response.status() };
    if (url.pathname.startsWith(BACKEND)) {
      const headers = await req.allHeaders().catch(() => ({}));
      entry.origin = headers.origin ?? null;
      entry.body = await response.text().catch((e) => `(no body: ${e.message})`);
      out.backend.push(entry);
    } else if (url.hostname.endsWith('.local')) {
      entry.allow_origin = (await response.allHeaders().catch(() => ({})))['access-control-allow-origin'] ?? null;
      out.device.push(entry);
    }
  });
  page.on('requestfailed', (req) => {
    const url = new URL(req.url());
    const entry = { method: req.method(), url: req.url(), failure: req.failure()?.errorText };
    if (url.pathname.startsWith(BACKEND)) out.backend.push(entry);
    else if (url.hostname.endsWith('.local')) out.device.push(entry);
  });
}

(async () => {
  const out = { url: URL_, chooser: { prompts: [], action: null, device: null }, backend: [], device: [], console: [], timings: {} };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wbvm-profile-'));
  const port = Number(env('CDP_PORT', '9222'));
  const tLaunch = Date.now();
  const proc = await launch(userDataDir, port);
  let browser;
  try {
    out.timings.launch_ms = Date.now() - tLaunch;
    browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`, { timeout: 60000 });
    const context = browser.contexts()[0];
    const token = process.env.SESSION_TOKEN;
    if (token) {
      const hosts = env('COOKIE_HOSTS').split(',').filter(Boolean);
      await context.addCookies(hosts.map((domain) => ({
        name: 'localcert_session', value: token, domain, path: '/', secure: true, httpOnly: true, sameSite: 'Strict',
      })));
    }
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (m) => { out.console.push(`${m.type()}: ${m.text()}`); say(`console.${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => { out.console.push(`pageerror: ${e}`); say(`pageerror: ${e}`); });
    recordNetwork(page, out);
    const cdp = await context.newCDPSession(page);
    await cdp.send('DeviceAccess.enable');
    answerChooser(cdp, out.chooser);

    if (process.env.SERVE_PAGE) {
      const html = fs.readFileSync(process.env.SERVE_PAGE);
      await page.route(URL_, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: html }));
    }
    const tGoto = Date.now();
    await page.goto(URL_, { timeout: 60000 });
    out.timings.load_ms = Date.now() - tGoto;
    say(`page loaded in ${out.timings.load_ms} ms: ${URL_}`);
    // Clicking before Chromium's BlueZ backend has its adapter fails at once ("Bluetooth adapter
    // not available"): the page sets READY once getAvailability() is true.
    await page.waitForFunction(() => document.title === 'READY' || document.title === 'FAIL', null, { timeout: 60000, polling: 200 });
    out.timings.ready_ms = Date.now() - tGoto;
    if ((await page.title()) !== 'READY') throw new Error(`page not READY: ${await page.textContent('body')}`);
    out.chooser.t_click = Date.now();
    await clickUntilListed(page, cdp, out.chooser);
    let title;
    try {
      await page.waitForFunction(() => document.title === 'DONE' || document.title === 'FAIL', null, {
        timeout: Number(env('PAGE_TIMEOUT_MS', '240000')), polling: 250,
      });
      title = await page.title();
    } catch (e) {
      title = 'TIMEOUT';
      say(`page did not finish: ${e.message.split('\n')[0]}`);
    }
    out.timings.click_to_done_ms = Date.now() - out.chooser.t_click;
    out.title = title;
    const text = await page.textContent('#result').catch(() => '');
    try { out.result = JSON.parse(text || 'null'); } catch { out.result = { unparsed: text }; }
    say(`title ${title}, #result ${text}`);
    await sleep(300); // the last response bodies
    return title === 'TIMEOUT' ? 1 : 0;
  } catch (e) {
    out.harness_error = String(e.message || e).split('\n')[0];
    throw e;
  } finally {
    delete out.chooser.t_click;
    fs.writeFileSync(path.join(LOGS, 'result.json'), JSON.stringify(out, null, 2));
    // Playwright's close() of a browser it attached to only disconnects: ask Chromium to quit.
    if (browser) {
      await browser.newBrowserCDPSession().then((s) => s.send('Browser.close')).catch((e) => say(`Browser.close: ${e.message}`));
      await browser.close().catch(() => {});
    }
    // The next case starts its own Chromium on the same DevTools port: this one must be gone.
    for (let i = 0; i < 50 && proc.exitCode === null && proc.signalCode === null; i++) await sleep(100);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    try { fs.rmSync(userDataDir, { recursive: true, force: true }); } catch (e) { say(`profile not removed: ${e.message}`); }
  }
})().then((rc) => process.exit(rc), (e) => {
  say(`driver error: ${e.stack || e}`);
  process.exit(2);
});
