//! The reference daemon's configuration file (`device.toml`), and how it builds the engine.
//!
//! Paths are taken as written (relative ones from the daemon's working directory).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use localcert_proto::name::DeviceLabel;
use serde::Deserialize;

use crate::engine::{Device, DeviceConfig, IssuerTrust};
use crate::error::Error;
use crate::mdns::Interfaces;
use crate::presence::{
    AutoApprove, ButtonPresence, DenyAll, PinPresence, PresenceRequest, PresenceResponder,
    UserPresence,
};
use crate::signer::FileSigner;
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
    /// The attestation key (PKCS#8 PEM), as `localcert factory device` writes it.
    pub attestation_key: PathBuf,
    /// The attestation chain (PEM, device certificate first).
    pub attestation_chain: PathBuf,
    /// PEM file of the issuer root(s) the device trusts for INSTALL and renewal.
    pub issuer_roots: PathBuf,
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
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = files::read(path)?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Config(format!("{}: not UTF-8", path.display())))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.check()?;
        Ok(config)
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

    /// Builds the engine: signer, presence, store.
    pub fn build_device(&self) -> Result<(Device, LoadReport), Error> {
        let signer = FileSigner::from_files(&self.attestation_key, &self.attestation_chain)?;
        let (store, report) = self.open_store()?;
        let device = Device::new(
            self.device_config()?,
            Box::new(signer),
            self.presence()?,
            Box::new(store),
        );
        Ok((device, report))
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

/// A [`ButtonPresence`] whose hook runs `argv` + the origin in a thread: exit 0 approves,
/// anything else (or no answer within `timeout`, when the process is killed) denies.
pub fn command_presence(argv: Vec<String>, timeout: Duration) -> ButtonPresence {
    ButtonPresence::new(
        move |request: PresenceRequest, responder: PresenceResponder| {
            let argv = argv.clone();
            let spawned = std::thread::Builder::new()
                .name("presence-command".into())
                .spawn(move || {
                    if run_presence_command(&argv, &request, timeout) {
                        responder.approve();
                    } else {
                        responder.deny();
                    }
                });
            if let Err(e) = spawned {
                // The responder went with the closure and was dropped: that denies.
                tracing::error!(error = %e, "cannot start the presence command");
            }
        },
    )
}

fn run_presence_command(argv: &[String], request: &PresenceRequest, timeout: Duration) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let child = std::process::Command::new(program)
        .args(args)
        .arg(request.origin.as_str())
        .env("LOCALCERT_ORIGIN", request.origin.as_str())
        .stdin(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, program, "cannot run the presence command");
            return false;
        }
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
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

    #[cfg(unix)]
    #[test]
    fn the_presence_command_decides() {
        use crate::presence::PresenceCheck;
        let ask = |script: &str| {
            let presence = command_presence(
                vec!["sh".into(), "-c".into(), script.into(), "sh".into()],
                Duration::from_secs(30),
            );
            let request = PresenceRequest {
                origin: localcert_proto::origin::Origin::parse("https://vod.example.com").unwrap(),
                pin: None,
            };
            let PresenceCheck::Pending(pending) = presence.check(&request) else {
                panic!("a command answers later");
            };
            loop {
                if let Some(answer) = pending.poll() {
                    return answer;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert!(ask(
            r#"test "$1" = https://vod.example.com && test "$LOCALCERT_ORIGIN" = "$1""#
        ));
        assert!(!ask("exit 1"));
    }
}
