//! The store contract, run on every backend (SQLite always, PostgreSQL when asked for: see
//! store/backends.rs): single-use nonces, conditional transitions, issuance that is recorded
//! exactly once or not at all, relying-party revocation, the audit log, and the same rules with
//! several handles (replicas) racing on one database (store/races.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "store/backends.rs"]
#[macro_use]
mod backends;
#[path = "store/accounts.rs"]
mod accounts;
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
use localcert_issuer::nonce::NonceKey;
use localcert_issuer::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, AuthzStatus, CertRecord,
    IssueOutcome, Order, OrderStatus, RelyingParty, RelyingPartyStatus, SqliteStore, Star, Store,
};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
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

/// A certificate as the signer made it, before the store records it for its order.
fn new_cert(id: &str, serial: &str, from: u64, days: u64) -> CertRecord {
    CertRecord {
        id: id.into(),
        order_id: String::new(),
        serial: serial.into(),
        chain_pem: "PEM".into(),
        not_before: t(from),
        not_after: t(from + days * 86_400),
        revoked: None,
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

fn attestation_is_recorded_once_and_makes_the_order_ready(db: &Db) {
    let store = seeded(db, false);
    assert!(
        store
            .record_attestation("authz-1", &attested(), &note("attested"))
            .unwrap()
    );
    assert!(
        !store
            .record_attestation("authz-1", &attested(), &note("attested"))
            .unwrap(),
        "replayed challenge"
    );
    let authz = store.authorization("authz-1").unwrap().unwrap();
    assert_eq!(authz.status, AuthzStatus::Valid);
    assert_eq!(authz.attested, Some(attested()));
    assert_eq!(
        store.order("order-1").unwrap().unwrap().status,
        OrderStatus::Ready
    );
}

fn issuance_is_recorded_exactly_once(db: &Db) {
    let store = seeded(db, false);
    // Not ready yet: nothing is recorded.
    let outcome = store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-0", "00", 20, 7),
            &note("issued"),
        )
        .unwrap();
    assert!(matches!(
        outcome,
        IssueOutcome::NotReady(OrderStatus::Pending)
    ));
    assert!(store.certificate("cert-0").unwrap().is_none());

    store
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    // A change that fails inside its transaction (here: a serial already used by another
    // order) leaves no trace, its audit line included, and the order ready.
    let (other, authorizations) = order_with("order-2", &["radio"]);
    store
        .create_order(&other, &authorizations, &note("order-created"))
        .unwrap();
    store
        .record_attestation(&authorizations[0].id, &attested(), &note("attested"))
        .unwrap();
    store
        .issue(
            "order-2",
            OrderStatus::Ready,
            None,
            &new_cert("cert-y", "01", 20, 7),
            &note("issued"),
        )
        .unwrap();
    let failed = store.issue(
        "order-1",
        OrderStatus::Ready,
        None,
        &new_cert("cert-x", "01", 20, 7),
        &note("issued"),
    );
    assert!(failed.is_err());
    assert!(store.certificate("cert-x").unwrap().is_none());
    assert_eq!(
        store.order("order-1").unwrap().unwrap().status,
        OrderStatus::Ready
    );
    let issued_lines = |store: &dyn Store| {
        store
            .audit_log(100)
            .unwrap()
            .into_iter()
            .filter(|e| e.event == "issued")
            .count()
    };
    assert_eq!(issued_lines(store.as_ref()), 1, "order-2's only");

    let IssueOutcome::Issued(cert) = store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-1", "02", 20, 7),
            &note("issued"),
        )
        .unwrap()
    else {
        panic!("not issued")
    };
    assert_eq!(store.certificate("cert-1").unwrap(), Some(cert.clone()));
    assert_eq!(cert.order_id, "order-1");
    assert_eq!(store.certificate_by_serial("02").unwrap(), Some(cert));
    let order = store.order("order-1").unwrap().unwrap();
    assert_eq!(
        (order.status, order.certificate_id.as_deref()),
        (OrderStatus::Valid, Some("cert-1"))
    );
    // A second finalize does not issue again.
    let again = store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-2", "03", 21, 7),
            &note("issued"),
        )
        .unwrap();
    assert!(matches!(again, IssueOutcome::NotReady(OrderStatus::Valid)));
    assert!(store.certificate("cert-2").unwrap().is_none());
    assert_eq!(issued_lines(store.as_ref()), 2, "order-2's and order-1's");
}

