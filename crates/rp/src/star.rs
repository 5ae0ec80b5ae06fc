//! Cancelling STAR delegations from the origin's side (RFC 8739 §2.3): a POST of
//! `{"status": "canceled"}` to the order, signed with the origin's ACME account key. instant-acme
//! has no call for it, so this module makes the few signed requests itself (RFC 8555 §6.2):
//! a JWS with `alg` ES256, `kid` the account URL, a fresh `nonce` and the `url` it is sent to.
//!
//! The orders come from the account's `orders` list (RFC 8555 §7.1.2.1), so the backend keeps
//! no record of its own: a STAR order is one with `auto-renewal`; it is cancelled when it names
//! the `.local` name asked for and is not cancelled already.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use instant_acme::AccountCredentials;
use localcert_proto::name::LocalName;
use localcert_proto::profile;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::account::AcmeSettings;
use crate::error::FlowError;

/// The most orders of the account examined for one cancel: an explicit bound on the work one
/// call can cause (each order is one signed request).
pub const MAX_ORDERS_EXAMINED: usize = 1000;
/// The largest response body read from the issuer.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The account's signing key and URL (the JWS `kid`), from instant-acme's credentials.
pub struct AccountKey {
    kid: String,
    key: EcdsaKeyPair,
}

impl std::fmt::Debug for AccountKey {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl AccountKey {
    /// The key and URL of an account instant-acme created or loaded (a P-256 key: ES256).
    pub fn from_credentials(credentials: &AccountCredentials) -> Result<Self, FlowError> {
        let fields = serde_json::to_value(credentials).map_err(|e| issuer(&e))?;
        let kid = fields["id"]
            .as_str()
            .ok_or_else(|| FlowError::Issuer("account credentials without an id".into()))?
            .to_owned();
        let pkcs8 = credentials.private_key().secret_pkcs8_der();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| FlowError::Issuer("the account key is not a P-256 key".into()))?;
        Ok(Self { kid, key })
    }

    /// The account URL.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The flattened JWS of `payload` (`None`: POST-as-GET, an empty payload) for `url`.
    fn jws(&self, url: &str, nonce: &str, payload: Option<&Value>) -> Result<Value, FlowError> {
        let protected = json!({"alg": "ES256", "kid": self.kid, "nonce": nonce, "url": url});
        let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
        let payload = payload.map_or_else(String::new, |p| URL_SAFE_NO_PAD.encode(p.to_string()));
        let signature = self
            .key
            .sign(
                &SystemRandom::new(),
                format!("{protected}.{payload}").as_bytes(),
            )
            .map_err(|_| FlowError::Issuer("signing the request failed".into()))?;
        Ok(json!({
            "protected": protected,
            "payload": payload,
            "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
        }))
    }
}

/// A STAR delegation that was cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canceled {
    /// The order URL.
    pub order: String,
    /// Its `star-certificate` URL, the one the device fetches renewals from.
    pub star_certificate: Option<String>,
}

impl Canceled {
    /// The JSON form the API and the CLI print.
    pub fn to_json(&self) -> Value {
        json!({"order": self.order, "star_certificate": self.star_certificate})
    }
}

/// What one cancel found among the account's orders for the name: an operator can tell a
/// wrong name (nothing at all) from a one-off certificate and from a delegation ended before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CancelReport {
    /// The live delegations cancelled by this call.
    pub canceled: Vec<Canceled>,
    /// STAR orders for the name that had ended before (cancelled or failed).
    pub already_ended: usize,
    /// Orders for the name without auto-renewal: one-off certificates, nothing to cancel.
    pub one_off: usize,
}

/// What an order of the account is to a cancel for one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrderKind {
    /// It does not name the name.
    Other,
    /// A one-off certificate for the name.
    OneOff,
    /// A STAR order for the name, cancelled or failed already.
    EndedStar,
    /// A STAR order for the name that the issuer still renews (or will issue).
    LiveStar,
}

struct Answer {
    status: u16,
    nonce: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Value, FlowError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| FlowError::Issuer(format!("issuer answer is not JSON: {e}")))
    }

    /// The problem's detail for people, or the status.
    fn problem(&self) -> String {
        let problem = self.json().unwrap_or(Value::Null);
        match (problem["type"].as_str(), problem["detail"].as_str()) {
            (Some(kind), Some(detail)) => format!("{kind}: {detail}"),
            _ => format!("HTTP {}", self.status),
        }
    }
}

/// Signed requests to one issuer, with the nonce each answer hands to the next.
struct Session<'a> {
    tls: Arc<rustls::ClientConfig>,
    key: &'a AccountKey,
    directory_url: &'a str,
    nonce: Option<String>,
}

