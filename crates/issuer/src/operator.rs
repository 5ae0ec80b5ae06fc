//! What the operator's commands do (`localcert issuer …`), so the CLI only parses and prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use localcert_proto::origin::Origin;
use ring::rand::{SecureRandom, SystemRandom};

use crate::acme::AcmeServer;
use crate::ca::{self, IssuingCa};
use crate::config::Config;
use crate::error::Error;
use crate::jws::b64;
use crate::store::{
    AuditEntry, PgStore, RelyingParty, RelyingPartyStatus, RevocationSummary, SqliteStore, Store,
};

/// Choices for `init` when no configuration file exists yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Directory for the CA, TLS files and database (relative to the configuration file).
    pub state_dir: PathBuf,
    /// Where to write the root key instead of the state directory.
    pub root_key: Option<PathBuf>,
    /// Common-name prefix of the CA certificates.
    pub ca_name: String,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Manufacturer root PEM files to trust.
    pub manufacturer_roots: Vec<PathBuf>,
}

/// What `init` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOutcome {
    /// The configuration file (written if it did not exist).
    pub config_path: PathBuf,
    /// Whether the configuration file was written now.
    pub config_written: bool,
    /// SHA-256 of the root certificate.
    pub root_fingerprint: String,
    /// The root certificate to install in browsers and on UAs.
    pub root_cert: PathBuf,
    /// The root key: move it offline.
    pub root_key: PathBuf,
    /// The generated HTTPS certificate and its SHA-256, unless the operator supplied one.
    pub tls: Option<(PathBuf, String)>,
    /// The database: the SQLite file, or the PostgreSQL URL (which holds no password).
    pub database: String,
}

/// Sets up an issuer: writes the configuration if absent, creates the CA, the localhost HTTPS
/// certificate (unless supplied) and the database. Refuses to overwrite an existing CA.
pub fn init(
    config_path: &Path,
    options: &InitOptions,
    now: SystemTime,
) -> Result<InitOutcome, Error> {
    let (config, config_written) = if config_path.exists() {
        (Config::load(config_path)?, false)
    } else {
        let base_dir = config_path.parent().map(Path::to_owned).unwrap_or_default();
        let mut config = Config::new(options.state_dir.clone(), base_dir);
        config.ca_name = options.ca_name.clone();
        config.ca.root_key = options.root_key.clone();
        if let Some(listen) = options.listen {
            config.listen = listen;
        }
        config.trust.manufacturer_roots = options.manufacturer_roots.clone();
        (config, true)
    };
    // A database that cannot be reached fails init before anything is written.
    let postgres = config.postgres()?;
    if let Some(options) = &postgres {
        PgStore::connect(options)?;
    }
    let files = config.ca_files();
    let report = ca::init_ca(&files, &config.ca_name, now)?;
    let tls = match config.supplied_tls() {
        Some(_) => None,
        None => {
            let files = config.tls_files();
            let fingerprint = ca::init_tls(&files, now)?;
            Some((files.cert, fingerprint))
        }
    };
    let database = match &postgres {
        Some(options) => options.url.clone(),
        None => {
            let path = config.database_path();
            SqliteStore::open(&path)?;
            path.display().to_string()
        }
    };
    if config_written {
        let text = format!(
            "# localcert issuer configuration (see `localcert issuer --help`)\n{}",
            config.to_toml()?
        );
        std::fs::write(config_path, text).map_err(|source| Error::Io {
            context: "writing the configuration",
            path: config_path.to_owned(),
            source,
        })?;
    }
    Ok(InitOutcome {
        config_path: config_path.to_owned(),
        config_written,
        root_fingerprint: report.root_fingerprint,
        root_cert: report.root_cert,
        root_key: report.root_key,
        tls,
        database,
    })
}

fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    if let Some(options) = config.postgres()? {
        return Ok(Arc::new(PgStore::connect(&options)?));
    }
    let path = config.database_path();
    if !path.exists() {
        return Err(Error::Config(format!(
            "{} does not exist; run `localcert issuer init` first",
            path.display()
        )));
    }
    Ok(Arc::new(SqliteStore::open(&path)?))
}

