//! The store contract, run on every backend (SQLite always, PostgreSQL when asked for: see
//! store/backends.rs). Here: relying parties, single-use nonces, the audit log and the shared
//! fixtures; by subject: accounts (store/accounts.rs), orders (store/orders.rs), certificates
//! and revocation (store/certificates.rs), and the same rules with several handles (replicas)
//! racing on one database (store/races.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "store/backends.rs"]
#[macro_use]
mod backends;
#[path = "store/accounts.rs"]
mod accounts;
#[path = "store/certificates.rs"]
mod certificates;
#[path = "store/orders.rs"]
mod orders;
#[path = "store/races.rs"]
mod races;
#[path = "store/tls.rs"]
mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backends::Db;

use accounts::{
    account_keys_change_only_from_the_current_key, accounts_are_unique_by_key,
    an_eab_key_id_binds_one_account, audit_is_pruned_oldest_first_in_bounded_batches,
    is_eab_key_bound,
};
use certificates::{
    certificates_are_revoked_once_and_listed_until_they_expire, issuance_is_recorded_exactly_once,
    new_cert, revoking_a_relying_party_cascades,
    star_renewal_is_due_at_half_lifetime_until_canceled,
};
use localcert_issuer::nonce::NonceKey;
use localcert_issuer::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, AuthzStatus, Order, OrderStatus,
    RelyingParty, RelyingPartyStatus, SqliteStore, Star, Store,
};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use orders::{
    attestation_is_recorded_once_and_makes_the_order_ready,
    canceling_ends_pending_orders_and_star_renewals, order_with,
    orders_and_authorizations_keep_their_order, submitted_changes_answer_as_their_methods,
};
use races::{
    attestations_race_to_one_ready_order, finalizes_race_to_one_issuance,
    new_accounts_race_to_one_per_eab_key, nonce_races_to_one_taker,
    renewals_race_to_one_certificate,
};

contract!(
    relying_parties_are_unique,
    nonces_are_single_use_and_expire,
    accounts_are_unique_by_key,
    an_eab_key_id_binds_one_account,
    account_keys_change_only_from_the_current_key,
    audit_is_pruned_oldest_first_in_bounded_batches,
    orders_and_authorizations_keep_their_order,
    attestation_is_recorded_once_and_makes_the_order_ready,
    submitted_changes_answer_as_their_methods,
    issuance_is_recorded_exactly_once,
    star_renewal_is_due_at_half_lifetime_until_canceled,
    canceling_ends_pending_orders_and_star_renewals,
    certificates_are_revoked_once_and_listed_until_they_expire,
    revoking_a_relying_party_cascades,
    audit_log_keeps_the_latest_in_order,
    finalizes_race_to_one_issuance,
    renewals_race_to_one_certificate,
    attestations_race_to_one_ready_order,
    nonce_races_to_one_taker,
    new_accounts_race_to_one_per_eab_key,
    many_calls_from_inside_an_async_task_complete,
    calls_from_async_workers_of_either_runtime_complete,
);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn origin() -> Origin {
    Origin::parse("https://vod.example.com").unwrap()
}

fn rp() -> RelyingParty {
    RelyingParty {
        origin: origin(),
        eab_kid: "kid-1".into(),
        eab_hmac_key: vec![7; 32],
        status: RelyingPartyStatus::Active,
        created: t(0),
    }
}

/// A relying party, its account `acct-1` and order `order-1` (one name, pending).
fn seeded(db: &Db, star: bool) -> Arc<dyn Store> {
    let store = db.open();
    store.add_relying_party(&rp()).unwrap();
    store
        .create_account(
            &Account {
                id: "acct-1".into(),
                eab_kid: "kid-1".into(),
                origin: origin(),
                jwk: "{}".into(),
                thumbprint: "thumb-1".into(),
                status: AccountStatus::Valid,
            },
            &note("account-created"),
        )
        .unwrap();
    let name = LocalName::parse("tv.local").unwrap();
    let order = Order {
        id: "order-1".into(),
        account_id: "acct-1".into(),
        names: vec![name.clone()],
        status: OrderStatus::Pending,
        expires: t(3600),
        star: star.then_some(Star {
            end: t(30 * 86_400),
            lifetime: Duration::from_secs(7 * 86_400),
            canceled: false,
        }),
        certificate_id: None,
    };
    let authz = Authorization {
        id: "authz-1".into(),
        order_id: "order-1".into(),
        name,
        status: AuthzStatus::Pending,
        token: "token-1".into(),
        expires: t(300),
        attested: None,
    };
    store
        .create_order(&order, &[authz], &note("order-created"))
        .unwrap();
    store
}

