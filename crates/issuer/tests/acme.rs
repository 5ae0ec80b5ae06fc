//! The ACME server driven through `AcmeServer::handle` (no sockets), with a controlled clock:
//! the whole flow including STAR renewal and cancel, accounts, nonces and JWS, expiry, and
//! every bad input refused with a precise problem, an audit entry and no state change (bad
//! identifiers, attestations and CSRs: tests/refusals.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::TlsKey;
use common::client::{self, BASE, Client, b64, body, path, post, problem};
use localcert_issuer::acme::{Policy, rfc3339};
use localcert_issuer::ca;
use localcert_issuer::store::Store;
use serde_json::{Value, json};

use common::harness::{HMAC, Harness, KID};

#[test]
fn full_flow_with_star_renewal_cancel_and_revocation() {
    let h = Harness::new();
    let client = h.account();
    let lifetime = 4 * 3600;
    let end = h.now + Duration::from_secs(10 * 86_400);
    let p = h.order(
        &client,
        Some((
            "auto-renewal",
            json!({"end-date": rfc3339(end), "lifetime": lifetime}),
        )),
    );
    let tls = TlsKey::new();
    let response = h.answer(
        &client,
        &p.chall,
        &h.att_obj(&h.device, &client, &p.token, &tls),
    );
    assert_eq!(body(&response)["status"], "valid");
    assert_eq!(h.order_status(&client, &p.order), "ready");

    let response = h.finalize(&client, &p.order, &tls.csr(&[&h.name()]));
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let order = body(&response);
    assert_eq!(order["status"], "valid");
    let cert_path = path(order["certificate"].as_str().unwrap());
    let star_path = path(order["star-certificate"].as_str().unwrap());
    let chain = h.post(&client, &cert_path, None);
    assert_eq!(
        chain.header("content-type"),
        Some("application/pem-certificate-chain")
    );
    let first = String::from_utf8(chain.body.clone()).unwrap();
    assert_eq!(first.matches("BEGIN CERTIFICATE").count(), 2);

    // The STAR URL answers unauthenticated GETs with the current certificate.
    let star = h.server.handle("GET", &star_path, None, b"", h.now);
    assert_eq!(star.status, 200);
    assert_eq!(String::from_utf8(star.body).unwrap(), first);
    // Nothing is due before half of the certificate's validity (which starts backdated); the
    // next one is published at half of it. A loop checking every minute renews up to a minute
    // early, so never after half-life.
    let half = (Duration::from_secs(lifetime) + ca::BACKDATE) / 2;
    let mid = h.now - ca::BACKDATE + half;
    let minute = Duration::from_secs(60);
    assert_eq!(h.server.renew_due(mid - minute).unwrap(), 0);
    assert_eq!(
        h.server.renew_due_ahead(mid - minute * 2, minute).unwrap(),
        0
    );
    assert_eq!(
        h.server
            .renew_due_ahead(mid - minute + Duration::from_secs(10), minute)
            .unwrap(),
        1
    );
    assert_eq!(h.server.renew_due(mid).unwrap(), 0, "renewed once");
    let star = h.server.handle("GET", &star_path, None, b"", h.now + half);
    let second = String::from_utf8(star.body.clone()).unwrap();
    assert_ne!(second, first);
    assert!(star.header("cert-not-after").is_some());

    // Cancel: the STAR URL answers autoRenewalCanceled and nothing more is renewed.
    let response = h.post(&client, &p.order, Some(&json!({"status": "canceled"})));
    assert_eq!(body(&response)["status"], "canceled");
    let star = h.server.handle("GET", &star_path, None, b"", h.now + half);
    assert_eq!(
        (star.status, problem(&star).as_str()),
        (403, "autoRenewalCanceled")
    );
    assert_eq!(h.server.renew_due(h.now + half * 3).unwrap(), 0);

    // Revocation by the account, reflected in the CRL.
    let leaf_der = ca::pem_blocks(second.as_bytes(), "CERTIFICATE")
        .unwrap()
        .remove(0);
    let revoke = json!({"certificate": b64(&leaf_der), "reason": 4});
    let response = h.post(&client, "/acme/revoke-cert", Some(&revoke));
    assert_eq!(response.status, 200);
    assert_eq!(h.last_audit().event, "revoked");
    let again = h.post(&client, "/acme/revoke-cert", Some(&revoke));
    assert_eq!(problem(&again), "alreadyRevoked");
    let crl = h.server.handle("GET", "/crl", None, b"", h.now);
    assert_eq!(crl.header("content-type"), Some("application/pkix-crl"));
    let (_, crl) = x509_parser::parse_x509_crl(&crl.body).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    assert!(
        crl.iter_revoked_certificates()
            .any(|r| r.raw_serial() == leaf.raw_serial())
    );

    // The account lists its orders.
    let account_path = path(client.kid.as_deref().unwrap());
    let orders = body(&h.post(&client, &format!("{account_path}/orders"), None));
    assert_eq!(orders["orders"][0], format!("{BASE}{}", p.order));
    let stranger = h.stranger();
    assert_eq!(
        h.post(&stranger, &format!("{account_path}/orders"), None)
            .status,
        404
    );

    // Account deactivation: the account can do nothing more.
    let response = h.post(
        &client,
        client.kid.as_deref().map(path).unwrap().as_str(),
        Some(&json!({"status": "deactivated"})),
    );
    assert_eq!(body(&response)["status"], "deactivated");
    let response = h.post(
        &client,
        "/acme/new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": h.name()}]})),
    );
    assert_eq!(problem(&response), "unauthorized");
}

