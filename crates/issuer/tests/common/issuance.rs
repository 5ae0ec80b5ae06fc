//! An ACME client as the bench, the crash test and the load test drive the issuer:
//! instant-acme (an independent implementation) doing a full issuance for one device —
//! newOrder, the authorization, device-attest-01 with a valid attestation, finalize, download.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, ChallengeType, DeviceAttestation, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use super::{Device, TlsKey};

/// The error type of these clients.
pub type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The relying parties' HMAC key (each has its own key id: one account per EAB key).
pub const HMAC: &[u8] = &[7; 32];
const USER: &[u8] = b"load-user";

/// A device of one relying party, and what its issuances reuse (the TLS key and its CSR).
pub struct Subject {
    /// The EAB key id of the origin's relying party.
    pub kid: String,
    /// The device.
    pub device: Device,
    origin: Origin,
    name: LocalName,
    spki: Vec<u8>,
    csr: Vec<u8>,
}

impl Subject {
    /// A device named `label` in the namespace of `origin` (EAB key id `kid`), with a fresh
    /// TLS key.
    pub fn new(device: Device, origin: &Origin, kid: &str, label: &str) -> Self {
        let name = device.name(label, origin);
        let key = TlsKey::new();
        let csr = key.csr(&[name.as_str()]);
        Self {
            kid: kid.to_owned(),
            device,
            origin: origin.clone(),
            name,
            spki: key.spki(),
            csr,
        }
    }
}

/// Creates the account of the EAB key `kid` (a new HTTPS connection pool of its own).
pub async fn new_account(tls_root: &Path, directory: &str, kid: &str) -> BoxResult<Account> {
    Ok(create_account(tls_root, directory, kid, HMAC).await?.0)
}

/// newAccount with the EAB key `kid`/`hmac`, trusting `tls_root` for HTTPS: the account and
/// its credentials, or the server's refusal.
pub async fn create_account(
    tls_root: &Path,
    directory: &str,
    kid: &str,
    hmac: &[u8],
) -> Result<(Account, AccountCredentials), instant_acme::Error> {
    Account::builder_with_root(tls_root)?
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            Some(&ExternalAccountKey::new(kid.into(), hmac)),
        )
        .await
}

/// No sleep before polling: the challenge answer is synchronous, so the first poll sees ready.
fn poll() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::ZERO)
        .timeout(Duration::from_secs(30))
}

/// One full issuance; returns the order URL and the PEM chain.
pub async fn issue(account: &Account, subject: &Subject) -> BoxResult<(String, String)> {
    let identifiers = [Identifier::Dns(subject.name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        let mut challenge = authz
            .challenge(ChallengeType::DeviceAttest01)
            .ok_or("no device-attest-01 challenge")?;
        let key_authorization = challenge.key_authorization();
        let att_obj = subject.device.attest(
            key_authorization.as_str(),
            &subject.origin,
            USER,
            &subject.spki,
            std::slice::from_ref(&subject.name),
        );
        challenge
            .send_device_attestation(&DeviceAttestation {
                att_obj: Cow::Owned(att_obj),
            })
            .await?;
    }
    if order.poll_ready(&poll()).await? != OrderStatus::Ready {
        return Err("order not ready after the attestation".into());
    }
    order.finalize_csr(&subject.csr).await?;
    let chain = order.poll_certificate(&poll()).await?;
    Ok((order.url().to_owned(), chain))
}
