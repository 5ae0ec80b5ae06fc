//! The databases the store contract runs on: a SQLite file in a temporary directory, always;
//! a fresh schema in the PostgreSQL database named by `LOCALCERT_TEST_POSTGRES_URL` (password
//! in `LOCALCERT_POSTGRES_PASSWORD`, as the issuer reads it), only when the tests are asked for
//! (`--include-ignored`) - and then a missing URL fails instead of passing silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use localcert_issuer::store::{PgOptions, PgStore, SqliteStore, Store};

/// The variable that names the PostgreSQL database for the contract tests.
pub(crate) const POSTGRES_URL: &str = "LOCALCERT_TEST_POSTGRES_URL";
/// The variable that holds its role's password, if it has one.
pub(crate) const POSTGRES_PASSWORD: &str = "LOCALCERT_POSTGRES_PASSWORD";
/// The variable that names the CA of the server's certificate: then the store connects with
/// TLS, verified.
pub(crate) const POSTGRES_CA: &str = "LOCALCERT_TEST_POSTGRES_CA";

/// One empty database; [`Db::open`] gives another handle on it (another replica).
#[derive(Debug)]
pub(crate) struct Db {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite(tempfile::TempDir),
    Postgres {
        url: String,
        admin: Box<tokio_postgres::Config>,
        schema: String,
    },
}

impl Db {
    pub(crate) fn sqlite() -> Self {
        Self {
            kind: Kind::Sqlite(tempfile::tempdir().unwrap()),
        }
    }

    pub(crate) fn postgres() -> Self {
        let url = std::env::var(POSTGRES_URL).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL} is not set: the PostgreSQL store contract did NOT run \
                 (tests/postgres/run.sh starts a database and sets it)"
            )
        });
        let mut admin: tokio_postgres::Config = url.parse().unwrap();
        if let Ok(password) = std::env::var(POSTGRES_PASSWORD) {
            admin.password(password);
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "contract_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        admin_sql(&admin, &format!("CREATE SCHEMA {schema}"));
        let separator = if url.contains('?') { '&' } else { '?' };
        Self {
            kind: Kind::Postgres {
                url: format!("{url}{separator}options=-csearch_path%3D{schema}"),
                admin: Box::new(admin),
                schema,
            },
        }
    }

    /// Whether consumed nonces are shared by the handles (PostgreSQL: replicas share them
    /// through the database; SQLite: single node, each process keeps its own in memory).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }

    /// The first column of the first row of `sql`, run as the test's administrator.
    pub(crate) fn admin_query_bool(&self, sql: &str) -> bool {
        let Kind::Postgres { admin, .. } = &self.kind else {
            panic!("not PostgreSQL");
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = admin.connect(tokio_postgres::NoTls).await.unwrap();
            let connection = tokio::spawn(connection);
            let value = client.query_one(sql, &[]).await.unwrap().get(0);
            drop(client);
            let _ = connection.await;
            value
        })
    }

    /// A new handle on this database.
    pub(crate) fn open(&self) -> Arc<dyn Store> {
        match &self.kind {
            Kind::Sqlite(dir) => {
                Arc::new(SqliteStore::open(&dir.path().join("issuer.sqlite")).unwrap())
            }
            Kind::Postgres { url, .. } => Arc::new(
                PgStore::connect(&PgOptions {
                    url: url.clone(),
                    password: std::env::var(POSTGRES_PASSWORD).ok(),
                    pool_size: 8,
                    tls_ca_file: std::env::var_os(POSTGRES_CA).map(Into::into),
                })
                .unwrap(),
            ),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Kind::Postgres { admin, schema, .. } = &self.kind {
            admin_sql(admin, &format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

fn admin_sql(config: &tokio_postgres::Config, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = connection.await;
    });
}

/// Runs each named contract case (a `fn(&Db)` in the including file) on both backends.
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                super::$case(&super::backends::Db::sqlite());
            })+
        }
        mod postgres {
            $(#[test]
            #[ignore = "needs PostgreSQL: run tests/postgres/run.sh, or set \
                        LOCALCERT_TEST_POSTGRES_URL and pass --include-ignored"]
            fn $case() {
                super::$case(&super::backends::Db::postgres());
            })+
        }
    };
}
