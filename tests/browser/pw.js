// Drives Debian's headless Chromium with playwright-core (no browser download) through the
// browser cases; run by run.sh inside its network namespace, with HOME holding the NSS db.
//
// Environment: OUT (scratch dir), CHROMIUM (executable), DEVICE_URL (https://NAME.local:PORT/),
// FORGED_URL (www.example.com, forged with the issuing intermediate's key), CONTROL_URL (a .local
// name forged the same way). Prints one "PASS|FAIL case ..." line per case, Chromium's error
// details under a failure, and "browser: N passed, M failed"; exits non-zero on any failure.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const env = (name) => {
  const value = process.env[name];
  if (!value) { console.error(`pw.js: ${name} is not set`); process.exit(2); }
  return value;
};
const OUT = env('OUT');
const CHROMIUM = env('CHROMIUM');
const DEVICE_URL = env('DEVICE_URL');
const FORGED_URL = env('FORGED_URL');
const CONTROL_URL = env('CONTROL_URL');

const BOUND = 'https://vod.example.test';
const OTHER = 'https://other.example.test';
const page = (origin, target, extra = '') => `${origin}/?target=${encodeURIComponent(target)}${extra}`;
const host = (url) => new URL(url).hostname;

// Every name the test uses goes to loopback; anything else fails to resolve (no DNS, no mDNS).
const RULES = ['vod.example.test', 'other.example.test', host(DEVICE_URL), host(FORGED_URL), host(CONTROL_URL)]
  .map((name) => `MAP ${name} 127.0.0.1`).concat('MAP * ~NOTFOUND').join(', ');
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
  '--disable-background-networking', '--disable-component-update', `--host-resolver-rules=${RULES}`];

const deviceBody = (r) => {
  try {
    const body = JSON.parse(r.page.body);
    return body.device === 'Media Server 1' && body.message === 'hello from the device';
  } catch { return false; }
};
const corsError = (r, url) => r.loadingFailed.filter((f) => f.url === url).map((f) => f.corsErrorStatus && f.corsErrorStatus.corsError);
const netError = (r, url) => r.loadingFailed.filter((f) => f.url === url).map((f) => f.errorText);

// Each case: the page to open and the checks that must all hold (a name and a predicate each).
const CASES = [
  {
    name: 'a-bound-origin-get',
    what: `fetch() from ${BOUND} to the device returns its body`,
    url: page(BOUND, DEVICE_URL),
    checks: [
      ['page is a secure context', (r) => r.page.secureContext === true],
      ['FETCH_OK with HTTP 200', (r) => r.page.result === 'FETCH_OK' && r.page.status === 200],
      ['body is the device\'s', deviceBody],
      [`access-control-allow-origin is ${BOUND}`, (r) => r.responses.some((x) => x.url === DEVICE_URL &&
        x.headers['access-control-allow-origin'] === BOUND)],
    ],
  },
  {
    name: 'a-bound-origin-preflighted-post',
    what: `POST with content-type application/json (CORS preflight) from ${BOUND} succeeds`,
    url: page(BOUND, DEVICE_URL, '&post=1'),
    checks: [
      ['FETCH_OK with HTTP 200', (r) => r.page.result === 'FETCH_OK' && r.page.status === 200],
      ['body is the device\'s', deviceBody],
    ],
  },
  {
    name: 'b-other-origin-get-refused',
    what: `fetch() from ${OTHER} is refused by CORS`,
    url: page(OTHER, DEVICE_URL),
    checks: [
      ['FETCH_ERROR', (r) => r.page.result === 'FETCH_ERROR'],
      ['corsError MissingAllowOriginHeader', (r) => corsError(r, DEVICE_URL).includes('MissingAllowOriginHeader')],
    ],
  },
  {
    name: 'b-other-origin-preflight-refused',
    what: `preflighted POST from ${OTHER} is refused at the preflight`,
    url: page(OTHER, DEVICE_URL, '&post=1'),
    checks: [
      ['FETCH_ERROR', (r) => r.page.result === 'FETCH_ERROR'],
      ['corsError PreflightMissingAllowOriginHeader',
        (r) => corsError(r, DEVICE_URL).includes('PreflightMissingAllowOriginHeader')],
    ],
  },
  {
    name: 'c-forged-public-name-rejected',
    what: `${host(FORGED_URL)} signed with the issuing intermediate's key is rejected`,
    url: page(BOUND, FORGED_URL),
    checks: [
      ['FETCH_ERROR', (r) => r.page.result === 'FETCH_ERROR'],
      ['net::ERR_CERT_INVALID', (r) => netError(r, FORGED_URL).includes('net::ERR_CERT_INVALID')],
      ['Chromium\'s verifier: "Not permitted by name constraints"',
        (r) => r.certErrors.some((e) => e.includes('Not permitted by name constraints'))],
    ],
  },
  {
    name: 'c-control-forged-local-name-accepted',
    what: `the same forgery for ${host(CONTROL_URL)} (inside .local) is accepted, so only the name differs`,
    url: page(BOUND, CONTROL_URL),
    checks: [
      ['FETCH_OK with HTTP 200', (r) => r.page.result === 'FETCH_OK' && r.page.status === 200],
    ],
  },
];