/// A new relying party's EAB credentials, shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct EabCredentials {
    /// The origin.
    pub origin: Origin,
    /// The key id.
    pub kid: String,
    /// The HMAC key, base64url.
    pub hmac_key: String,
}

impl std::fmt::Debug for EabCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EabCredentials")
            .field("origin", &self.origin)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Registers a web origin and creates its External Account Binding key.
pub fn rp_add(config: &Config, origin: &Origin, now: SystemTime) -> Result<EabCredentials, Error> {
    let store = open_store(config)?;
    let rng = SystemRandom::new();
    let mut kid = [0u8; 12];
    let mut key = [0u8; 32];
    rng.fill(&mut kid)
        .and_then(|()| rng.fill(&mut key))
        .map_err(|_| Error::Certificate("random number generator failed".into()))?;
    let kid = format!("rp-{}", b64(&kid));
    store.add_relying_party(&RelyingParty {
        origin: origin.clone(),
        eab_kid: kid.clone(),
        eab_hmac_key: key.to_vec(),
        status: RelyingPartyStatus::Active,
        created: now,
    })?;
    Ok(EabCredentials {
        origin: origin.clone(),
        kid,
        hmac_key: b64(&key),
    })
}

/// The registered relying parties.
pub fn rp_list(config: &Config) -> Result<Vec<RelyingParty>, Error> {
    open_store(config)?.relying_parties()
}

/// Revokes a relying party (accounts, unexpired certificates, STAR orders). None if unknown.
pub fn rp_revoke(
    config: &Config,
    origin: &Origin,
    now: SystemTime,
) -> Result<Option<RevocationSummary>, Error> {
    open_store(config)?.revoke_relying_party(origin, now)
}

/// The latest audit entries.
pub fn audit(config: &Config, limit: usize) -> Result<Vec<AuditEntry>, Error> {
    open_store(config)?.audit_log(limit)
}

/// A bound, ready-to-run issuer.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<AcmeServer>,
    renew_every: Duration,
}

impl Bound {
    /// Loads everything the server needs and binds the listen address.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let store = open_store(config)?;
        let ca = IssuingCa::load(&config.ca_files())?;
        let policy = config.policy();
        if let Some(warning) = ca.signing_warning(SystemTime::now(), policy.leaf_lifetime) {
            tracing::warn!("{warning}");
        }
        let trust = config.trust()?;
        if config.trust.manufacturer_roots.is_empty() {
            tracing::warn!("no manufacturer roots configured: every attestation will be refused");
        }
        let tls_files = config.tls_files();
        let tls = crate::serve::tls_config(&tls_files.cert, &tls_files.key)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                context: "binding",
                path: PathBuf::from(config.listen.to_string()),
                source,
            })?;
        // With port 0 in the config, the URLs must name the port the system chose.
        let base_url = match (&config.base_url, listener.local_addr()) {
            (None, Ok(addr)) => format!("https://localhost:{}", addr.port()),
            _ => config.base_url(),
        };
        let mut server = AcmeServer::new(store, ca, trust, policy, &base_url);
        if let Some(key) = config.nonce_key()? {
            server = server.with_nonce_key(key);
        } else if config.postgres()?.is_some() {
            tracing::warn!(
                "[store] nonce_key_file is not set: other replicas will refuse this one's nonces"
            );
        }
        Ok(Self {
            listener,
            tls,
            server: Arc::new(server),
            renew_every: Duration::from_secs(config.star_renew_check_secs),
        })
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        self.server.directory_url()
    }

    /// SHA-256 of the root certificate.
    pub fn root_fingerprint(&self) -> String {
        self.server.root_fingerprint()
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        crate::serve::serve(
            self.listener,
            self.tls,
            self.server,
            self.renew_every,
            shutdown,
        )
        .await
    }
}