#[test]
fn relying_party_revocation_is_enforced() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let tls = TlsKey::new();
    h.answer(
        &client,
        &p.chall,
        &h.att_obj(&h.device, &client, &p.token, &tls),
    );
    let response = h.finalize(&client, &p.order, &tls.csr(&[&h.name()]));
    assert_eq!(body(&response)["status"], "valid");
    let summary = h
        .store
        .revoke_relying_party(&h.origin, h.now)
        .unwrap()
        .unwrap();
    assert_eq!(summary.certificates, 1);
    let crl = h.server.handle("GET", "/crl", None, b"", h.now);
    let (_, crl) = x509_parser::parse_x509_crl(&crl.body).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 1);
    // Neither the account nor the EAB key works any more.
    assert_eq!(problem(&h.post(&client, &p.order, None)), "unauthorized");
    let fresh = Client::new();
    let eab = fresh.eab(KID, HMAC);
    let response = h.post(
        &fresh,
        "/acme/new-account",
        Some(&json!({"externalAccountBinding": eab})),
    );
    assert_eq!(problem(&response), "unauthorized");
}

#[test]
fn account_without_eab_or_with_a_bad_one_is_refused() {
    let h = Harness::new();
    let client = Client::new();
    let response = h.post(
        &client,
        "/acme/new-account",
        Some(&json!({"termsOfServiceAgreed": true})),
    );
    assert_eq!(problem(&response), "externalAccountRequired");
    assert_eq!(h.last_audit().event, "refused");
    for eab in [
        client.eab(KID, &[1; 32]),
        client.eab("unknown", HMAC),
        Client::new().eab(KID, HMAC),
    ] {
        let response = h.post(
            &client,
            "/acme/new-account",
            Some(&json!({"externalAccountBinding": eab})),
        );
        assert_eq!(problem(&response), "unauthorized");
    }
    let response = h.post(
        &client,
        "/acme/new-account",
        Some(&json!({"onlyReturnExisting": true})),
    );
    assert_eq!(problem(&response), "accountDoesNotExist");
    // Nothing was created.
    let response = h.post(
        &client,
        "/acme/new-account",
        Some(&json!({"onlyReturnExisting": true})),
    );
    assert_eq!(problem(&response), "accountDoesNotExist");
}

