//! The origin's ACME account at the issuer, made once with its EAB credentials. The issuer binds
//! one account to an EAB key id, so the account's key and URL are kept in a file (mode 0600)
//! and reused after a restart.

use std::io::Write;
use std::path::{Path, PathBuf};

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use tokio::sync::OnceCell;

use crate::error::FlowError;
use crate::star::AccountKey;

/// EAB credentials: the key id and the HMAC key the issuer's operator gave the origin.
#[derive(Clone)]
pub struct Eab {
    /// The key id.
    pub kid: String,
    /// The HMAC key, raw bytes.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Where the issuer is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// The ACME directory URL.
    pub directory_url: String,
    /// PEM file of the root of the issuer's own HTTPS certificate (`None`: the system roots).
    pub tls_root: Option<PathBuf>,
    /// The EAB credentials.
    pub eab: Eab,
    /// Where the account's credentials (its private key and URL) are kept across restarts;
    /// `None` keeps them in memory only (a second process cannot use the same EAB key).
    pub account_file: Option<PathBuf>,
}

/// The origin's account, created at first use and kept for the life of the process.
pub struct AcmeAccount {
    settings: AcmeSettings,
    account: OnceCell<(Account, AccountKey)>,
}

impl std::fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeAccount")
            .field("settings", &self.settings)
            .field("created", &self.account.initialized())
            .finish()
    }
}

impl AcmeAccount {
    /// An account to be created at first use.
    pub fn new(settings: AcmeSettings) -> Self {
        Self {
            settings,
            account: OnceCell::new(),
        }
    }

    /// The account, created now if it is not yet (a failed creation is tried again next time):
    /// loaded from the account file when there is one, else created and saved there.
    pub async fn get(&self) -> Result<&Account, FlowError> {
        self.ready().await.map(|(account, _)| account)
    }

    /// The settings this account was made with.
    pub fn settings(&self) -> &AcmeSettings {
        &self.settings
    }

    /// The account's signing key and URL, for the requests instant-acme cannot make (the
    /// STAR cancel, [`crate::star`]).
    pub async fn key(&self) -> Result<&AccountKey, FlowError> {
        self.ready().await.map(|(_, key)| key)
    }

    async fn ready(&self) -> Result<&(Account, AccountKey), FlowError> {
        self.account
            .get_or_try_init(|| async {
                let builder = match &self.settings.tls_root {
                    Some(path) => Account::builder_with_root(path),
                    None => Account::builder(),
                }
                .map_err(FlowError::issuer)?;
                let file = self.settings.account_file.as_deref();
                if let Some(credentials) = file.map(load_credentials).transpose()?.flatten() {
                    let key = AccountKey::from_credentials(&credentials)?;
                    let account = builder
                        .from_credentials(credentials)
                        .await
                        .map_err(FlowError::issuer)?;
                    tracing::info!(account = account.id(), "ACME account loaded");
                    return Ok((account, key));
                }
                let eab =
                    ExternalAccountKey::new(self.settings.eab.kid.clone(), &self.settings.eab.key);
                let new_account = NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder
                    .create(
                        &new_account,
                        self.settings.directory_url.clone(),
                        Some(&eab),
                    )
                    .await
                    .map_err(FlowError::issuer)?;
                if let Some(file) = file {
                    save_credentials(file, &credentials)?;
                }
                tracing::info!(account = account.id(), "ACME account created");
                Ok((account, AccountKey::from_credentials(&credentials)?))
            })
            .await
    }
}

fn account_file_error(path: &Path, what: impl std::fmt::Display) -> FlowError {
    FlowError::Issuer(format!("ACME account file {}: {what}", path.display()))
}

/// The saved credentials, if the file exists; it must be readable by its owner only.
fn load_credentials(path: &Path) -> Result<Option<AccountCredentials>, FlowError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::config::read_private(path).map_err(|e| account_file_error(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| account_file_error(path, e))
}

/// Writes the credentials to `path`, created 0600 (through a temporary file renamed into
/// place, so that a crash leaves the old file or the new one, never half of one).
fn save_credentials(path: &Path, credentials: &AccountCredentials) -> Result<(), FlowError> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |e: std::io::Error| account_file_error(path, e);
    let json = serde_json::to_vec(credentials).map_err(|e| account_file_error(path, e))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(&json).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}
