//! RFC 8555 conformance points, each with its own test: 415 for a JWS with the wrong
//! Content-Type (§6.2), `badSignatureAlgorithm` listing the accepted algorithms (§6.2), 403
//! `orderNotReady` for finalizing an order that is not ready (§7.4), `expired` / `invalid`
//! past expiry (§7.1.6), 403 `unauthorized` for revoking another account's certificate
//! (§7.6), the attestation object's limits enforced by the issuer itself (SPEC §5), and ACME
//! Renewal Information (RFC 9773) for certificates that are not STAR, one account per EAB key
//! id (§7.3.4, as step-ca) and keyChange (§7.3.5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TlsKey;
use common::client::{self, BASE, Client, b64, body, path, post, problem};
use common::harness::{HMAC, Harness, KID};
use localcert_issuer::acme::Policy;
use localcert_issuer::store::Store;
use localcert_proto::attestation::AttestationObject;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

#[test]
fn a_jws_with_another_content_type_gets_415() {
    let w = Harness::new();
    let client = w.account();
    let order = w.order(&client, None).order;
    let nonce = client::nonce(&w.server, w.now);
    let jws = client.jws(&format!("{BASE}{order}"), &nonce, b"");
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let response = w.server.handle("POST", &order, content_type, &jws, w.now);
        assert_eq!(response.status, 415, "{content_type:?}");
        assert_eq!(problem(&response), "malformed");
    }
    let right = w
        .server
        .handle("POST", &order, Some("application/jose+json"), &jws, w.now);
    assert_eq!(right.status, 200, "the nonce was not spent by the refusals");
}

#[test]
fn bad_signature_algorithm_lists_the_accepted_ones() {
    let w = Harness::new();
    let client = w.account();
    let nonce = client::nonce(&w.server, w.now);
    let protected = json!({"alg": "RS256", "nonce": nonce, "url": format!("{BASE}/acme/new-order"),
        "kid": client.kid});
    let jws = json!({"protected": b64(protected.to_string().as_bytes()), "payload": b64(b"{}"),
        "signature": b64(&[0; 64])});
    let response = w.server.handle(
        "POST",
        "/acme/new-order",
        Some("application/jose+json"),
        jws.to_string().as_bytes(),
        w.now,
    );
    assert_eq!(problem(&response), "badSignatureAlgorithm");
    assert_eq!(response.status, 400);
    assert_eq!(body(&response)["algorithms"], json!(["ES256", "EdDSA"]));
}

#[test]
fn finalizing_an_order_that_is_not_ready_gets_403_order_not_ready() {
    let w = Harness::new();
    let client = w.account();
    let order = w.order(&client, None).order;
    let csr = json!({"csr": b64(&TlsKey::new().csr(&[&w.name()]))});
    let response = w.post(&client, &format!("{order}/finalize"), Some(&csr));
    assert_eq!(
        (response.status, problem(&response).as_str()),
        (403, "orderNotReady")
    );
    assert_eq!(body(&w.post(&client, &order, None))["status"], "pending");
}

#[test]
fn authorizations_and_orders_past_their_expiry_read_expired_and_invalid() {
    let w = Harness::new();
    let client = w.account();
    let p = w.order(&client, None);
    let (order, authz) = (p.order, p.authz);
    assert_eq!(body(&w.post(&client, &authz, None))["status"], "pending");
    let late = w.now + Policy::default().order_lifetime;
    let authz_late = body(&post(&w.server, &client, &authz, None, late));
    assert_eq!(authz_late["status"], "expired");
    let order_late = body(&post(&w.server, &client, &order, None, late));
    assert_eq!(order_late["status"], "invalid");
}

#[test]
fn revoking_another_accounts_certificate_gets_403_unauthorized() {
    let w = Harness::new();
    let owner = w.account();
    let leaf = w.issue(&owner);
    let other = w.stranger();
    let request = json!({"certificate": b64(&leaf), "reason": 1});
    let response = w.post(&other, "/acme/revoke-cert", Some(&request));
    assert_eq!(
        (response.status, problem(&response).as_str()),
        (403, "unauthorized")
    );
    // Still revocable by its owner: the refusal changed nothing.
    assert_eq!(
        w.post(&owner, "/acme/revoke-cert", Some(&request)).status,
        200
    );
}

