#!/usr/bin/env bash
# The device with its keys in a PKCS#11 token: SoftHSM2 and OpenSC's pkcs11-tool from Debian's
# packages, a fresh token in a temporary directory (SOFTHSM2_CONF), and one PASS or FAIL line
# for each of:
#   provision   crates/e2e/tests/softhsm.rs: the attestation key made in the token by the
#               factory, a whole provisioning over the in-memory link against the real issuer
#               with the TLS key made in the token, HTTPS served with it (rustls handshake,
#               fingerprint), CKA_VALUE refused, the store holding only the key's id, the
#               replaced key deleted
#   factory     `localcert factory device --pkcs11`: the key made in the token, the chain
#               written, no key file, a second run under the same label refused
#   read-key    pkcs11-tool, another client, sees every private key in the token as sensitive,
#               always sensitive and never extractable
#   store       the store directory holds no key material (grep), only token_key_id handles
#   daemon      `localcert-device run` with keys = "pkcs11" and paths relative to device.toml,
#               started from another directory: openssl s_client gets the binding's
#               certificate (same SHA-256), verified against the issuer root; curl gets a 200
# and a closing "N passed, M failed" line. A missing tool is a FAIL, never a skip.
#
# Usage (root, for apt-get): bash tests/softhsm/run.sh      logs: tests/softhsm/out/
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/out
MODULE=/usr/lib/softhsm/libsofthsm2.so
passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
finish() {
    [ -z "${DAEMON:-}" ] || kill "$DAEMON" 2>/dev/null
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ] && [ "$passed" -gt 0 ]
    exit $?
}

missing=()
for pkg in softhsm2 opensc openssl curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for tool in softhsm2-util pkcs11-tool openssl curl; do
    command -v "$tool" >/dev/null || { fail setup "$tool is missing"; finish; }
done
[ -f "$MODULE" ] || { fail setup "$MODULE is missing"; finish; }

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/localcert-softhsm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tokens" "$WORK/device"
cat >"$WORK/softhsm2.conf" <<EOF
directories.tokendir = $WORK/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF=$WORK/softhsm2.conf
# Random PINs in a 0600 file for the daemon and the test. The test tools (softhsm2-util,
# pkcs11-tool) only take them as arguments: acceptable for a throwaway token, never for ours.
umask 077
PIN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
SO_PIN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$PIN" >"$WORK/device/token.pin"
umask 022
TOKEN=localcert-test
softhsm2-util --init-token --free --label "$TOKEN" --so-pin "$SO_PIN" --pin "$PIN" >"$OUT/init.log" 2>&1 \
    || { fail setup "softhsm2-util --init-token (see $OUT/init.log)"; finish; }

echo "== cargo build (localcert, localcert-device --features pkcs11, the e2e test)"
(cd "$REPO" && cargo build --locked -p localcert -p localcert-device --features localcert-device/pkcs11 \
    && cargo test --locked -p localcert-e2e --test softhsm --no-run) >"$OUT/build.log" 2>&1 \
    || { fail setup "build (see $OUT/build.log)"; finish; }
BIN=$REPO/target/debug

# ---------------------------------------------------------------- provision (the Rust test)
export LOCALCERT_PKCS11_MODULE=$MODULE LOCALCERT_PKCS11_TOKEN=$TOKEN
export LOCALCERT_PKCS11_PIN_FILE=$WORK/device/token.pin LOCALCERT_SOFTHSM_WORK=$WORK/device
if (cd "$REPO" && cargo test --locked -p localcert-e2e --test softhsm -- --ignored) \
    >"$OUT/provision.log" 2>&1 && grep -q "test result: ok. 1 passed" "$OUT/provision.log"; then
    pass provision
else
    fail provision "see $OUT/provision.log"
    tail -30 "$OUT/provision.log"
fi

