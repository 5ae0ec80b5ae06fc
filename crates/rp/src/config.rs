//! `rp.toml`: the backend's configuration. It holds secrets (the EAB key, user tokens), so it
//! must be readable by its owner only; so must an EAB key file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use localcert_proto::message::{CorsPolicy, MAX_USER_HANDLE_LEN};
use localcert_proto::origin::Origin;
use serde::Deserialize;

use crate::account::{AcmeSettings, Eab};

/// Environment variable that overrides the EAB key id.
pub const ENV_EAB_KID: &str = "LOCALCERT_EAB_KID";
/// Environment variable that overrides the EAB key (base64url).
pub const ENV_EAB_KEY: &str = "LOCALCERT_EAB_KEY";
/// Where the ACME account's credentials are kept, beside rp.toml unless `[acme] account_file`
/// says otherwise (an EAB key binds one account: a restart must reuse it).
pub const DEFAULT_ACCOUNT_FILE: &str = "rp-account.json";
/// The default base path of the API.
pub const DEFAULT_BASE_PATH: &str = "/localcert";
/// The default request body limit: a GET_INFO answer with three 2048-byte certificates is
/// about 8.2 KiB in base64url.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
/// The default number of flows a user may start per minute.
pub const DEFAULT_FLOWS_PER_USER_PER_MINUTE: u32 = 5;
/// The default bound on flows held in memory (in progress or recently complete).
pub const DEFAULT_MAX_FLOWS: usize = 1024;
/// The default flow lifetime: the device's pending key lives as long (SPEC §5.2).
pub const DEFAULT_FLOW_LIFETIME_SECONDS: u64 = 600;
/// The longest EAB key file or config file read.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A secret file is readable by group or others.
    #[error(
        "{path} is readable by group or others (mode {mode:o}); it holds secrets: chmod 600 it"
    )]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A value is wrong or missing.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(s.into())
}

/// Reads a file that holds secrets, refusing it if group or others may read it.
pub fn read_private(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Mode {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

/// Decodes an EAB key as `localcert issuer rp add` prints it (base64url, padding optional).
pub fn decode_eab_key(text: &str) -> Result<Vec<u8>, ConfigError> {
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| invalid("the EAB key is not base64url"))?;
    if key.is_empty() {
        return Err(invalid("the EAB key is empty"));
    }
    Ok(key)
}

/// An EAB file: TOML with `kid = "…"` and `key = "…"` (base64url), mode 0600.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EabFile {
    kid: String,
    key: String,
}

/// Reads EAB credentials from an EAB file (`kid = "…"`, `key = "…"`; mode 0600).
pub fn read_eab_file(path: &Path) -> Result<Eab, ConfigError> {
    let text = read_private(path)?;
    let file: EabFile =
        toml::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    Ok(Eab {
        kid: file.kid,
        key: decode_eab_key(&file.key)?,
    })
}

/// EAB credentials from `LOCALCERT_EAB_KID` and `LOCALCERT_EAB_KEY`, if both are set; an error
/// if only one is.
pub fn eab_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Eab>, ConfigError> {
    match (get(ENV_EAB_KID), get(ENV_EAB_KEY)) {
        (Some(kid), Some(key)) => Ok(Some(Eab {
            kid,
            key: decode_eab_key(&key)?,
        })),
        (None, None) => Ok(None),
        _ => Err(invalid(format!(
            "set both {ENV_EAB_KID} and {ENV_EAB_KEY}, or neither"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    origin: String,
    listen: SocketAddr,
    #[serde(default)]
    plain_http: bool,
    base_path: Option<String>,
    static_dir: Option<PathBuf>,
    acme: RawAcme,
    tls: Option<RawTls>,
    #[serde(default)]
    limits: RawLimits,
    cors: Option<RawCors>,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory: String,
    tls_root: Option<PathBuf>,
    eab_kid: Option<String>,
    eab_key: Option<String>,
    eab_key_file: Option<PathBuf>,
    account_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    flows_per_user_per_minute: Option<u32>,
    max_flows: Option<usize>,
    flow_lifetime_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default = "default_max_age")]
    max_age: u64,
}

fn default_max_age() -> u64 {
    600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    token: String,
    handle: String,
}

/// The backend's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest request body.
    pub max_body_bytes: usize,
    /// Flows one user may start per minute.
    pub flows_per_user_per_minute: u32,
    /// Flows held in memory at once.
    pub max_flows: usize,
    /// How long a flow lives, from its start.
    pub flow_lifetime: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            flows_per_user_per_minute: DEFAULT_FLOWS_PER_USER_PER_MINUTE,
            max_flows: DEFAULT_MAX_FLOWS,
            flow_lifetime: std::time::Duration::from_secs(DEFAULT_FLOW_LIFETIME_SECONDS),
        }
    }
}

