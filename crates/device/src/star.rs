//! STAR renewal (RFC 8739): a binding whose certificate came with a `star-certificate` URL
//! fetches the next certificate before the current one expires, and swaps it in once the
//! engine has checked it (same key, names and origin binding, same trusted issuer).
//!
//! The schedule is a pure function ([`next_attempt`]); the loop ([`renewal_loop`]) takes the
//! fetcher, clock, sleeper and installer as arguments, so tests run it in virtual time. When
//! the issuer says the delegation ended (`autoRenewalCanceled`/`autoRenewalExpired`), the loop
//! stops; the binding is served until its certificate expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::engine::WallClock;
use crate::error::Error;
use crate::pki;
use crate::verify::{Refused, leaf_window};

/// Renewal starts when this fraction of the lifetime has passed (before jitter).
const RENEW_AT_NUMERATOR: u64 = 2;
const RENEW_AT_DENOMINATOR: u64 = 3;
/// The first retry after a failure, in seconds; doubled per failure.
pub const FIRST_BACKOFF_SECS: u64 = 30;
/// The longest wait between retries, in seconds.
pub const MAX_BACKOFF_SECS: u64 = 3600;
/// The largest certificate chain response accepted, in bytes.
const MAX_RESPONSE_LEN: usize = 64 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// When to fetch next, in Unix seconds.
///
/// With no failure: at two thirds of the lifetime, made earlier by up to a tenth of the
/// lifetime (`jitter` in `[0, 1)`) so a fleet does not fetch in step; never before `now`. After
/// `failures` failed tries: exponential back-off from [`FIRST_BACKOFF_SECS`] to
/// [`MAX_BACKOFF_SECS`], plus up to half of it as jitter, but never later than halfway to the
/// expiry while the certificate is still valid.
pub fn next_attempt(now: u64, not_before: u64, not_after: u64, failures: u32, jitter: f64) -> u64 {
    let jitter = jitter.clamp(0.0, 1.0);
    let lifetime = not_after.saturating_sub(not_before).max(1);
    if failures == 0 {
        let renew_at = not_before + lifetime * RENEW_AT_NUMERATOR / RENEW_AT_DENOMINATOR;
        let early = (lifetime as f64 / 10.0 * jitter) as u64;
        return renew_at.saturating_sub(early).max(now);
    }
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = FIRST_BACKOFF_SECS
        .saturating_mul(1 << exponent)
        .min(MAX_BACKOFF_SECS);
    let backoff = backoff + (backoff as f64 / 2.0 * jitter) as u64;
    let mut delay = backoff;
    if now < not_after {
        // Leave room for more tries before the certificate runs out.
        delay = delay.min(((not_after - now) / 2).max(1));
    }
    now + delay.max(1)
}

/// What a `star-certificate` URL answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The current chain, DER, leaf first.
    Chain(Vec<Vec<u8>>),
    /// The delegation ended (cancelled or expired): stop fetching.
    Ended,
}

/// A boxed future, as the traits below return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches a `star-certificate` URL.
pub trait StarFetch: Send + Sync {
    /// One GET of `url`.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Fetched, Error>>;
}

/// Waits; injected so tests run in virtual time.
pub trait Sleeper: Send + Sync {
    /// Sleeps for `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// Sleeps with tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Why a renewal loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalEnd {
    /// The issuer ended the delegation.
    Ended,
    /// The chain to renew could not be read.
    NoCurrentCertificate,
}

