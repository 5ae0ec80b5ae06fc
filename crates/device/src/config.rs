//! The reference daemon's configuration file (`device.toml`), and how it builds the device.
//!
//! Relative paths are relative to the directory of the file itself (not the daemon's working
//! directory), so a configuration and its files can move together.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use localcert_proto::message::MAX_KNOWN_ISSUERS;
use localcert_proto::name::DeviceLabel;
use serde::Deserialize;

use crate::engine::{DeviceConfig, IssuerTrust};
use crate::error::Error;
use crate::keys::{FileKeys, KeyProvider};
use crate::mdns::{Announcer, Interfaces};
use crate::presence::{AutoApprove, DenyAll, PinPresence, UserPresence, command_presence};
use crate::runtime::DeviceBuilder;
#[cfg(feature = "pkcs11")]
use crate::signer::KeySigner;
use crate::signer::{AttestationSigner, FileSigner};
use crate::star::HttpsFetcher;
use crate::store::{DirStore, LoadReport};
use crate::{files, pki};

/// How the daemon confirms an ATTEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PresenceMode {
    /// Approve every ATTEST (demos and tests only).
    Auto,
    /// Require the PIN in `pin_file`.
    Pin,
    /// Refuse every ATTEST (provisioning switched off).
    Deny,
    /// Ask the user through `presence_command` (a button, a prompt on a screen): it is run
    /// with the origin as its last argument; exit status 0 approves.
    Command,
}

/// `device.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Product name reported by GET_INFO.
    pub product: String,
    /// The device label suggested to UAs; derived from the product name when absent.
    pub device_label: Option<String>,
    /// The store directory (created 0700).
    pub store_dir: PathBuf,
    /// Where keys live: PEM and store files, or a PKCS#11 token.
    #[serde(default)]
    pub keys: KeysMode,
    /// With `keys = "files"`: the attestation key (PKCS#8 PEM), as `localcert factory device`
    /// writes it. With `keys = "pkcs11"` the key is in the token and this must be absent.
    pub attestation_key: Option<PathBuf>,
    /// The attestation chain (PEM, device certificate first).
    pub attestation_chain: PathBuf,
    /// PEM file of the issuer root(s) the device trusts for INSTALL and renewal.
    pub issuer_roots: PathBuf,
    /// PEM file of the issuer's issuing intermediate(s), held beside the roots: GET_INFO
    /// reports them, so INSTALL omits them (SPEC §5.3). Optional: without it the UA sends
    /// the whole chain.
    pub issuer_intermediates: Option<PathBuf>,
    /// How ATTEST is confirmed.
    pub presence: PresenceMode,
    /// For `presence = "pin"`: a file holding the PIN (first line).
    pub pin_file: Option<PathBuf>,
    /// For `presence = "command"`: the program and its first arguments.
    #[serde(default)]
    pub presence_command: Vec<String>,
    /// The HTTPS port.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// The address HTTPS listens on.
    #[serde(default = "default_listen")]
    pub https_listen: IpAddr,
    /// Origin bindings the device holds (1..=16).
    #[serde(default = "default_max_bindings")]
    pub max_bindings: usize,
    /// Seconds a pending key waits for its INSTALL.
    #[serde(default = "default_pending_secs")]
    pub pending_lifetime_secs: u64,
    /// Seconds the device waits for the user.
    #[serde(default = "default_presence_secs")]
    pub presence_timeout_secs: u64,
    /// Bluetooth LE.
    #[serde(default)]
    pub ble: BleSection,
    /// mDNS.
    #[serde(default)]
    pub mdns: MdnsSection,
    /// STAR renewal.
    #[serde(default)]
    pub renewal: RenewalSection,
    /// The token, for `keys = "pkcs11"`.
    pub pkcs11: Option<Pkcs11Section>,
}

/// The attestation signer and the TLS key provider, from the same place.
type SignerAndKeys = (Box<dyn AttestationSigner>, Arc<dyn KeyProvider>);

