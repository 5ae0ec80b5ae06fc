//! The contract under contention: threads on several handles of one database (replicas of the
//! issuer), released together by a barrier, race for the same transition; exactly one wins.

use std::sync::{Arc, Barrier};

use localcert_issuer::nonce::{NonceId, NonceKey};
use localcert_issuer::store::{IssueOutcome, OrderStatus, Store};

use super::seeded;

use super::backends::Db;
use super::{account, attested, is_eab_key_bound, new_cert, note, order_with, rp};

const HANDLES: usize = 3;
const THREADS: usize = 8;

/// Runs `race(thread, store)` on [`THREADS`] threads spread over [`HANDLES`] handles, all
/// released at once, and returns what each returned.
fn race<T: Send>(
    stores: &[Arc<dyn Store>],
    race: impl Fn(usize, &dyn Store) -> T + Sync,
) -> Vec<T> {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let store = &stores[i % stores.len()];
                let (barrier, race) = (&barrier, &race);
                scope.spawn(move || {
                    barrier.wait();
                    race(i, store.as_ref())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn replicas(db: &Db, first: Arc<dyn Store>) -> Vec<Arc<dyn Store>> {
    let mut stores = vec![first];
    stores.extend((1..HANDLES).map(|_| db.open()));
    stores
}

fn issued(outcomes: &[IssueOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, IssueOutcome::Issued(_)))
        .count()
}

pub(crate) fn finalizes_race_to_one_issuance(db: &Db) {
    let stores = replicas(db, seeded(db, false));
    for round in 0..5 {
        let id = format!("order-race-{round}");
        let (order, authorizations) = order_with(&id, &[&format!("tv{round}")]);
        stores[0]
            .create_order(&order, &authorizations, &note("order-created"))
            .unwrap();
        assert!(
            stores[1]
                .record_attestation(&authorizations[0].id, &attested(), &note("attested"))
                .unwrap()
        );
        // Every racer signed (before the store's transaction); exactly one is recorded.
        let outcomes = race(&stores, |i, store| {
            store
                .issue(
                    &id,
                    OrderStatus::Ready,
                    None,
                    &new_cert(
                        &format!("{id}-cert-{i}"),
                        &format!("{round:02x}{i:02x}"),
                        20,
                        7,
                    ),
                    &note("issued"),
                )
                .unwrap()
        });
        assert_eq!(issued(&outcomes), 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                IssueOutcome::Issued(_) | IssueOutcome::NotReady(OrderStatus::Valid)
            )),
            "{outcomes:?}"
        );
        let order = stores[2].order(&id).unwrap().unwrap();
        let recorded = (0..THREADS)
            .filter(|i| {
                stores[0]
                    .certificate(&format!("{id}-cert-{i}"))
                    .unwrap()
                    .is_some()
            })
            .count();
        assert_eq!(recorded, 1);
        assert!(order.certificate_id.is_some());
    }
}

pub(crate) fn renewals_race_to_one_certificate(db: &Db) {
    let stores = replicas(db, seeded(db, true));
    stores[0]
        .record_attestation("authz-1", &attested(), &note("attested"))
        .unwrap();
    stores[0]
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            &new_cert("gen-0", "a000", 0, 8),
            &note("issued"),
        )
        .unwrap();
    let mut current = "gen-0".to_owned();
    for generation in 1..=5u64 {
        let at = generation * 4 * 86_400;
        let outcomes = race(&stores, |i, store| {
            store
                .issue(
                    "order-1",
                    OrderStatus::Valid,
                    Some(&current),
                    &new_cert(
                        &format!("gen-{generation}-{i}"),
                        &format!("a{generation}{i:02x}"),
                        at,
                        8,
                    ),
                    &note("issued"),
                )
                .unwrap()
        });
        assert_eq!(
            issued(&outcomes),
            1,
            "generation {generation}: {outcomes:?}"
        );
        let order = stores[1].order("order-1").unwrap().unwrap();
        let latest = order.certificate_id.unwrap();
        assert!(
            latest.starts_with(&format!("gen-{generation}-")),
            "{latest}"
        );
        current = latest;
    }
}

pub(crate) fn attestations_race_to_one_ready_order(db: &Db) {
    let stores = replicas(db, seeded(db, false));
    for round in 0..5 {
        let id = format!("order-multi-{round}");
        let labels: Vec<String> = (0..4).map(|i| format!("r{round}n{i}")).collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let (order, authorizations) = order_with(&id, &labels);
        stores[0]
            .create_order(&order, &authorizations, &note("order-created"))
            .unwrap();
        // Two threads per authorization: each is recorded once, and the last one to be
        // recorded, whichever it is, makes the order ready.
        let recorded = race(&stores, |i, store| {
            store
                .record_attestation(&authorizations[i % 4].id, &attested(), &note("attested"))
                .unwrap()
        });
        assert_eq!(recorded.iter().filter(|r| **r).count(), 4, "{recorded:?}");
        assert_eq!(
            stores[2].order(&id).unwrap().unwrap().status,
            OrderStatus::Ready,
            "round {round}"
        );
    }
}

pub(crate) fn nonce_races_to_one_taker(db: &Db) {
    let key = NonceKey::from_bytes(&[5; 32]);
    let nonces: Vec<NonceId> = (0..50)
        .map(|_| {
            key.check(&key.mint(super::t(100)).unwrap(), super::t(0))
                .unwrap()
        })
        .collect();
    // Several handles (replicas) on one database for PostgreSQL; one process's window for
    // SQLite, whose nonces never leave the process.
    let stores = if db.is_shared() {
        replicas(db, db.open())
    } else {
        vec![db.open()]
    };
    let taken = race(&stores, |_, store| {
        nonces
            .iter()
            .filter(|n| store.consume_nonce(n, super::t(50)).unwrap())
            .count()
    });
    assert_eq!(taken.iter().sum::<usize>(), nonces.len(), "{taken:?}");
}

/// Replicas creating accounts with different keys for one EAB key id: exactly one account.
pub(crate) fn new_accounts_race_to_one_per_eab_key(db: &Db) {
    let first = db.open();
    first.add_relying_party(&rp()).unwrap();
    let stores = replicas(db, first);
    let outcomes = race(&stores, |i, store| {
        store.create_account(
            &account(&format!("acct-race-{i}"), &format!("thumb-race-{i}")),
            &note("account-created"),
        )
    });
    let created = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert!(
        outcomes
            .into_iter()
            .filter(Result::is_err)
            .all(is_eab_key_bound)
    );
}
