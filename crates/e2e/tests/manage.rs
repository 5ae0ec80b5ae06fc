//! Managing a device's bindings from the UA over the in-memory BLE link (SPEC §5.4): list,
//! remove, list again, re-provision — against the real device engine and the real issuer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::World;
use localcert_device::star::{Fetched, StarFetch};
use localcert_issuer::store::Store;
use localcert_proto::ErrorCode;
use localcert_proto::origin::Origin;
use localcert_rp::AcmeAccount;
use localcert_rp::star::cancel_star;
use localcert_ua::LinkProfile;
use localcert_ua::manage::{self, ManageError, Removed};
use localcert_ua::verify::{self, CheckError};

#[tokio::test]
async fn list_remove_list_and_provision_again() {
    let world = World::start().await;
    let first = world.provision(&world.plan()).await.unwrap();
    let mut star_plan = world.plan2();
    star_plan.star = true;
    let second = world.provision(&star_plan).await.unwrap();
    let mut connector = world.connector(LinkProfile::MTU23_30MS_1M, None);

    let listed = manage::list(&mut connector).await.unwrap();
    let row = |origin: &str| {
        listed
            .iter()
            .find(|b| b.origin.as_str() == origin)
            .unwrap_or_else(|| panic!("{origin} not listed: {listed:?}"))
    };
    assert_eq!(listed.len(), 2);
    let (a, b) = (row(common::ORIGIN), row(common::ORIGIN2));
    assert_eq!(
        (&a.name, a.fingerprint, a.star),
        (&first.name, first.fingerprint, false)
    );
    assert_eq!(
        (&b.name, b.fingerprint, b.star),
        (&second.name, second.fingerprint, true)
    );
    assert_eq!(a.not_after as i64, first.not_after);

    let origin2 = Origin::parse(common::ORIGIN2).unwrap();
    let removed = manage::remove(&mut connector, &origin2).await.unwrap();
    assert_eq!(
        removed,
        Removed {
            name: second.name.clone(),
            star: true
        }
    );
    let listed = manage::list(&mut connector).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].origin.as_str(), common::ORIGIN);
    // The removed name is no longer served; the other one is.
    let gone = verify::check(
        second.endpoint,
        &world.expectation(&second, common::ORIGIN2),
    )
    .await;
    assert!(matches!(gone, Err(CheckError::Tls { .. })), "{gone:?}");
    verify::check(first.endpoint, &world.expectation(&first, common::ORIGIN))
        .await
        .unwrap();

    // Removing it again: NOT_FOUND, and nothing changes.
    let again = manage::remove(&mut connector, &origin2).await.unwrap_err();
    assert!(
        matches!(
            again,
            ManageError::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{again}"
    );
    assert_eq!(manage::list(&mut connector).await.unwrap().len(), 1);

    // Provisioned again, it is listed again with a new certificate.
    let third = world.provision(&world.plan2()).await.unwrap();
    assert_eq!(third.name, second.name);
    assert_ne!(third.fingerprint, second.fingerprint);
    let listed = manage::list(&mut connector).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|b| b.origin == origin2 && b.fingerprint == third.fingerprint && !b.star)
    );
    assert_eq!(connector.connections(), 6, "one BLE connection per call");
}

#[tokio::test]
async fn the_origin_cancels_its_star_delegation_and_the_device_fetch_ends() {
    let world = World::start().await;
    let mut plan = world.plan();
    plan.star = true;
    let outcome = world.provision(&plan).await.unwrap();
    let star_url = world.star_url();
    let fetcher = world.star_fetcher();
    assert!(matches!(
        fetcher.fetch(&star_url).await.unwrap(),
        Fetched::Chain(_)
    ));
    // Past half of the certificate's day, the issuer renews a live delegation.
    let later = SystemTime::now() + Duration::from_secs(13 * 3600);
    assert_eq!(world.server.renew_due(later).unwrap(), 1);

    // The origin's account, as its backend (or `localcert rp cancel-star`) holds it.
    let account = AcmeAccount::new(plan.acme_settings());
    let key = account.key().await.unwrap();
    // Another user's cancel through the API finds no delegation of theirs: nothing changes.
    let theirs = cancel_star(account.settings(), key, &outcome.name, Some(b"user-2"))
        .await
        .unwrap();
    assert!(theirs.canceled.is_empty());
    assert!(matches!(
        fetcher.fetch(&star_url).await.unwrap(),
        Fetched::Chain(_)
    ));

    // The user it is bound to (or the operator, for every user) cancels it: a signed POST of
    // {"status": "canceled"} to the order, and the device's next fetch says it ended.
    let canceled = cancel_star(account.settings(), key, &outcome.name, Some(b"user-1"))
        .await
        .unwrap()
        .canceled;
    assert_eq!(canceled.len(), 1, "{canceled:?}");
    assert_eq!(
        canceled[0].star_certificate.as_deref(),
        Some(star_url.as_str())
    );
    assert_eq!(fetcher.fetch(&star_url).await.unwrap(), Fetched::Ended);
    // The issuer renews it no more, even when a live one would be due again.
    let due_again = later + Duration::from_secs(2 * 86_400);
    assert_eq!(world.server.renew_due(due_again).unwrap(), 0);
    let order_id = canceled[0].order.rsplit('/').next().unwrap();
    let audit = world.store.audit_log(1000).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.event == "order-canceled" && e.subject == order_id),
        "the issuer's audit log records the cancel"
    );

    // Cancelling again finds it ended already; a name the account never ordered, nothing.
    let again = cancel_star(account.settings(), key, &outcome.name, None)
        .await
        .unwrap();
    assert_eq!((again.canceled.len(), again.already_ended), (0, 1));
    let other = world.name_for(common::ORIGIN2);
    let unknown = cancel_star(account.settings(), key, &other, None)
        .await
        .unwrap();
    assert_eq!(unknown, Default::default());
}