/// Where the device's private keys live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeysMode {
    /// The attestation key in a PEM file, TLS keys in the store's 0600 files.
    #[default]
    Files,
    /// Both in a PKCS#11 token (`[pkcs11]`), generated there and never extractable; the store
    /// keeps only their ids. Needs the `pkcs11` feature.
    Pkcs11,
}

/// `[pkcs11]`: the token. The PIN comes from a file or an environment variable, never from
/// the command line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// A file holding the user PIN (first line).
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// The label of the attestation key, as `localcert factory device --pkcs11` made it.
    #[serde(default = "default_attestation_label")]
    pub attestation_key_label: String,
}

fn default_attestation_label() -> String {
    "localcert-attestation".to_owned()
}

/// `[ble]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleSection {
    /// Whether to serve GATT (needs the `bluez` feature).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The adapter, e.g. `hci0`; the default adapter when absent.
    pub adapter: Option<String>,
    /// The advertised local name.
    #[serde(default = "default_local_name")]
    pub local_name: String,
}

impl Default for BleSection {
    fn default() -> Self {
        Self {
            enabled: true,
            adapter: None,
            local_name: default_local_name(),
        }
    }
}

/// `[mdns]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdnsSection {
    /// Whether to announce names.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Interface names to answer on; every LAN interface when empty; `["lo"]` for loopback
    /// only.
    #[serde(default)]
    pub interfaces: Vec<String>,
}

impl Default for MdnsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interfaces: Vec::new(),
        }
    }
}

impl MdnsSection {
    /// The interface policy.
    pub fn interfaces(&self) -> Interfaces {
        match self.interfaces.as_slice() {
            [] => Interfaces::Lan,
            [only] if only == "lo" => Interfaces::LoopbackOnly,
            names => Interfaces::Named(names.to_vec()),
        }
    }
}

/// `[renewal]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalSection {
    /// PEM roots for the issuer's HTTPS server (the `star-certificate` URLs). Without it,
    /// STAR certificates are not renewed.
    pub tls_roots: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_https_port() -> u16 {
    443
}
fn default_listen() -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
}
fn default_max_bindings() -> usize {
    localcert_proto::message::MAX_BINDINGS
}
fn default_pending_secs() -> u64 {
    crate::engine::DEFAULT_PENDING_LIFETIME.as_secs()
}
fn default_presence_secs() -> u64 {
    crate::engine::DEFAULT_PRESENCE_TIMEOUT.as_secs()
}
fn default_local_name() -> String {
    "localcert".to_owned()
}

