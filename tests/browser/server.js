// HTTPS servers for the browser test, run by run.sh inside its network namespace.
//
//   node server.js page  PORT CERT KEY LOG   the web app's origins: serves page.html at /
//   node server.js api   PORT CERT KEY LOG   a stand-in endpoint that answers with CORS for
//                                            https://vod.example.test, so the only thing that can
//                                            make the browser refuse it is its certificate
//
// Binds 127.0.0.1 only. CERT may hold a chain (leaf first). Every request and every failed TLS
// handshake is appended to LOG as one JSON line, for the failure details run.sh prints.
'use strict';
const fs = require('fs');
const https = require('https');
const path = require('path');

const [role, port, certFile, keyFile, logFile] = process.argv.slice(2);
if (!['page', 'api'].includes(role) || !logFile) {
  console.error('usage: node server.js page|api PORT CERT KEY LOG');
  process.exit(2);
}
const ALLOWED_ORIGIN = 'https://vod.example.test';
const PAGE = fs.readFileSync(path.join(__dirname, 'page.html'));
const log = (event) =>
  fs.appendFileSync(logFile, JSON.stringify({ server: `${role}:${port}`, ...event }) + '\n');

function respond(req, res) {
  log({ event: 'request', method: req.method, host: req.headers.host, url: req.url, origin: req.headers.origin });
  if (role === 'page') {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(PAGE);
    }
    res.writeHead(req.url === '/favicon.ico' ? 204 : 404);   // no icon, and no 404 in the console
    return res.end();
  }
  const cors = { 'access-control-allow-origin': ALLOWED_ORIGIN, vary: 'Origin' };
  if (req.method === 'OPTIONS') {
    res.writeHead(204, { ...cors, 'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': 'content-type' });
    return res.end();
  }
  res.writeHead(200, { ...cors, 'content-type': 'application/json' });
  res.end(JSON.stringify({ server: 'forged-certificate stand-in', path: req.url }));
}

const server = https.createServer(
  { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, respond);
server.on('tlsClientError', (err) =>
  log({ event: 'tls-handshake-failed', error: String(err.message || err) }));
server.listen(Number(port), '127.0.0.1', () => {
  log({ event: 'listening' });
  console.log(`${role} server listening on 127.0.0.1:${port}`);
});