fn star_renewal_is_due_at_half_lifetime_until_canceled(db: &Db) {
    let store = seeded(db, true);
    store
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-1", "01", 0, 8),
            &note("issued"),
        )
        .unwrap();
    assert!(store.star_orders_due(t(4 * 86_400 - 1)).unwrap().is_empty());
    let due = store.star_orders_due(t(4 * 86_400)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, "order-1");
    // A renewal replaces the latest certificate once.
    let renewed = store
        .issue(
            "order-1",
            OrderStatus::Valid,
            Some("cert-1"),
            &new_cert("cert-2", "02", 4 * 86_400, 8),
            &note("issued"),
        )
        .unwrap();
    assert!(matches!(renewed, IssueOutcome::Issued(_)));
    let stale = store
        .issue(
            "order-1",
            OrderStatus::Valid,
            Some("cert-1"),
            &new_cert("cert-3", "03", 4 * 86_400, 8),
            &note("issued"),
        )
        .unwrap();
    assert!(matches!(stale, IssueOutcome::NotReady(_)));
    assert!(store.star_orders_due(t(4 * 86_400 + 1)).unwrap().is_empty());
    store.cancel_order("order-1").unwrap();
    assert!(store.star_orders_due(t(9 * 86_400)).unwrap().is_empty());
    assert!(
        store
            .order("order-1")
            .unwrap()
            .unwrap()
            .star
            .unwrap()
            .canceled
    );
}

fn revoking_a_relying_party_cascades(db: &Db) {
    let store = seeded(db, true);
    store
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-1", "01", 0, 7),
            &note("issued"),
        )
        .unwrap();
    let summary = store
        .revoke_relying_party(&origin(), t(100))
        .unwrap()
        .unwrap();
    assert_eq!(
        (summary.accounts, summary.certificates, summary.star_orders),
        (1, 1, 1)
    );
    assert_eq!(
        store.account("acct-1").unwrap().unwrap().status,
        AccountStatus::Revoked
    );
    assert_eq!(
        store.relying_parties().unwrap()[0].status,
        RelyingPartyStatus::Revoked
    );
    let revoked = store.revoked_unexpired(t(100)).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].revoked, Some((t(100), 9)));
    assert!(store.star_orders_due(t(6 * 86_400)).unwrap().is_empty());
    let unknown = Origin::parse("https://unknown.example").unwrap();
    assert_eq!(store.revoke_relying_party(&unknown, t(100)).unwrap(), None);
    assert!(
        store
            .audit_log(10)
            .unwrap()
            .iter()
            .any(|e| e.event == "rp-revoked")
    );
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

/// A pending order of `acct-1` with one pending authorization per name.
fn order_with(id: &str, labels: &[&str]) -> (Order, Vec<Authorization>) {
    let names: Vec<LocalName> = labels
        .iter()
        .map(|l| LocalName::parse(&format!("{l}.local")).unwrap())
        .collect();
    let authorizations = names
        .iter()
        .enumerate()
        .map(|(i, name)| Authorization {
            id: format!("{id}-authz-{i}"),
            order_id: id.into(),
            name: name.clone(),
            status: AuthzStatus::Pending,
            token: format!("{id}-token-{i}"),
            expires: t(300),
            attested: None,
        })
        .collect();
    let order = Order {
        id: id.into(),
        account_id: "acct-1".into(),
        names,
        status: OrderStatus::Pending,
        expires: t(3600),
        star: None,
        certificate_id: None,
    };
    (order, authorizations)
}

