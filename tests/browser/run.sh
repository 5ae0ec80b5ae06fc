#!/usr/bin/env bash
# A real browser against a provisioned device: headless Debian Chromium trusts the issuer's root
# (in a throwaway NSS db) and a page on https://vod.example.test fetch()es the device's .local
# URL; another origin is refused by CORS; a www.example.com certificate forged with the issuing
# intermediate's key is rejected (ERR_CERT_INVALID) because of the name constraints.
#
# Usage (root): bash tests/browser/run.sh      scratch output and logs: tests/browser/out/
# Installs chromium, libnss3-tools (apt) and playwright-core (npm, no browser download), builds
# the release binary, then runs everything in a fresh network namespace with only loopback
# (and a PID namespace, so every process it starts ends with it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/out
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
BIN=$REPO/target/release/localcert
ORIGIN=https://vod.example.test

# ------------------------------------------------------------------ outside: install and build
if [ "${1:-}" != --inside-netns ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "FAIL browser: run as root (apt-get, unshare --net)" >&2
        exit 2
    fi
    missing=()
    for pkg in chromium libnss3-tools openssl iproute2; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    command -v npm >/dev/null || missing+=(nodejs npm)
    if ((${#missing[@]})); then
        echo "== apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    echo "== npm ci (playwright-core only; Debian's chromium is the browser)"
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "== cargo build --release -p localcert"
    (cd "$REPO" && cargo build --release --locked -p localcert)
    rm -rf "$OUT"
    mkdir -p "$OUT"
    echo "== $("$CHROMIUM" --version 2>/dev/null), playwright-core $(node -p "require('$HERE/node_modules/playwright-core/package.json').version")"
    # --kill-child: if this script dies, the namespace's first process gets SIGKILL, and with it
    # every process in the PID namespace.
    set +e
    timeout 480 unshare --net --pid --fork --mount-proc --kill-child \
        bash "$HERE/run.sh" --inside-netns 2>&1 | tee "$OUT/run.log"
    rc=${PIPESTATUS[0]}
    set -e
    [ "$rc" != 124 ] || echo "FAIL browser: timed out after 480 s"
    [ "$rc" = 0 ] || echo "browser test FAILED (logs in $OUT)"
    exit "$rc"
fi

# ------------------------------------------------------------------ inside: loopback only
ip link set lo up
PIDS=()
DEMO_PID=
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -INT "$DEMO_PID" 2>/dev/null || true      # the demo stops its servers on SIGINT
        for _ in $(seq 50); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
}
setup_fail() {
    echo "FAIL browser-setup: $*"
    echo "browser: 0 passed, 1 failed"
    exit 1
}
trap cleanup EXIT
trap 'exit 1' INT TERM
trap 'status=$?; setup_fail "line $LINENO: \`$BASH_COMMAND\` exited $status"' ERR

echo "== localcert demo --origin $ORIGIN (issuer, device, UA over the in-memory BLE link)"
"$BIN" demo --origin "$ORIGIN" --state-dir "$OUT/state" --serve "$OUT/desc.json" >"$OUT/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 600); do
    [ -s "$OUT/desc.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { sed 's/^/    /' "$OUT/demo.log"; setup_fail "localcert demo exited before serving"; }
    sleep 0.1
done
[ -s "$OUT/desc.json" ] || { sed 's/^/    /' "$OUT/demo.log"; setup_fail "localcert demo wrote no $OUT/desc.json in 60 s"; }
sleep 0.2   # the file is written in one call; let it land completely
grep -E '^\[ *[0-9.]+ s\] +(1[0-4]) ' "$OUT/demo.log" | sed 's/^/    /' || true
desc() { node -e "process.stdout.write(String(require(process.argv[1])[process.argv[2]]))" "$OUT/desc.json" "$1"; }
NAME=$(desc name)
PORT=$(desc https_port)
ROOT=$(desc issuer_root)
INTERMEDIATE=$(desc intermediate_cert)
INTERMEDIATE_KEY=$(desc intermediate_key)
echo "    device https://$NAME:$PORT/ (origin $(desc origin))"

# A throwaway CA for the web app's own origins, constrained to those two names.
pki=$OUT/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$pki/origins-ca.key" -out "$pki/origins-ca.pem" -subj "/CN=localcert browser test origins CA" \
    -addext "basicConstraints=critical,CA:true,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "nameConstraints=critical,permitted;DNS:vod.example.test,permitted;DNS:other.example.test" \
    2>/dev/null || setup_fail "openssl: origins CA"

# leaf OUT_PREFIX CA_CERT CA_KEY SUBJECT SAN: a P-256 server leaf (the issuer's leaf profile:
# critical SAN, serverAuth, digitalSignature).
leaf() {
    local out=$1 ca=$2 ca_key=$3 subject=$4 san=$5
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$out.key" \
        -subj "$subject" -out "$out.csr" 2>/dev/null || return 1
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" \
        "subjectAltName=critical,$san" >"$out.ext"
    openssl x509 -req -sha256 -days 2 -in "$out.csr" -CA "$ca" -CAkey "$ca_key" \
        -set_serial "0x$(openssl rand -hex 16)" -extfile "$out.ext" -out "$out.crt" 2>/dev/null || return 1
    cat "$out.crt" "$ca" >"$out.chain.pem"
}
leaf "$pki/origins" "$pki/origins-ca.pem" "$pki/origins-ca.key" "/CN=vod.example.test" \
    "DNS:vod.example.test,DNS:other.example.test" || setup_fail "openssl: origin leaf"
# The forgery: what someone holding the issuing intermediate's key could sign. The issuer itself
# refuses such a name; the root's and the intermediate's name constraints must make it useless.
leaf "$pki/forged" "$INTERMEDIATE" "$INTERMEDIATE_KEY" "/" "DNS:www.example.com" ||
    setup_fail "openssl: forged www.example.com leaf"
# Control: the same forgery for a name inside .local must be accepted, so that case (c) fails
# only because of the name.
leaf "$pki/control" "$INTERMEDIATE" "$INTERMEDIATE_KEY" "/" "DNS:forged-control.local" ||
    setup_fail "openssl: forged control leaf"
echo "== openssl's view of the forged chains (an independent verifier)"
for c in forged control; do
    printf '    %-8s ' "$c:"
    { openssl verify -CAfile "$ROOT" -untrusted "$INTERMEDIATE" "$pki/$c.crt" 2>&1 || true; } |
        tr '\n' ' ' | sed "s|$pki/||g"
    echo
done
openssl verify -CAfile "$ROOT" -untrusted "$INTERMEDIATE" "$pki/control.crt" >/dev/null 2>&1 ||
    setup_fail "the control forgery does not verify with openssl: the forging is broken, not the constraints"

# Trust: a fresh NSS db in a throwaway HOME (Chromium on Linux reads $HOME/.pki/nssdb).
export HOME=$OUT/home
mkdir -p "$HOME/.pki/nssdb"
certutil -d "sql:$HOME/.pki/nssdb" -N --empty-password
certutil -d "sql:$HOME/.pki/nssdb" -A -t "C,," -n "localcert demo issuer root" -i "$ROOT"
certutil -d "sql:$HOME/.pki/nssdb" -A -t "C,," -n "localcert browser test origins CA" -i "$pki/origins-ca.pem"
echo "== NSS db $HOME/.pki/nssdb trusts: $(certutil -d "sql:$HOME/.pki/nssdb" -L | awk -F'  +' 'NR>4 {printf "%s; ", $1}')"

serve() { # ROLE PORT CERT KEY
    node "$HERE/server.js" "$1" "$2" "$3" "$4" "$OUT/servers.jsonl" >>"$OUT/servers.out" 2>&1 &
    PIDS+=($!)
}
serve page 443 "$pki/origins.chain.pem" "$pki/origins.key"         # https://vod.example.test, https://other.example.test
serve api 8444 "$pki/forged.chain.pem" "$pki/forged.key"            # https://www.example.com:8444
serve api 8445 "$pki/control.chain.pem" "$pki/control.key"          # https://forged-control.local:8445
for _ in $(seq 100); do
    [ "$(grep -c '"listening"' "$OUT/servers.jsonl" 2>/dev/null)" = 3 ] && break
    sleep 0.1
done
[ "$(grep -c '"listening"' "$OUT/servers.jsonl" 2>/dev/null)" = 3 ] ||
    { cat "$OUT/servers.out"; setup_fail "the page and stand-in servers did not start"; }

echo "== headless Chromium (one fresh browser per case)"
rc=0
OUT=$OUT CHROMIUM=$CHROMIUM DEVICE_URL="https://$NAME:$PORT/" FORGED_URL="https://www.example.com:8444/" \
    CONTROL_URL="https://forged-control.local:8445/" node "$HERE/pw.js" || rc=1
if [ $rc != 0 ]; then
    echo "== what the servers saw (TLS handshakes, requests): $OUT/servers.jsonl"
    grep -v '"listening"' "$OUT/servers.jsonl" | sed 's/^/    /' | tail -n 20 || true
fi
exit $rc
