//! HTTPS for the installed bindings: rustls on tokio, the certificate picked by SNI, the
//! firmware's own handler (any tower service) behind a per-binding CORS layer.
//!
//! [`Sites`] is the live table: [`Sites::apply`] on install or renewal and [`Sites::remove`] on
//! REMOVE swap entries in place; each TLS handshake reads the table, so open connections keep
//! the certificate they started with and new ones get the new one.
//!
//! CORS answers only the binding's own origin: never `*`, always `Vary: Origin`, preflights
//! answered with the policy's methods and headers, credentials only when the policy allows them.
//! A request from any other origin is passed to the handler without CORS headers (so the
//! browser blocks the response), and its preflight is refused with 403.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use localcert_proto::message::CorsPolicy;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::error::{CredentialError, Error};
use crate::keys::{self, FileKeys, KeyProvider};
use crate::store::Binding;
use crate::vary::{Tracked, Turn, VaryOnOwnResponses};

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body the CORS layer returns.
pub type HttpBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most: an embedded device must bound its memory.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request head (request line and headers) accepted, and hyper's read buffer:
/// a longer head is answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Debug)]
struct Site {
    certified: Arc<CertifiedKey>,
    origin: Origin,
    cors: CorsPolicy,
}

/// The bindings being served, by name.
#[derive(Debug)]
pub struct Sites {
    by_name: RwLock<HashMap<String, Site>>,
    keys: Arc<dyn KeyProvider>,
}

impl Sites {
    /// An empty table for software keys.
    pub fn new() -> Arc<Self> {
        Self::with_keys(Arc::new(FileKeys))
    }

    /// An empty table whose bindings' keys `keys` holds (the device's provider).
    pub fn with_keys(keys: Arc<dyn KeyProvider>) -> Arc<Self> {
        Arc::new(Self {
            by_name: RwLock::default(),
            keys,
        })
    }

    /// Serves `binding` (new or renewed), replacing what was served under its name.
    pub fn apply(&self, binding: &Binding) -> Result<(), Error> {
        let leaf = binding
            .chain
            .first()
            .ok_or(CredentialError::BadCertificate("empty chain"))?;
        keys::check_matches(self.keys.as_ref(), &binding.key, leaf, "leaf")?;
        let signing_key = keys::tls_signing_key(&self.keys, &binding.key)?;
        let chain = binding
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let site = Site {
            certified: Arc::new(CertifiedKey::new(chain, signing_key)),
            origin: binding.origin.clone(),
            cors: binding.cors.clone(),
        };
        self.write().insert(binding.name.as_str().to_owned(), site);
        Ok(())
    }

    /// Stops serving `name` (new handshakes fail; open connections finish).
    pub fn remove(&self, name: &LocalName) {
        self.write().remove(name.as_str());
    }

    /// The names served.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    fn cors_for(&self, name: &str) -> Option<(Origin, CorsPolicy)> {
        self.read()
            .get(name)
            .map(|s| (s.origin.clone(), s.cors.clone()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Site>> {
        self.by_name.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Site>> {
        self.by_name.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for Sites {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name()?.to_ascii_lowercase();
        self.read().get(&name).map(|s| s.certified.clone())
    }
}

/// The TLS configuration: TLS 1.2 and 1.3 with ring, HTTP/1.1, certificates by SNI.
pub fn tls_config(sites: Arc<Sites>) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(sites);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS on `listener` until `shutdown` completes, with `handler` behind the CORS layer.
///
/// `handler` is the firmware's HTTP service (an axum `Router`, a `tower::service_fn`…).
pub async fn serve<S, B>(
    listener: TcpListener,
    sites: Arc<Sites>,
    handler: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(sites.clone())?);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many connections; closing");
            continue;
        };
        let acceptor = acceptor.clone();
        let sites = sites.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let name = tls
                .get_ref()
                .1
                .server_name()
                .unwrap_or_default()
                .to_ascii_lowercase();
            // hyper's own answers (400, 431, 414) get `Vary: Origin` too: see vary.rs.
            let turn = Turn::new();
            let service = hyper_util::service::TowerToHyperService::new(Tracked::new(
                Cors::new(handler, sites, &name),
                turn.clone(),
            ));
            let io = hyper_util::rt::TokioIo::new(VaryOnOwnResponses::new(tls, turn));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// The CORS layer for one connection: the policy of the binding the client asked for by SNI,
/// read per request so a policy change applies at once. [`serve`] puts it in front of the
/// firmware's handler; it is public so it can be driven without sockets (the fuzz target).
#[derive(Clone, Debug)]
pub struct Cors<S> {
    inner: S,
    sites: Arc<Sites>,
    name: String,
}

impl<S> Cors<S> {
    /// `inner` behind the CORS policy of the binding served as `server_name` (the SNI name).
    pub fn new(inner: S, sites: Arc<Sites>, server_name: &str) -> Self {
        Self {
            inner,
            sites,
            name: server_name.to_ascii_lowercase(),
        }
    }
}

fn empty_body() -> HttpBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn join(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// The CORS headers for a request from `origin` under `policy`.
fn cors_headers(origin: &HeaderValue, policy: &CorsPolicy, preflight: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if policy.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if preflight {
        if let Some(v) = join(&policy.methods) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Some(v) = join(&policy.allow_headers) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(policy.max_age),
        );
    } else if let Some(v) = join(&policy.expose_headers) {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    h
}

/// The request's origin when it sends exactly one `Origin` field. Two or more are not a
/// browser's request: they get no CORS headers whatever their order.
fn single_origin(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(origin), None) => Some(origin.clone()),
        _ => None,
    }
}

fn add_vary_origin(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

impl<S, B, RB> tower::Service<Request<RB>> for Cors<S>
where
    S: tower::Service<Request<RB>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    RB: Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<HttpBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RB>) -> Self::Future {
        let policy = self.sites.cors_for(&self.name);
        let request_origin = single_origin(request.headers());
        let allowed = match (&policy, &request_origin) {
            (Some((origin, policy)), Some(value))
                if value.as_bytes() == origin.as_str().as_bytes() =>
            {
                Some((value.clone(), policy.clone()))
            }
            _ => None,
        };
        // Any Origin field makes it a preflight, answered here: one the layer will not
        // allow (two fields included) is refused, never passed to the handler as an OPTIONS.
        let preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ORIGIN)
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let mut response = Response::new(empty_body());
            match &allowed {
                Some((origin, policy)) => {
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response
                        .headers_mut()
                        .extend(cors_headers(origin, policy, true));
                }
                None => *response.status_mut() = StatusCode::FORBIDDEN,
            }
            add_vary_origin(response.headers_mut());
            return Box::pin(async move { Ok(response) });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            let (mut parts, body) = response.into_parts();
            // The handler may not set CORS headers itself: the policy is the only source.
            for name in [
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                header::ACCESS_CONTROL_ALLOW_METHODS,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                header::ACCESS_CONTROL_MAX_AGE,
            ] {
                parts.headers.remove(name);
            }
            if let Some((origin, policy)) = &allowed {
                parts.headers.extend(cors_headers(origin, policy, false));
            }
            add_vary_origin(&mut parts.headers);
            let body = body.map_err(Into::into).boxed_unsync();
            Ok(Response::from_parts(parts, body))
        })
    }
}
