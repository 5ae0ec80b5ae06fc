//! Orders in the store contract: ids and authorizations kept in creation order, an existing id
//! refused whole, an attestation recorded once and making the order ready, and a cancel that
//! ends a pending order or a STAR order's renewals; the changes submitted whole answer as
//! their methods do.

use localcert_issuer::store::{
    Authorization, AuthzStatus, Change, Changed, IssueOutcome, Order, OrderStatus, Store,
};
use localcert_proto::name::LocalName;

use super::backends::Db;
use super::certificates::{attest_and_issue, new_cert, renew};
use super::{attested, note, seeded, t};

/// A pending order of `acct-1` with one pending authorization per name.
pub(crate) fn order_with(id: &str, labels: &[&str]) -> (Order, Vec<Authorization>) {
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

pub(crate) fn orders_and_authorizations_keep_their_order(db: &Db) {
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

pub(crate) fn attestation_is_recorded_once_and_makes_the_order_ready(db: &Db) {
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

pub(crate) fn canceling_ends_pending_orders_and_star_renewals(db: &Db) {
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
    attest_and_issue(
        store.as_ref(),
        "order-1",
        "authz-1",
        &new_cert("cert-1", "01", 0, 8),
    );
    store.cancel_order("order-1").unwrap();
    let order = store.order("order-1").unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Valid);
    assert!(order.star.unwrap().canceled);
    let renewal = renew(
        store.as_ref(),
        "order-1",
        "cert-1",
        &new_cert("cert-2", "02", 4 * 86_400, 8),
    );
    assert!(matches!(
        renewal,
        IssueOutcome::NotReady(OrderStatus::Valid)
    ));
    assert!(store.certificate("cert-2").unwrap().is_none());
}

/// Submits `change` ([`Store::submit`]) and waits for its answer, which must come exactly once.
fn submitted(store: &dyn Store, change: Change) -> Result<Changed, localcert_issuer::Error> {
    let (done, answer) = std::sync::mpsc::channel();
    store.submit(change, Box::new(move |result| done.send(result).unwrap()));
    let result = answer.recv().expect("submit answered");
    assert!(answer.recv().is_err(), "submit answers exactly once");
    result
}

/// The changes every issuance makes, submitted whole (as the server does on its async
/// workers): each answers with what its own method returns, and what it answered is in the
/// store, with its audit line; a change that fails inside its transaction leaves no trace.
pub(crate) fn submitted_changes_answer_as_their_methods(db: &Db) {
    let store = seeded(db, false);
    let (order, authorizations) = order_with("order-s", &["tv"]);
    let create = || Change::CreateOrder {
        order: order.clone(),
        authorizations: authorizations.clone(),
        audit: note("order-created"),
    };
    assert!(matches!(
        submitted(store.as_ref(), create()),
        Ok(Changed::Created)
    ));
    assert_eq!(store.order("order-s").unwrap(), Some(order.clone()));
    assert!(
        submitted(store.as_ref(), create()).is_err(),
        "an existing id"
    );
    let attest = || Change::RecordAttestation {
        authz_id: authorizations[0].id.clone(),
        attested: attested(),
        audit: note("attested"),
    };
    assert!(matches!(
        submitted(store.as_ref(), attest()),
        Ok(Changed::Recorded(true))
    ));
    assert!(matches!(
        submitted(store.as_ref(), attest()),
        Ok(Changed::Recorded(false))
    ));
    let issue = |id: &str, serial: &str| Change::Issue {
        order_id: "order-s".into(),
        expected: OrderStatus::Ready,
        cert: new_cert(id, serial, 20, 7),
        audit: note("issued"),
    };
    // The serial of order-1's certificate: refused inside the transaction, nothing kept.
    let (order_1, _) = order_with("order-1", &["tv"]);
    store
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    let first = store
        .issue(
            &order_1.id,
            OrderStatus::Ready,
            None,
            &new_cert("cert-1", "0a", 20, 7),
            &note("issued"),
        )
        .unwrap();
    assert!(matches!(first, IssueOutcome::Issued(_)));
    assert!(submitted(store.as_ref(), issue("cert-dup", "0a")).is_err());
    assert!(store.certificate("cert-dup").unwrap().is_none());
    assert!(matches!(
        submitted(store.as_ref(), issue("cert-s", "0b")),
        Ok(Changed::Issued(IssueOutcome::Issued(_)))
    ));
    assert_eq!(
        store.order("order-s").unwrap().unwrap().status,
        OrderStatus::Valid
    );
    assert!(matches!(
        submitted(store.as_ref(), issue("cert-t", "0c")),
        Ok(Changed::Issued(IssueOutcome::NotReady(OrderStatus::Valid)))
    ));
    let events: Vec<String> = store
        .audit_log(100)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    // seeded's lines, then: order-created, attested, attested (order-1), issued (order-1),
    // issued (order-s); nothing of the refused or unanswered-true changes.
    let tail = &events[events.len() - 5..];
    assert_eq!(
        tail,
        ["order-created", "attested", "attested", "issued", "issued"]
    );
}
