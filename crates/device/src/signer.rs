//! The product secret: the key that signs attestation transcripts, and its certificate chain.
//!
//! [`FileSigner`] keeps a P-256 key and its chain in PEM files, as the factory writes them;
//! [`KeySigner`] signs with a key a [`KeyProvider`] holds (a token's, with the `pkcs11`
//! feature). Firmware with another secure element implements [`AttestationSigner`] itself.

use std::path::Path;
use std::sync::Arc;

use ring::rand::SecureRandom;
use ring::signature::EcdsaKeyPair;

use crate::error::{CredentialError, Error};
use crate::files;
use crate::keys::{self, DeviceKey, KeyProvider};
use crate::pki::{self, SecretKey};

/// Signs attestation transcripts with the device's attestation key.
pub trait AttestationSigner: Send + Sync {
    /// The attestation chain, DER, device certificate first, without the root.
    fn chain(&self) -> &[Vec<u8>];

    /// ECDSA P-256 with SHA-256 over `message`, as an ASN.1 DER signature.
    fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CredentialError>;
}

/// An attestation key and chain held in memory, loaded from PEM files.
pub struct FileSigner {
    key: EcdsaKeyPair,
    chain: Vec<Vec<u8>>,
}

impl core::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileSigner")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl FileSigner {
    /// A signer from a key and a chain whose first certificate is the key's.
    pub fn new(key: &SecretKey, chain: Vec<Vec<u8>>) -> Result<Self, Error> {
        let first = chain.first().ok_or(CredentialError::MissingPem(
            "attestation chain",
            "CERTIFICATE",
        ))?;
        pki::check_key_matches(key, first, "attestation certificate")?;
        check_chain_fits(&chain)?;
        Ok(Self {
            key: key.ecdsa_p256("attestation key")?,
            chain,
        })
    }

    /// Loads `attestation.key.pem` and `attestation.pem` style files.
    pub fn from_files(key_path: &Path, chain_path: &Path) -> Result<Self, Error> {
        let key = pki::key_from_pem(&files::read(key_path)?, "attestation key")?;
        let chain = pki::certificates_from_pem(&files::read(chain_path)?, "attestation chain")?;
        Self::new(&key, chain)
    }
}

impl AttestationSigner for FileSigner {
    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CredentialError> {
        self.key
            .sign(rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| CredentialError::Crypto("attestation signing"))
    }
}

fn check_chain_fits(chain: &[Vec<u8>]) -> Result<(), Error> {
    if chain.len() > localcert_proto::message::MAX_CHAIN_LEN
        || chain
            .iter()
            .any(|c| c.len() > localcert_proto::message::MAX_CERTIFICATE_LEN)
    {
        return Err(Error::Config(
            "attestation chain too long for the protocol (at most 3 certificates of 2048 bytes)"
                .into(),
        ));
    }
    Ok(())
}

/// An attestation key held by a [`KeyProvider`] (a token key that never leaves the token), and
/// its chain.
pub struct KeySigner {
    provider: Arc<dyn KeyProvider>,
    key: DeviceKey,
    chain: Vec<Vec<u8>>,
}

impl core::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeySigner")
            .field("key", &self.key)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl KeySigner {
    /// A signer for `key` whose certificate is the first of `chain`.
    pub fn new(
        provider: Arc<dyn KeyProvider>,
        key: DeviceKey,
        chain: Vec<Vec<u8>>,
    ) -> Result<Self, Error> {
        let first = chain.first().ok_or(CredentialError::MissingPem(
            "attestation chain",
            "CERTIFICATE",
        ))?;
        keys::check_matches(provider.as_ref(), &key, first, "attestation certificate")?;
        check_chain_fits(&chain)?;
        Ok(Self {
            provider,
            key,
            chain,
        })
    }
}

impl AttestationSigner for KeySigner {
    fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CredentialError> {
        self.provider.sign(&self.key, message, rng)
    }
}
