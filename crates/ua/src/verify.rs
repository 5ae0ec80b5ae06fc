//! Verification of a provisioned device endpoint, as a browser would see it and more: the chain
//! to the issuer root, the hostname, the leaf key pinned to the key the device put in its CSR
//! over BLE ("is this my device or my neighbour's?"), the origin-binding extension, and a CORS
//! answer that allows exactly our origin and nobody else.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::profile;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The origin used to show that other origins get no CORS headers.
pub const FOREIGN_ORIGIN: &str = "https://not-the-bound-origin.invalid";
/// The most response body the check reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What the device endpoint must show.
#[derive(Clone, Debug)]
pub struct Expectation {
    /// The device's name.
    pub name: LocalName,
    /// Our origin.
    pub origin: Origin,
    /// The issuer root(s) to trust, DER.
    pub issuer_roots: Vec<Vec<u8>>,
    /// The DER SubjectPublicKeyInfo the device put in its CSR, when known.
    pub pinned_spki: Option<Vec<u8>>,
    /// The user handle the certificate must be bound to, when known.
    pub user_handle: Option<Vec<u8>>,
    /// The path to request.
    pub path: String,
    /// Certificate revocation lists (DER) from the issuer: a revoked leaf fails the check.
    pub crls: Vec<Vec<u8>>,
}

/// What the check saw.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// SHA-256 of the leaf certificate.
    pub fingerprint: [u8; 32],
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// The HTTP status of the cross-origin request.
    pub status: u16,
    /// `Access-Control-Allow-Origin` of that response.
    pub allow_origin: String,
    /// `Vary` of that response.
    pub vary: String,
    /// The response body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
}

/// Why the check failed. Each names the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No TCP connection.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The issuer root is not a usable trust anchor.
    #[error("issuer root: {0}")]
    Root(rustls::Error),
    /// The TLS handshake failed: chain, hostname or protocol.
    #[error("TLS handshake with {name}: {error}")]
    Tls {
        /// The name.
        name: String,
        /// What rustls said.
        error: std::io::Error,
    },
    /// The leaf certificate is not as expected.
    #[error("certificate: {0}")]
    Certificate(&'static str),
    /// The leaf's key is not the key the device attested over BLE.
    #[error("certificate key is not the key the device generated over BLE (another device?)")]
    Pin,
    /// HTTP failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The CORS answer is wrong.
    #[error("CORS: {0}")]
    Cors(String),
}

fn root_store(roots: &[Vec<u8>]) -> Result<rustls::RootCertStore, CheckError> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from(root.clone()))
            .map_err(CheckError::Root)?;
    }
    Ok(store)
}

fn tls_config(
    roots: &[Vec<u8>],
    crls: &[Vec<u8>],
) -> Result<Arc<rustls::ClientConfig>, CheckError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let crls = crls
        .iter()
        .map(|c| CertificateRevocationListDer::from(c.clone()));
    // The issuer's CRL covers the leaves its intermediate signs; nothing publishes one for the
    // intermediate itself, so only the leaf's status is checked.
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(roots)?), provider.clone())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .build()
            .map_err(|e| CheckError::Root(rustls::Error::General(e.to_string())))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CheckError::Root)?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Fetches `url` (https) with `roots` for its TLS certificate: e.g. the issuer's CRL.
