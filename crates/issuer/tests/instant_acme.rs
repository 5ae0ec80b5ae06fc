//! The full ACME flow over HTTPS on loopback with an independent client, instant-acme: EAB
//! account, order, device-attest-01 with a test device credential, finalize, download, STAR
//! fetch and renewal, cancel, revoke, CRL, oversize body, account deactivation.
//!
//! instant-acme 0.8 cannot put `auto-renewal` in a newOrder (its `NewOrder` has no such field),
//! so the STAR order is created with a raw JWS signed by the same account key, then driven with
//! instant-acme like any other order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::client::Client;
use common::harness::{HMAC, KID, Parts, USER};
use common::issuance::create_account;
use common::{Device, TlsKey};
use instant_acme::{
    ChallengeStatus, ChallengeType, DeviceAttestation, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy, RevocationRequest,
};
use localcert_issuer::acme::{AcmeServer, Policy, rfc3339};
use localcert_issuer::ca::{self, TlsFiles};
use localcert_issuer::serve;
use localcert_issuer::store::Store;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Raw {
    port: u16,
    connector: tokio_rustls::TlsConnector,
}

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Raw {
    fn new(port: u16, tls_cert: &Path) -> Self {
        let pem = std::fs::read(tls_cert).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for der in ca::pem_blocks(&pem, "CERTIFICATE").unwrap() {
            roots.add(CertificateDer::from(der)).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            port,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// One HTTP/1.1 request on its own connection.
    async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> RawResponse {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = self.connector.connect(name, tcp).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        // The server closes after the response; an unclean close still leaves the bytes.
        let _ = tls.read_to_end(&mut raw).await;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let body = raw[split + 4..].to_vec();
        assert!(
            !headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
            "this tiny client reads only content-length bodies"
        );
        RawResponse {
            status,
            headers,
            body,
        }
    }

    async fn nonce(&self) -> String {
        let response = self.request("HEAD", "/acme/new-nonce", None, b"").await;
        response.header("replay-nonce").unwrap().to_owned()
    }

    async fn post(&self, client: &Client, base: &str, path: &str, payload: &Value) -> RawResponse {
        self.post_bytes(client, base, path, payload.to_string().as_bytes())
            .await
    }

    async fn post_bytes(
        &self,
        client: &Client,
        base: &str,
        path: &str,
        payload: &[u8],
    ) -> RawResponse {
        let nonce = self.nonce().await;
        let body = client.jws(&format!("{base}{path}"), &nonce, payload);
        self.request("POST", path, Some("application/jose+json"), &body)
            .await
    }
}

/// Answers every authorization of `order` with a device attestation for `tls_key`.
async fn attest(
    order: &mut Order,
    device: &Device,
    origin: &Origin,
    names: &[LocalName],
    tls_key: &TlsKey,
) {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.unwrap();
        let mut challenge = authz.challenge(ChallengeType::DeviceAttest01).unwrap();
        let key_authorization = challenge.key_authorization();
        let att_obj = device.attest(
            key_authorization.as_str(),
            origin,
            USER,
            &tls_key.spki(),
            names,
        );
        let status = challenge
            .send_device_attestation(&DeviceAttestation {
                att_obj: Cow::Owned(att_obj),
            })
            .await
            .unwrap();
        assert_eq!(status, ChallengeStatus::Valid);
    }
}

fn verify_chain(chain_pem: &str, ca: &[u8], name: &str, at: SystemTime) {
    let ders = ca::pem_blocks(chain_pem.as_bytes(), "CERTIFICATE").unwrap();
    assert_eq!(ders.len(), 2);
    let root = CertificateDer::from(ca.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
    let leaf = CertificateDer::from(ders[0].clone());
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let intermediates = [CertificateDer::from(ders[1].clone())];
    let now = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        UnixTime::since_unix_epoch(now),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name.to_owned()).unwrap())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_acme_drives_the_full_flow() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let tls_files = TlsFiles::in_dir(dir.path());
    ca::init_tls(&tls_files, now).unwrap();
    let Parts {
        ca,
        store,
        origin,
        device,
        trust,
        ..
    } = Parts::new(dir.path(), now, now);
    let root_der = ca.root_der().to_vec();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("https://localhost:{port}");
    let server = Arc::new(AcmeServer::new(
        store.clone(),
        ca,
        trust,
        Policy::default(),
        &base,
    ));
    let tls = serve::tls_config(&tls_files.cert, &tls_files.key).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve::serve(
        listener,
        tls,
        server.clone(),
        Duration::from_secs(3600),
        async {
            let _ = stopped.await;
        },
    ));
    let raw = Raw::new(port, &tls_files.cert);

    // EAB account.
    let (account, credentials) =
        create_account(&tls_files.cert, &server.directory_url(), KID, HMAC)
            .await
            .unwrap();

    // A plain order, attested, finalized, downloaded.
    let name = device.name("tv", &origin);
    let names = vec![name.clone()];
    let identifiers = [Identifier::Dns(name.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .unwrap();
    let tls_key = TlsKey::new();
    attest(&mut order, &device, &origin, &names, &tls_key).await;
    assert_eq!(
        order.poll_ready(&RetryPolicy::new()).await.unwrap(),
        OrderStatus::Ready
    );
    order
        .finalize_csr(&tls_key.csr(&[name.as_str()]))
        .await
        .unwrap();
    let chain = order.poll_certificate(&RetryPolicy::new()).await.unwrap();
    verify_chain(&chain, &root_der, name.as_str(), now);

    // A STAR order (raw JWS with the account's key), then instant-acme again.
    let credentials = serde_json::to_value(&credentials).unwrap();
    let mut client = Client::from_pkcs8(
        &URL_SAFE_NO_PAD
            .decode(credentials["key_pkcs8"].as_str().unwrap())
            .unwrap(),
    );
    client.kid = Some(credentials["id"].as_str().unwrap().to_owned());
    let lifetime = 4 * 3600;
    let star_request = json!({
        "identifiers": [{"type": "dns", "value": name.as_str()}],
        "auto-renewal": {"end-date": rfc3339(now + Duration::from_secs(30 * 86_400)), "lifetime": lifetime},
    });
    let response = raw
        .post(&client, &base, "/acme/new-order", &star_request)
        .await;
    assert_eq!(response.status, 201);
    assert_eq!(response.json()["auto-renewal"]["lifetime"], lifetime);
    let star_url = response.header("location").unwrap().to_owned();
    let mut star_order = account.order(star_url.clone()).await.unwrap();
    let star_key = TlsKey::new();
    attest(&mut star_order, &device, &origin, &names, &star_key).await;
    assert_eq!(
        star_order.poll_ready(&RetryPolicy::new()).await.unwrap(),
        OrderStatus::Ready
    );
    star_order
        .finalize_csr(&star_key.csr(&[name.as_str()]))
        .await
        .unwrap();
    let first = star_order
        .poll_certificate(&RetryPolicy::new())
        .await
        .unwrap();
    // The order names its star-certificate URL (POST-as-GET).
    let star_state = raw
        .post_bytes(&client, &base, &star_url.replace(&base, ""), b"")
        .await;
    let star_path = star_state.json()["star-certificate"]
        .as_str()
        .unwrap()
        .replace(&base, "");

    // Unauthenticated GET of the star-certificate URL; the renewal replaces it at half-life.
    let fetched = raw.request("GET", &star_path, None, b"").await;
    assert_eq!(fetched.status, 200);
    assert_eq!(String::from_utf8(fetched.body).unwrap(), first);
    assert_eq!(
        server
            .renew_due(now + Duration::from_secs(lifetime / 2))
            .unwrap(),
        1
    );
    let renewed = raw.request("GET", &star_path, None, b"").await;
    let renewed = String::from_utf8(renewed.body).unwrap();
    assert_ne!(renewed, first);
    verify_chain(
        &renewed,
        &root_der,
        name.as_str(),
        now + Duration::from_secs(lifetime / 2),
    );

    // Cancel the STAR order: the URL now says autoRenewalCanceled.
    let canceled = raw
        .post(
            &client,
            &base,
            &star_url.replace(&base, ""),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(canceled.json()["status"], "canceled");
    let fetched = raw.request("GET", &star_path, None, b"").await;
    assert_eq!(fetched.status, 403);
    assert_eq!(
        fetched.json()["type"],
        "urn:ietf:params:acme:error:autoRenewalCanceled"
    );

    // Revoke the first plain certificate; the CRL lists it.
    let leaf = ca::pem_blocks(chain.as_bytes(), "CERTIFICATE")
        .unwrap()
        .remove(0);
    let leaf = CertificateDer::from(leaf);
    account
        .revoke(&RevocationRequest {
            certificate: &leaf,
            reason: None,
        })
        .await
        .unwrap();
    let crl = raw.request("GET", "/crl", None, b"").await;
    assert_eq!(crl.status, 200);
    let (_, crl) = x509_parser::parse_x509_crl(&crl.body).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert!(
        crl.iter_revoked_certificates()
            .any(|r| r.raw_serial() == parsed.raw_serial())
    );

    // An oversize body is refused before it is parsed.
    let big = vec![b'a'; Policy::default().max_body_bytes + 1];
    let response = raw
        .request(
            "POST",
            "/acme/new-order",
            Some("application/jose+json"),
            &big,
        )
        .await;
    assert_eq!(response.status, 413);
    assert_eq!(
        response.json()["type"],
        "urn:ietf:params:acme:error:malformed"
    );

    // instant-acme rotates the account key (keyChange): the old key no longer signs for the
    // account, the new one orders.
    let old_key_order = raw
        .post(&client, &base, "/acme/new-order", &star_request)
        .await;
    assert_eq!(old_key_order.status, 201);
    let mut account = account;
    let rotated = serde_json::to_value(account.update_key().await.unwrap()).unwrap();
    let refused = raw
        .post(&client, &base, "/acme/new-order", &star_request)
        .await;
    assert_eq!(
        (refused.status, refused.json()["type"].as_str()),
        (403, Some("urn:ietf:params:acme:error:unauthorized"))
    );
    client = Client::from_pkcs8(
        &URL_SAFE_NO_PAD
            .decode(rotated["key_pkcs8"].as_str().unwrap())
            .unwrap(),
    );
    client.kid = Some(rotated["id"].as_str().unwrap().to_owned());
    account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .unwrap();
    // The EAB key is bound to this account: another account key cannot use it.
    let second = create_account(&tls_files.cert, &server.directory_url(), KID, HMAC).await;
    match second {
        Err(instant_acme::Error::Api(problem)) => {
            assert_eq!(
                problem.r#type.as_deref(),
                Some("urn:ietf:params:acme:error:unauthorized")
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a second account was created with the same EAB key"),
    }

    // Deactivation ends the account.
    account.deactivate().await.unwrap();
    let response = raw
        .post(&client, &base, "/acme/new-order", &star_request)
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(
        response.json()["type"],
        "urn:ietf:params:acme:error:unauthorized"
    );

    let audit: Vec<String> = store
        .audit_log(100)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for event in [
        "account-created",
        "order-created",
        "attested",
        "issued",
        "order-canceled",
        "revoked",
        "refused",
        "account-key-changed",
        "account-deactivated",
    ] {
        assert!(
            audit.iter().any(|e| e == event),
            "{event} missing from {audit:?}"
        );
    }
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}
