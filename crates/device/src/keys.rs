//! Where the device's private keys live: the [`KeyProvider`] seam.
//!
//! A provider makes the fresh P-256 key of each ATTEST, signs CSRs with it and signs TLS
//! handshakes through a rustls [`SigningKey`]. [`FileKeys`] keeps keys as PKCS#8 bytes (in
//! memory, and in the 0600 store files); the `pkcs11` feature adds a token provider whose keys
//! are generated inside the token and never leave it: the store then keeps only a handle.
//!
//! Software keys work with every provider (a device moved to a token keeps serving the
//! bindings it already had); a token key needs the token's provider.

use std::sync::Arc;

use rcgen::{PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm};
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm as TlsAlgorithm, SignatureScheme};

use crate::error::CredentialError;
use crate::pki::{self, SecretKey};

/// The DER SubjectPublicKeyInfo prefix of an uncompressed P-256 point (id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A device private key (TLS or attestation).
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceKey {
    /// PKCS#8 bytes, held in memory and in the store's 0600 files.
    Software(SecretKey),
    /// A key inside a token, known by its `CKA_ID`; its bytes never leave the token.
    Token(TokenKeyId),
}

impl core::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Software(_) => f.write_str("DeviceKey::Software(..)"),
            Self::Token(id) => write!(f, "DeviceKey::Token({})", hex::encode(&id.0)),
        }
    }
}

impl From<SecretKey> for DeviceKey {
    fn from(key: SecretKey) -> Self {
        Self::Software(key)
    }
}

/// The `CKA_ID` of a token key: a handle, not a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKeyId(pub Vec<u8>);

/// Where keys are made and used. Implementations never log or return private key bytes of
/// keys they hold outside memory.
pub trait KeyProvider: Send + Sync + core::fmt::Debug {
    /// A fresh P-256 key for one ATTEST.
    fn generate(&self, rng: &dyn SecureRandom) -> Result<DeviceKey, CredentialError>;

    /// The key's public point (uncompressed, 65 bytes).
    fn public_point(&self, key: &DeviceKey) -> Result<Vec<u8>, CredentialError>;

    /// ECDSA P-256 with SHA-256 over `message`, as an ASN.1 DER signature.
    fn sign(
        &self,
        key: &DeviceKey,
        message: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CredentialError>;

    /// Deletes a key that nothing uses any more (a pending key dropped, a binding replaced or
    /// removed). Software keys live in the store's files and need nothing.
    fn destroy(&self, key: &DeviceKey) -> Result<(), CredentialError>;
}

/// Keys as PKCS#8 bytes: today's behaviour, and what tests use.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileKeys;

impl KeyProvider for FileKeys {
    fn generate(&self, rng: &dyn SecureRandom) -> Result<DeviceKey, CredentialError> {
        pki::generate_p256(rng).map(DeviceKey::Software)
    }

    fn public_point(&self, key: &DeviceKey) -> Result<Vec<u8>, CredentialError> {
        software(key)?.public_point("key")
    }

    fn sign(
        &self,
        key: &DeviceKey,
        message: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CredentialError> {
        sign_software(software(key)?, message, rng)
    }

    fn destroy(&self, _: &DeviceKey) -> Result<(), CredentialError> {
        Ok(())
    }
}

fn software(key: &DeviceKey) -> Result<&SecretKey, CredentialError> {
    match key {
        DeviceKey::Software(k) => Ok(k),
        DeviceKey::Token(_) => Err(CredentialError::Token(
            "a token key, but no PKCS#11 token is configured".into(),
        )),
    }
}

/// Signs with a software key (every provider accepts them).
pub(crate) fn sign_software(
    key: &SecretKey,
    message: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, CredentialError> {
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.pkcs8_der(), rng)
        .map_err(|_| CredentialError::BadKey("key"))?;
    pair.sign(rng, message)
        .map(|sig| sig.as_ref().to_vec())
        .map_err(|_| CredentialError::Crypto("signing"))
}

/// The DER SubjectPublicKeyInfo of an uncompressed P-256 point.
pub fn p256_spki(point: &[u8]) -> Vec<u8> {
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);
    spki
}

/// The key's DER SubjectPublicKeyInfo.
pub fn spki(provider: &dyn KeyProvider, key: &DeviceKey) -> Result<Vec<u8>, CredentialError> {
    provider.public_point(key).map(|p| p256_spki(&p))
}

/// Checks that `key` is the key of the certificate `cert_der`.
pub fn check_matches(
    provider: &dyn KeyProvider,
    key: &DeviceKey,
    cert_der: &[u8],
    what: &'static str,
) -> Result<(), CredentialError> {
    let cert = pki::parse_certificate(cert_der, what)?;
    if cert.public_key().subject_public_key.data.as_ref() != provider.public_point(key)? {
        return Err(CredentialError::KeyMismatch);
    }
    Ok(())
}

/// A provider key as an rcgen signing key, to sign a CSR or a certificate with it.
pub(crate) struct RcgenKey<'a> {
    provider: &'a dyn KeyProvider,
    key: &'a DeviceKey,
    point: Vec<u8>,
    rng: &'a dyn SecureRandom,
}

