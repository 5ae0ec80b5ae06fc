//! Client-side round robin over issuer replicas, as an instant-acme `HttpClient`: the replicas
//! share one service URL (their `base_url`), and each request goes to the next replica. A
//! request that finds a replica gone (connection refused or cut) or the database away (503) is
//! sent again to the next one, within a bound. Resending a signed POST is safe: its nonce can be
//! spent only once, so a request that did get through comes back `badNonce`, which instant-acme
//! answers with a fresh nonce, and the flow reads the order's state before going on.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

/// How long one request keeps trying other replicas before it gives up.
pub(crate) const RESEND_FOR: Duration = Duration::from_secs(60);
/// The longest pause a `Retry-After` gets here (the issuer sends 2 s).
const MAX_PAUSE: Duration = Duration::from_secs(3);

/// What the replicas answered, across all clients of a run.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Requests sent to each replica.
    pub(crate) per_replica: Vec<AtomicU64>,
    /// Requests that could not reach a replica (refused, reset, cut mid-response).
    pub(crate) connection_errors: AtomicU64,
    /// 503 `serverInternal` with a `Retry-After` (the database away).
    pub(crate) unavailable: AtomicU64,
    /// 503 without `Retry-After` or without `serverInternal`: a contract breach.
    pub(crate) bad_unavailable: AtomicU64,
    /// Other 5xx answers.
    pub(crate) server_errors: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn summary(&self) -> String {
        let per: Vec<u64> = self.per_replica.iter().map(Self::get).collect();
        format!(
            "requests per replica {per:?}; connection errors {}; 503 with Retry-After {}; \
             503 without {}; other 5xx {}",
            Self::get(&self.connection_errors),
            Self::get(&self.unavailable),
            Self::get(&self.bad_unavailable),
            Self::get(&self.server_errors)
        )
    }
}

/// A parsed raw answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// The round robin; cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub(crate) struct RoundRobin {
    inner: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    replicas: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    pub(crate) stats: Arc<Stats>,
}

impl RoundRobin {
    /// Replicas as `host:port`; `tls_cert` is the issuer's HTTPS certificate (PEM) to trust.
    pub(crate) fn new(replicas: Vec<String>, tls_cert: &Path) -> Result<Self, String> {
        let pem = std::fs::read(tls_cert).map_err(|e| format!("{}: {e}", tls_cert.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for block in pem::parse_many(&pem).map_err(|e| e.to_string())? {
            roots
                .add(block.into_contents().into())
                .map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        let stats = Stats {
            per_replica: replicas.iter().map(|_| AtomicU64::new(0)).collect(),
            ..Stats::default()
        };
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            replicas: Arc::new(replicas),
            next: Arc::new(AtomicUsize::new(0)),
            stats: Arc::new(stats),
        })
    }

    pub(crate) fn replicas(&self) -> usize {
        self.replicas.len()
    }

    fn uri_on(&self, uri: &Uri, replica: usize) -> Result<Uri, Error> {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        format!("https://{}{path}", self.replicas[replica])
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| Error::Other(Box::new(e)))
    }

    /// One request to one replica, no resending (for the checks that pick the replica).
    pub(crate) async fn raw(
        &self,
        replica: usize,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.replicas[replica]));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(BodyWrapper::from(body))
            .map_err(|e| e.to_string())?;
        let mut response = HttpClient::request(&self.inner, request)
            .await
            .map_err(|e| format!("replica {replica}: {e}"))?;
        let body = response
            .body
            .into_bytes()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status: response.parts.status.as_u16(),
            headers: response.parts.headers,
            body,
        })
    }

    async fn send(&self, request: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, Error> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        let deadline = Instant::now() + RESEND_FOR;
        loop {
            let replica = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
            let mut attempt = Request::builder()
                .method(parts.method.clone())
                .uri(self.uri_on(&parts.uri, replica)?);
            for (name, value) in &parts.headers {
                attempt = attempt.header(name, value);
            }
            let attempt = attempt
                .body(BodyWrapper::from(body.to_vec()))
                .map_err(Error::Http)?;
            Stats::bump(&self.stats.per_replica[replica]);
            let mut response = match HttpClient::request(&self.inner, attempt).await {
                Ok(response) => response,
                Err(error) => {
                    Stats::bump(&self.stats.connection_errors);
                    if Instant::now() > deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let status = response.parts.status;
            if status != StatusCode::SERVICE_UNAVAILABLE {
                if status.is_server_error() {
                    Stats::bump(&self.stats.server_errors);
                }
                return Ok(response);
            }
            let pause = response
                .parts
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = response.body.into_bytes().await.map_err(Error::Other)?;
            let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            // A HEAD answer has no body to name the problem (new-nonce is asked with HEAD).
            let server_internal = problem["type"] == "urn:ietf:params:acme:error:serverInternal"
                || (parts.method == hyper::Method::HEAD && bytes.is_empty());
            match pause {
                Some(_) if server_internal => Stats::bump(&self.stats.unavailable),
                _ => Stats::bump(&self.stats.bad_unavailable),
            }
            if Instant::now() > deadline {
                return Err(Error::Other(
                    format!("still 503 after {} s", RESEND_FOR.as_secs()).into(),
                ));
            }
            tokio::time::sleep(pause.unwrap_or(MAX_PAUSE).min(MAX_PAUSE)).await;
        }
    }
}

impl HttpClient for RoundRobin {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.send(request).await })
    }
}
