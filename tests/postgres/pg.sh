#!/usr/bin/env bash
# A throwaway PostgreSQL cluster from Debian's packages, owned by the `postgres` user, in a
# directory of its own, listening on 127.0.0.1 only. Password authentication (SCRAM) for the
# issuer's role over TCP; the superuser only through the cluster's own Unix socket.
#
#   pg.sh init DIR [PORT]   initdb, start, create role and database `localcert`; prints the URL
#                           (no password in it: the password is in DIR/localcert.password, 0600).
#                           TLS is on: DIR/ca.pem is the CA of the server's certificate (for
#                           localhost and 127.0.0.1); plaintext TCP is accepted too.
#   pg.sh stop DIR          fast shutdown (clients are disconnected)
#   pg.sh kill DIR          SIGKILL the postmaster (a crash; restart recovers from the WAL)
#   pg.sh start DIR         start again on the same port
#   pg.sh restart DIR       stop, then start
#   pg.sh psql DIR ...      psql as the superuser on the cluster's socket
#   pg.sh destroy DIR       stop and delete DIR
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$PGBIN/initdb" ] || { echo "pg.sh: no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 2; }

as_postgres() { runuser -u postgres -- "$@"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_ctl() {
    local dir=$1; shift
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 "$@" >/dev/null
}

cmd=${1:?usage: pg.sh init|stop|kill|start|restart|psql|destroy DIR}
dir=${2:?usage: pg.sh $cmd DIR}
case $cmd in
init)
    port=${3:-$(free_port)}
    mkdir -p "$dir"
    chown postgres: "$dir"
    chmod 0700 "$dir"
    # The superuser's password only protects TCP logins, which this cluster never uses for it.
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/superuser.password"
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/localcert.password"
    chmod 0600 "$dir"/*.password
    chown postgres: "$dir/superuser.password"
    as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres --auth-local=peer \
        --auth-host=scram-sha-256 --pwfile="$dir/superuser.password" -E UTF8 >"$dir/initdb.log"
    # A CA and the server's certificate (P-256), for clients that verify (sslmode=verify-full).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=localcert test PostgreSQL CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$dir/data/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/data/server.crt" 2>/dev/null
    rm -f "$dir/ca.key" "$dir/server.csr"
    chown postgres: "$dir/data/server.key" "$dir/data/server.crt"
    chmod 0600 "$dir/data/server.key"
    cat >>"$dir/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key' 
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
    echo "$port" >"$dir/port"
    pg_ctl "$dir" start
    password=$(cat "$dir/localcert.password")
    as_postgres psql -h "$dir" -p "$port" -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE localcert LOGIN PASSWORD '$password'" \
        -c "CREATE DATABASE localcert OWNER localcert" >/dev/null
    echo "postgresql://localcert@127.0.0.1:$port/localcert"
    ;;
stop) pg_ctl "$dir" stop -m fast ;;
kill)
    pid=$(head -n1 "$dir/data/postmaster.pid")
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    ;;
start) pg_ctl "$dir" start ;;
restart) pg_ctl "$dir" restart -m fast ;;
psql)
    shift 2
    as_postgres psql -h "$dir" -p "$(cat "$dir/port")" -U postgres -d localcert -X -q "$@"
    ;;
destroy)
    if [ -f "$dir/data/postmaster.pid" ]; then pg_ctl "$dir" stop -m immediate || true; fi
    rm -rf "$dir"
    ;;
*) echo "pg.sh: unknown command $cmd" >&2; exit 2 ;;
esac