impl<'a> RcgenKey<'a> {
    pub(crate) fn new(
        provider: &'a dyn KeyProvider,
        key: &'a DeviceKey,
        rng: &'a dyn SecureRandom,
    ) -> Result<Self, CredentialError> {
        let point = provider.public_point(key)?;
        Ok(Self {
            provider,
            key,
            point,
            rng,
        })
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.provider
            .sign(self.key, msg, self.rng)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The rustls signing key for a binding's TLS key: ring's own for a software key, the
/// provider's for a token key (each handshake signs in the token).
pub fn tls_signing_key(
    provider: &Arc<dyn KeyProvider>,
    key: &DeviceKey,
) -> Result<Arc<dyn SigningKey>, CredentialError> {
    match key {
        DeviceKey::Software(secret) => {
            let der = rustls_pki_types::PrivateKeyDer::Pkcs8(
                rustls_pki_types::PrivatePkcs8KeyDer::from(secret.pkcs8_der().to_vec()),
            );
            rustls::crypto::ring::sign::any_ecdsa_type(&der)
                .map_err(|_| CredentialError::BadKey("binding key"))
        }
        DeviceKey::Token(_) => {
            // Fails now, not at the first handshake, if the token lost the key.
            provider.public_point(key)?;
            Ok(Arc::new(ProviderSigningKey {
                provider: provider.clone(),
                key: key.clone(),
            }))
        }
    }
}

#[derive(Debug)]
struct ProviderSigningKey {
    provider: Arc<dyn KeyProvider>,
    key: DeviceKey,
}

impl SigningKey for ProviderSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(ProviderSigner {
                    provider: self.provider.clone(),
                    key: self.key.clone(),
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> TlsAlgorithm {
        TlsAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct ProviderSigner {
    provider: Arc<dyn KeyProvider>,
    key: DeviceKey,
}

impl Signer for ProviderSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let rng = ring::rand::SystemRandom::new();
        self.provider
            .sign(&self.key, message, &rng)
            .map_err(|e| rustls::Error::General(format!("signing in the token: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn file_keys_sign_csrs_and_handshakes_and_refuse_token_keys() {
        let rng = SystemRandom::new();
        let provider: Arc<dyn KeyProvider> = Arc::new(FileKeys);
        let key = provider.generate(&rng).unwrap();
        let rcgen_key = RcgenKey::new(provider.as_ref(), &key, &rng).unwrap();
        let spki = spki(provider.as_ref(), &key).unwrap();
        assert_eq!(rcgen_key.subject_public_key_info(), spki);
        let DeviceKey::Software(secret) = &key else {
            panic!("file keys are software keys");
        };
        assert_eq!(
            pki::rcgen_key(secret).unwrap().subject_public_key_info(),
            spki
        );
        let csr = rcgen::CertificateParams::new(vec!["a.local".into()])
            .unwrap()
            .serialize_request(&rcgen_key)
            .unwrap();
        assert!(!csr.der().is_empty());
        let signing = tls_signing_key(&provider, &key).unwrap();
        assert!(
            signing
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_some()
        );

        let token = DeviceKey::Token(TokenKeyId(vec![1, 2]));
        assert!(matches!(
            provider.public_point(&token),
            Err(CredentialError::Token(_))
        ));
        assert!(provider.sign(&token, b"m", &rng).is_err());
        assert!(tls_signing_key(&provider, &token).is_err());
        assert_eq!(format!("{token:?}"), "DeviceKey::Token(0102)");
        assert_eq!(format!("{key:?}"), "DeviceKey::Software(..)");
    }
}
