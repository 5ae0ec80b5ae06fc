//! The PostgreSQL store: the [`Store`] contract on one database shared by several stateless
//! issuer replicas. Connections come from a deadpool pool of tokio-postgres clients driven by a
//! small runtime of the store's own, so the synchronous trait can be called from any thread.
//!
//! Replicas coordinate through the database only. Every state change is a conditional update
//! inside a transaction; issuance locks the order row (`SELECT … FOR UPDATE`) before it signs,
//! so two replicas finalizing or renewing the same order serialize and the second one sees the
//! first one's result. Nonces are minted and authenticated by the replicas (HMAC with the key
//! they share); the database records each consumed nonce id once (`consumed_nonces`, a logged
//! table: a crash must not forget a consumed nonce that has not expired, or it could be
//! replayed).
//!
//! With `tls_ca_file`, every connection is TLS, verified against that CA and the URL's host
//! (see `postgres_tls`); without it the connection is plaintext, for a Unix socket, loopback or
//! a private link, and `sslmode=require` in the URL is refused rather than ignored.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::postgres_tls::RustlsConnector;
use crate::error::Error;
use crate::store::{AuditEntry, unix};

/// How long a request waits for a pooled connection, or for a new one, before the store
/// reports itself unavailable (the ACME server then answers 503 with `Retry-After`).
pub const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// `postgresql://user@host:port/database[?options]`, without a password.
    pub url: String,
    /// The role's password (from a 0600 file or the environment, never the command line).
    pub password: Option<String>,
    /// Most connections this replica opens.
    pub pool_size: usize,
    /// PEM file of the CA that signs the server's certificate: TLS required and verified.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is a secret: never in logs.
        f.debug_struct("PgOptions")
            .field("url", &self.url)
            .field("pool_size", &self.pool_size)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pub(super) pool: Pool,
    // Drives the connections; an Option so that Drop can shut it down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which is refused inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects and creates the schema if it does not exist (several replicas may start at
    /// once: the creation is serialized by an advisory lock).
    pub fn connect(options: &PgOptions) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| Error::Config(format!("[store] url: {e}")))?;
        if config.get_password().is_some() {
            return Err(Error::Config(
                "[store] url must not hold the password: use password_file (mode 0600) or \
                 LOCALCERT_POSTGRES_PASSWORD"
                    .into(),
            ));
        }
        if options.pool_size == 0 {
            return Err(Error::Config("[store] pool_size must be positive".into()));
        }
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        config
            .application_name("localcert-issuer")
            .connect_timeout(POOL_TIMEOUT)
            .keepalives_idle(Duration::from_secs(30));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("localcert-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Store(format!("starting the PostgreSQL runtime: {e}")))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &options.tls_ca_file {
            Some(ca_file) => {
                // TLS or nothing: never a plaintext fallback.
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = RustlsConnector::from_ca_file(ca_file)?;
                Manager::from_config(config, tls, manager_config)
            }
            None if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                return Err(Error::Config(
                    "[store] sslmode=require needs tls_ca_file (the CA of the server's \
                     certificate)"
                        .into(),
                ));
            }
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        // The pool's timers and connection tasks belong to the store's runtime.
        let pool = {
            let _context = runtime.enter();
            Pool::builder(manager)
                .max_size(options.pool_size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(POOL_TIMEOUT))
                .create_timeout(Some(POOL_TIMEOUT))
                .recycle_timeout(Some(POOL_TIMEOUT))
                .build()
                .map_err(|e| Error::Config(format!("[store]: {e}")))?
        };
        let store = Self {
            pool,
            runtime: Some(runtime),
        };
        store.block(async {
            let mut client = store.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(db_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(db_error)?;
            tx.batch_execute(SCHEMA).await.map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })?;
        Ok(store)
    }

    /// Runs `future` to completion on this thread while the store's runtime drives the
    /// connections. Works from any thread, inside another runtime or not: the trait is
    /// synchronous, and callers such as the CLI's commands run on async workers.
    pub(super) fn block<F: Future>(&self, future: F) -> F::Output {
        let _context = self.runtime.as_ref().map(tokio::runtime::Runtime::enter);
        // Unconstrained: called from inside a tokio task, the pool's and the client's futures
        // would spend that task's cooperative budget and, once it is gone, return Pending with
        // an immediate wake-up forever (this loop never yields to tokio, which refills it): a
        // livelock after about twenty calls.
        block_on(tokio::task::unconstrained(future))
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls on this thread, parks until woken.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Serializes schema creation across replicas starting together ("localcer" in ASCII).
const SCHEMA_LOCK: i64 = 0x6c6f_6361_6c63_6572;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relying_parties (
    origin TEXT PRIMARY KEY,
    eab_kid TEXT NOT NULL UNIQUE,
    eab_hmac_key BYTEA NOT NULL,
    status TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    eab_kid TEXT NOT NULL REFERENCES relying_parties(eab_kid),
    jwk TEXT NOT NULL,
    thumbprint TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_by_kid ON accounts(eab_kid);
DROP TABLE IF EXISTS nonces;
CREATE TABLE IF NOT EXISTS consumed_nonces (
    id BYTEA PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS consumed_nonces_by_expiry ON consumed_nonces(expires);
CREATE TABLE IF NOT EXISTS orders (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    names TEXT NOT NULL,
    status TEXT NOT NULL,
    expires BIGINT NOT NULL,
    star_end BIGINT,
    star_lifetime BIGINT,
    star_canceled BOOLEAN NOT NULL DEFAULT FALSE,
    certificate_id TEXT
);
CREATE INDEX IF NOT EXISTS orders_by_account ON orders(account_id, seq);
CREATE INDEX IF NOT EXISTS star_orders_renewing ON orders(seq)
    WHERE status = 'valid' AND star_end IS NOT NULL AND NOT star_canceled;
CREATE TABLE IF NOT EXISTS authorizations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    expires BIGINT NOT NULL,
    attested_spki BYTEA,
    user_handle BYTEA,
    device_certificate_sha256 TEXT,
    attested_at BIGINT
);
CREATE INDEX IF NOT EXISTS authorizations_by_order ON authorizations(order_id, seq);
CREATE TABLE IF NOT EXISTS certificates (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(id),
    serial TEXT NOT NULL UNIQUE,
    chain_pem TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT,
    revocation_reason SMALLINT,
    -- The certificate a STAR renewal replaced: at most one renewal of each.
    replaces TEXT UNIQUE REFERENCES certificates(id)
);
CREATE INDEX IF NOT EXISTS certificates_by_order ON certificates(order_id);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(not_after)
    WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    event TEXT NOT NULL,
    origin TEXT,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit(at);
";

pub(super) const ORDER_COLUMNS: &str = "o.id, o.account_id, o.names, o.status, o.expires, \
     o.star_end, o.star_lifetime, o.star_canceled, o.certificate_id";
pub(super) const AUTHZ_COLUMNS: &str = "id, order_id, name, status, token, expires, \
     attested_spki, user_handle, device_certificate_sha256, attested_at";
pub(super) const CERT_COLUMNS: &str =
    "id, order_id, serial, chain_pem, not_before, not_after, revoked_at, revocation_reason";

/// Whether a database error is the database being away (down, restarting, out of
/// connections) or a transient conflict, rather than a fault in a request or in the schema.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(state) => {
            let code = state.code();
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources
                || code.starts_with("57P") // shutting down, starting up
                || *state == SqlState::T_R_SERIALIZATION_FAILURE
                || *state == SqlState::T_R_DEADLOCK_DETECTED
        }
        // No SQLSTATE: the connection closed, or its socket failed.
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL {}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("PostgreSQL: {e}: {source}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

pub(super) fn db_error(e: tokio_postgres::Error) -> Error {
    if is_unavailable(&e) {
        Error::StoreUnavailable(describe(&e))
    } else {
        Error::Store(describe(&e))
    }
}

pub(super) fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => db_error(e),
        PoolError::Timeout(kind) => {
            Error::StoreUnavailable(format!("PostgreSQL: no connection ({kind:?} timed out)"))
        }
        other => Error::StoreUnavailable(format!("PostgreSQL pool: {other}")),
    }
}