#[test]
fn the_issuer_enforces_the_attestation_limits_itself() {
    let w = Harness::new();
    let client = w.account();
    let p = w.order(&client, None);
    let (order, chall, token) = (p.order, p.chall, p.token);
    let tls = TlsKey::new();
    let good = AttestationObject::decode(&w.att_obj(&w.device, &client, &token, &tls)).unwrap();
    let with_chain = |x5c: Vec<Vec<u8>>| {
        AttestationObject {
            x5c,
            ..good.clone()
        }
        .encode()
    };
    let mut oversized_certificate = good.x5c[0].clone();
    oversized_certificate.resize(2049, 0);
    let cases = [
        ("whole object over 4096 bytes", vec![0xa0; 4097]),
        (
            "four certificates",
            with_chain([good.x5c.clone(), good.x5c.clone()].concat()),
        ),
        (
            "a certificate over 2048 bytes",
            with_chain(vec![oversized_certificate, good.x5c[1].clone()]),
        ),
    ];
    for (case, att) in cases {
        let response = w.post(&client, &chall, Some(&json!({"attObj": b64(&att)})));
        assert_eq!(problem(&response), "badAttestationStatement", "{case}");
        assert_eq!(
            body(&w.post(&client, &order, None))["status"],
            "pending",
            "{case}"
        );
    }
    let fine = w.post(
        &client,
        &chall,
        Some(&json!({"attObj": b64(&good.encode())})),
    );
    assert_eq!(fine.status, 200, "{}", String::from_utf8_lossy(&fine.body));
}

#[test]
fn renewal_info_suggests_a_window_and_now_once_revoked() {
    let w = Harness::new();
    let client = w.account();
    let leaf = w.issue(&client);
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let aki = parsed
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    let cert_id = format!("{}.{}", b64(&aki), b64(parsed.raw_serial()));
    let directory = body(&w.server.handle("GET", "/acme/directory", None, b"", w.now));
    assert_eq!(
        directory["renewalInfo"],
        format!("{BASE}/acme/renewal-info")
    );
    let get = |id: &str| {
        w.server
            .handle("GET", &format!("/acme/renewal-info/{id}"), None, b"", w.now)
    };
    let info = get(&cert_id);
    assert_eq!(info.status, 200);
    assert!(info.header("retry-after").is_some());
    let window = &body(&info)["suggestedWindow"];
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let (start, end) = (parse(&window["start"]), parse(&window["end"]));
    let validity = parsed.validity();
    assert!(validity.not_before.to_datetime() < start && start < end);
    assert!(end < validity.not_after.to_datetime());
    // Unknown serial, another CA's key identifier, a malformed id.
    assert_eq!(
        get(&format!("{}.{}", b64(&aki), b64(&[1, 2, 3]))).status,
        404
    );
    assert_eq!(
        get(&format!("{}.{}", b64(&[0; 20]), b64(parsed.raw_serial()))).status,
        404
    );
    assert_eq!(problem(&get("no-dot")), "malformed");
    // Revoked: renew now.
    let request = json!({"certificate": b64(&leaf), "reason": 1});
    assert_eq!(
        w.post(&client, "/acme/revoke-cert", Some(&request)).status,
        200
    );
    let revoked = body(&get(&cert_id));
    let end = parse(&revoked["suggestedWindow"]["end"]);
    assert!(end <= time::OffsetDateTime::from(w.now) + time::Duration::seconds(1));
}

#[test]
fn an_eab_key_id_binds_exactly_one_account() {
    let w = Harness::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let created = w.new_account(&Client::from_pkcs8(pkcs8.as_ref()), KID, HMAC);
    assert_eq!(created.status, 201);
    // The same account key again: the same account.
    let again = w.new_account(&Client::from_pkcs8(pkcs8.as_ref()), KID, HMAC);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("location"), created.header("location"));
    // Another account key with the same EAB key id: refused, and nothing created.
    let second = w.new_account(&Client::new(), KID, HMAC);
    assert_eq!(
        (second.status, problem(&second).as_str()),
        (403, "unauthorized")
    );
    assert!(
        body(&second)["detail"]
            .as_str()
            .unwrap()
            .contains("already bound")
    );
    assert_eq!(w.last_audit().event, "refused");
    let created_events = w.store.audit_log(100).unwrap();
    let created_events = created_events
        .iter()
        .filter(|e| e.event == "account-created")
        .count();
    assert_eq!(created_events, 1);
    // Deactivating the account does not free the key id.
    let mut owner = Client::from_pkcs8(pkcs8.as_ref());
    owner.kid = created.header("location").map(str::to_owned);
    let account = path(owner.kid.as_deref().unwrap());
    let deactivated = w.post(&owner, &account, Some(&json!({"status": "deactivated"})));
    assert_eq!(body(&deactivated)["status"], "deactivated");
    let third = w.new_account(&Client::new(), KID, HMAC);
    assert_eq!(problem(&third), "unauthorized");
}

