#!/usr/bin/env python3
"""The verdicts of tests/webbluetooth-vm, from the page's result AND from outside the browser.

    check.py orders DB                     the issuer's orders and certificates as JSON (read-only)
    check.py CASE DIR ORIGIN NAME PORT     one case's verdict from the files in DIR; prints one
                                           line and exits 0 (pass) or 1 (fail)

DIR holds what run.sh collected around the case: result.json (driver.js: the page's #result, the
backend's answers, the requests to the device, the chooser), status-before.json and
status-after.json (`localcert-device status --json` in the VM), orders-before.json and
orders-after.json (this script's `orders`), device.log (the device daemon's log lines written
during the case), rp.log (the backend's), mtu.txt (the ATT MTU of the device's last session),
att-summary.txt (btsnoop_att.py's summary of the VM's capture so far) and reordered.txt (the
device's "fragment arrived out of order" lines of the case).
"""
import base64
import hashlib
import json
import re
import sqlite3
import sys


def orders(db):
    """Orders with their certificate's leaf fingerprint (sha256 of the DER), oldest first."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    for oid, names, status, cert_id in con.execute(
            "SELECT id, names, status, certificate_id FROM orders ORDER BY rowid"):
        leaf = None
        if cert_id:
            row = con.execute("SELECT chain_pem FROM certificates WHERE id = ?", (cert_id,)).fetchone()
            if row:
                pem = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", row[0], re.S)
                leaf = hashlib.sha256(base64.b64decode("".join(pem.group(1).split()))).hexdigest() if pem else None
        out.append({"id": oid, "names": names, "status": status, "leaf_sha256": leaf})
    return out


class Case:
    def __init__(self, d, origin, name, port):
        self.dir, self.origin, self.name, self.port = d, origin, name, port
        self.errors = []
        self.r = self.load("result.json") or {}
        self.page = self.r.get("result") or {}

    def load(self, f):
        try:
            with open(f"{self.dir}/{f}") as fh:
                return json.load(fh)
        except (OSError, ValueError) as e:
            self.errors.append(f"{f}: {e}")
            return None

    def text(self, f):
        try:
            with open(f"{self.dir}/{f}") as fh:
                return re.sub(r"\x1b\[[0-9;]*m", "", fh.read())
        except OSError:
            return ""

    def expect(self, ok, what):
        if not ok:
            self.errors.append(what)
        return ok

    def new_orders(self):
        before = {o["id"] for o in self.load("orders-before.json") or []}
        return [o for o in self.load("orders-after.json") or [] if o["id"] not in before]

    def bindings(self, when):
        s = self.load(f"status-{when}.json") or {}
        self.expect(not s.get("unusable") and not s.get("leftovers_removed"), f"device store {when}: {s}")
        return s.get("bindings", [])

    def backend(self, method=None):
        return [b for b in self.r.get("backend", []) if method is None or b.get("method") == method]

    def nothing_changed(self):
        """No new order at the issuer, the same bindings on the device, no binding installed."""
        self.expect(self.new_orders() == [], f"new order(s) at the issuer: {self.new_orders()}")
        self.expect(self.bindings("before") == self.bindings("after"),
                    f"the device's bindings changed: {self.bindings('before')} -> {self.bindings('after')}")
        self.expect("binding installed" not in self.text("device.log"), "the device log shows a binding installed")
        self.expect("flow started" not in self.text("rp.log"), "the backend's log shows a flow started")


def provisioned(c, mtu):
    """(a), (b): the page provisioned the device and fetch()ed it; the issuer and device agree."""
    p = c.page
    c.expect(c.r.get("title") == "DONE", f"page title {c.r.get('title')}, error {p.get('error')}")
    c.expect(p.get("name") == c.name, f"page name {p.get('name')} != derived {c.name}")
    c.expect(p.get("url") == f"https://{c.name}:{c.port}/", f"page url {p.get('url')}")
    fp = p.get("fingerprint", "")
    c.expect(re.fullmatch(r"[0-9a-f]{64}", fp or "") is not None, f"fingerprint {fp!r}")
    answer = p.get("device_answer") or {}
    c.expect(answer.get("status") == 200, f"device answer status {answer.get('status')}")
    # A page cannot read access-control-allow-origin itself (not a CORS-exposed header): it sees
    # a "cors" response, which it gets only if the header allowed its origin; DevTools shows it.
    c.expect(answer.get("response_type") == "cors", f"device answer response type {answer.get('response_type')}")
    c.expect("Media Server" in json.dumps(answer.get("body")), f"device answer body {answer.get('body')!r}")
    # What Chromium itself saw of the device request (DevTools), not only what the page says.
    seen = [d for d in c.r.get("device", []) if d.get("status") == 200 and d["url"].startswith(f"https://{c.name}:")]
    c.expect(any(d.get("allow_origin") == c.origin for d in seen), f"no 200 from the device with CORS for {c.origin}: {c.r.get('device')}")
    posts = c.backend("POST")
    c.expect(len(posts) >= 3 and all(200 <= b.get("status", 0) < 300 for b in posts),
             f"backend POSTs: {[(b['url'], b.get('status')) for b in posts]}")
    c.expect(all(b.get("origin") == c.origin for b in posts), "a backend POST without the page's Origin")
    # The issuer: exactly one new order, for this name, valid, whose certificate is the page's.
    new = c.new_orders()
    if c.expect(len(new) == 1, f"{len(new)} new orders at the issuer: {new}"):
        o = new[0]
        c.expect(c.name in o["names"], f"order names {o['names']}")
        c.expect(o["status"] == "valid", f"order status {o['status']}")
        c.expect(o["leaf_sha256"] == fp, f"issued leaf {o['leaf_sha256']} != page fingerprint {fp}")
    # The device: the binding for this origin and name, with the same certificate.
    after = [b for b in c.bindings("after") if b.get("name") == c.name]
    if c.expect(len(after) == 1, f"device bindings after: {c.bindings('after')}"):
        c.expect(after[0].get("origin") == c.origin, f"binding origin {after[0].get('origin')}")
        c.expect(after[0].get("fingerprint") == fp, f"binding fingerprint {after[0].get('fingerprint')} != {fp}")
    log = c.text("device.log")
    c.expect(re.search(rf"binding installed.*{re.escape(c.name)}", log) is not None, "no 'binding installed' for the name in the device log")
    c.expect(re.search(rf"flow complete.*{re.escape(c.name)}", c.text("rp.log")) is not None, "no 'flow complete' for the name in the backend's log")
    got_mtu = c.text("mtu.txt").strip()
    if mtu == 23:
        c.expect(got_mtu == "23", f"the device's session MTU is {got_mtu or 'unknown'}, not 23")
    else:
        c.expect(got_mtu.isdigit() and int(got_mtu) > 23, f"the device's session MTU is {got_mtu or 'unknown'}")
    # The bearers the capture shows: BlueZ's default EATT at 517, one plain ATT bearer at 23.
    att = c.text("att-summary.txt").strip()
    bearers = re.search(r"channels \[([^]]*)\]", att)
    bearers = bearers.group(1).replace("'", "") if bearers else ""
    if mtu == 23:
        c.expect(bearers == "ATT", f"bearers at MTU 23: {att or 'no capture summary'}")
    else:
        c.expect("EATT" in bearers, f"no EATT bearer at MTU {got_mtu} (BlueZ's default): {att or 'no capture summary'}")
    reordered = c.text("reordered.txt").strip() or "?"
    steps = ", ".join(f"{s.get('step')} {s.get('ms')}" for s in p.get("steps", []))
    return (f"{p.get('name')} provisioned at ATT MTU {got_mtu}, issuer order valid, device binding, "
            f"fetch 200 with CORS; connect_attempts={p.get('connect_attempts')}{rescans(c)}; "
            f"bearers {bearers}, writes put back in order by the device: {reordered}; steps (ms): {steps}")


def rescans(c):
    """The driver's chooser rescans (driver.js clickUntilListed), when there were any."""
    n = (c.r.get("chooser") or {}).get("rescans") or 0
    return f"; chooser rescans={n}" if n else ""