impl Session<'_> {
    async fn fresh_nonce(&self) -> Result<String, FlowError> {
        let directory = send(&self.tls, "GET", self.directory_url, None).await?;
        let new_nonce = directory.json()?["newNonce"]
            .as_str()
            .ok_or_else(|| FlowError::Issuer("the directory names no newNonce".into()))?
            .to_owned();
        send(&self.tls, "HEAD", &new_nonce, None)
            .await?
            .nonce
            .ok_or_else(|| FlowError::Issuer("newNonce gave no Replay-Nonce".into()))
    }

    /// A signed POST (`None`: POST-as-GET); one retry on `badNonce`, as RFC 8555 §6.5 expects.
    async fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Answer, FlowError> {
        for _ in 0..2 {
            let nonce = match self.nonce.take() {
                Some(nonce) => nonce,
                None => self.fresh_nonce().await?,
            };
            let body = self.key.jws(url, &nonce, payload)?.to_string();
            let answer = send(&self.tls, "POST", url, Some(body.into_bytes())).await?;
            self.nonce = answer.nonce.clone();
            let bad_nonce = answer.status == 400
                && answer.json().is_ok_and(|p| {
                    p["type"].as_str() == Some("urn:ietf:params:acme:error:badNonce")
                });
            if !bad_nonce {
                return Ok(answer);
            }
        }
        Err(FlowError::Issuer(format!(
            "{url}: the issuer refused two nonces"
        )))
    }

    async fn post_ok(&mut self, url: &str, payload: Option<&Value>) -> Result<Answer, FlowError> {
        let answer = self.post(url, payload).await?;
        if !(200..300).contains(&answer.status) {
            return Err(FlowError::Issuer(format!("{url}: {}", answer.problem())));
        }
        Ok(answer)
    }
}

/// Cancels every live STAR delegation of the account for `name`; with `user`, only those whose
/// certificate is bound to that user handle (SPEC §8.4). Returns what was cancelled (possibly
/// nothing) and what else the account holds for the name.
pub async fn cancel_star(
    settings: &AcmeSettings,
    key: &AccountKey,
    name: &LocalName,
    user: Option<&[u8]>,
) -> Result<CancelReport, FlowError> {
    let mut session = Session {
        tls: tls_config(settings)?,
        key,
        directory_url: &settings.directory_url,
        nonce: None,
    };
    let account = session.post_ok(key.kid(), Some(&json!({}))).await?.json()?;
    let orders_url = account["orders"]
        .as_str()
        .ok_or_else(|| FlowError::Issuer("the account object has no orders URL".into()))?;
    let orders = session.post_ok(orders_url, None).await?.json()?;
    let orders: Vec<String> = orders["orders"]
        .as_array()
        .ok_or_else(|| FlowError::Issuer("the orders list is not a list".into()))?
        .iter()
        .filter_map(|o| o.as_str().map(str::to_owned))
        .collect();
    if orders.len() > MAX_ORDERS_EXAMINED {
        return Err(FlowError::Issuer(format!(
            "the account has {} orders, over the {MAX_ORDERS_EXAMINED} one cancel examines",
            orders.len()
        )));
    }
    let mut report = CancelReport::default();
    for url in orders {
        let order = session.post_ok(&url, None).await?.json()?;
        match kind_of(&order, name) {
            OrderKind::Other => continue,
            OrderKind::OneOff => {
                report.one_off += 1;
                continue;
            }
            OrderKind::EndedStar => {
                report.already_ended += 1;
                continue;
            }
            OrderKind::LiveStar => {}
        }
        let star_certificate = order["star-certificate"].as_str().map(str::to_owned);
        if let Some(user) = user {
            let Some(cert_url) = &star_certificate else {
                continue; // not issued yet: no certificate says whose it is
            };
            let pem = session.post_ok(cert_url, None).await?.body;
            if !leaf_bound_to(&pem, user) {
                continue;
            }
        }
        let answer = session
            .post_ok(&url, Some(&json!({"status": "canceled"})))
            .await?
            .json()?;
        if answer["status"].as_str() != Some("canceled") {
            return Err(FlowError::Issuer(format!(
                "{url}: the order is {} after the cancel",
                answer["status"]
            )));
        }
        tracing::info!(order = %url, %name, "STAR delegation cancelled");
        report.canceled.push(Canceled {
            order: url,
            star_certificate,
        });
    }
    Ok(report)
}

