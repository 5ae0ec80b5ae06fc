// The example page (contract: title READY / WORKING / DONE / FAIL, #provision, #result JSON).
// Query parameters: ?backend=/localcert, ?path=/ (the device path fetched), ?pin=, ?label=,
// ?star=1, ?attempts=N (GATT connects allowed, default 3).
import { LocalcertError, provision } from '/dist/index.js';

const params = new URLSearchParams(location.search);
const button = document.getElementById('provision');
const statusLine = document.getElementById('status');
const resultBox = document.getElementById('result');

const MESSAGES = {
  config: 'Asking this site for its settings…',
  choose: 'Choose your device in the browser\'s list.',
  connect: 'Connecting over Bluetooth…',
  info: 'Reading the device…',
  flow: 'Asking for a certificate…',
  attest: 'The device is making its key…',
  presence: 'Press the button on the device.',
  attestation: 'Getting the certificate issued…',
  install: 'Installing the certificate on the device…',
  installed: 'Confirming with this site…',
  fetch: 'Calling the device over HTTPS…',
  done: 'Done.',
};

async function waitForBluetooth() {
  for (;;) {
    try {
      if (navigator.bluetooth && (await navigator.bluetooth.getAvailability())) break;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 250));
  }
  button.disabled = false;
  statusLine.textContent = 'Ready.';
  document.title = 'READY';
}

button.addEventListener('click', async () => {
  button.disabled = true;
  document.title = 'WORKING';
  const started = performance.now();
  const steps = [];
  let connectAttempts = 0;
  try {
    const r = await provision({
      backend: params.get('backend') ?? '/localcert',
      path: params.get('path') ?? '/',
      pin: params.get('pin') ?? undefined,
      label: params.get('label') ?? undefined,
      star: params.get('star') === '1',
      connect: {
        attempts: Number(params.get('attempts') ?? 3),
        onAttempt: (n) => { connectAttempts = n; },
      },
      onStep: (step) => {
        steps.push({ step, ms: Math.round(performance.now() - started) });
        statusLine.textContent = MESSAGES[step] ?? step;
      },
    });
    resultBox.textContent = JSON.stringify({
      name: r.name,
      url: r.url,
      fingerprint: r.fingerprint,
      device_answer: { status: r.deviceAnswer.status, body: r.deviceAnswer.body, allow_origin: r.deviceAnswer.allowOrigin, response_type: r.deviceAnswer.responseType },
      steps,
      connect_attempts: r.connectAttempts,
    }, null, 2);
    statusLine.textContent = `Done: ${r.url} answered ${r.deviceAnswer.status}.`;
    document.title = 'DONE';
  } catch (e) {
    const error = {
      name: e?.name ?? 'Error',
      code: e instanceof LocalcertError ? e.code : (e?.code ?? null),
      message: String(e?.message ?? e),
    };
    resultBox.textContent = JSON.stringify({ error, steps, connect_attempts: connectAttempts }, null, 2);
    statusLine.textContent = `Failed: ${error.message}`;
    document.title = 'FAIL';
  } finally {
    button.disabled = false;
  }
});

waitForBluetooth();
