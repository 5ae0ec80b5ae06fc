//! Certificates in the store contract: an issuance recorded exactly once or not at all (its
//! audit line with it), STAR renewals due at half the lifetime until canceled, revocation once
//! and the list of revoked unexpired certificates, and a relying party's revocation cascading
//! to its accounts, certificates and STAR orders.

use localcert_issuer::store::{
    AccountStatus, CertRecord, IssueOutcome, OrderStatus, RelyingPartyStatus, Store,
};
use localcert_proto::origin::Origin;

use super::backends::Db;
use super::orders::order_with;
use super::{attested, note, origin, seeded, t};

/// A certificate as the signer made it, before the store records it for its order.
pub(crate) fn new_cert(id: &str, serial: &str, from: u64, days: u64) -> CertRecord {
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

/// Issues `cert` for the order `order` if it is ready.
pub(crate) fn issue_ready(store: &dyn Store, order: &str, cert: &CertRecord) -> IssueOutcome {
    store
        .issue(order, OrderStatus::Ready, None, cert, &note("issued"))
        .unwrap()
}

/// Renews the STAR order `order`: `cert` replaces `replaces` if that is still its latest.
pub(crate) fn renew(
    store: &dyn Store,
    order: &str,
    replaces: &str,
    cert: &CertRecord,
) -> IssueOutcome {
    store
        .issue(
            order,
            OrderStatus::Valid,
            Some(replaces),
            cert,
            &note("issued"),
        )
        .unwrap()
}

/// Attests the authorization `authz` of the order `order` and issues `cert` for it.
pub(crate) fn attest_and_issue(store: &dyn Store, order: &str, authz: &str, cert: &CertRecord) {
    store
        .record_attestation(authz, &attested(), &note("attested"))
        .unwrap();
    assert!(matches!(
        issue_ready(store, order, cert),
        IssueOutcome::Issued(_)
    ));
}

pub(crate) fn issuance_is_recorded_exactly_once(db: &Db) {
    let store = seeded(db, false);
    // Not ready yet: nothing is recorded.
    let outcome = issue_ready(store.as_ref(), "order-1", &new_cert("cert-0", "00", 20, 7));
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
    attest_and_issue(
        store.as_ref(),
        "order-2",
        &authorizations[0].id,
        &new_cert("cert-y", "01", 20, 7),
    );
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

    let IssueOutcome::Issued(cert) =
        issue_ready(store.as_ref(), "order-1", &new_cert("cert-1", "02", 20, 7))
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
    let again = issue_ready(store.as_ref(), "order-1", &new_cert("cert-2", "03", 21, 7));
    assert!(matches!(again, IssueOutcome::NotReady(OrderStatus::Valid)));
    assert!(store.certificate("cert-2").unwrap().is_none());
    assert_eq!(issued_lines(store.as_ref()), 2, "order-2's and order-1's");
}

pub(crate) fn star_renewal_is_due_at_half_lifetime_until_canceled(db: &Db) {
    let store = seeded(db, true);
    attest_and_issue(
        store.as_ref(),
        "order-1",
        "authz-1",
        &new_cert("cert-1", "01", 0, 8),
    );
    assert!(store.star_orders_due(t(4 * 86_400 - 1)).unwrap().is_empty());
    let due = store.star_orders_due(t(4 * 86_400)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, "order-1");
    // A renewal replaces the latest certificate once.
    let renewed = renew(
        store.as_ref(),
        "order-1",
        "cert-1",
        &new_cert("cert-2", "02", 4 * 86_400, 8),
    );
    assert!(matches!(renewed, IssueOutcome::Issued(_)));
    let stale = renew(
        store.as_ref(),
        "order-1",
        "cert-1",
        &new_cert("cert-3", "03", 4 * 86_400, 8),
    );
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

pub(crate) fn certificates_are_revoked_once_and_listed_until_they_expire(db: &Db) {
    let store = seeded(db, false);
    attest_and_issue(
        store.as_ref(),
        "order-1",
        "authz-1",
        &new_cert("cert-1", "0b", 0, 7),
    );
    for (i, serial) in ["0a", "0c"].iter().enumerate() {
        let id = format!("order-{serial}");
        let (order, authorizations) = order_with(&id, &[&format!("tv{i}")]);
        store
            .create_order(&order, &authorizations, &note("order-created"))
            .unwrap();
        let days = if *serial == "0a" { 7 } else { 1 };
        let cert = new_cert(&format!("cert-{serial}"), serial, 0, days);
        attest_and_issue(store.as_ref(), &id, &authorizations[0].id, &cert);
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

pub(crate) fn revoking_a_relying_party_cascades(db: &Db) {
    let store = seeded(db, true);
    attest_and_issue(
        store.as_ref(),
        "order-1",
        "authz-1",
        &new_cert("cert-1", "01", 0, 7),
    );
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