def cancelled(c):
    """(c): the user cancelled the chooser: a typed error in the page, nothing sent, nothing changed."""
    err = c.page.get("error") or {}
    c.expect(c.r.get("title") == "FAIL", f"page title {c.r.get('title')}")
    c.expect((c.r.get("chooser") or {}).get("action") == "cancel", "the chooser was not cancelled by the driver")
    c.expect(err.get("name") == "ChooserCancelledError" and err.get("code") == "chooser_cancelled",
             f"not the package's typed error for a cancelled chooser: {err}")
    prompts = (c.r.get("chooser") or {}).get("prompts", [])
    c.expect(any(p.get("devices") for p in prompts), "the chooser never listed the device before the cancel")
    c.expect([s.get("step") for s in c.page.get("steps", [])] == ["config", "choose"], f"steps {c.page.get('steps')}")
    c.expect(c.backend("POST") == [], f"the page called the backend: {c.backend('POST')}")
    c.expect("BLE session started" not in c.text("device.log"), "the device saw a BLE session")
    c.nothing_changed()
    return f"page error {err.get('name')}/{err.get('code')}: {err.get('message')}; no backend call, no order, no binding{rescans(c)}"


def foreign_origin(c, evil):
    """(d): a page on another origin calling the backend is refused by the backend."""
    err = c.page.get("error") or {}
    c.expect(c.r.get("title") == "FAIL", f"page title {c.r.get('title')}")
    posts = c.backend("POST")
    refused = [b for b in posts if b.get("status") == 403 and b.get("origin") == evil
               and (json.loads(b.get("body") or "{}") if (b.get("body") or "").startswith("{") else {}).get("error") == "forbidden_origin"]
    c.expect(refused != [], f"no 403 forbidden_origin from the backend: {posts}")
    c.expect(all(not 200 <= b.get("status", 0) < 300 for b in posts), f"the backend accepted a POST: {posts}")
    c.expect(err.get("code") == "forbidden_origin", f"page error {err}")
    # The refusal came from the backend at the flow's start, after a real GET_INFO over BLE.
    c.expect([s.get("step") for s in c.page.get("steps", [])][-2:] == ["info", "flow"], f"steps {c.page.get('steps')}")
    c.expect("BLE session started" in c.text("device.log"), "the device saw no BLE session")
    c.nothing_changed()
    return f"backend answered {refused[0]['status'] if refused else '?'} forbidden_origin to {evil}; page error {err.get('name')}/{err.get('code')}{rescans(c)}"


def main():
    if sys.argv[1] == "orders":
        json.dump(orders(sys.argv[2]), sys.stdout, indent=1)
        return 0
    case, d, origin, name, port = sys.argv[1:6]
    c = Case(d, origin, name, port)
    try:
        if case == "a":
            what = provisioned(c, 517)
        elif case == "b":
            what = provisioned(c, 23)
        elif case == "c":
            what = cancelled(c)
        elif case == "d":
            what = foreign_origin(c, "https://evil.example.test")
        else:
            c.errors.append(f"unknown case {case}")
            what = ""
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        c.errors.append(f"{type(e).__name__}: {e}")
        what = ""
    if c.errors:
        print("; ".join(c.errors)[:1500])
        return 1
    print(what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