#[test]
fn key_change_rotates_the_account_key() {
    let w = Harness::new();
    let old = w.account();
    let account_url = old.kid.clone().unwrap();
    let directory = body(&w.server.handle("GET", "/acme/directory", None, b"", w.now));
    let url = format!("{BASE}/acme/key-change");
    assert_eq!(directory["keyChange"], url);
    let mut new = Client::new();
    let inner = new.key_change(&url, &account_url, &old.jwk());
    let changed = w.post(&old, "/acme/key-change", Some(&inner));
    assert_eq!(
        changed.status,
        200,
        "{}",
        String::from_utf8_lossy(&changed.body)
    );
    assert_eq!(changed.header("location"), Some(account_url.as_str()));
    assert_eq!(w.last_audit().event, "account-key-changed");
    // The old key no longer signs for the account; the new one does, and issues.
    let account = path(&account_url);
    assert_eq!(problem(&w.post(&old, &account, None)), "unauthorized");
    new.kid = Some(account_url.clone());
    assert_eq!(w.post(&new, &account, None).status, 200);
    w.issue(&new);
    // newAccount with the new key finds the same account.
    let mut again = Client::new();
    std::mem::swap(&mut again, &mut new);
    again.kid = None;
    let found = w.new_account(&again, KID, HMAC);
    assert_eq!(
        (found.status, found.header("location")),
        (200, Some(account_url.as_str()))
    );
}

#[test]
fn bad_key_changes_are_refused_and_change_nothing() {
    let w = Harness::new();
    let owner = w.account();
    let account_url = owner.kid.clone().unwrap();
    let url = format!("{BASE}/acme/key-change");
    let new = Client::new();
    let stranger = w.stranger();
    let nonce_inner = serde_json::from_slice::<Value>(
        &new.sign(
            &json!({"alg": "ES256", "url": url, "jwk": new.jwk(), "nonce": "n"}),
            json!({"account": account_url, "oldKey": owner.jwk()})
                .to_string()
                .as_bytes(),
        ),
    )
    .unwrap();
    let mut forged = new.key_change(&url, &account_url, &owner.jwk());
    forged["payload"] = json!(b64(b"{}"));
    let cases = [
        (nonce_inner, "malformed", 400),
        (
            new.key_change(
                &format!("{BASE}/acme/new-order"),
                &account_url,
                &owner.jwk(),
            ),
            "malformed",
            400,
        ),
        (
            new.key_change(&url, stranger.kid.as_deref().unwrap(), &owner.jwk()),
            "unauthorized",
            403,
        ),
        (
            new.key_change(&url, &account_url, &Client::new().jwk()),
            "unauthorized",
            403,
        ),
        (forged, "unauthorized", 403),
        // The new key is another account's: 409 with that account's URL.
        (
            stranger.key_change(&url, &account_url, &owner.jwk()),
            "malformed",
            409,
        ),
    ];
    for (inner, kind, status) in cases {
        let response = w.post(&owner, "/acme/key-change", Some(&inner));
        assert_eq!(
            (response.status, problem(&response).as_str()),
            (status, kind),
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(w.last_audit().event, "refused");
        // The account still answers to its old key.
        assert_eq!(w.post(&owner, &path(&account_url), None).status, 200);
    }
    let conflict = w.post(
        &owner,
        "/acme/key-change",
        Some(&stranger.key_change(&url, &account_url, &owner.jwk())),
    );
    assert_eq!(conflict.header("location"), stranger.kid.as_deref());
}
