//! The origin's ACME account survives a restart: the issuer binds one account to an EAB key,
//! so the backend keeps the account's credentials in a 0600 file and loads them again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use localcert_issuer::store::Store;
use localcert_rp::config::Limits;

fn accounts_created(issuer: &Issuer) -> usize {
    issuer
        .store
        .audit_log(1000)
        .unwrap()
        .iter()
        .filter(|e| e.event == "account-created")
        .count()
}

#[tokio::test]
async fn a_restarted_backend_reuses_its_account() {
    let issuer = Issuer::start().await;
    let config = issuer.config(Limits::default());
    let file = config.acme.account_file.clone().unwrap();
    backend(&config).account_ready().await.unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved = std::fs::read_to_string(&file).unwrap();
    // The restarted backend loads the account; it does not make another one (the issuer
    // would refuse it: the EAB key is bound).
    backend(&config).account_ready().await.unwrap();
    assert_eq!(accounts_created(&issuer), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), saved);
    // And orders with it (a flow's start is a newOrder signed by the loaded key).
    let backend = backend(&config);
    let (flow, _) = start(&backend, &SimDevice::new("device-1")).await;
    assert!(!flow.is_empty());
}

#[tokio::test]
async fn without_its_account_file_a_backend_cannot_take_the_eab_key_again() {
    let issuer = Issuer::start().await;
    let mut config = issuer.config(Limits::default());
    config.acme.account_file = None;
    backend(&config).account_ready().await.unwrap();
    let error = backend(&config).account_ready().await.unwrap_err();
    assert!(error.to_string().contains("unauthorized"), "{error}");
    assert_eq!(accounts_created(&issuer), 1);
}

#[tokio::test]
async fn an_account_file_open_to_others_is_refused() {
    let issuer = Issuer::start().await;
    let config = issuer.config(Limits::default());
    let file = config.acme.account_file.clone().unwrap();
    backend(&config).account_ready().await.unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = backend(&config).account_ready().await.unwrap_err();
    assert!(error.to_string().contains("chmod 600"), "{error}");
}
