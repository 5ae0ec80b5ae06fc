//! The localcert device agent: a library linked into firmware, and the reference daemon.
//!
//! - [`factory`]: manufacturer root, batch intermediates, per-device attestation credentials.
//! - [`signer::AttestationSigner`] and [`presence::UserPresence`]: the pluggable trust edges.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod files;

pub mod error;
pub mod factory;
pub mod pki;
pub mod presence;
pub mod signer;

pub use error::{CredentialError, Error, StoreError};
