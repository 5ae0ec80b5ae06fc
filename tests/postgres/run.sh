#!/usr/bin/env bash
# The issuer on PostgreSQL: a real PostgreSQL from Debian's packages (a throwaway cluster, see
# pg.sh), the store contract suite on it, then three `localcert issuer serve` replicas on the one
# database behind a client-side round robin (examples/replicas: instant-acme clients, attesting
# with the fixture device's key), and one PASS or FAIL line for each of:
#   contract      the Store contract suite, SQLite and PostgreSQL (cargo test --test store)
#   concurrent    concurrent issuances across the replicas: none lost, none twice
#   nonce         a nonce made by one replica is accepted by another, once in all
#   star          each STAR renewal done exactly once across replicas (row lock on the order)
#   crl           every replica serves the same CRL, the database's
#   kill-replica  kill -9 of a replica under load: clients go on on the others, every
#                 acknowledged issuance stored exactly once
#   pg-restart    PostgreSQL restarted under load: 503 serverInternal with Retry-After while it
#                 is down, service resumes, state consistent afterwards
# and a closing "N passed, M failed" line.
#
# Usage (root): bash tests/postgres/run.sh        scratch files and logs: tests/postgres/out/
# Everything listens on 127.0.0.1 only; every process it starts ends with it (PID namespace).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$HERE/out
BIN=$REPO/target/release/localcert
# The client in the dev profile: CI has built its dependencies for cargo test already.
CLIENT=$REPO/target/debug/examples/replicas
ORIGIN=https://vod.example.test
REPLICAS=3

