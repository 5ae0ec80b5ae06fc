//! Accounts in the store contract: unique by key, one per EAB key id whatever its status, key
//! changes only from the current key and never to another account's; and audit pruning.

use localcert_issuer::store::{Account, AccountStatus, AuditEntry, KeyChange, RelyingParty};
use localcert_issuer::{Error, Refusal};
use localcert_proto::origin::Origin;

use super::backends::Db;
use super::{account, note, origin, rp, seeded, t};

/// A second relying party (`kid-2`, https://other.example.com).
pub(crate) fn rp2() -> RelyingParty {
    RelyingParty {
        origin: Origin::parse("https://other.example.com").unwrap(),
        eab_kid: "kid-2".into(),
        ..rp()
    }
}

/// An account of [`rp2`].
pub(crate) fn account2(id: &str, thumbprint: &str) -> Account {
    Account {
        eab_kid: "kid-2".into(),
        origin: rp2().origin,
        ..account(id, thumbprint)
    }
}

pub(crate) fn is_eab_key_bound(result: Result<(), Error>) -> bool {
    matches!(result, Err(Error::Refused(Refusal::EabKeyBound)))
}

pub(crate) fn accounts_are_unique_by_key(db: &Db) {
    let store = seeded(db, false);
    store.add_relying_party(&rp2()).unwrap();
    let stored = store.account("acct-1").unwrap().unwrap();
    assert_eq!(stored.origin, origin());
    assert_eq!(
        store.account_by_thumbprint("thumb-1").unwrap(),
        Some(stored)
    );
    // One account per key: a second account with the same thumbprint is refused.
    assert!(
        store
            .create_account(&account2("acct-2", "thumb-1"), &note("account-created"))
            .is_err()
    );
    assert!(store.account("acct-2").unwrap().is_none());
    // An account must belong to a registered relying party.
    let mut orphan = account("acct-3", "thumb-3");
    orphan.eab_kid = "no-such-kid".into();
    assert!(
        store
            .create_account(&orphan, &note("account-created"))
            .is_err()
    );
    store
        .create_account(&account2("acct-4", "thumb-4"), &note("account-created"))
        .unwrap();
    store
        .set_account_status(
            "acct-4",
            AccountStatus::Deactivated,
            &note("account-deactivated"),
        )
        .unwrap();
    assert_eq!(
        store
            .account_by_thumbprint("thumb-4")
            .unwrap()
            .unwrap()
            .status,
        AccountStatus::Deactivated
    );
    assert!(store.account("nope").unwrap().is_none());
    assert!(store.account_by_thumbprint("nope").unwrap().is_none());
}

pub(crate) fn an_eab_key_id_binds_one_account(db: &Db) {
    let store = seeded(db, false);
    let before = store.audit_log(100).unwrap().len();
    assert!(is_eab_key_bound(store.create_account(
        &account("acct-5", "thumb-5"),
        &note("account-created")
    )));
    assert!(store.account("acct-5").unwrap().is_none());
    // Refused with nothing written, its audit line included.
    assert_eq!(store.audit_log(100).unwrap().len(), before);
    // Whatever the bound account's status.
    store
        .set_account_status("acct-1", AccountStatus::Deactivated, &note("deactivated"))
        .unwrap();
    assert!(is_eab_key_bound(store.create_account(
        &account("acct-6", "thumb-6"),
        &note("account-created")
    )));
}

pub(crate) fn account_keys_change_only_from_the_current_key(db: &Db) {
    let store = seeded(db, false);
    store.add_relying_party(&rp2()).unwrap();
    store
        .create_account(&account2("acct-2", "thumb-2"), &note("account-created"))
        .unwrap();
    let change = |old: &str, new: &str| {
        store
            .change_account_key(
                "acct-1",
                old,
                &format!("{{\"k\":\"{new}\"}}"),
                new,
                &note("key-changed"),
            )
            .unwrap()
    };
    assert_eq!(change("thumb-1", "thumb-new"), KeyChange::Changed);
    let changed = store.account_by_thumbprint("thumb-new").unwrap().unwrap();
    assert_eq!(
        (changed.id.as_str(), changed.jwk.as_str()),
        ("acct-1", "{\"k\":\"thumb-new\"}")
    );
    assert!(store.account_by_thumbprint("thumb-1").unwrap().is_none());
    // From a key that is no longer the account's: nothing changes.
    assert_eq!(change("thumb-1", "thumb-other"), KeyChange::Stale);
    // To another account's key: nothing changes, and the holder is named.
    assert_eq!(
        change("thumb-new", "thumb-2"),
        KeyChange::KeyInUse("acct-2".into())
    );
    assert_eq!(
        store.account_by_thumbprint("thumb-2").unwrap().unwrap().id,
        "acct-2"
    );
    let log = store.audit_log(100).unwrap();
    assert_eq!(log.iter().filter(|e| e.event == "key-changed").count(), 1);
}

pub(crate) fn audit_is_pruned_oldest_first_in_bounded_batches(db: &Db) {
    let store = db.open();
    for i in 0..10 {
        store
            .audit(&AuditEntry {
                at: t(i),
                event: "refused".into(),
                origin: None,
                subject: format!("subject {i}"),
                detail: String::new(),
            })
            .unwrap();
    }
    let pruned: Vec<usize> = (0..4)
        .map(|_| store.prune_audit(t(5), 2).unwrap())
        .collect();
    assert_eq!(pruned, [2, 2, 1, 0]);
    let kept = store.audit_log(100).unwrap();
    assert_eq!(kept.len(), 5);
    assert_eq!(kept[0].subject, "subject 5");
}