#[test]
fn nonces_and_jws_are_checked() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let url = format!("{BASE}{}", p.order);
    let nonce = client::nonce(&h.server, h.now);
    let body_bytes = client.jws(&url, &nonce, b"");
    let ok = h.server.handle(
        "POST",
        &p.order,
        Some("application/jose+json"),
        &body_bytes,
        h.now,
    );
    assert_eq!(ok.status, 200);
    // Replayed nonce.
    let replay = h.server.handle(
        "POST",
        &p.order,
        Some("application/jose+json"),
        &body_bytes,
        h.now,
    );
    h.assert_refused(&replay, "badNonce", &client, &p.order);
    assert!(
        replay.header("replay-nonce").is_some(),
        "a fresh nonce to retry with"
    );
    // Unknown nonce.
    let forged = client.jws(&url, "AAAA", b"");
    let response = h.server.handle(
        "POST",
        &p.order,
        Some("application/jose+json"),
        &forged,
        h.now,
    );
    h.assert_refused(&response, "badNonce", &client, &p.order);
    // Expired nonce.
    let nonce = client::nonce(&h.server, h.now);
    let late = h.now + Policy::default().nonce_lifetime;
    let response = h.server.handle(
        "POST",
        &p.order,
        Some("application/jose+json"),
        &client.jws(&url, &nonce, b""),
        late,
    );
    h.assert_refused(&response, "badNonce", &client, &p.order);
    // URL of another resource.
    let nonce = client::nonce(&h.server, h.now);
    let response = h.server.handle(
        "POST",
        &p.order,
        Some("application/jose+json"),
        &client.jws(&format!("{BASE}/acme/new-order"), &nonce, b""),
        h.now,
    );
    h.assert_refused(&response, "unauthorized", &client, &p.order);
    // Signed by another key with this account's kid.
    let mut impostor = Client::new();
    impostor.kid = client.kid.clone();
    let response = h.post(&impostor, &p.order, None);
    h.assert_refused(&response, "unauthorized", &client, &p.order);
    // Malformed JWS and JSON, wrong content type.
    for bad in [
        &b"not json"[..],
        b"{}",
        b"{\"protected\":\"!\",\"payload\":\"\",\"signature\":\"\"}",
    ] {
        let response = h
            .server
            .handle("POST", &p.order, Some("application/jose+json"), bad, h.now);
        h.assert_refused(&response, "malformed", &client, &p.order);
    }
    let response = h.server.handle(
        "POST",
        &p.order,
        Some("application/json"),
        &body_bytes,
        h.now,
    );
    h.assert_refused(&response, "malformed", &client, &p.order);
    let response = h.post(
        &client,
        "/acme/new-order",
        Some(&json!({"identifiers": "nope"})),
    );
    h.assert_refused(&response, "malformed", &client, &p.order);
    // Oversize bodies (the transport measures; the problem is the server's).
    let response = h.server.too_large(&p.order, h.now);
    assert_eq!(
        (response.status, problem(&response).as_str()),
        (413, "malformed")
    );
    // Another account cannot see this order.
    let other = h.stranger();
    assert_eq!(h.post(&other, &p.order, None).status, 404);
}

#[test]
fn star_requests_outside_policy_are_refused() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let far = rfc3339(h.now + Duration::from_secs(5 * 365 * 86_400));
    let soon = rfc3339(h.now + Duration::from_secs(86_400));
    for auto_renewal in [
        json!({"end-date": soon, "lifetime": 60}),
        json!({"end-date": far, "lifetime": 86_400}),
        json!({"end-date": "yesterday", "lifetime": 86_400}),
        json!({"lifetime": 86_400}),
    ] {
        let response = h.post(
            &client,
            "/acme/new-order",
            Some(&json!({
                "identifiers": [{"type": "dns", "value": h.name()}],
                "auto-renewal": auto_renewal,
            })),
        );
        h.assert_refused(&response, "malformed", &client, &p.order);
    }
    let directory = body(&h.server.handle("GET", "/acme/directory", None, b"", h.now));
    assert_eq!(directory["meta"]["externalAccountRequired"], true);
    assert!(directory["meta"]["auto-renewal"]["min-lifetime"].is_u64());
}

#[test]
fn expired_orders_are_invalid() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, None);
    let tls = TlsKey::new();
    let att = h.att_obj(&h.device, &client, &p.token, &tls);
    let late = h.now + Policy::default().order_lifetime;
    let response = post(
        &h.server,
        &client,
        &p.chall,
        Some(&json!({"attObj": b64(&att)})),
        late,
    );
    assert_eq!(problem(&response), "malformed");
    assert_eq!(h.last_audit().detail, "order expired");
    let order = body(&post(&h.server, &client, &p.order, None, late));
    assert_eq!(order["status"], "invalid");
    // Authorized in time, finalized too late.
    h.answer(&client, &p.chall, &att);
    let csr = json!({"csr": b64(&tls.csr(&[&h.name()]))});
    let response = post(
        &h.server,
        &client,
        &format!("{}/finalize", p.order),
        Some(&csr),
        late,
    );
    assert_eq!(problem(&response), "orderNotReady");
    assert_eq!(h.order_status(&client, &p.order), "ready");
}