# ------------------------------------------------------------------ outside: build, then isolate
if [ "${1:-}" != --inside ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "FAIL postgres: run as root (apt-get, the postgres user, unshare)" >&2
        exit 2
    fi
    missing=()
    for pkg in postgresql util-linux python3; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "== apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    # Debian starts a cluster of its own on install; this suite runs its own and needs neither
    # that one's port nor its load.
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters --no-header 2>/dev/null | while read -r ver name _ status _; do
            [ "$status" != online ] || pg_ctlcluster "$ver" "$name" stop || true
        done
    fi
    echo "== cargo build --release -p localcert; cargo build -p localcert-issuer --example replicas; cargo test --no-run (store)"
    (cd "$REPO" && cargo build --release --locked -p localcert \
        && cargo build --locked -p localcert-issuer --example replicas \
        && cargo test --locked -p localcert-issuer --test store --no-run)
    rm -rf "$OUT"
    mkdir -p "$OUT"
    set +e
    timeout 900 unshare --pid --fork --mount-proc --kill-child \
        bash "$HERE/run.sh" --inside 2>&1 | tee "$OUT/run.log"
    rc=${PIPESTATUS[0]}
    set -e
    [ "$rc" != 124 ] || echo "FAIL postgres: timed out after 900 s"
    exit "$rc"
fi

# ------------------------------------------------------------------ inside the PID namespace
PASSED=0
FAILED=0
declare -A SERVE_PID
PG=$OUT/pg

pass() { echo "PASS $1: $2"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
finish() {
    echo "postgres: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

chmod 0755 "$OUT"
PG_URL=$(bash "$HERE/pg.sh" init "$PG")
export LOCALCERT_TEST_POSTGRES_URL=$PG_URL
LOCALCERT_POSTGRES_PASSWORD=$(cat "$PG/localcert.password")
export LOCALCERT_POSTGRES_PASSWORD
# The cluster's certificate comes from its own CA: the store and the replicas connect with TLS,
# verified against it (the contract's TLS case checks the sessions are TLS).
export LOCALCERT_TEST_POSTGRES_CA=$PG/ca.pem
echo "== PostgreSQL $("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/postgres" --version | awk '{print $3}') at $PG_URL"

# ---- contract: the same suite on both backends, PostgreSQL included (no test left ignored).
(cd "$REPO" && cargo test --locked -p localcert-issuer --test store -- --include-ignored) \
    >"$OUT/contract.log" 2>&1 && contract_rc=0 || contract_rc=$?
summary=$(grep -E "^test result" "$OUT/contract.log" | tail -n1)
postgres_ok=$(grep -cE "^test postgres::.* ok$" "$OUT/contract.log" || true)
if [ "$contract_rc" = 0 ] && echo "$summary" | grep -q " 0 ignored" && [ "$postgres_ok" -gt 0 ]; then
    pass contract "$postgres_ok PostgreSQL cases and the SQLite ones: $summary"
else
    fail contract "exit $contract_rc: $summary (see $OUT/contract.log)"
fi

# ---- three replicas: one state directory (CA, TLS), one database, one service URL.
SERVICE_PORT=$(free_port)
cp "$PG/localcert.password" "$OUT/pg.password"
# The key with which every replica mints and checks nonces (each accepts the others').
head -c 48 /dev/urandom | base64 -w0 >"$OUT/nonce.key"
chmod 0600 "$OUT/pg.password" "$OUT/nonce.key"
PORTS=()
for i in $(seq 1 $REPLICAS); do
    PORTS+=("$(free_port)")
    cat >"$OUT/replica-$i.toml" <<EOF
state_dir = "state"
ca_name = "postgres suite"
listen = "127.0.0.1:${PORTS[$((i - 1))]}"
base_url = "https://localhost:$SERVICE_PORT"
star_renew_check_secs = 1

[store]
kind = "postgres"
url = "$PG_URL"
password_file = "pg.password"
nonce_key_file = "nonce.key"
pool_size = 12
tls_ca_file = "$PG/ca.pem"

[policy]
star_min_lifetime_secs = 2

[trust]
manufacturer_roots = ["$REPO/fixtures/manufacturer/root.pem"]
EOF
done
# The replicas read the password from the file: the environment does not hand it to them.
unset LOCALCERT_POSTGRES_PASSWORD
"$BIN" issuer init --config "$OUT/replica-1.toml" >"$OUT/init.log"
eab=$("$BIN" issuer rp add --config "$OUT/replica-1.toml" "$ORIGIN")
LOCALCERT_EAB_KID=$(echo "$eab" | awk '/^EAB kid:/ {print $3}')
LOCALCERT_EAB_KEY=$(echo "$eab" | awk '/^EAB HMAC:/ {print $3}')
export LOCALCERT_EAB_KID LOCALCERT_EAB_KEY
LOCALCERT_POSTGRES_PASSWORD=$(cat "$PG/localcert.password")
export LOCALCERT_POSTGRES_PASSWORD

start_replica() {
    local i=$1
    env -u LOCALCERT_POSTGRES_PASSWORD -u LOCALCERT_TEST_POSTGRES_URL \
        "$BIN" issuer serve --config "$OUT/replica-$i.toml" >>"$OUT/replica-$i.log" 2>&1 &
    SERVE_PID[$i]=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/${PORTS[$((i - 1))]}") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "replica $i did not start:"; tail -n 20 "$OUT/replica-$i.log"; return 1
}
for i in $(seq 1 $REPLICAS); do start_replica "$i"; done

ADDRS=$(printf 'localhost:%s,' "${PORTS[@]}")
client() {
    local command=$1; shift
    "$CLIENT" "$command" --replicas "${ADDRS%,}" --service "https://localhost:$SERVICE_PORT" \
        --tls-cert "$OUT/state/tls.pem" --device "$REPO/fixtures/devices/device-1" \
        --origin "$ORIGIN" --credentials "$OUT/account.json" "$@"
}
# scenario NAME STEP COMMAND…: runs a client command with its output in STEP.log; if it fails,
# NAME fails with the command's last lines.
scenario() {
    local name=$1 log=$OUT/$2.log; shift 2
    if "$@" >"$log" 2>&1; then return 0; fi
    fail "$name" "$(grep -v '^$' "$log" | tail -n 3 | tr '\n' ' ')"
    return 1
}
# The first line of a client log without its command prefix (its report), or the second (stats).
report() { sed -n "${2:-1}p" "$OUT/$1.log" | cut -d' ' -f2-; }

client account >"$OUT/account.log" 2>&1 || { cat "$OUT/account.log"; fail setup "no ACME account"; finish; exit 1; }

# ---- concurrent issuance across the replicas.
if scenario concurrent concurrent client issue --clients 12 --each 10 --tag k \
        --acked "$OUT/acked-concurrent.txt" \
    && scenario concurrent concurrent-check client check --acked "$OUT/acked-concurrent.txt"; then
    pass concurrent "$(report concurrent); $(report concurrent-check); $(report concurrent 2)"
fi

# ---- a nonce across replicas.
if scenario nonce nonce client nonce; then
    pass nonce "$(report nonce)"
fi

# ---- STAR renewals: due at every tick of every replica's renewal loop (1 s), for 8 s.
before=()
for i in $(seq 1 $REPLICAS); do before+=("$(grep -c "STAR certificate renewed" "$OUT/replica-$i.log" || true)"); done
if scenario star star client star --orders 4 --lifetime 4 --watch 8 --min-renewals 4; then
    per=() renewers=0 failures=0
    for i in $(seq 1 $REPLICAS); do
        n=$(( $(grep -c "STAR certificate renewed" "$OUT/replica-$i.log" || true) - ${before[$((i - 1))]} ))
        per+=("$n")
        [ "$n" = 0 ] || renewers=$((renewers + 1))
        failures=$((failures + $(grep -c "STAR renewal failed" "$OUT/replica-$i.log" || true)))
    done
    if [ "$renewers" -ge 2 ] && [ "$failures" = 0 ]; then
        pass star "$(report star); renewals per replica ${per[*]}, no renewal failed"
    else
        fail star "renewals per replica ${per[*]} (want 2 replicas or more renewing), $failures failed renewals"
    fi
fi

# ---- the same CRL from every replica.
if scenario crl crl client crl --revoke 3; then
    pass crl "$(report crl)"
fi

# ---- kill -9 of a replica under load.
client issue --clients 8 --each 12 --min-seconds 8 --tag x --acked "$OUT/acked-kill.txt" \
    --expect-connection-errors >"$OUT/kill-replica.log" 2>&1 &
load=$!
sleep 2
victim=2
kill -KILL "${SERVE_PID[$victim]}"
wait "${SERVE_PID[$victim]}" 2>/dev/null || true
if ! wait "$load"; then
    fail kill-replica "$(tail -n 3 "$OUT/kill-replica.log" | tr '\n' ' ')"
elif scenario kill-replica kill-check client check --acked "$OUT/acked-kill.txt"; then
    pass kill-replica "replica $victim killed 2 s into 8 s of load; $(report kill-replica); \
$(report kill-check); $(report kill-replica 2)"
fi
start_replica "$victim"

# ---- PostgreSQL restarted under load.
client issue --clients 8 --each 12 --min-seconds 12 --tag r --acked "$OUT/acked-restart.txt" \
    --expect-unavailable >"$OUT/pg-restart.log" 2>&1 &
load=$!
sleep 2
bash "$HERE/pg.sh" stop "$PG"
down_at=$(date +%s)
sleep 5
bash "$HERE/pg.sh" start "$PG"
echo "   PostgreSQL was down for $(( $(date +%s) - down_at )) s"
if ! wait "$load"; then
    fail pg-restart "$(tail -n 3 "$OUT/pg-restart.log" | tr '\n' ' ')"
elif scenario pg-restart restart-check client check \
        --acked "$OUT/acked-concurrent.txt,$OUT/acked-kill.txt,$OUT/acked-restart.txt" \
    && scenario pg-restart after-restart client issue --clients 2 --each 2 --tag a \
        --acked "$OUT/acked-after.txt"; then
    pass pg-restart "$(report pg-restart); $(report pg-restart 2); afterwards: \
$(report restart-check); $(report after-restart)"
fi

for i in $(seq 1 $REPLICAS); do kill "${SERVE_PID[$i]}" 2>/dev/null || true; done
bash "$HERE/pg.sh" stop "$PG" || true
finish