impl DaemonConfig {
    /// Reads and validates `path`; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = files::read(path)?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Config(format!("{}: not UTF-8", path.display())))?;
        let mut config: Self =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.check()?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Makes every relative path relative to `base` (the file's directory). The presence
    /// command is not a path of the configuration: it is run as written.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.store_dir);
        resolve(&mut self.attestation_chain);
        resolve(&mut self.issuer_roots);
        for p in [
            self.attestation_key.as_mut(),
            self.pin_file.as_mut(),
            self.renewal.tls_roots.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        if let Some(token) = self.pkcs11.as_mut() {
            resolve(&mut token.module);
            if let Some(p) = token.pin_file.as_mut() {
                resolve(p);
            }
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.product.is_empty() || self.product.len() > localcert_proto::message::MAX_PRODUCT_LEN
        {
            return bad("product must be 1 to 64 bytes");
        }
        if let Some(label) = &self.device_label {
            DeviceLabel::parse(label).map_err(|e| Error::Config(format!("device_label: {e}")))?;
        }
        if !(1..=localcert_proto::message::MAX_BINDINGS).contains(&self.max_bindings) {
            return bad("max_bindings must be 1 to 16");
        }
        if self.https_port == 0 {
            return bad("https_port must not be 0");
        }
        if self.presence == PresenceMode::Pin && self.pin_file.is_none() {
            return bad("presence = \"pin\" needs pin_file");
        }
        if self.presence == PresenceMode::Command && self.presence_command.is_empty() {
            return bad("presence = \"command\" needs presence_command");
        }
        match (self.keys, &self.pkcs11, &self.attestation_key) {
            (KeysMode::Files, None, Some(_)) => {}
            (KeysMode::Files, Some(_), _) => {
                return bad("[pkcs11] is only read with keys = \"pkcs11\"");
            }
            (KeysMode::Files, None, None) => return bad("keys = \"files\" needs attestation_key"),
            (KeysMode::Pkcs11, None, _) => {
                return bad("keys = \"pkcs11\" needs a [pkcs11] section");
            }
            (KeysMode::Pkcs11, Some(_), Some(_)) => {
                return bad(
                    "keys = \"pkcs11\": the attestation key is in the token, so attestation_key must be absent",
                );
            }
            (KeysMode::Pkcs11, Some(token), None) => {
                if token.pin_file.is_some() == token.pin_env.is_some() {
                    return bad("[pkcs11] needs exactly one of pin_file and pin_env");
                }
                if token.token_label.is_empty() || token.attestation_key_label.is_empty() {
                    return bad("[pkcs11] token_label and attestation_key_label must not be empty");
                }
            }
        }
        Ok(())
    }

    /// The engine settings.
    pub fn device_config(&self) -> Result<DeviceConfig, Error> {
        let mut config = DeviceConfig::new(&self.product);
        if let Some(label) = &self.device_label {
            config.device_label = DeviceLabel::parse(label)
                .map_err(|e| Error::Config(format!("device_label: {e}")))?;
        }
        config.https_port = self.https_port;
        config.max_bindings = self.max_bindings;
        config.pending_lifetime = Duration::from_secs(self.pending_lifetime_secs);
        config.presence_timeout = Duration::from_secs(self.presence_timeout_secs);
        config.trust = IssuerTrust::Roots(pki::certificates_from_pem(
            &files::read(&self.issuer_roots)?,
            "issuer roots",
        )?);
        if let Some(path) = &self.issuer_intermediates {
            config.issuer_intermediates =
                pki::certificates_from_pem(&files::read(path)?, "issuer intermediates")?;
            if config.issuer_intermediates.len() > MAX_KNOWN_ISSUERS {
                return Err(Error::Config(format!(
                    "issuer_intermediates: at most {MAX_KNOWN_ISSUERS} certificates"
                )));
            }
        }
        Ok(config)
    }

    /// The presence check.
    pub fn presence(&self) -> Result<Box<dyn UserPresence>, Error> {
        Ok(match self.presence {
            PresenceMode::Auto => Box::new(AutoApprove),
            PresenceMode::Deny => Box::new(DenyAll),
            PresenceMode::Command => Box::new(command_presence(
                self.presence_command.clone(),
                Duration::from_secs(self.presence_timeout_secs),
            )),
            PresenceMode::Pin => {
                let path = self
                    .pin_file
                    .as_deref()
                    .ok_or_else(|| Error::Config("pin_file missing".into()))?;
                let text = String::from_utf8(files::read(path)?)
                    .map_err(|_| Error::Config("pin_file: not UTF-8".into()))?;
                let pin = text.lines().next().unwrap_or("").trim();
                let len = pin.len();
                if !(localcert_proto::message::MIN_PIN_LEN..=localcert_proto::message::MAX_PIN_LEN)
                    .contains(&len)
                {
                    return Err(Error::Config(
                        "pin_file: the PIN must be 4 to 32 characters".into(),
                    ));
                }
                Box::new(PinPresence::new(pin))
            }
        })
    }

    /// Opens the store.
    pub fn open_store(&self) -> Result<(DirStore, LoadReport), Error> {
        DirStore::open(&self.store_dir)
    }

    /// The device's parts, from this file: settings, attestation signer and key provider
    /// (files or the token), presence check, the store, mDNS and STAR renewal. Also says what
    /// the store held that it could not use.
    pub fn builder(&self) -> Result<(DeviceBuilder, LoadReport), Error> {
        let (store, report) = self.open_store()?;
        let chain = pki::certificates_from_pem(
            &files::read(&self.attestation_chain)?,
            "attestation chain",
        )?;
        let (signer, keys) = self.signer_and_keys(chain, &store, &report)?;
        let mut builder = DeviceBuilder::new(self.device_config()?, signer)
            .keys(keys)
            .boxed_presence(self.presence()?)
            .store(store);
        if self.mdns.enabled {
            builder = builder.announcer(Announcer::new(self.https_port, &self.mdns.interfaces())?);
        }
        if let Some(roots) = self.renewal_roots()? {
            builder = builder.fetcher(Arc::new(HttpsFetcher::new(&roots)?));
        }
        Ok((builder, report))
    }

    fn signer_and_keys(
        &self,
        chain: Vec<Vec<u8>>,
        store: &DirStore,
        report: &LoadReport,
    ) -> Result<SignerAndKeys, Error> {
        match (self.keys, &self.attestation_key, &self.pkcs11) {
            (KeysMode::Files, Some(key), _) => {
                let key = pki::key_from_pem(&files::read(key)?, "attestation key")?;
                Ok((Box::new(FileSigner::new(&key, chain)?), Arc::new(FileKeys)))
            }
            (KeysMode::Pkcs11, _, Some(token)) => {
                token_signer_and_keys(token, chain, store, report)
            }
            _ => Err(Error::Config("keys: incomplete settings".into())),
        }
    }
    /// The renewal TLS roots, if configured.
    pub fn renewal_roots(&self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        self.renewal
            .tls_roots
            .as_deref()
            .map(|p| {
                Ok(pki::certificates_from_pem(
                    &files::read(p)?,
                    "renewal TLS roots",
                )?)
            })
            .transpose()
    }
}

#[cfg(feature = "pkcs11")]
fn token_signer_and_keys(
    section: &Pkcs11Section,
    chain: Vec<Vec<u8>>,
    store: &DirStore,
    report: &LoadReport,
) -> Result<SignerAndKeys, Error> {
    use crate::pkcs11::{TokenConfig, TokenKeys, TokenPin};
    use crate::store::BindingStore;
    let pin = match (&section.pin_file, &section.pin_env) {
        (Some(path), None) => TokenPin::new(
            &String::from_utf8(files::read(path)?)
                .map_err(|_| Error::Config("[pkcs11] pin_file: not UTF-8".into()))?,
        )?,
        (None, Some(var)) => TokenPin::new(&std::env::var(var).map_err(|_| {
            Error::Config(format!(
                "[pkcs11] pin_env: ${var} is not set (or not UTF-8)"
            ))
        })?)?,
        _ => {
            return Err(Error::Config(
                "[pkcs11] needs exactly one of pin_file and pin_env".into(),
            ));
        }
    };
    let token = Arc::new(TokenKeys::open(&TokenConfig {
        module: &section.module,
        token_label: &section.token_label,
        pin: &pin,
    })?);
    // Pending keys live in memory: a key made by an ATTEST of an earlier run that no binding
    // holds will never be installed. Unless a binding file could not be read: its key may be
    // one of them, and the file is kept for inspection, so its key is kept too.
    if report.unusable.is_empty() {
        let held: Vec<&crate::keys::DeviceKey> = store.bindings().iter().map(|b| &b.key).collect();
        let deleted = token.delete_unused_tls_keys(&held)?;
        if deleted > 0 {
            tracing::info!(deleted, "deleted token keys of ATTESTs never installed");
        }
    } else {
        tracing::warn!("unusable binding files: token keys no binding holds are kept");
    }
    let key = token.find_labelled(&section.attestation_key_label)?;
    let keys: Arc<dyn KeyProvider> = token;
    let signer = KeySigner::new(keys.clone(), key, chain)?;
    Ok((Box::new(signer), keys))
}

#[cfg(not(feature = "pkcs11"))]
fn token_signer_and_keys(
    _: &Pkcs11Section,
    _: Vec<Vec<u8>>,
    _: &DirStore,
    _: &LoadReport,
) -> Result<SignerAndKeys, Error> {
    Err(Error::Config(
        "keys = \"pkcs11\" needs a localcert-device built with the `pkcs11` feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../dist/device.toml");
        let config: DaemonConfig = toml::from_str(text).unwrap();
        config.check().unwrap();
        assert_eq!(config.https_port, 8443);
        assert_eq!(config.presence, PresenceMode::Auto);
        assert_eq!(config.mdns.interfaces(), Interfaces::Lan);
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = r#"
            product = "TV"
            store_dir = "/tmp/x"
            attestation_key = "k"
            attestation_chain = "c"
            issuer_roots = "r"
            presence = "auto"
        "#;
        let parse = |extra: &str| {
            toml::from_str::<DaemonConfig>(&format!("{base}\n{extra}"))
                .map_err(|e| e.to_string())
                .and_then(|c| c.check().map_err(|e| e.to_string()))
        };
        assert!(parse("").is_ok());
        assert!(parse("unknown_key = 1").is_err());
        assert!(parse("max_bindings = 0").is_err());
        assert!(parse("device_label = \"Bad Label\"").is_err());
        assert!(parse("https_port = 0").is_err());
        let pin = toml::from_str::<DaemonConfig>(&base.replace("\"auto\"", "\"pin\"")).unwrap();
        assert!(pin.check().is_err(), "pin without pin_file");
        let cmd = toml::from_str::<DaemonConfig>(&base.replace("\"auto\"", "\"command\"")).unwrap();
        assert!(cmd.check().is_err(), "command without presence_command");
    }

    const TOKEN: &str = r#"
        product = "TV"
        store_dir = "store"
        keys = "pkcs11"
        attestation_chain = "attestation.pem"
        issuer_roots = "/etc/roots.pem"
        presence = "auto"
        [pkcs11]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "t"
        pin_file = "token.pin"
    "#;

    #[test]
    fn key_settings_are_one_of_files_or_token() {
        let check = |text: &str| {
            toml::from_str::<DaemonConfig>(text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check().map_err(|e| e.to_string()))
        };
        check(TOKEN).unwrap();
        let refused = [
            // The attestation key is in the token: no key file beside it.
            TOKEN.replace(
                "keys = \"pkcs11\"",
                "keys = \"pkcs11\"\nattestation_key = \"k\"",
            ),
            // No token section.
            TOKEN.replace("[pkcs11]", "[unused]"),
            // Files, yet a token section, or no key file.
            TOKEN.replace(
                "keys = \"pkcs11\"",
                "keys = \"files\"\nattestation_key = \"k\"",
            ),
            TOKEN.replace("keys = \"pkcs11\"", "keys = \"files\""),
            // Exactly one PIN source; the PIN itself is never a setting.
            TOKEN.replace("pin_file = \"token.pin\"", ""),
            TOKEN.replace(
                "pin_file = \"token.pin\"",
                "pin_file = \"p\"\npin_env = \"PIN\"",
            ),
            TOKEN.replace("pin_file = \"token.pin\"", "pin = \"1234\""),
            TOKEN.replace("token_label = \"t\"", "token_label = \"\""),
            TOKEN.replace("\"pkcs11\"", "\"tpm\""),
        ];
        for text in refused {
            assert!(check(&text).is_err(), "accepted:\n{text}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.toml");
        std::fs::write(&path, TOKEN).unwrap();
        let config = DaemonConfig::load(&path).unwrap();
        assert_eq!(config.store_dir, dir.path().join("store"));
        assert_eq!(config.attestation_chain, dir.path().join("attestation.pem"));
        assert_eq!(config.issuer_roots, Path::new("/etc/roots.pem"));
        let token = config.pkcs11.as_ref().unwrap();
        assert_eq!(
            token.pin_file.as_deref(),
            Some(&*dir.path().join("token.pin"))
        );
        assert_eq!(token.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(token.attestation_key_label, "localcert-attestation");
    }

    #[cfg(not(feature = "pkcs11"))]
    #[test]
    fn a_token_needs_the_pkcs11_feature() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("device.toml"), TOKEN).unwrap();
        let root = crate::factory::new_root("M").unwrap();
        let cred = crate::factory::new_device(&root, "TV", "1").unwrap();
        crate::factory::write_device_chain(dir.path(), &cred.chain).unwrap();
        let config = DaemonConfig::load(&dir.path().join("device.toml")).unwrap();
        let error = config.builder().unwrap_err().to_string();
        assert!(error.contains("`pkcs11` feature"), "{error}");
    }
}
