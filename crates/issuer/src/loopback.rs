//! The whole issuer serving ACME over HTTPS on a loopback port, for other crates' tests
//! (feature `test-support`): a new CA, localhost TLS certificate and SQLite store in a
//! directory, relying parties registered, STAR renewal every second, stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use localcert_proto::origin::Origin;

use crate::acme::{AcmeServer, Policy};
use crate::ca::{self, CaFiles, IssuingCa, TlsFiles};
use crate::error::Error;
use crate::store::{RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use crate::validate::TrustConfig;

/// A relying party to register: origin, EAB key identifier, EAB HMAC key.
pub type Registration<'a> = (&'a str, &'a str, &'a [u8]);

/// The issuer on loopback; it stops serving when dropped.
#[derive(Debug)]
pub struct LoopbackIssuer {
    /// The store (to inspect audit entries, accounts…).
    pub store: Arc<SqliteStore>,
    /// The ACME server behind the listener.
    pub server: Arc<AcmeServer>,
    /// The listening address (127.0.0.1).
    pub addr: SocketAddr,
    /// `https://localhost:PORT/acme/directory`.
    pub directory_url: String,
    /// The localhost TLS certificate (PEM) a client must trust.
    pub tls_root: PathBuf,
    /// The issuer's root certificate (DER).
    pub issuer_root: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LoopbackIssuer {
    /// Creates the CA, TLS certificate and store in `dir`, registers `origins`, and serves on
    /// a free loopback port (from within a tokio runtime).
    pub async fn start(
        dir: &Path,
        origins: &[Registration<'_>],
        trust: TrustConfig,
    ) -> Result<Self, Error> {
        let now = SystemTime::now();
        let files = CaFiles::in_dir(dir);
        ca::init_ca(&files, "localcert test issuer", now)?;
        let tls_files = TlsFiles::in_dir(dir);
        ca::init_tls(&tls_files, now)?;
        let store = Arc::new(SqliteStore::open(&dir.join("issuer.sqlite"))?);
        for (origin, kid, key) in origins {
            store.add_relying_party(&RelyingParty {
                origin: Origin::parse(origin)
                    .map_err(|e| Error::Config(format!("{origin}: {e}")))?,
                eab_kid: (*kid).into(),
                eab_hmac_key: key.to_vec(),
                status: RelyingPartyStatus::Active,
                created: now,
            })?;
        }
        let io = |context, source| Error::Io {
            context,
            path: PathBuf::from("127.0.0.1:0"),
            source,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| io("binding", e))?;
        let addr = listener.local_addr().map_err(|e| io("binding", e))?;
        let base = format!("https://localhost:{}", addr.port());
        let server = Arc::new(AcmeServer::new(
            store.clone(),
            IssuingCa::load(&files)?,
            trust,
            Policy::default(),
            &base,
        ));
        let tls = crate::serve::tls_config(&tls_files.cert, &tls_files.key)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::serve::serve(
            listener,
            tls,
            server.clone(),
            Duration::from_secs(1),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            directory_url: server.directory_url(),
            issuer_root: ca::pem_blocks(
                &std::fs::read(&files.root_cert).map_err(|e| Error::Io {
                    context: "reading",
                    path: files.root_cert.clone(),
                    source: e,
                })?,
                "CERTIFICATE",
            )?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Certificate("no root certificate".into()))?,
            tls_root: tls_files.cert,
            store,
            server,
            addr,
            stop: Some(stop),
        })
    }
}

impl Drop for LoopbackIssuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
