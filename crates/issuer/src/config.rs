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
        if self.policy.leaf_lifetime_secs == 0 || self.policy.challenge_lifetime_secs == 0 {
            return Err(Error::Config("lifetimes must be positive".into()));
        }
        if self.star_renew_check_secs == 0 {
            return Err(Error::Config(
                "star_renew_check_secs must be positive".into(),
            ));
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

/// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed.
fn parse_fingerprint(text: &str) -> Result<[u8; 32], Error> {
    let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
    hex::decode(&hex_digits)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| Error::Config(format!("{text:?} is not a SHA-256 fingerprint")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let config = Config::new("state".into(), "/etc/localcert".into());
        let text = config.to_toml().unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.state_dir, config.state_dir);
        assert_eq!(
            config.database_path(),
            Path::new("/etc/localcert/state/issuer.sqlite")
        );
        assert_eq!(config.base_url(), "https://localhost:8443");
        assert_eq!(config.policy(), Policy::default());
    }

    #[test]
    fn refusals() {
        let parse = |s: &str| {
            toml::from_str::<Config>(s)
                .map_err(|e| Error::Config(e.to_string()))
                .and_then(|c| c.check().map(|()| c))
        };
        assert!(parse("state_dir = \"s\"\nunknown = 1").is_err());
        assert!(parse("state_dir = \"s\"\n[tls]\ncert = \"c.pem\"").is_err());
        assert!(parse("state_dir = \"s\"\n[trust]\nrevoked_certificates = [\"zz\"]").is_err());
        assert!(parse("state_dir = \"s\"\n[policy]\nleaf_lifetime_secs = 0").is_err());
        let ok = parse(&format!(
            "state_dir = \"s\"\n[trust]\nrevoked_certificates = [\"{}\"]",
            "ab".repeat(32)
        ));
        assert!(ok.is_ok());
    }
}
