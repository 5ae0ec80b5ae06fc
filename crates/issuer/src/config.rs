//! The operator's TOML configuration. Relative paths are relative to the configuration file.
//!
//! ```toml
//! state_dir = "state"                 # CA files, TLS files and the database live here
//! ca_name = "localcert"               # common-name prefix of the root and intermediate
//! listen = "127.0.0.1:8443"
//! # base_url = "https://localhost:8443"   # what clients use; default from `listen`
//! # database = "state/issuer.sqlite"
//! # star_renew_check_secs = 60
//!
//! # [store]                            # default: SQLite in `database`
//! # kind = "postgres"                  # several replicas on one database
//! # url = "postgresql://localcert@127.0.0.1:5432/localcert"   # no password here
//! # password_file = "pg.password"      # mode 0600; or env LOCALCERT_POSTGRES_PASSWORD
//! # nonce_key_file = "nonce.key"       # mode 0600, >= 32 bytes, the same on every replica
//! # pool_size = 16
//!
//! [ca]
//! # root_key = "/media/offline/root.key"  # keep the root key off the issuer host
//!
//! [tls]                                # the issuer's own HTTPS certificate; default:
//! # cert = "tls.pem"                    # generated for localhost at init, self-signed
//! # key = "tls.key"
//!
//! [policy]
//! leaf_lifetime_secs = 604800
//! challenge_lifetime_secs = 600
//!
//! [trust]
//! manufacturer_roots = ["manufacturer-root.pem"]
//! revoked_certificates = []            # SHA-256 (hex) of device or batch certificates
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::acme::Policy;
use crate::ca::{CaFiles, TlsFiles, pem_blocks};
use crate::error::Error;
use crate::nonce::NonceKey;
use crate::store::PgOptions;
use crate::validate::TrustConfig;

/// The issuer's configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for CA files, TLS files and the database.
    pub state_dir: PathBuf,
    /// Common-name prefix of the CA certificates.
    #[serde(default = "default_ca_name")]
    pub ca_name: String,
    /// Where `serve` listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL clients reach the server at; default `https://localhost:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The SQLite database; default `<state_dir>/issuer.sqlite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
    /// How often `serve` looks for STAR orders due for renewal.
    #[serde(default = "default_renew_check")]
    pub star_renew_check_secs: u64,
    /// The database: SQLite (`database`) unless this says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSection>,
    /// CA key placement.
    #[serde(default)]
    pub ca: CaSection,
    /// The HTTPS certificate.
    #[serde(default)]
    pub tls: TlsSection,
    /// Lifetimes and limits.
    #[serde(default)]
    pub policy: PolicySection,
    /// Manufacturers.
    #[serde(default)]
    pub trust: TrustSection,
    /// Where the file was read from (relative paths resolve against its directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The environment variable that holds the PostgreSQL password (it wins over `password_file`).
pub const POSTGRES_PASSWORD_ENV: &str = "LOCALCERT_POSTGRES_PASSWORD";

/// The shortest nonce key accepted, in bytes.
pub const MIN_NONCE_KEY_BYTES: usize = 32;

/// `[store]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreSection {
    /// The SQLite file named by `database`.
    Sqlite,
    /// PostgreSQL, shared by several replicas.
    Postgres {
        /// `postgresql://user@host:port/database`, without a password.
        url: String,
        /// A file (mode 0600) holding the password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
        /// Most connections one replica opens.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
        /// PEM file of the CA of the server's certificate: TLS required, certificate and host
        /// name verified.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_ca_file: Option<PathBuf>,
        /// A file (mode 0600) holding the key the replicas share to mint and accept each
        /// other's nonces; without it each replica has its own and refuses the others'.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce_key_file: Option<PathBuf>,
    },
}

fn default_pool_size() -> usize {
    16
}

/// `[ca]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// Where the root key is written at init (default `<state_dir>/root.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<PathBuf>,
}

