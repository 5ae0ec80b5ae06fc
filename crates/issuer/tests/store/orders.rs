//! Orders in the store contract: ids and authorizations kept in creation order, an existing id
//! refused whole, an attestation recorded once and making the order ready, and a cancel that
//! ends a pending order or a STAR order's renewals.

use localcert_issuer::store::{Authorization, AuthzStatus, IssueOutcome, Order, OrderStatus};
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
