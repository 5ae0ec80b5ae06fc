//! The operator's commands as library calls: init, relying parties, audit, serve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::SystemTime;

use localcert_issuer::Error;
use localcert_issuer::ca;
use localcert_issuer::config::Config;
use localcert_issuer::operator::{self, Bound, InitOptions};
use localcert_issuer::store::RelyingPartyStatus;
use localcert_proto::origin::Origin;

fn options() -> InitOptions {
    InitOptions {
        state_dir: "state".into(),
        root_key: Some("offline/root.key".into()),
        ca_name: "Test".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        manufacturer_roots: Vec::new(),
    }
}

#[test]
fn init_writes_config_ca_tls_and_database_once() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("issuer.toml");
    let now = SystemTime::now();
    let outcome = operator::init(&config_path, &options(), now).unwrap();
    assert!(outcome.config_written);
    assert_eq!(outcome.root_key, dir.path().join("offline/root.key"));
    let root_pem = std::fs::read(&outcome.root_cert).unwrap();
    let root_der = ca::pem_blocks(&root_pem, "CERTIFICATE").unwrap().remove(0);
    assert_eq!(outcome.root_fingerprint, ca::sha256_fingerprint(&root_der));
    assert!(outcome.tls.is_some());
    assert!(std::path::Path::new(&outcome.database).exists());
    let config = Config::load(&config_path).unwrap();
    assert_eq!(config.ca_files().root_key, outcome.root_key);
    // A second init refuses to overwrite the CA.
    assert!(matches!(
        operator::init(&config_path, &options(), now),
        Err(Error::AlreadyExists(_))
    ));
}

#[test]
fn relying_parties_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("issuer.toml");
    let now = SystemTime::now();
    operator::init(&config_path, &options(), now).unwrap();
    let config = Config::load(&config_path).unwrap();
    let origin = Origin::parse("https://vod.example.com").unwrap();
    let eab = operator::rp_add(&config, &origin, now).unwrap();
    assert!(eab.kid.starts_with("rp-"));
    assert_eq!(eab.hmac_key.len(), 43, "32 bytes, base64url");
    assert!(!format!("{eab:?}").contains(&eab.hmac_key));
    assert!(matches!(
        operator::rp_add(&config, &origin, now),
        Err(Error::AlreadyRegistered(_))
    ));
    let list = operator::rp_list(&config).unwrap();
    assert_eq!(
        (list.len(), list[0].status),
        (1, RelyingPartyStatus::Active)
    );
    let summary = operator::rp_revoke(&config, &origin, now).unwrap().unwrap();
    assert_eq!(summary.accounts, 0);
    let other = Origin::parse("https://other.example").unwrap();
    assert!(operator::rp_revoke(&config, &other, now).unwrap().is_none());
    assert_eq!(
        operator::rp_list(&config).unwrap()[0].status,
        RelyingPartyStatus::Revoked
    );
    let events: Vec<String> = operator::audit(&config, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["rp-added", "rp-revoked"]);
}

#[test]
fn commands_before_init_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new("state".into(), dir.path().to_owned());
    let Err(Error::Config(message)) = operator::rp_list(&config) else {
        panic!()
    };
    assert!(message.contains("issuer init"));
}

#[tokio::test]
async fn bind_serves_the_directory_url_and_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("issuer.toml");
    let outcome = operator::init(&config_path, &options(), SystemTime::now()).unwrap();
    let config = Config::load(&config_path).unwrap();
    // The root key is offline: serving does not need it.
    std::fs::remove_file(&outcome.root_key).unwrap();
    let bound = Bound::bind(&config).await.unwrap();
    let addr = bound.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    // Port 0 in the config: the URLs name the port the system chose.
    assert_ne!(addr.port(), 0);
    assert_eq!(
        bound.directory_url(),
        format!("https://localhost:{}/acme/directory", addr.port())
    );
    assert_eq!(bound.root_fingerprint(), outcome.root_fingerprint);
    bound.run(async {}).await.unwrap();
}

#[test]
fn init_keeps_an_operator_supplied_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("issuer.toml");
    std::fs::write(
        &config_path,
        "state_dir = \"state\"\n[tls]\ncert = \"mine.pem\"\nkey = \"mine.key\"\n",
    )
    .unwrap();
    let outcome = operator::init(&config_path, &options(), SystemTime::now()).unwrap();
    assert!(!outcome.config_written);
    assert_eq!(outcome.tls, None);
    assert!(!dir.path().join("state/tls.pem").exists());
    let config = Config::load(&config_path).unwrap();
    assert_eq!(config.tls_files().cert, dir.path().join("mine.pem"));
}