/// `[tls]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Operator-supplied certificate chain (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Operator-supplied key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[policy]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Lifetime of a certificate from a plain order.
    pub leaf_lifetime_secs: u64,
    /// How long a challenge can be answered.
    pub challenge_lifetime_secs: u64,
    /// How long a pending order lives.
    pub order_lifetime_secs: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Shortest STAR certificate lifetime.
    pub star_min_lifetime_secs: u64,
    /// Longest STAR certificate lifetime.
    pub star_max_lifetime_secs: u64,
    /// Longest STAR delegation.
    pub star_max_duration_secs: u64,
    /// How long audit entries are kept.
    pub audit_retention_days: u64,
}

impl Default for PolicySection {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            leaf_lifetime_secs: p.leaf_lifetime.as_secs(),
            challenge_lifetime_secs: p.challenge_lifetime.as_secs(),
            order_lifetime_secs: p.order_lifetime.as_secs(),
            max_body_bytes: p.max_body_bytes,
            star_min_lifetime_secs: p.star_min_lifetime.as_secs(),
            star_max_lifetime_secs: p.star_max_lifetime.as_secs(),
            star_max_duration_secs: p.star_max_duration.as_secs(),
            audit_retention_days: p.audit_retention.as_secs() / 86_400,
        }
    }
}

/// `[trust]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// PEM files of trusted manufacturer roots.
    #[serde(default)]
    pub manufacturer_roots: Vec<PathBuf>,
    /// SHA-256 (hex) of revoked device or batch certificates.
    #[serde(default)]
    pub revoked_certificates: Vec<String>,
}

