//! RFC 8555 conformance points, each with its own test: 415 for a JWS with the wrong
//! Content-Type (§6.2), `badSignatureAlgorithm` listing the accepted algorithms (§6.2), 403
//! `orderNotReady` for finalizing an order that is not ready (§7.4), `expired` / `invalid`
//! past expiry (§7.1.6), 403 `unauthorized` for revoking another account's certificate
//! (§7.6), the attestation object's limits enforced by the issuer itself (SPEC §5), and ACME
//! Renewal Information (RFC 9773) for certificates that are not STAR.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use common::client::{self, BASE, Client, b64, body, path, post, problem};
use common::{Device, Manufacturer, TlsKey};
use localcert_issuer::acme::{AcmeServer, Policy, Response};
use localcert_issuer::ca::{self, CaFiles, IssuingCa};
use localcert_issuer::store::{RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use localcert_issuer::validate::TrustConfig;
use localcert_proto::attestation::AttestationObject;
use localcert_proto::origin::Origin;
use serde_json::{Value, json};

const KID: &str = "kid-vod";
const HMAC: &[u8] = &[42; 32];
const USER: &[u8] = b"user-1";

struct World {
    _dir: tempfile::TempDir,
    server: AcmeServer,
    device: Device,
    origin: Origin,
    now: SystemTime,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let files = CaFiles::in_dir(dir.path());
        ca::init_ca(&files, "test", now).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("issuer.sqlite")).unwrap());
        let origin = Origin::parse("https://vod.example.com").unwrap();
        store
            .add_relying_party(&RelyingParty {
                origin: origin.clone(),
                eab_kid: KID.into(),
                eab_hmac_key: HMAC.to_vec(),
                status: RelyingPartyStatus::Active,
                created: now,
            })
            .unwrap();
        let maker = Manufacturer::new("Acme TVs");
        let trust = TrustConfig::new(std::slice::from_ref(&maker.root_der), []).unwrap();
        let ca = IssuingCa::load(&files).unwrap();
        let server = AcmeServer::new(store, ca, trust, Policy::default(), BASE);
        Self {
            _dir: dir,
            server,
            device: maker.device("0001"),
            origin,
            now,
        }
    }

    fn post(&self, client: &Client, path: &str, payload: Option<&Value>) -> Response {
        post(&self.server, client, path, payload, self.now)
    }

    fn account(&self) -> Client {
        let mut client = Client::new();
        let eab = client.eab(KID, HMAC);
        let response = self.post(
            &client,
            "/acme/new-account",
            Some(&json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab})),
        );
        assert_eq!(response.status, 201);
        client.kid = Some(response.header("location").unwrap().to_owned());
        client
    }

    fn name(&self) -> String {
        self.device.name("tv", &self.origin).to_string()
    }

    /// A new order: (order path, authz path, challenge path, token).
    fn order(&self, client: &Client) -> (String, String, String, String) {
        let payload = json!({"identifiers": [{"type": "dns", "value": self.name()}]});
        let response = self.post(client, "/acme/new-order", Some(&payload));
        assert_eq!(response.status, 201);
        let order = path(response.header("location").unwrap());
        let authz = path(body(&response)["authorizations"][0].as_str().unwrap());
        let challenge = body(&self.post(client, &authz, None))["challenges"][0].clone();
        (
            order,
            authz,
            path(challenge["url"].as_str().unwrap()),
            challenge["token"].as_str().unwrap().to_owned(),
        )
    }

    fn att_obj(&self, client: &Client, token: &str, tls: &TlsKey) -> Vec<u8> {
        let key_authorization = format!("{token}.{}", client.thumbprint());
        let names = vec![self.device.name("tv", &self.origin)];
        self.device
            .attest(&key_authorization, &self.origin, USER, &tls.spki(), &names)
    }

    /// A whole issuance; the leaf's DER.
    fn issue(&self, client: &Client) -> Vec<u8> {
        let (order, _, chall, token) = self.order(client);
        let tls = TlsKey::new();
        let att = self.att_obj(client, &token, &tls);
        let answered = self.post(client, &chall, Some(&json!({"attObj": b64(&att)})));
        assert_eq!(answered.status, 200);
        let csr = json!({"csr": b64(&tls.csr(&[&self.name()]))});
        let finalized = self.post(client, &format!("{order}/finalize"), Some(&csr));
        assert_eq!(finalized.status, 200);
        let cert = path(body(&finalized)["certificate"].as_str().unwrap());
        let chain = self.post(client, &cert, None);
        ca::pem_blocks(&chain.body, "CERTIFICATE")
            .unwrap()
            .remove(0)
    }
}

#[test]
fn a_jws_with_another_content_type_gets_415() {
    let w = World::new();
    let client = w.account();
    let (order, ..) = w.order(&client);
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
    let w = World::new();
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
    let w = World::new();
    let client = w.account();
    let (order, ..) = w.order(&client);
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
    let w = World::new();
    let client = w.account();
    let (order, authz, ..) = w.order(&client);
    assert_eq!(body(&w.post(&client, &authz, None))["status"], "pending");
    let late = w.now + Policy::default().order_lifetime;
    let authz_late = body(&post(&w.server, &client, &authz, None, late));
    assert_eq!(authz_late["status"], "expired");
    let order_late = body(&post(&w.server, &client, &order, None, late));
    assert_eq!(order_late["status"], "invalid");
}

#[test]
fn revoking_another_accounts_certificate_gets_403_unauthorized() {
    let w = World::new();
    let owner = w.account();
    let leaf = w.issue(&owner);
    let other = w.account();
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
    let w = World::new();
    let client = w.account();
    let (order, _, chall, token) = w.order(&client);
    let tls = TlsKey::new();
    let good = AttestationObject::decode(&w.att_obj(&client, &token, &tls)).unwrap();
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
    let w = World::new();
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
