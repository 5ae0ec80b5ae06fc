//! The one error type of this crate, built from a few sub-enums.

use std::path::PathBuf;

/// Any error of the device crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{context} {path}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key or certificate could not be created, parsed or used.
    #[error("{0}")]
    Credential(#[from] CredentialError),
    /// The store holds something it cannot use.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A configuration value is not acceptable.
    #[error("configuration: {0}")]
    Config(String),
    /// A system service or peer failed (BlueZ, mDNS, the issuer's STAR endpoint).
    #[error("{0}")]
    Service(String),
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            context,
            path,
            source,
        }
    }
}

/// A key or certificate problem. Crypto failures say what failed, never which byte.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// PEM text holds no item of the expected kind.
    #[error("{0}: no {1} found in PEM")]
    MissingPem(&'static str, &'static str),
    /// PEM text is malformed.
    #[error("{0}: malformed PEM")]
    BadPem(&'static str),
    /// A private key is not a PKCS#8 P-256 key.
    #[error("{0}: not a PKCS#8 ECDSA P-256 private key")]
    BadKey(&'static str),
    /// A certificate cannot be parsed.
    #[error("{0}: certificate cannot be parsed")]
    BadCertificate(&'static str),
    /// The key does not belong to the first certificate of the chain.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// Key generation or signing failed.
    #[error("{0} failed")]
    Crypto(&'static str),
    /// The PKCS#11 token refused or failed an operation (never carries key material).
    #[error("PKCS#11: {0}")]
    Token(String),
}

/// A store problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A binding file is not what this version writes.
    #[error("binding file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}