/// A user token and the handle it stands for.
#[derive(Clone)]
pub struct UserToken {
    /// The bearer token or session cookie value.
    pub token: String,
    /// The user handle (1 to 64 bytes).
    pub handle: Vec<u8>,
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken")
            .field("handle", &String::from_utf8_lossy(&self.handle))
            .finish_non_exhaustive()
    }
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The origin the backend serves.
    pub origin: Origin,
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS certificate chain and key (PEM) for the backend's own HTTPS; `None` with plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The API's base path, e.g. `/localcert`.
    pub base_path: String,
    /// A directory served at `/` (e.g. `web/`, for `/example/` and `/dist/`).
    pub static_dir: Option<PathBuf>,
    /// The issuer.
    pub acme: AcmeSettings,
    /// Bounds.
    pub limits: Limits,
    /// The CORS policy installed on devices.
    pub cors: CorsPolicy,
    /// Users and their tokens (for [`crate::auth::TokenAuth`]).
    pub users: Vec<UserToken>,
}

/// The CORS policy installed when rp.toml names none.
pub fn default_cors() -> CorsPolicy {
    CorsPolicy {
        methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["content-type".into()],
        expose_headers: vec![],
        allow_credentials: false,
        max_age: default_max_age(),
    }
}

impl Config {
    /// Reads `path` (mode 0600 or stricter); relative paths in it are relative to its
    /// directory; `LOCALCERT_EAB_KID`/`LOCALCERT_EAB_KEY` override the EAB credentials.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_private(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir, |name| std::env::var(name).ok())
    }

    /// Parses rp.toml text; `dir` anchors relative paths, `env` reads the environment.
    pub fn parse(
        text: &str,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(format!("rp.toml: {e}")))?;
        let origin = Origin::parse(&raw.origin)
            .map_err(|e| invalid(format!("origin {:?}: {e}", raw.origin)))?;
        let at = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
        let tls = match (raw.tls, raw.plain_http) {
            (Some(t), false) => Some((at(t.cert), at(t.key))),
            (None, true) => None,
            (Some(_), true) => return Err(invalid("plain_http = true and [tls]: choose one")),
            (None, false) => {
                return Err(invalid(
                    "[tls] cert and key are required (or plain_http = true)",
                ));
            }
        };
        let base_path = raw
            .base_path
            .unwrap_or_else(|| DEFAULT_BASE_PATH.to_owned());
        let valid_base = base_path.starts_with('/')
            && !base_path.ends_with('/')
            && base_path[1..].split('/').all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && s != "."
                    && s != ".."
            });
        if !valid_base {
            return Err(invalid(format!(
                "base_path {base_path:?}: one or more /segments of letters, digits, '-', '_', '.'"
            )));
        }
        let eab = match eab_from_env(&env)? {
            Some(eab) => eab,
            None => {
                let kid = raw.acme.eab_kid.ok_or_else(|| {
                    invalid(format!("[acme] eab_kid is missing (or set {ENV_EAB_KID})"))
                })?;
                let key = match (raw.acme.eab_key, raw.acme.eab_key_file) {
                    (Some(key), None) => decode_eab_key(&key)?,
                    (None, Some(file)) => decode_eab_key(&read_private(&at(file))?)?,
                    _ => {
                        return Err(invalid(format!(
                            "[acme] needs one of eab_key and eab_key_file (or set {ENV_EAB_KEY})"
                        )));
                    }
                };
                Eab { kid, key }
            }
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            flows_per_user_per_minute: raw
                .limits
                .flows_per_user_per_minute
                .unwrap_or(defaults.flows_per_user_per_minute),
            max_flows: raw.limits.max_flows.unwrap_or(defaults.max_flows),
            flow_lifetime: raw
                .limits
                .flow_lifetime_seconds
                .map_or(defaults.flow_lifetime, std::time::Duration::from_secs),
        };
        if limits.max_body_bytes == 0 || limits.max_flows == 0 || limits.flow_lifetime.is_zero() {
            return Err(invalid("[limits] values must be positive"));
        }
        let cors = match raw.cors {
            None => default_cors(),
            Some(c) => CorsPolicy {
                methods: c.methods,
                allow_headers: c.allow_headers,
                expose_headers: c.expose_headers,
                allow_credentials: c.allow_credentials,
                max_age: c.max_age,
            },
        };
        let mut users = Vec::with_capacity(raw.users.len());
        for user in raw.users {
            if user.token.len() < 16 {
                return Err(invalid(format!(
                    "user {:?}: a token needs at least 16 characters",
                    user.handle
                )));
            }
            if user.handle.is_empty() || user.handle.len() > MAX_USER_HANDLE_LEN {
                return Err(invalid(format!(
                    "user {:?}: a handle has 1 to {MAX_USER_HANDLE_LEN} bytes",
                    user.handle
                )));
            }
            users.push(UserToken {
                token: user.token,
                handle: user.handle.into_bytes(),
            });
        }
        Ok(Self {
            origin,
            listen: raw.listen,
            tls,
            base_path,
            static_dir: raw.static_dir.map(at),
            acme: AcmeSettings {
                directory_url: raw.acme.directory,
                tls_root: raw.acme.tls_root.map(at),
                eab,
                account_file: Some(at(raw
                    .acme
                    .account_file
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_ACCOUNT_FILE)))),
            },
            limits,
            cors,
            users,
        })
    }
}