# ---------------------------------------------------------------- factory (the CLI)
if "$BIN/localcert" factory device --dir "$REPO/fixtures/manufacturer" --product "Media Server" \
    --serial cli-1 --out "$WORK/cli" --pkcs11 "$MODULE" --token-label "$TOKEN" \
    --pin-file "$WORK/device/token.pin" --key-label cli-attestation >"$OUT/factory.log" 2>&1 \
    && [ -f "$WORK/cli/attestation.pem" ] && [ ! -e "$WORK/cli/attestation.key.pem" ] \
    && pkcs11-tool --module "$MODULE" --token-label "$TOKEN" --login --pin "$PIN" \
        --list-objects --type privkey 2>/dev/null | grep -q "label: *cli-attestation" \
    && ! "$BIN/localcert" factory device --dir "$REPO/fixtures/manufacturer" --product P \
        --serial cli-2 --out "$WORK/cli2" --pkcs11 "$MODULE" --token-label "$TOKEN" \
        --pin-file "$WORK/device/token.pin" --key-label cli-attestation >>"$OUT/factory.log" 2>&1; then
    pass factory
else
    fail factory "see $OUT/factory.log"
fi

# ---------------------------------------------------------------- read-key (another tool)
# The refusal itself (C_GetAttributeValue(CKA_VALUE) -> CKR_ATTRIBUTE_SENSITIVE) is asserted by
# the provision step through cryptoki; here another PKCS#11 client reads every private key's
# attributes (pkcs11-tool cannot be asked for a private value at all).
pkcs11-tool --module "$MODULE" --token-label "$TOKEN" --login --pin "$PIN" --list-objects \
    --type privkey >"$OUT/objects.log" 2>&1
count=$(grep -c "^Private Key Object" "$OUT/objects.log" || true)
sealed=$(grep -cE "Access: *sensitive, always sensitive, never extractable" "$OUT/objects.log" || true)
# The e2e test's attestation and TLS keys and the CLI's attestation key.
if [ "$count" -ge 3 ] && [ "$sealed" = "$count" ]; then
    pass "read-key ($count private keys, all sensitive and never extractable)"
else
    fail read-key "$count private keys, $sealed sensitive and never extractable (see $OUT/objects.log)"
fi

# ---------------------------------------------------------------- store (only handles)
STORE=$WORK/device/store
if [ -d "$STORE" ] && grep -rq '"token_key_id"' "$STORE" \
    && ! grep -rqiE 'PRIVATE KEY|"key"[[:space:]]*:|020100301306072a8648ce3d0201' "$STORE"; then
    pass store
else
    fail store "key material or no handle in $STORE: $(ls -la "$STORE" 2>&1 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- daemon (the real binary)
if [ -f "$WORK/device/binding.env" ]; then
    # shellcheck disable=SC1091
    . "$WORK/device/binding.env"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18443)
    cat >"$WORK/device/device.toml" <<EOF
product = "Media Server 1"
store_dir = "store"
keys = "pkcs11"
attestation_chain = "attestation.pem"
issuer_roots = "issuer-root.pem"
presence = "deny"
https_port = $PORT
https_listen = "127.0.0.1"
[ble]
enabled = false
[mdns]
enabled = false
[pkcs11]
module = "$MODULE"
token_label = "$TOKEN"
pin_file = "token.pin"
attestation_key_label = "$ATTESTATION_LABEL"
EOF
    (cd / && exec "$BIN/localcert-device" run --config "$WORK/device/device.toml") >"$OUT/daemon.log" 2>&1 &
    DAEMON=$!
    for _ in $(seq 100); do
        grep -q "HTTPS listening" "$OUT/daemon.log" && break
        kill -0 "$DAEMON" 2>/dev/null || break
        sleep 0.1
    done
    served=$(openssl s_client -connect "127.0.0.1:$PORT" -servername "$NAME" \
        -CAfile "$WORK/device/issuer-root.pem" -verify_return_error </dev/null 2>"$OUT/s_client.err" \
        | openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1)
    status=$(curl -s -o "$OUT/curl.body" -w '%{http_code}' --cacert "$WORK/device/issuer-root.pem" \
        --resolve "$NAME:$PORT:127.0.0.1" "https://$NAME:$PORT/" 2>"$OUT/curl.err")
    if [ "$served" = "$FINGERPRINT" ] && [ "$status" = 200 ]; then
        pass "daemon (served sha256 $served)"
    else
        fail daemon "served ${served:-nothing}, expected $FINGERPRINT, curl status $status (see $OUT/daemon.log)"
    fi
    kill "$DAEMON" 2>/dev/null
    wait "$DAEMON" 2>/dev/null
    DAEMON=
else
    fail daemon "the provision step left no binding"
fi
finish