fn default_ca_name() -> String {
    "localcert".into()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_renew_check() -> u64 {
    60
}

impl Config {
    /// A configuration with defaults, for `init`.
    pub fn new(state_dir: PathBuf, base_dir: PathBuf) -> Self {
        Self {
            state_dir,
            ca_name: default_ca_name(),
            listen: default_listen(),
            base_url: None,
            database: None,
            star_renew_check_secs: default_renew_check(),
            store: None,
            ca: CaSection::default(),
            tls: TlsSection::default(),
            policy: PolicySection::default(),
            trust: TrustSection::default(),
            base_dir,
        }
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: "reading the configuration",
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        config.check()?;
        Ok(config)
    }

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }

    fn check(&self) -> Result<(), Error> {
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(Error::Config(
                "[tls] needs both cert and key, or neither".into(),
            ));
        }
        let p = &self.policy;
        if p.leaf_lifetime_secs == 0 || p.challenge_lifetime_secs == 0 {
            return Err(Error::Config("lifetimes must be positive".into()));
        }
        if p.audit_retention_days == 0 || p.audit_retention_days > 100 * 365 {
            return Err(Error::Config(
                "[policy] audit_retention_days must be 1 to 36500".into(),
            ));
        }
        if self.star_renew_check_secs == 0 {
            return Err(Error::Config(
                "star_renew_check_secs must be positive".into(),
            ));
        }
        if let Some(StoreSection::Postgres { url, pool_size, .. }) = &self.store {
            if *pool_size == 0 {
                return Err(Error::Config("[store] pool_size must be positive".into()));
            }
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| Error::Config(format!("[store] url: {e}")))
                .and_then(|parsed| match parsed.get_password() {
                    Some(_) => Err(Error::Config(
                        "[store] url must not hold the password: use password_file (mode 0600) \
                         or LOCALCERT_POSTGRES_PASSWORD"
                            .into(),
                    )),
                    None => Ok(()),
                })?;
        }
        for fingerprint in &self.trust.revoked_certificates {
            parse_fingerprint(fingerprint)?;
        }
        Ok(())
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    fn state(&self, name: &str) -> PathBuf {
        self.resolve(&self.state_dir).join(name)
    }

    /// Where the CA files are.
    pub fn ca_files(&self) -> CaFiles {
        let mut files = CaFiles::in_dir(&self.resolve(&self.state_dir));
        if let Some(root_key) = &self.ca.root_key {
            files.root_key = self.resolve(root_key);
        }
        files
    }

    /// The operator's TLS files, if supplied.
    pub fn supplied_tls(&self) -> Option<TlsFiles> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: self.resolve(cert),
                key: self.resolve(key),
            }),
            _ => None,
        }
    }

    /// The TLS files to serve with: supplied, or generated at init.
    pub fn tls_files(&self) -> TlsFiles {
        self.supplied_tls()
            .unwrap_or_else(|| TlsFiles::in_dir(&self.resolve(&self.state_dir)))
    }

    /// The PostgreSQL connection settings, with the password from the environment or the
    /// password file; None for SQLite.
    pub fn postgres(&self) -> Result<Option<PgOptions>, Error> {
        self.postgres_with(std::env::var(POSTGRES_PASSWORD_ENV).ok())
    }

    fn postgres_with(&self, env_password: Option<String>) -> Result<Option<PgOptions>, Error> {
        let Some(StoreSection::Postgres {
            url,
            password_file,
            pool_size,
            tls_ca_file,
            ..
        }) = &self.store
        else {
            return Ok(None);
        };
        let password = match (env_password, password_file) {
            (Some(password), _) => Some(password),
            (None, Some(file)) => Some(read_secret(&self.resolve(file))?),
            (None, None) => None,
        };
        Ok(Some(PgOptions {
            url: url.clone(),
            password,
            pool_size: *pool_size,
            tls_ca_file: tls_ca_file.as_ref().map(|f| self.resolve(f)),
        }))
    }

    /// The nonce key shared by the replicas (`[store] nonce_key_file`), if configured.
    pub fn nonce_key(&self) -> Result<Option<NonceKey>, Error> {
        let Some(StoreSection::Postgres {
            nonce_key_file: Some(file),
            ..
        }) = &self.store
        else {
            return Ok(None);
        };
        let path = self.resolve(file);
        let secret = read_secret(&path)?;
        if secret.len() < MIN_NONCE_KEY_BYTES {
            return Err(Error::Config(format!(
                "{} holds {} bytes; a nonce key needs at least {MIN_NONCE_KEY_BYTES}",
                path.display(),
                secret.len()
            )));
        }
        Ok(Some(NonceKey::from_bytes(secret.as_bytes())))
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        match &self.database {
            Some(path) => self.resolve(path),
            None => self.state("issuer.sqlite"),
        }
    }

    /// The URL clients use.
    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| format!("https://localhost:{}", self.listen.port()))
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        let p = &self.policy;
        Policy {
            leaf_lifetime: Duration::from_secs(p.leaf_lifetime_secs),
            challenge_lifetime: Duration::from_secs(p.challenge_lifetime_secs),
            order_lifetime: Duration::from_secs(p.order_lifetime_secs),
            max_body_bytes: p.max_body_bytes,
            star_min_lifetime: Duration::from_secs(p.star_min_lifetime_secs),
            star_max_lifetime: Duration::from_secs(p.star_max_lifetime_secs),
            star_max_duration: Duration::from_secs(p.star_max_duration_secs),
            audit_retention: Duration::from_secs(p.audit_retention_days * 86_400),
            ..Policy::default()
        }
    }

    /// Reads the manufacturer roots and the revocation list.
    pub fn trust(&self) -> Result<TrustConfig, Error> {
        let mut roots = Vec::new();
        for path in &self.trust.manufacturer_roots {
            let path = self.resolve(path);
            let pem = std::fs::read(&path).map_err(|source| Error::Io {
                context: "reading a manufacturer root",
                path: path.clone(),
                source,
            })?;
            let certs = pem_blocks(&pem, "CERTIFICATE")?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "{} holds no certificate",
                    path.display()
                )));
            }
            roots.extend(certs);
        }
        let revoked = self
            .trust
            .revoked_certificates
            .iter()
            .map(|f| parse_fingerprint(f))
            .collect::<Result<Vec<_>, _>>()?;
        TrustConfig::new(&roots, revoked)
    }
}

/// A secret from a file only its owner can read; its trailing newline is not part of it.
fn read_secret(path: &Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io {
        context: "reading the secret",
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} is readable by others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(Error::Config(format!("{} is empty", path.display())));
    }
    Ok(secret.to_owned())
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed.
fn parse_fingerprint(text: &str) -> Result<[u8; 32], Error> {
    let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
    hex::decode(&hex_digits)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| Error::Config(format!("{text:?} is not a SHA-256 fingerprint")))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