// Certificate verification errors Chromium logged (the builtin verifier names the failed check).
function certErrors(netlogFile) {
  let log;
  try {
    const text = fs.readFileSync(netlogFile, 'utf8').trim();
    try { log = JSON.parse(text); } catch { log = JSON.parse(text.replace(/,?\s*$/, '') + ']}'); }
  } catch (e) { return [`(netlog unreadable: ${e.message})`]; }
  const names = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([k, v]) => [v, k]));
  const found = new Set();
  for (const event of log.events || []) {
    const type = names[event.type] || '';
    if (!type.startsWith('CERT_VERIF')) continue;
    const params = JSON.stringify(event.params || {});
    for (const m of params.matchAll(/"(errors|cert_status|net_error)":("[^"]*"|-?\d+)/g)) {
      if (m[2] === '0' || m[2] === '""') continue;   // the verifications that succeeded
      found.add(`${type} ${m[1]}=${m[2].replace(/\\n/g, ' | ').slice(0, 400)}`);
    }
  }
  return [...found];
}

async function run(c) {
  const r = { name: c.name, url: c.url, page: {}, loadingFailed: [], responses: [], console: [] };
  const netlog = path.join(OUT, `${c.name}.netlog.json`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true, args: [...FLAGS, `--log-net-log=${netlog}`],
  });
  try {
    const context = await browser.newContext();
    const tab = await context.newPage();
    const cdp = await context.newCDPSession(tab);
    await cdp.send('Network.enable');
    const urls = {};
    cdp.on('Network.requestWillBeSent', (e) => { urls[e.requestId] = e.request.url; });
    cdp.on('Network.responseReceived', (e) => r.responses.push({
      url: e.response.url, status: e.response.status, headers: lower(e.response.headers) }));
    cdp.on('Network.loadingFailed', (e) => r.loadingFailed.push({ url: urls[e.requestId], errorText: e.errorText,
      blockedReason: e.blockedReason, corsErrorStatus: e.corsErrorStatus }));
    tab.on('console', (m) => r.console.push(m.text()));
    await tab.goto(c.url, { timeout: 20000 });
    await tab.waitForFunction(() => document.title === 'DONE', null, { timeout: 20000 });
    r.page = JSON.parse(await tab.textContent('#result'));
  } catch (e) {
    r.harnessError = String(e.message || e).split('\n')[0];
  } finally {
    await browser.close();
  }
  r.certErrors = certErrors(netlog);
  r.failed = r.harnessError ? ['the page ran'] : c.checks.filter(([, ok]) => !ok(r)).map(([label]) => label);
  fs.writeFileSync(path.join(OUT, `${c.name}.json`), JSON.stringify(r, null, 2));
  return r;
}

const lower = (headers) => Object.fromEntries(Object.entries(headers || {}).map(([k, v]) => [k.toLowerCase(), v]));

function report(c, r) {
  const ok = r.failed.length === 0;
  const got = r.harnessError ? `harness error: ${r.harnessError}`
    : `${r.page.result}${r.page.status ? ' ' + r.page.status : ''}${r.page.error ? ' ' + r.page.error : ''}`;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${c.name}: ${c.what}; got ${got}`);
  const relevant = (x) => x.url && !x.url.endsWith('/favicon.ico');
  const detail = [];
  if (!ok) detail.push(`failed checks: ${r.failed.join('; ')}`, `page: ${JSON.stringify(r.page).slice(0, 500)}`);
  for (const f of r.loadingFailed.filter(relevant)) detail.push(`chromium loadingFailed: ${JSON.stringify(f)}`);
  if (!ok) for (const m of r.console) detail.push(`console: ${m.slice(0, 300)}`);
  if (!ok || c.name.startsWith('c-forged')) for (const e of r.certErrors) detail.push(`netlog: ${e}`);
  for (const line of detail) console.log(`    ${line}`);
  return ok;
}

(async () => {
  const only = process.env.CASES ? process.env.CASES.split(',') : null;
  let passed = 0; let failed = 0;
  for (const c of CASES) {
    if (only && !only.includes(c.name)) continue;
    if (report(c, await run(c))) passed += 1; else failed += 1;
  }
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
})().catch((e) => { console.error('FAIL browser harness:', e); process.exit(1); });