/// Renews one binding until the issuer ends the delegation.
///
/// `current` is the installed chain; `install` hands a fetched chain to the engine
/// ([`Device::renew`](crate::engine::Device::renew)) and returns its refusal if any; `jitter`
/// draws from `[0, 1)`. Cancel the loop by dropping (aborting) its task.
pub async fn renewal_loop(
    url: &str,
    current: Vec<Vec<u8>>,
    fetcher: &dyn StarFetch,
    clock: &dyn WallClock,
    sleeper: &dyn Sleeper,
    mut jitter: impl FnMut() -> f64 + Send,
    mut install: impl FnMut(Vec<Vec<u8>>) -> Result<(), Refused> + Send,
) -> RenewalEnd {
    let Some(mut leaf) = current.into_iter().next() else {
        return RenewalEnd::NoCurrentCertificate;
    };
    let Some((mut not_before, mut not_after)) = leaf_window(&leaf) else {
        return RenewalEnd::NoCurrentCertificate;
    };
    let mut failures = 0u32;
    loop {
        let now = clock.unix_time();
        let at = next_attempt(now, not_before, not_after, failures, jitter());
        if at > now {
            sleeper.sleep(Duration::from_secs(at - now)).await;
        }
        match fetcher.fetch(url).await {
            Ok(Fetched::Ended) => {
                tracing::info!(url, "STAR delegation ended; serving until expiry");
                return RenewalEnd::Ended;
            }
            Ok(Fetched::Chain(chain)) => {
                let new_leaf = chain.first().cloned().unwrap_or_default();
                if new_leaf == leaf {
                    // The issuer has not rotated yet.
                    failures = failures.saturating_add(1);
                    continue;
                }
                let window = leaf_window(&new_leaf);
                match (window, install(chain)) {
                    (Some((nb, na)), Ok(())) => {
                        tracing::info!(url, not_after = na, "STAR certificate renewed");
                        leaf = new_leaf;
                        (not_before, not_after) = (nb, na);
                        failures = 0;
                    }
                    (_, Err(refused)) => {
                        tracing::warn!(url, code = %refused.code, reason = refused.reason, "renewed chain refused");
                        failures = failures.saturating_add(1);
                    }
                    (None, Ok(())) => failures = failures.saturating_add(1),
                }
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "STAR fetch failed");
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// Fetches over HTTPS (rustls, ring) with the given roots for the issuer's TLS certificate.
///
/// The chain fetched is checked by the engine regardless; TLS keeps the URL private and the
/// answer fresh.
#[derive(Clone)]
pub struct HttpsFetcher {
    connector: tokio_rustls::TlsConnector,
    resolve_to: Option<std::net::SocketAddr>,
}

impl core::fmt::Debug for HttpsFetcher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpsFetcher")
            .field("resolve_to", &self.resolve_to)
            .finish_non_exhaustive()
    }
}

impl HttpsFetcher {
    /// A fetcher trusting `roots` (DER) for the issuer's HTTPS server.
    pub fn new(roots: &[Vec<u8>]) -> Result<Self, Error> {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store
                .add(CertificateDer::from(root.clone()))
                .map_err(|e| Error::Config(format!("renewal TLS root: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            resolve_to: None,
        })
    }

    /// Connects to `addr` whatever the URL's host resolves to (tests, fixed issuer address).
    pub fn resolve_to(mut self, addr: std::net::SocketAddr) -> Self {
        self.resolve_to = Some(addr);
        self
    }

    async fn get(&self, url: &str) -> Result<Fetched, Error> {
        let fail = |what: String| Error::Service(format!("STAR fetch {url}: {what}"));
        let uri: Uri = url.parse().map_err(|_| fail("not a URL".into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(fail("not https".into()));
        }
        let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = match self.resolve_to {
            Some(addr) => tokio::net::TcpStream::connect(addr).await,
            None => tokio::net::TcpStream::connect((host.as_str(), port)).await,
        }
        .map_err(|e| fail(format!("connect: {e}")))?;
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| fail("bad host".into()))?;
        let tls = self
            .connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(format!("HTTP: {e}")))?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        let request = Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/pem-certificate-chain")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(format!("HTTP: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_LEN)
            .collect()
            .await
            .map_err(|e| fail(format!("body: {e}")))?
            .to_bytes();
        interpret(status, &body).map_err(fail)
    }
}

#[derive(serde::Deserialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// What a response means: a chain, the end of the delegation, or an error to retry.
fn interpret(status: StatusCode, body: &[u8]) -> Result<Fetched, String> {
    if status == StatusCode::OK {
        let chain = pki::certificates_from_pem(body, "STAR chain").map_err(|e| e.to_string())?;
        return Ok(Fetched::Chain(chain));
    }
    let problem = serde_json::from_slice::<Problem>(body)
        .ok()
        .and_then(|p| p.kind);
    match problem.as_deref() {
        Some(
            "urn:ietf:params:acme:error:autoRenewalCanceled"
            | "urn:ietf:params:acme:error:autoRenewalExpired",
        ) if status == StatusCode::FORBIDDEN => Ok(Fetched::Ended),
        other => Err(format!("HTTP {status} {}", other.unwrap_or(""))),
    }
}

