//! The HTTPS transport: rustls on tokio, hyper connections, an axum router whose one handler
//! hands each request to [`AcmeServer::handle`], and the STAR renewal loop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::acme::{AcmeServer, Incoming, Response};
use crate::error::Error;

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, HTTP/1.1) from PEM files.
pub fn tls_config(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let io = |path: &Path, e: rustls::pki_types::pem::Error| Error::Io {
        context: "reading PEM",
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| io(cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io(cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| io(key_path, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::Config(format!("TLS certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn to_axum(response: Response) -> axum::response::Response {
    let mut out = axum::response::Response::new(axum::body::Body::from(response.body));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.headers_mut()
                .append(HeaderName::from_static(name), value);
        }
    }
    out
}

async fn handle(
    State(server): State<Arc<AcmeServer>>,
    request: Request,
) -> axum::response::Response {
    let now = SystemTime::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let limit = server.policy().max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return to_axum(server.too_large(&path, now));
    }
    // A chunked body over the limit, or one that breaks off, fails here; a trickle times out.
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return to_axum(server.too_large(&path, now)),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = parts.method.as_str().to_owned();
    if server.submits_on_async_workers(&method, &path) {
        // A change the store takes whole: computed here, its commit awaited here, with no
        // thread held while it waits.
        let request = Incoming {
            method: &method,
            path: &path,
            content_type: content_type.as_deref(),
            body: &body,
            now,
        };
        return to_axum(server.handle_async(request).await);
    }
    if server.handles_on_async_workers(&method, &path) {
        // A read: here, with no hop to a blocking thread and back (brief CPU work; the store
        // hands this worker off if it ever has to wait).
        return to_axum(server.handle(&method, &path, content_type.as_deref(), &body, now));
    }
    // A change waits for its commit: on a blocking thread.
    let response = tokio::task::spawn_blocking(move || {
        server.handle(&method, &path, content_type.as_deref(), &body, now)
    })
    .await;
    match response {
        Ok(response) => to_axum(response),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves ACME over HTTPS on `listener` until `shutdown` completes, renewing due STAR orders
/// and pruning the audit log past its retention every `renew_every`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<AcmeServer>,
    renew_every: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(server.clone());
    let acceptor = TlsAcceptor::from(tls);
    let renewer = tokio::spawn(renew_loop(server, renew_every));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    renewer.abort();
    Ok(())
}

async fn renew_loop(server: Arc<AcmeServer>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let server = server.clone();
        let work = move || {
            let now = SystemTime::now();
            (server.renew_due_ahead(now, every), server.prune_audit(now))
        };
        let Ok((renewed, pruned)) = tokio::task::spawn_blocking(work).await else {
            tracing::error!("STAR renewal task failed");
            continue;
        };
        match renewed {
            Ok(0) => {}
            Ok(renewed) => tracing::info!(renewed, "STAR certificates renewed"),
            Err(error) => tracing::error!(%error, "STAR renewal failed"),
        }
        match pruned {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "audit entries past their retention deleted"),
            Err(error) => tracing::error!(%error, "audit pruning failed"),
        }
    }
}