#[test]
fn star_delegation_ends_at_its_end_date() {
    let h = Harness::new();
    let client = h.account();
    let lifetime = 3600;
    let end = h.now + Duration::from_secs(2 * 3600);
    let p = h.order(
        &client,
        Some((
            "auto-renewal",
            json!({"end-date": rfc3339(end), "lifetime": lifetime}),
        )),
    );
    let tls = TlsKey::new();
    h.answer(
        &client,
        &p.chall,
        &h.att_obj(&h.device, &client, &p.token, &tls),
    );
    let order = body(&h.finalize(&client, &p.order, &tls.csr(&[&h.name()])));
    let star_path = path(order["star-certificate"].as_str().unwrap());
    // Renewals stop at the end-date: the last certificate ends exactly there.
    let mut at = h.now;
    for _ in 0..10 {
        at += Duration::from_secs(1200);
        h.server.renew_due(at).unwrap();
    }
    let last = h
        .server
        .handle("GET", &star_path, None, b"", end - Duration::from_secs(1));
    assert_eq!(last.status, 200);
    assert_eq!(last.header("cert-not-after"), Some(rfc3339(end).as_str()));
    let after = h
        .server
        .handle("GET", &star_path, None, b"", end + Duration::from_secs(1));
    assert_eq!(
        (after.status, problem(&after).as_str()),
        (403, "autoRenewalExpired")
    );
}

#[test]
fn eddsa_accounts_work_too() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let h = Harness::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = json!({"crv": "Ed25519", "kty": "OKP", "x": b64(key.public_key().as_ref())});
    let sign = |path: &str, signer: (&str, Value), payload: &[u8]| {
        let nonce = client::nonce(&h.server, h.now);
        let mut header = json!({"alg": "EdDSA", "nonce": nonce, "url": format!("{BASE}{path}")});
        header[signer.0] = signer.1;
        let protected = b64(header.to_string().as_bytes());
        let payload = b64(payload);
        let sig = key.sign(format!("{protected}.{payload}").as_bytes());
        let body = json!({"protected": protected, "payload": payload,
            "signature": b64(sig.as_ref())});
        h.server.handle(
            "POST",
            path,
            Some("application/jose+json"),
            body.to_string().as_bytes(),
            h.now,
        )
    };
    // EAB over the Ed25519 key.
    let eab_protected = b64(json!({"alg": "HS256", "kid": KID,
        "url": format!("{BASE}/acme/new-account")})
    .to_string()
    .as_bytes());
    let eab_payload = b64(jwk.to_string().as_bytes());
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC),
        format!("{eab_protected}.{eab_payload}").as_bytes(),
    );
    let eab = json!({"protected": eab_protected, "payload": eab_payload,
        "signature": b64(tag.as_ref())});
    let payload = json!({"externalAccountBinding": eab}).to_string();
    let response = sign(
        "/acme/new-account",
        ("jwk", jwk.clone()),
        payload.as_bytes(),
    );
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let kid = response.header("location").unwrap().to_owned();
    let response = sign(&path(&kid), ("kid", json!(kid)), b"");
    assert_eq!(body(&response)["status"], "valid");
}

/// Clients that cannot send `auto-renewal` (instant-acme) ask for STAR with the `star` profile.
#[test]
fn the_star_profile_asks_for_auto_renewal() {
    let h = Harness::new();
    let client = h.account();
    let p = h.order(&client, Some(("profile", json!("star"))));
    let order = body(&h.post(&client, &p.order, None));
    let lifetime = Policy::default().star_profile_lifetime.as_secs();
    assert_eq!(order["auto-renewal"]["lifetime"], lifetime);
    assert!(order["auto-renewal"]["end-date"].is_string());
    let plain = h.order(&client, Some(("profile", json!("default"))));
    assert!(body(&h.post(&client, &plain.order, None))["auto-renewal"].is_null());

    for (extra, kind) in [
        (json!({"profile": "shortlived"}), "invalidProfile"),
        (
            json!({"profile": "star", "auto-renewal": {"end-date": rfc3339(h.now), "lifetime": 86_400}}),
            "malformed",
        ),
    ] {
        let mut payload = json!({"identifiers": [{"type": "dns", "value": h.name()}]});
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        let response = h.post(&client, "/acme/new-order", Some(&payload));
        h.assert_refused(&response, kind, &client, &p.order);
    }
    let directory = body(&h.server.handle("GET", "/acme/directory", None, b"", h.now));
    assert!(directory["meta"]["profiles"]["star"].is_string());
}
