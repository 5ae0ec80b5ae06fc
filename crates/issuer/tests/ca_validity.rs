//! An issuing intermediate that cannot sign (expired, not yet valid, or ending before the leaf
//! would): finalize is refused with a 503 `serverInternal` problem that names the
//! intermediate's validity, audited, the order left ready; the startup warning says so too.
//! (Found by the `acme_handler` fuzzer as a bare 500 after a 25-year clock jump.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::TlsKey;
use common::client::{Client, body, problem};
use common::harness::Harness;
use localcert_issuer::acme::{Policy, Response, rfc3339};
use localcert_issuer::ca::{self, CaFiles, INTERMEDIATE_LIFETIME, IssuingCa};

const DAY: Duration = Duration::from_secs(86_400);

/// An order of `w` attested and ready; finalize's answer.
fn finalize_ready_order(w: &Harness) -> (Client, String, Response) {
    let client = w.account();
    let p = w.order(&client, None);
    let tls = TlsKey::new();
    let att = w.att_obj(&w.device, &client, &p.token, &tls);
    assert_eq!(w.answer(&client, &p.chall, &att).status, 200);
    let response = w.finalize(&client, &p.order, &tls.csr(&[&w.name()]));
    (client, p.order, response)
}

/// Asserts the refusal: 503 `serverInternal`, the intermediate's validity in the detail, an
/// audit entry with the same detail, no certificate, the order still ready.
fn assert_cannot_sign(w: &Harness, ca_made: SystemTime) {
    let (client, order, response) = finalize_ready_order(w);
    assert_eq!(
        (response.status, problem(&response).as_str()),
        (503, "serverInternal"),
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let detail = body(&response)["detail"].as_str().unwrap().to_owned();
    let not_before = rfc3339(ca_made - ca::BACKDATE);
    let not_after = rfc3339(ca_made + INTERMEDIATE_LIFETIME);
    assert!(
        detail.starts_with("the issuing CA cannot sign now")
            && detail.contains(&format!("valid from {not_before} to {not_after}"))
            && detail.contains("the operator must renew the intermediate"),
        "{detail}"
    );
    let audit = w.last_audit();
    assert_eq!(
        (audit.event.as_str(), audit.detail.as_str()),
        ("refused", detail.as_str())
    );
    assert_eq!(w.order_status(&client, &order), "ready");
    assert!(body(&w.post(&client, &order, None))["certificate"].is_null());
}

#[test]
fn an_expired_intermediate_refuses_finalize_with_503() {
    let now = SystemTime::now();
    let ca_made = now - INTERMEDIATE_LIFETIME - DAY;
    assert_cannot_sign(&Harness::with_ca_made_at(now, ca_made), ca_made);
}

#[test]
fn a_not_yet_valid_intermediate_refuses_finalize_with_503() {
    let now = SystemTime::now();
    let ca_made = now + DAY;
    assert_cannot_sign(&Harness::with_ca_made_at(now, ca_made), ca_made);
}

#[test]
fn an_intermediate_ending_before_the_leaf_refuses_finalize_with_503() {
    let now = SystemTime::now();
    // Valid now, but ends in 3 days: a 7-day leaf would outlive it.
    let ca_made = now - INTERMEDIATE_LIFETIME + 3 * DAY;
    assert!(Policy::default().leaf_lifetime > 3 * DAY);
    assert_cannot_sign(&Harness::with_ca_made_at(now, ca_made), ca_made);
}

#[test]
fn an_intermediate_that_outlives_the_leaf_signs() {
    let now = SystemTime::now();
    // Ends in 8 days: a 7-day leaf still fits.
    let w = Harness::with_ca_made_at(now, now - INTERMEDIATE_LIFETIME + 8 * DAY);
    let (_, _, response) = finalize_ready_order(&w);
    assert_eq!(response.status, 200);
}

#[test]
fn the_startup_warning_names_an_intermediate_that_cannot_sign() {
    let dir = tempfile::tempdir().unwrap();
    let files = CaFiles::in_dir(dir.path());
    let now = SystemTime::now();
    ca::init_ca(&files, "test", now).unwrap();
    let ca = IssuingCa::load(&files).unwrap();
    let lifetime = Policy::default().leaf_lifetime;
    assert_eq!(ca.signing_warning(now, lifetime), None);
    let until = rfc3339(ca.not_after());
    let expired = ca.signing_warning(ca.not_after() + DAY, lifetime).unwrap();
    assert!(
        expired.contains("not valid now") && expired.contains(&until),
        "{expired}"
    );
    let early = ca.signing_warning(now - DAY, lifetime).unwrap();
    assert!(early.contains("not valid now"), "{early}");
    // Within the warning lead of the last day a full-lifetime leaf fits.
    let soon = ca
        .signing_warning(ca.not_after() - lifetime - ca::WARN_AHEAD + DAY, lifetime)
        .unwrap();
    assert!(
        soon.contains(&format!("expires at {until}"))
            && soon.contains(&rfc3339(ca.not_after() - lifetime)),
        "{soon}"
    );
    assert_eq!(
        ca.signing_warning(ca.not_after() - lifetime - ca::WARN_AHEAD - DAY, lifetime),
        None
    );
}