// Statements are prepared once per connection (deadpool caches them) and reused.
type Params<'a> = [&'a (dyn ToSql + Sync)];

pub(super) async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, Error> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.execute(&statement, params).await.map_err(db_error)
}

pub(super) async fn query_opt<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, Error> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query_opt(&statement, params).await.map_err(db_error)
}

pub(super) async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, Error> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    client.query(&statement, params).await.map_err(db_error)
}

pub(super) fn count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

pub(super) fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub(super) async fn audit_in<C: GenericClient>(
    client: &C,
    entry: &AuditEntry,
) -> Result<(), Error> {
    execute(
        client,
        "INSERT INTO audit (at, event, origin, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        &[
            &unix(entry.at),
            &entry.event,
            &entry.origin,
            &entry.subject,
            &entry.detail,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Client, Error> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs `change` in one transaction and commits it with the audit entry it returns, so a
    /// change is never recorded without its audit line nor the reverse. An error rolls back.
    pub(super) fn audited<T>(
        &self,
        change: impl AsyncFnOnce(&Transaction<'_>) -> Result<(T, Option<AuditEntry>), Error>,
    ) -> Result<T, Error> {
        self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let (result, audit) = change(&tx).await?;
            if let Some(audit) = audit {
                audit_in(&tx, &audit).await?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(result)
        })
    }

    /// The row `sql` selects, if any, converted (outside any transaction).
    pub(super) fn read_one<T>(
        &self,
        sql: &str,
        params: &Params<'_>,
        from_row: fn(&Row) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.block(async { one(&self.client().await?, sql, params, from_row).await })
    }

    /// The rows `sql` selects, converted (outside any transaction).
    pub(super) fn read_all<T>(
        &self,
        sql: &str,
        params: &Params<'_>,
        from_row: fn(&Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        self.block(async { all(&self.client().await?, sql, params, from_row).await })
    }
}

/// The row `sql` selects, if any, converted.
pub(super) async fn one<C: GenericClient, T>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
    from_row: fn(&Row) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    query_opt(client, sql, params)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The rows `sql` selects, converted.
pub(super) async fn all<C: GenericClient, T>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
    from_row: fn(&Row) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    query(client, sql, params)
        .await?
        .iter()
        .map(from_row)
        .collect()
}