/// Whether an order names `name`, has `auto-renewal`, and is cancelled (or failed) already.
fn kind_of(order: &Value, name: &LocalName) -> OrderKind {
    let names_it = order["identifiers"].as_array().is_some_and(|ids| {
        ids.iter()
            .any(|i| i["type"] == "dns" && i["value"].as_str() == Some(name.as_str()))
    });
    let ended = matches!(order["status"].as_str(), Some("canceled" | "invalid"));
    match (names_it, order.get("auto-renewal").is_some(), ended) {
        (false, _, _) => OrderKind::Other,
        (true, false, _) => OrderKind::OneOff,
        (true, true, true) => OrderKind::EndedStar,
        (true, true, false) => OrderKind::LiveStar,
    }
}

/// Whether the first certificate of a PEM chain is bound to `user` (by the profile parser).
fn leaf_bound_to(pem: &[u8], user: &[u8]) -> bool {
    let digest: [u8; 32] = Sha256::digest(user).into();
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .and_then(|leaf| profile::parse_leaf(leaf.as_ref()).ok())
        .is_some_and(|claims| claims.binding.user_handle_digest == digest)
}

fn issuer(e: &dyn std::fmt::Display) -> FlowError {
    FlowError::Issuer(e.to_string())
}

fn tls_config(settings: &AcmeSettings) -> Result<Arc<rustls::ClientConfig>, FlowError> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.tls_root {
        Some(path) => {
            let root = CertificateDer::from_pem_file(path)
                .map_err(|e| FlowError::Issuer(format!("{}: {e}", path.display())))?;
            roots.add(root).map_err(|e| issuer(&e))?;
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| issuer(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One HTTPS request on its own connection; reads at most [`MAX_RESPONSE_BYTES`].
async fn send(
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, FlowError> {
    let fail = |e: &dyn std::fmt::Display| FlowError::Issuer(format!("{method} {url}: {e}"));
    let uri: hyper::Uri = url.parse().map_err(|e| fail(&e))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail(&"not an https URL"));
    }
    let host = uri.host().ok_or_else(|| fail(&"no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone()).map_err(|e| fail(&e))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(&e))?;
    let stream = TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    let driver = tokio::spawn(conn);
    let authority = uri.authority().map_or(host.clone(), ToString::to_string);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    if body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/jose+json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| fail(&e))?;
    let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
    let status = response.status().as_u16();
    let nonce = response
        .headers()
        .get("replay-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok(Answer {
        status,
        nonce,
        body,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn order(status: &str, name: &str, star: bool) -> Value {
        let mut order = json!({
            "status": status,
            "identifiers": [{"type": "dns", "value": name}],
        });
        if star {
            order["auto-renewal"] = json!({"end-date": "2027-01-01T00:00:00Z", "lifetime": 604800});
        }
        order
    }

    #[test]
    fn each_order_is_sorted_by_name_star_and_status() {
        let name = LocalName::parse("tv-vod-example-com-hp65xr-f1jk.local").unwrap();
        let other = "tv-app-test-8443-abcdef-f1jk.local";
        for (status, star, kind) in [
            ("valid", true, OrderKind::LiveStar),
            ("pending", true, OrderKind::LiveStar),
            ("valid", false, OrderKind::OneOff),
            ("canceled", true, OrderKind::EndedStar),
            ("invalid", true, OrderKind::EndedStar),
        ] {
            let order = order(status, name.as_str(), star);
            assert_eq!(kind_of(&order, &name), kind, "{order}");
        }
        assert_eq!(
            kind_of(&order("valid", other, true), &name),
            OrderKind::Other
        );
        assert_eq!(
            kind_of(&json!({"auto-renewal": {}}), &name),
            OrderKind::Other
        );
    }

    #[test]
    fn the_jws_is_es256_with_kid_nonce_and_url_and_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = ring::signature::KeyPair::public_key(&key).as_ref().to_vec();
        let key = AccountKey {
            kid: "https://issuer.test/acme/account/7".into(),
            key,
        };
        let url = "https://issuer.test/acme/order/9";
        let jws = key
            .jws(url, "nonce-1", Some(&json!({"status": "canceled"})))
            .unwrap();
        let field = |f: &str| jws[f].as_str().unwrap().to_owned();
        let protected: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(field("protected")).unwrap()).unwrap();
        assert_eq!(
            protected,
            json!({"alg": "ES256", "kid": key.kid, "nonce": "nonce-1", "url": url})
        );
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(field("payload")).unwrap()).unwrap();
        assert_eq!(payload, json!({"status": "canceled"}));
        let signed = format!("{}.{}", field("protected"), field("payload"));
        let signature = URL_SAFE_NO_PAD.decode(field("signature")).unwrap();
        assert_eq!(signature.len(), 64, "r || s, not DER");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        // POST-as-GET: an empty payload.
        assert_eq!(key.jws(url, "n", None).unwrap()["payload"], "");
    }
}