fn orders_and_authorizations_keep_their_order(db: &Db) {
    let store = seeded(db, false);
    // Ids that sort differently from their creation order.
    for id in ["order-z", "order-a", "order-m"] {
        let (order, authorizations) = order_with(id, &["tv", "radio", "lamp"]);
        store
            .create_order(&order, &authorizations, &note("order-created"))
            .unwrap();
    }
    assert_eq!(
        store.order_ids("acct-1").unwrap(),
        ["order-1", "order-z", "order-a", "order-m"]
    );
    assert!(store.order_ids("nobody").unwrap().is_empty());
    let (order, authorizations) = order_with("order-a", &["tv", "radio", "lamp"]);
    assert_eq!(store.order("order-a").unwrap(), Some(order));
    assert_eq!(store.authorizations("order-a").unwrap(), authorizations);
    assert_eq!(
        store.authorization("order-a-authz-1").unwrap().as_ref(),
        Some(&authorizations[1])
    );
    assert!(store.order("nope").unwrap().is_none());
    assert!(store.authorization("nope").unwrap().is_none());
    // An existing id is refused, and nothing of the refused order is stored.
    let (mut again, mut authorizations) = order_with("order-a", &["other"]);
    again.names[0] = LocalName::parse("other.local").unwrap();
    authorizations[0].id = "fresh-authz".into();
    assert!(
        store
            .create_order(&again, &authorizations, &note("order-created"))
            .is_err()
    );
    assert!(store.authorization("fresh-authz").unwrap().is_none());
}

fn canceling_ends_pending_orders_and_star_renewals(db: &Db) {
    let store = seeded(db, true);
    let (order, authorizations) = order_with("order-2", &["radio"]);
    store
        .create_order(&order, &authorizations, &note("order-created"))
        .unwrap();
    store.cancel_order("order-2").unwrap();
    assert_eq!(
        store.order("order-2").unwrap().unwrap().status,
        OrderStatus::Invalid
    );
    // An issued STAR order stays valid (its certificate stays usable) but stops renewing.
    store
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-1", "01", 0, 8),
            &note("issued"),
        )
        .unwrap();
    store.cancel_order("order-1").unwrap();
    let order = store.order("order-1").unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Valid);
    assert!(order.star.unwrap().canceled);
    let renewal = store
        .issue(
            "order-1",
            OrderStatus::Valid,
            Some("cert-1"),
            &new_cert("cert-2", "02", 4 * 86_400, 8),
            &note("issued"),
        )
        .unwrap();
    assert!(matches!(
        renewal,
        IssueOutcome::NotReady(OrderStatus::Valid)
    ));
    assert!(store.certificate("cert-2").unwrap().is_none());
}

fn certificates_are_revoked_once_and_listed_until_they_expire(db: &Db) {
    let store = seeded(db, false);
    store
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("cert-1", "0b", 0, 7),
            &note("issued"),
        )
        .unwrap();
    for (i, serial) in ["0a", "0c"].iter().enumerate() {
        let id = format!("order-{serial}");
        let (order, authorizations) = order_with(&id, &[&format!("tv{i}")]);
        store
            .create_order(&order, &authorizations, &note("order-created"))
            .unwrap();
        store
            .record_attestation(&authorizations[0].id, &attested(), &note("attested"))
            .unwrap();
        let days = if *serial == "0a" { 7 } else { 1 };
        store
            .issue(
                &id,
                OrderStatus::Ready,
                None,
                &new_cert(&format!("cert-{serial}"), serial, 0, days),
                &note("issued"),
            )
            .unwrap();
    }
    assert!(store.revoked_unexpired(t(10)).unwrap().is_empty());
    for id in ["cert-1", "cert-0c", "cert-0a"] {
        assert!(
            store
                .revoke_certificate(id, 1, t(10), &note("revoked"))
                .unwrap()
        );
    }
    assert!(
        !store
            .revoke_certificate("cert-1", 4, t(11), &note("revoked"))
            .unwrap(),
        "twice"
    );
    assert!(
        !store
            .revoke_certificate("nope", 1, t(11), &note("revoked"))
            .unwrap()
    );
    let listed: Vec<_> = store
        .revoked_unexpired(t(10))
        .unwrap()
        .into_iter()
        .map(|c| (c.serial, c.revoked))
        .collect();
    assert_eq!(
        listed,
        [
            ("0a".to_owned(), Some((t(10), 1))),
            ("0b".to_owned(), Some((t(10), 1))),
            ("0c".to_owned(), Some((t(10), 1))),
        ]
    );
    // The one-day certificate leaves the list once it has expired.
    let later: Vec<_> = store
        .revoked_unexpired(t(2 * 86_400))
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(later, ["0a", "0b"]);
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
