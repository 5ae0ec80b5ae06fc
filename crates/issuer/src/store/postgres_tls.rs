//! TLS to PostgreSQL with rustls (tokio-rustls, already the issuer's TLS stack): the server's
//! certificate must chain to the configured CA file and name the host of the URL (libpq's
//! `sslmode=verify-full`), and SCRAM binds the session to it (`tls-server-end-point`, RFC 5929)
//! so that a man in the middle cannot relay the password exchange.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::error::Error;

/// Connects TLS sessions that trust only the CA certificates of one PEM file.
#[derive(Clone)]
pub(super) struct RustlsConnector(Arc<rustls::ClientConfig>);

impl RustlsConnector {
    /// A connector trusting the certificates in `ca_file` (PEM).
    pub(super) fn from_ca_file(ca_file: &Path) -> Result<Self, Error> {
        let error = |what: String| Error::Config(format!("[store] tls_ca_file: {what}"));
        let mut roots = rustls::RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| error(format!("{}: {e}", ca_file.display())))?;
        for certificate in certificates {
            let certificate = certificate.map_err(|e| error(e.to_string()))?;
            roots.add(certificate).map_err(|e| error(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(error(format!("{} holds no certificate", ca_file.display())));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(Arc::new(config)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for RustlsConnector {
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: self.0.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One TLS connection to be made.
pub(super) struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for RustlsConnect {
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(RustlsStream(connector.connect(self.name, stream).await?))
        })
    }
}

/// A TLS session to PostgreSQL.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let certificate = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first);
        certificate
            .and_then(|c| server_end_point(c.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 §4.1: the certificate's hash with its signature's hash function, SHA-256 for MD5
/// and SHA-1; None for a signature without a hash of its own (Ed25519).
fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::oid_registry as oids;
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let algorithm = &certificate.signature_algorithm.algorithm;
    let sha256 = [
        oids::OID_SIG_ECDSA_WITH_SHA256,
        oids::OID_PKCS1_SHA256WITHRSA,
        oids::OID_PKCS1_SHA1WITHRSA,
        oids::OID_PKCS1_MD5WITHRSAENC,
    ];
    if sha256.contains(algorithm) {
        Some(Sha256::digest(der).to_vec())
    } else if [
        oids::OID_SIG_ECDSA_WITH_SHA384,
        oids::OID_PKCS1_SHA384WITHRSA,
    ]
    .contains(algorithm)
    {
        Some(Sha384::digest(der).to_vec())
    } else if [
        oids::OID_SIG_ECDSA_WITH_SHA512,
        oids::OID_PKCS1_SHA512WITHRSA,
    ]
    .contains(algorithm)
    {
        Some(Sha512::digest(der).to_vec())
    } else {
        None
    }
}
