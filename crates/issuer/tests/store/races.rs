//! The contract under contention: threads on several handles of one database (replicas of the
//! issuer), released together by a barrier, race for the same transition; exactly one wins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use localcert_issuer::store::{IssueOutcome, OrderStatus, Store};

use super::backends::Db;
use super::{attested, new_cert, order_with, seeded};

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
        stores[0].create_order(&order, &authorizations).unwrap();
        assert!(
            stores[1]
                .record_attestation(&authorizations[0].id, &attested())
                .unwrap()
        );
        let signed = AtomicUsize::new(0);
        let outcomes = race(&stores, |i, store| {
            store
                .issue(
                    &id,
                    OrderStatus::Ready,
                    None,
                    &format!("{id}-cert-{i}"),
                    super::t(20),
                    &mut || {
                        signed.fetch_add(1, Ordering::SeqCst);
                        Ok(new_cert(&format!("{round:02x}{i:02x}"), 20, 7))
                    },
                )
                .unwrap()
        });
        assert_eq!(issued(&outcomes), 1, "round {round}: {outcomes:?}");
        assert_eq!(signed.load(Ordering::SeqCst), 1, "signed but not recorded");
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
        .record_attestation("authz-1", &attested())
        .unwrap();
    stores[0]
        .issue(
            "order-1",
            OrderStatus::Ready,
            None,
            "gen-0",
            super::t(0),
            &mut || Ok(new_cert("a000", 0, 8)),
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
                    &format!("gen-{generation}-{i}"),
                    super::t(at),
                    &mut || Ok(new_cert(&format!("a{generation}{i:02x}"), at, 8)),
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
        stores[0].create_order(&order, &authorizations).unwrap();
        // Two threads per authorization: each is recorded once, and the last one to be
        // recorded, whichever it is, makes the order ready.
        let recorded = race(&stores, |i, store| {
            store
                .record_attestation(&authorizations[i % 4].id, &attested())
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
    let store = db.open();
    let nonces: Vec<String> = (0..50).map(|i| format!("nonce-{i}")).collect();
    for nonce in &nonces {
        store.put_nonce(nonce, super::t(100)).unwrap();
    }
    let stores = vec![store];
    let taken = race(&stores, |_, store| {
        nonces
            .iter()
            .filter(|n| store.take_nonce(n, super::t(50)).unwrap())
            .count()
    });
    assert_eq!(taken.iter().sum::<usize>(), nonces.len(), "{taken:?}");
}
