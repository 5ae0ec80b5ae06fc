//! The origin's ACME account at the issuer, made once with its EAB credentials.

use std::path::PathBuf;

use instant_acme::{Account, ExternalAccountKey, NewAccount};
use tokio::sync::OnceCell;

use crate::error::FlowError;

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
}

/// The origin's account, created at first use and kept for the life of the process.
pub struct AcmeAccount {
    settings: AcmeSettings,
    account: OnceCell<Account>,
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

    /// The account, created now if it is not yet (a failed creation is tried again next time).
    pub async fn get(&self) -> Result<&Account, FlowError> {
        self.account
            .get_or_try_init(|| async {
                let builder = match &self.settings.tls_root {
                    Some(path) => Account::builder_with_root(path),
                    None => Account::builder(),
                }
                .map_err(FlowError::issuer)?;
                let eab =
                    ExternalAccountKey::new(self.settings.eab.kid.clone(), &self.settings.eab.key);
                let new_account = NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, _) = builder
                    .create(
                        &new_account,
                        self.settings.directory_url.clone(),
                        Some(&eab),
                    )
                    .await
                    .map_err(FlowError::issuer)?;
                tracing::info!(account = account.id(), "ACME account ready");
                Ok(account)
            })
            .await
    }
}