fn attested() -> Attested {
    Attested {
        spki: vec![1, 2, 3],
        user_handle: b"user".to_vec(),
        device_certificate_sha256: "ab".into(),
        at: t(10),
    }
}

/// The audit line a change carries.
fn note(event: &str) -> AuditEntry {
    AuditEntry {
        at: t(0),
        event: event.into(),
        origin: Some(origin().to_string()),
        subject: "order-1".into(),
        detail: String::new(),
    }
}

fn relying_parties_are_unique(db: &Db) {
    let store = seeded(db, false);
    assert!(store.add_relying_party(&rp()).is_err());
    let all = store.relying_parties().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].eab_hmac_key, vec![7; 32]);
    assert!(
        !format!("{:?}", all[0]).contains("[7, 7"),
        "HMAC key must not be in Debug"
    );
    assert!(store.relying_party_by_kid("kid-1").unwrap().is_some());
    assert!(store.relying_party_by_kid("nope").unwrap().is_none());
}

fn nonces_are_single_use_and_expire(db: &Db) {
    let store = db.open();
    let key = NonceKey::from_bytes(&[3; 32]);
    let n1 = key.check(&key.mint(t(100)).unwrap(), t(0)).unwrap();
    let n2 = key.check(&key.mint(t(100)).unwrap(), t(0)).unwrap();
    assert!(store.consume_nonce(&n1, t(50)).unwrap());
    assert!(!store.consume_nonce(&n1, t(50)).unwrap(), "replayed nonce");
    assert!(!store.consume_nonce(&n2, t(100)).unwrap(), "expired nonce");
}

fn account(id: &str, thumbprint: &str) -> Account {
    Account {
        id: id.into(),
        eab_kid: "kid-1".into(),
        origin: origin(),
        jwk: format!("{{\"k\":\"{id}\"}}"),
        thumbprint: thumbprint.into(),
        status: AccountStatus::Valid,
    }
}

fn audit_log_keeps_the_latest_in_order(db: &Db) {
    let store = db.open();
    for i in 0..5 {
        store
            .audit(&AuditEntry {
                at: t(i),
                event: "refused".into(),
                origin: (i % 2 == 0).then(|| "https://vod.example.com".to_owned()),
                subject: format!("subject {i}"),
                detail: format!("reason {i}"),
            })
            .unwrap();
    }
    let latest = store.audit_log(3).unwrap();
    let subjects: Vec<_> = latest.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["subject 2", "subject 3", "subject 4"]);
    assert_eq!(latest[0].at, t(2));
    assert_eq!(latest[0].origin.as_deref(), Some("https://vod.example.com"));
    assert_eq!(latest[1].origin, None);
    assert_eq!(store.audit_log(100).unwrap().len(), 5);
    assert!(store.audit_log(0).unwrap().is_empty());
}

#[test]
fn file_store_is_private_and_persistent() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.sqlite");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.add_relying_party(&rp()).unwrap();
        // Write-ahead logging: commits go to the -wal file first.
        assert!(dir.path().join("issuer.sqlite-wal").exists());
        store
            .audit(&AuditEntry {
                at: t(1),
                event: "refused".into(),
                origin: None,
                subject: "x".into(),
                detail: "because".into(),
            })
            .unwrap();
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.relying_parties().unwrap().len(), 1);
    let log = store.audit_log(1).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].detail, "because");
}

/// The trait is synchronous, but callers such as the CLI's commands run inside tokio tasks: a
/// few hundred calls from one task must all complete (PostgreSQL's store once livelocked after
/// about twenty, its futures starved by the task's spent cooperative budget).
fn many_calls_from_inside_an_async_task_complete(db: &Db) {
    let store = db.open();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            for _ in 0..300 {
                store.relying_parties().unwrap();
            }
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("300 store calls from one async task did not complete in 60 s");
}

/// A store whose waits hand off an async worker (SQLite's) works from a multi-thread
/// runtime's worker, and where handing off is impossible: on a current-thread runtime (tokio
/// would panic if asked to), where it blocks.
fn calls_from_async_workers_of_either_runtime_complete(db: &Db) {
    let store = db.open();
    store.add_relying_party(&rp()).unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (i, runtime) in [multi, current].iter().enumerate() {
        let store = store.clone();
        let changed = runtime.block_on(async move {
            tokio::spawn(async move {
                let entry = AuditEntry {
                    subject: format!("from runtime {i}"),
                    ..note("refused")
                };
                store.audit(&entry).unwrap();
                store.audit_log(1).unwrap().remove(0).subject
            })
            .await
            .unwrap()
        });
        assert_eq!(changed, format!("from runtime {i}"));
    }
}
