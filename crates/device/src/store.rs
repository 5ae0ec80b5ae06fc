//! Origin bindings and where they are kept.
//!
//! A binding is everything the device needs to serve one origin: the TLS key, the issued
//! chain, the CORS policy and the STAR renewal URL. [`BindingStore`] is the pluggable edge;
//! [`MemoryStore`] keeps bindings in memory (tests, harnesses), [`DirStore`] in one directory,
//! crash-safe.

use localcert_proto::message::{BindingSummary, CorsPolicy};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use crate::error::Error;
use crate::pki::SecretKey;

/// One installed origin binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The web origin.
    pub origin: Origin,
    /// The `.local` name served for it.
    pub name: LocalName,
    /// The TLS key (P-256, PKCS#8).
    pub key: SecretKey,
    /// The issued chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The CORS policy for the origin.
    pub cors: CorsPolicy,
    /// The STAR `star-certificate` URL, when the certificate is auto-renewed.
    pub star_url: Option<String>,
    /// SHA-256 of the user handle the leaf is bound to.
    pub user_handle_digest: [u8; 32],
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after: u64,
}

impl Binding {
    /// SHA-256 of the leaf certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        crate::pki::sha256(self.chain.first().map_or(&[][..], Vec::as_slice))
    }

    /// The summary LIST reports.
    pub fn summary(&self) -> BindingSummary {
        BindingSummary {
            origin: self.origin.clone(),
            name: self.name.clone(),
            fingerprint: self.fingerprint(),
            not_after: self.not_after,
            star: self.star_url.is_some(),
        }
    }
}

/// Where bindings and the pinned issuer live. Writes must be all-or-nothing.
pub trait BindingStore: Send {
    /// All bindings, ordered by origin.
    fn bindings(&self) -> &[Binding];

    /// Adds a binding or replaces the one for the same origin.
    fn put(&mut self, binding: Binding) -> Result<(), Error>;

    /// Removes the binding for `origin`; `None` if there was none.
    fn remove(&mut self, origin: &Origin) -> Result<Option<Binding>, Error>;

    /// The issuer certificate pinned on first install, if any (DER).
    fn pinned_issuer(&self) -> Option<&[u8]>;

    /// Pins the issuer certificate (DER).
    fn pin_issuer(&mut self, certificate: &[u8]) -> Result<(), Error>;

    /// The binding for `origin`.
    fn get(&self, origin: &Origin) -> Option<&Binding> {
        self.bindings().iter().find(|b| &b.origin == origin)
    }
}

fn insert_sorted(bindings: &mut Vec<Binding>, binding: Binding) {
    match bindings.binary_search_by(|b| b.origin.cmp(&binding.origin)) {
        Ok(i) => {
            if let Some(slot) = bindings.get_mut(i) {
                *slot = binding;
            }
        }
        Err(i) => bindings.insert(i, binding),
    }
}

/// Bindings in memory only.
#[derive(Debug, Default)]
pub struct MemoryStore {
    bindings: Vec<Binding>,
    issuer: Option<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BindingStore for MemoryStore {
    fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    fn put(&mut self, binding: Binding) -> Result<(), Error> {
        insert_sorted(&mut self.bindings, binding);
        Ok(())
    }

    fn remove(&mut self, origin: &Origin) -> Result<Option<Binding>, Error> {
        let index = self.bindings.iter().position(|b| &b.origin == origin);
        Ok(index.map(|i| self.bindings.remove(i)))
    }

    fn pinned_issuer(&self) -> Option<&[u8]> {
        self.issuer.as_deref()
    }

    fn pin_issuer(&mut self, certificate: &[u8]) -> Result<(), Error> {
        self.issuer = Some(certificate.to_vec());
        Ok(())
    }
}