impl StarFetch for HttpsFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Fetched, Error>> {
        Box::pin(async move {
            match tokio::time::timeout(FETCH_TIMEOUT, self.get(url)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Service(format!("STAR fetch {url}: timed out"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn schedule_renews_at_two_thirds_with_jitter_and_backs_off() {
        // A 3-day certificate from t=0.
        let (nb, na) = (0, 3 * 86_400);
        assert_eq!(next_attempt(0, nb, na, 0, 0.0), 2 * 86_400);
        let early = next_attempt(0, nb, na, 0, 0.999);
        assert!(early < 2 * 86_400 && early > 2 * 86_400 - 3 * 8_640);
        assert_eq!(
            next_attempt(2 * 86_400 + 5, nb, na, 0, 0.0),
            2 * 86_400 + 5,
            "late: now"
        );

        let now = 2 * 86_400;
        assert_eq!(next_attempt(now, nb, na, 1, 0.0), now + 30);
        assert_eq!(next_attempt(now, nb, na, 2, 0.0), now + 60);
        assert_eq!(next_attempt(now, nb, na, 20, 0.0), now + 3600);
        assert_eq!(next_attempt(now, nb, na, 1, 0.999), now + 44);
        // Close to expiry the back-off shrinks to leave room for more tries.
        assert_eq!(next_attempt(na - 100, nb, na, 20, 0.0), na - 50);
        // After expiry, keep trying at the capped back-off.
        assert_eq!(next_attempt(na + 10, nb, na, 20, 0.0), na + 10 + 3600);
    }

    #[test]
    fn responses_are_interpreted() {
        let problem = |t: &str| format!(r#"{{"type":"urn:ietf:params:acme:error:{t}"}}"#);
        assert_eq!(
            interpret(
                StatusCode::FORBIDDEN,
                problem("autoRenewalCanceled").as_bytes()
            ),
            Ok(Fetched::Ended)
        );
        assert_eq!(
            interpret(
                StatusCode::FORBIDDEN,
                problem("autoRenewalExpired").as_bytes()
            ),
            Ok(Fetched::Ended)
        );
        assert!(interpret(StatusCode::FORBIDDEN, problem("unauthorized").as_bytes()).is_err());
        assert!(interpret(StatusCode::SERVICE_UNAVAILABLE, b"").is_err());
        assert!(interpret(StatusCode::OK, b"not pem").is_err());
    }

    /// Virtual time: sleeping moves the clock.
    #[derive(Default)]
    struct FakeTime(AtomicU64);

    impl WallClock for FakeTime {
        fn unix_time(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Sleeper for FakeTime {
        fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
            self.0.fetch_add(d.as_secs(), Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    fn cert(not_before: u64, not_after: u64, serial: u8) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.local".to_owned()]).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before as i64).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after as i64).unwrap();
        p.serial_number = Some(vec![serial].into());
        p.self_signed(&key).unwrap().der().to_vec()
    }

    /// Answers from a script, recording when it was asked.
    struct Script {
        answers: Mutex<Vec<Result<Fetched, ()>>>,
        asked_at: Mutex<Vec<u64>>,
        time: Arc<FakeTime>,
    }

    impl StarFetch for Script {
        fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Fetched, Error>> {
            self.asked_at.lock().unwrap().push(self.time.unix_time());
            let next = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { next.map_err(|()| Error::Service("down".into())) })
        }
    }

    #[tokio::test]
    async fn loop_renews_retries_refusals_and_stops_when_ended() {
        const DAY: u64 = 86_400;
        let time = Arc::new(FakeTime(AtomicU64::new(1_000_000)));
        let t0 = 1_000_000;
        let first = cert(t0, t0 + 3 * DAY, 1);
        let same = first.clone();
        let refused_one = cert(t0 + DAY, t0 + 4 * DAY, 2);
        let second = cert(t0 + 2 * DAY, t0 + 5 * DAY, 3);
        let script = Script {
            answers: Mutex::new(vec![
                Ok(Fetched::Chain(vec![same])),                // not rotated yet
                Err(()),                                       // issuer down
                Ok(Fetched::Chain(vec![refused_one.clone()])), // engine refuses
                Ok(Fetched::Chain(vec![second.clone()])),      // renewed
                Ok(Fetched::Ended),
            ]),
            asked_at: Mutex::new(Vec::new()),
            time: time.clone(),
        };
        let installed = Mutex::new(Vec::new());
        let end = renewal_loop(
            "https://issuer.example/star/1",
            vec![first],
            &script,
            time.as_ref(),
            time.as_ref(),
            || 0.0,
            |chain| {
                if chain[0] == refused_one {
                    return Err(crate::verify::refused(
                        localcert_proto::ErrorCode::ChainMismatch,
                        "test",
                    ));
                }
                installed.lock().unwrap().push(chain);
                Ok(())
            },
        )
        .await;
        assert_eq!(end, RenewalEnd::Ended);
        assert_eq!(installed.into_inner().unwrap(), vec![vec![second]]);
        let asked = script.asked_at.into_inner().unwrap();
        let renew_at = t0 + 2 * DAY;
        assert_eq!(
            asked,
            vec![
                renew_at,
                renew_at + 30,
                renew_at + 90,
                renew_at + 210,
                t0 + 2 * DAY + 2 * DAY
            ]
        );
    }
}