pub async fn fetch(url: &str, roots: &[Vec<u8>]) -> Result<Vec<u8>, CheckError> {
    let http = |e: &dyn std::fmt::Display| CheckError::Http(format!("{url}: {e}"));
    let uri: hyper::Uri = url.parse().map_err(|e| http(&e))?;
    if uri.scheme_str() != Some("https") {
        return Err(http(&"not an https URL"));
    }
    let host = uri.host().ok_or_else(|| http(&"no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).map_err(|e| http(&e))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| http(&e))?;
    let tls = TlsConnector::from(tls_config(roots, &[])?)
        .connect(name, tcp)
        .await
        .map_err(|e| http(&e))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = get(tls, &host, path, None, 1024 * 1024)
        .await
        .map_err(|e| http(&e))?;
    if !(200..300).contains(&answer.status) {
        return Err(http(&format!("status {}", answer.status)));
    }
    Ok(answer.body)
}

async fn connect(
    addr: SocketAddr,
    expect: &Expectation,
) -> Result<TlsStream<TcpStream>, CheckError> {
    let config = tls_config(&expect.issuer_roots, &expect.crls)?;
    let name = ServerName::try_from(expect.name.as_str().to_owned())
        .map_err(|_| CheckError::Certificate("name is not a valid server name"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| CheckError::Connect(addr, e))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|error| CheckError::Tls {
            name: expect.name.to_string(),
            error,
        })
}

/// Checks the leaf the handshake delivered, through the protocol's one profile parser; returns
/// its fingerprint and notAfter.
fn check_leaf(leaf: &[u8], expect: &Expectation) -> Result<([u8; 32], i64), CheckError> {
    let claims = profile::parse_leaf(leaf).map_err(|e| CheckError::Certificate(e.reason()))?;
    if let Some(pin) = &expect.pinned_spki {
        if &claims.spki != pin {
            return Err(CheckError::Pin);
        }
    }
    if claims.names != [expect.name.clone()] {
        return Err(CheckError::Certificate(
            "certificate names are not exactly the device's name",
        ));
    }
    if claims.binding.origin != expect.origin {
        return Err(CheckError::Certificate(
            "certificate is bound to another origin",
        ));
    }
    if let Some(handle) = &expect.user_handle {
        if claims.binding.user_handle_digest != <[u8; 32]>::from(Sha256::digest(handle)) {
            return Err(CheckError::Certificate(
                "certificate is bound to another user",
            ));
        }
    }
    let not_after = i64::try_from(claims.not_after).unwrap_or(i64::MAX);
    Ok((Sha256::digest(leaf).into(), not_after))
}

struct HttpAnswer {
    status: u16,
    allow_origin: Option<String>,
    vary: String,
    body: Vec<u8>,
}

/// One GET over an established connection, with an `Origin` header when given; reads at most
/// `limit` bytes of body.
async fn get(
    tls: TlsStream<TcpStream>,
    host: &str,
    path: &str,
    origin: Option<&str>,
    limit: usize,
) -> Result<HttpAnswer, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, host);
    if let Some(origin) = origin {
        request = request.header(hyper::header::ORIGIN, origin);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let allow_origin = header(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN);
    let vary = header(hyper::header::VARY).unwrap_or_default();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    driver.abort();
    Ok(HttpAnswer {
        status,
        allow_origin,
        vary,
        body: body.to_bytes().to_vec(),
    })
}

/// A GET of the expected path from `origin`.
async fn get_from(
    tls: TlsStream<TcpStream>,
    expect: &Expectation,
    origin: &str,
) -> Result<HttpAnswer, CheckError> {
    let (host, path) = (expect.name.as_str(), expect.path.as_str());
    get(tls, host, path, Some(origin), MAX_BODY)
        .await
        .map_err(CheckError::Http)
}

/// Runs every check against the endpoint at `addr`.
pub async fn check(addr: SocketAddr, expect: &Expectation) -> Result<CheckReport, CheckError> {
    let tls = connect(addr, expect).await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or(CheckError::Certificate("no certificate"))?;
    let (fingerprint, not_after) = check_leaf(&leaf, expect)?;

    let ours = get_from(tls, expect, expect.origin.as_str()).await?;
    if !(200..300).contains(&ours.status) {
        return Err(CheckError::Http(format!(
            "status {} for a request from our origin",
            ours.status
        )));
    }
    let allow_origin = ours.allow_origin.unwrap_or_default();
    if allow_origin != expect.origin.as_str() {
        return Err(CheckError::Cors(format!(
            "Access-Control-Allow-Origin is {allow_origin:?}, expected exactly {:?}",
            expect.origin.as_str()
        )));
    }
    if !ours
        .vary
        .split(',')
        .any(|v| v.trim().eq_ignore_ascii_case("origin"))
    {
        return Err(CheckError::Cors(format!(
            "Vary is {:?}, expected it to name Origin",
            ours.vary
        )));
    }

    let foreign = get_from(connect(addr, expect).await?, expect, FOREIGN_ORIGIN).await?;
    if let Some(value) = foreign.allow_origin {
        return Err(CheckError::Cors(format!(
            "another origin got Access-Control-Allow-Origin {value:?}"
        )));
    }
    Ok(CheckReport {
        fingerprint,
        not_after,
        status: ours.status,
        allow_origin,
        vary: ours.vary,
        body: ours.body,
    })
}

/// Runs [`check`] against each address in turn until one is reachable: an mDNS answer may list
/// addresses the device does not serve on.
pub async fn check_any(
    addresses: &[std::net::IpAddr],
    port: u16,
    expect: &Expectation,
) -> Result<(SocketAddr, CheckReport), CheckError> {
    let mut last = None;
    for address in addresses {
        let endpoint = SocketAddr::new(*address, port);
        match check(endpoint, expect).await {
            Ok(report) => return Ok((endpoint, report)),
            Err(error @ CheckError::Connect(..)) => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or(CheckError::Certificate("no address to connect to")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The leaves of `protocol/vectors/profile.json`, by case name.
    fn vector(name: &str) -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../protocol/vectors/profile.json"
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let case = file["leaves"]["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        hex::decode(case["der"].as_str().unwrap()).unwrap()
    }

    fn expectation() -> Expectation {
        let typical = profile::parse_leaf(&vector("typical")).unwrap();
        Expectation {
            name: typical.names[0].clone(),
            origin: Origin::parse("https://vod.example.com").unwrap(),
            issuer_roots: vec![],
            pinned_spki: Some(typical.spki),
            user_handle: Some(b"user-42".to_vec()),
            path: "/".into(),
            crls: vec![],
        }
    }

    #[test]
    fn the_profile_rules_hold_for_the_ua() {
        let expect = expectation();
        assert!(check_leaf(&vector("typical"), &expect).is_ok());
        for (case, reason) in [
            (
                "binding_critical",
                "the origin-binding extension is critical",
            ),
            (
                "binding_repeated",
                "the origin-binding extension appears more than once",
            ),
            ("binding_missing", "no origin-binding extension"),
            ("san_ip_address", "a subjectAltName that is not a DNS name"),
        ] {
            match check_leaf(&vector(case), &expect) {
                Err(CheckError::Certificate(r)) => assert_eq!(r, reason, "{case}"),
                other => panic!("{case}: {other:?}"),
            }
        }
        let mut other_user = expectation();
        other_user.user_handle = Some(b"user-1".to_vec());
        assert!(matches!(
            check_leaf(&vector("typical"), &other_user),
            Err(CheckError::Certificate(
                "certificate is bound to another user"
            ))
        ));
        let mut other_key = expectation();
        other_key.pinned_spki = Some(vec![1, 2, 3]);
        assert!(matches!(
            check_leaf(&vector("typical"), &other_key),
            Err(CheckError::Pin)
        ));
        assert!(matches!(
            check_leaf(&vector("two_names"), &expect),
            Err(CheckError::Certificate(_))
        ));
    }
}
