//! The SQLite store: single-use nonces, conditional transitions, issuance that is recorded
//! exactly once or not at all, relying-party revocation, the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use localcert_issuer::Error;
use localcert_issuer::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, AuthzStatus, IssueOutcome,
    NewCert, Order, OrderStatus, RelyingParty, RelyingPartyStatus, SqliteStore, Star, Store,
};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

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

fn seeded(star: bool) -> SqliteStore {
    let store = SqliteStore::in_memory().unwrap();
    store.add_relying_party(&rp()).unwrap();
    store
        .create_account(&Account {
            id: "acct-1".into(),
            eab_kid: "kid-1".into(),
            origin: origin(),
            jwk: "{}".into(),
            thumbprint: "thumb-1".into(),
            status: AccountStatus::Valid,
        })
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
    store.create_order(&order, &[authz]).unwrap();
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

fn new_cert(serial: &str, from: u64, days: u64) -> NewCert {
    NewCert {
        serial: serial.into(),
        chain_pem: "PEM".into(),
        not_before: t(from),
        not_after: t(from + days * 86_400),
    }
}

#[test]
fn relying_parties_are_unique() {
    let store = seeded(false);
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

#[test]
fn nonces_are_single_use_and_expire() {
    let store = SqliteStore::in_memory().unwrap();
    store.put_nonce("n1", t(100)).unwrap();
    store.put_nonce("n2", t(100)).unwrap();
    assert!(store.take_nonce("n1", t(50)).unwrap());
    assert!(!store.take_nonce("n1", t(50)).unwrap(), "replayed nonce");
    assert!(!store.take_nonce("n2", t(100)).unwrap(), "expired nonce");
    assert!(!store.take_nonce("never", t(0)).unwrap());
}

#[test]
fn attestation_is_recorded_once_and_makes_the_order_ready() {
    let store = seeded(false);
    assert!(store.record_attestation("authz-1", &attested()).unwrap());
    assert!(
        !store.record_attestation("authz-1", &attested()).unwrap(),
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

#[test]
fn issuance_is_recorded_exactly_once() {
    let store = seeded(false);
    let mut sign = || Ok(new_cert("01", 20, 7));
    // Not ready yet: nothing is signed.
    let mut signed = false;
    let outcome = store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            "cert-0",
            t(20),
            &mut || {
                signed = true;
                Ok(new_cert("00", 20, 7))
            },
        )
        .unwrap();
    assert!(matches!(
        outcome,
        IssueOutcome::NotReady(OrderStatus::Pending)
    ));
    assert!(!signed);

    store.record_attestation("authz-1", &attested()).unwrap();
    // A failure after signing and before recording (a crash) leaves no trace and the order
    // ready, so it can be finalized again.
    let failed = store.issue(
        "order-1",
        OrderStatus::Ready,
        None,
        "cert-x",
        t(20),
        &mut || Err(Error::Certificate("simulated crash".into())),
    );
    assert!(failed.is_err());
    assert!(store.certificate("cert-x").unwrap().is_none());
    assert_eq!(
        store.order("order-1").unwrap().unwrap().status,
        OrderStatus::Ready
    );

    let IssueOutcome::Issued(cert) = store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            "cert-1",
            t(20),
            &mut sign,
        )
        .unwrap()
    else {
        panic!("not issued")
    };
    assert_eq!(store.certificate("cert-1").unwrap(), Some(cert.clone()));
    assert_eq!(store.certificate_by_serial("01").unwrap(), Some(cert));
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
            "cert-2",
            t(21),
            &mut sign,
        )
        .unwrap();
    assert!(matches!(again, IssueOutcome::NotReady(OrderStatus::Valid)));
    assert!(store.certificate("cert-2").unwrap().is_none());
    let issued: Vec<_> = store
        .audit_log(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "issued")
        .collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].origin.as_deref(), Some("https://vod.example.com"));
}

#[test]
fn star_renewal_is_due_at_half_lifetime_until_canceled() {
    let store = seeded(true);
    store.record_attestation("authz-1", &attested()).unwrap();
    store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            "cert-1",
            t(0),
            &mut || Ok(new_cert("01", 0, 8)),
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
            "cert-2",
            t(4 * 86_400),
            &mut || Ok(new_cert("02", 4 * 86_400, 8)),
        )
        .unwrap();
    assert!(matches!(renewed, IssueOutcome::Issued(_)));
    let stale = store
        .issue(
            "order-1",
            OrderStatus::Valid,
            Some("cert-1"),
            "cert-3",
            t(4 * 86_400),
            &mut || Ok(new_cert("03", 4 * 86_400, 8)),
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

#[test]
fn revoking_a_relying_party_cascades() {
    let store = seeded(true);
    store.record_attestation("authz-1", &attested()).unwrap();
    store
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            "cert-1",
            t(0),
            &mut || Ok(new_cert("01", 0, 7)),
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
