//! The ACME server driven through `AcmeServer::handle` (no sockets): bad identifiers, bad
//! attestations, a revoked device and bad CSRs, each refused with a precise problem, an audit
//! entry and no state change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::SystemTime;

use common::client::{BASE, Client, b64, body, post, problem};
use common::harness::Harness;
use common::{Manufacturer, TlsKey};
use localcert_issuer::acme::{AcmeServer, Policy};
use localcert_issuer::ca::{self, CaFiles, IssuingCa};
use localcert_issuer::store::{OrderStatus, Store};
use localcert_issuer::validate::TrustConfig;
use localcert_proto::origin::Origin;
use serde_json::json;

#[test]
fn bad_identifiers_are_rejected() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let other_origin = h
        .device
        .name("tv", &Origin::parse("https://evil.example").unwrap());
    for (value, kind) in [
        ("tv.example.com", "rejectedIdentifier"),
        ("192.168.1.10", "rejectedIdentifier"),
        ("::1", "rejectedIdentifier"),
        ("*.local", "rejectedIdentifier"),
        (other_origin.as_str(), "rejectedIdentifier"),
    ] {
        let response = h.post(
            &client,
            "/acme/new-order",
            Some(&json!({"identifiers": [{"type": "dns", "value": value}]})),
        );
        h.assert_refused(&response, kind, &client, &p.order);
    }
    let response = h.post(
        &client,
        "/acme/new-order",
        Some(&json!({"identifiers": [{"type": "ip", "value": "192.168.1.10"}]})),
    );
    h.assert_refused(&response, "unsupportedIdentifier", &client, &p.order);
}

#[test]
fn bad_attestations_are_refused_without_state_change() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let tls = TlsKey::new();
    let good = h.att_obj(&h.device, &client, &p.token, &tls);
    let chall_status = |h: &Harness| body(&h.post(&client, &p.chall, None))["status"].clone();

    // Truncated, garbage CBOR, not base64url.
    for bad in [&good[..good.len() - 3], b"\xa1\x00", b"garbage"] {
        let response = h.answer(&client, &p.chall, bad);
        h.assert_refused(&response, "badAttestationStatement", &client, &p.order);
    }
    let response = h.post(&client, &p.chall, Some(&json!({"attObj": "!!"})));
    h.assert_refused(&response, "malformed", &client, &p.order);
    let response = h.post(&client, &p.chall, Some(&json!({})));
    h.assert_refused(&response, "malformed", &client, &p.order);
    // Forged: signed over another account's key authorization.
    let other = Client::new();
    let forged = h.att_obj(&h.device, &other, &p.token, &tls);
    h.assert_refused(
        &h.answer(&client, &p.chall, &forged),
        "badAttestationStatement",
        &client,
        &p.order,
    );
    // Unknown manufacturer.
    let stranger = Manufacturer::new("Unknown").device("0001");
    let response = h.answer(
        &client,
        &p.chall,
        &h.att_obj(&stranger, &client, &p.token, &tls),
    );
    h.assert_refused(&response, "badAttestationStatement", &client, &p.order);
    // Expired device certificate.
    let now_unix = h
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = h.maker.device_valid("0009", Some(now_unix - 60));
    let response = h.answer(
        &client,
        &p.chall,
        &h.att_obj(&expired, &client, &p.token, &tls),
    );
    h.assert_refused(&response, "badAttestationStatement", &client, &p.order);
    assert!(h.last_audit().detail.contains("not valid at this time"));
    // Another device of the same maker: genuine, but the name is not its name.
    let sibling = h.maker.device("0002");
    let response = h.answer(
        &client,
        &p.chall,
        &h.att_obj(&sibling, &client, &p.token, &tls),
    );
    h.assert_refused(&response, "rejectedIdentifier", &client, &p.order);
    assert_eq!(chall_status(&h), "pending");

    // Expired challenge.
    let late = h.now + Policy::default().challenge_lifetime;
    let response = post(
        &h.server,
        &client,
        &p.chall,
        Some(&json!({"attObj": b64(&good)})),
        late,
    );
    h.assert_refused(&response, "unauthorized", &client, &p.order);

    // The genuine one is accepted once; a replay is refused.
    assert_eq!(body(&h.answer(&client, &p.chall, &good))["status"], "valid");
    let replay = h.answer(&client, &p.chall, &good);
    assert_eq!(problem(&replay), "unauthorized");
    assert_eq!(h.last_audit().detail, "challenge was already used");
    let _ = &p.authz;
}

#[test]
fn revoked_device_is_refused() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new();
    // A server whose trust config revokes the harness device's batch.
    let revoked: [u8; 32] = sha2::Sha256::digest(&h.maker.batch_der).into();
    let trust = TrustConfig::new(std::slice::from_ref(&h.maker.root_der), [revoked]).unwrap();
    let files = CaFiles::in_dir(dir.path());
    ca::init_ca(&files, "test", h.now).unwrap();
    let server = AcmeServer::new(
        h.store.clone(),
        IssuingCa::load(&files).unwrap(),
        trust,
        Policy::default(),
        BASE,
    );
    let client = h.account();
    let p = h.order(&client, None);
    let att = h.att_obj(&h.device, &client, &p.token, &TlsKey::new());
    let response = post(
        &server,
        &client,
        &p.chall,
        Some(&json!({"attObj": b64(&att)})),
        h.now,
    );
    h.assert_refused(&response, "badAttestationStatement", &client, &p.order);
    assert!(h.last_audit().detail.contains("revoked"));
}

#[test]
fn bad_csrs_are_refused_at_finalize() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let tls = TlsKey::new();
    // Finalize before the challenge: orderNotReady.
    let response = h.finalize(&client, &p.order, &tls.csr(&[&h.name()]));
    h.assert_refused(&response, "orderNotReady", &client, &p.order);
    h.answer(
        &client,
        &p.chall,
        &h.att_obj(&h.device, &client, &p.token, &tls),
    );
    let ready = |h: &Harness| assert_eq!(h.order_status(&client, &p.order), "ready");
    for (csr, kind) in [
        (TlsKey::new().csr(&[&h.name()]), "badCSR"), // another key
        (tls.csr(&[&h.name(), "extra.local"]), "badCSR"), // names beyond the order
        (tls.csr_with_ip(&h.name()), "badCSR"),      // IP SAN
        (b"garbage".to_vec(), "badCSR"),
    ] {
        let response = h.finalize(&client, &p.order, &csr);
        assert_eq!(problem(&response), kind);
        assert_eq!(h.last_audit().event, "refused");
        ready(&h);
    }
    assert!(
        h.store
            .audit_log(100)
            .unwrap()
            .iter()
            .all(|e| e.event != "issued")
    );
    // The right CSR issues exactly once.
    let response = h.finalize(&client, &p.order, &tls.csr(&[&h.name()]));
    assert_eq!(body(&response)["status"], "valid");
    let again = h.finalize(&client, &p.order, &tls.csr(&[&h.name()]));
    assert_eq!(problem(&again), "orderNotReady");
    let issued = h
        .store
        .audit_log(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "issued")
        .count();
    assert_eq!(issued, 1);
    let order = h
        .store
        .order(p.order.rsplit('/').next().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(order.status, OrderStatus::Valid);
}
