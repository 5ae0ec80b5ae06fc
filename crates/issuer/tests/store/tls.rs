//! TLS to PostgreSQL (run by tests/postgres/run.sh, whose cluster has a certificate from its own
//! CA): the store's connections are TLS when a CA file is configured, a certificate from
//! another CA is refused, and `sslmode=require` without a CA file is a configuration error.

use std::sync::Arc;

use localcert_issuer::store::{PgOptions, PgStore, Store};

use super::backends::{Db, POSTGRES_CA, POSTGRES_PASSWORD, POSTGRES_URL};

fn options(tls_ca_file: Option<std::path::PathBuf>) -> PgOptions {
    PgOptions {
        url: std::env::var(POSTGRES_URL).unwrap(),
        password: std::env::var(POSTGRES_PASSWORD).ok(),
        pool_size: 2,
        tls_ca_file,
    }
}

#[test]
#[ignore = "needs PostgreSQL with TLS: run tests/postgres/run.sh"]
fn postgres_connections_are_tls_verified_against_the_ca_file() {
    let ca = std::env::var_os(POSTGRES_CA).unwrap_or_else(|| {
        panic!("{POSTGRES_CA} is not set: the TLS case did NOT run (tests/postgres/run.sh sets it)")
    });
    // The contract's own handles: each query made over TLS, as the server sees it.
    let db = Db::postgres();
    let store: Arc<dyn Store> = db.open();
    store.relying_parties().unwrap();
    let tls: bool = db.admin_query_bool(
        "SELECT bool_and(s.ssl) AND count(*) > 0 FROM pg_stat_ssl s
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'localcert-issuer'",
    );
    assert!(tls, "the store's connections are not all TLS");
    drop(store);

    // A server certificate from another CA: no connection.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let error = PgStore::connect(&options(Some(other_ca)))
        .unwrap_err()
        .to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // TLS demanded without a CA to verify with: refused before connecting.
    let mut plain = options(None);
    plain
        .url
        .push_str(if plain.url.contains('?') { "&" } else { "?" });
    plain.url.push_str("sslmode=require");
    let error = PgStore::connect(&plain).unwrap_err().to_string();
    assert!(error.contains("tls_ca_file"), "{error}");
    assert!(std::path::Path::new(&ca).exists());
}
