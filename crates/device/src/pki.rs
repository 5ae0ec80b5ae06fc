//! PEM and key helpers shared by the factory, the signer and the store.

use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::CredentialError;

/// A PKCS#8 private key. Its bytes never appear in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// Wraps PKCS#8 DER bytes.
    pub fn from_pkcs8_der(der: Vec<u8>) -> Self {
        Self(der)
    }

    /// The PKCS#8 DER bytes.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.0
    }

    /// PEM `PRIVATE KEY`.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.0.clone()))
    }

    /// The ring key pair, checking it is ECDSA P-256.
    pub(crate) fn ecdsa_p256(&self, what: &'static str) -> Result<EcdsaKeyPair, CredentialError> {
        let rng = ring::rand::SystemRandom::new();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.0, &rng)
            .map_err(|_| CredentialError::BadKey(what))
    }

    /// The uncompressed public point.
    pub(crate) fn public_point(&self, what: &'static str) -> Result<Vec<u8>, CredentialError> {
        Ok(self.ecdsa_p256(what)?.public_key().as_ref().to_vec())
    }
}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// All `CERTIFICATE` items of a PEM text, DER, in order.
pub fn certificates_from_pem(
    text: &[u8],
    what: &'static str,
) -> Result<Vec<Vec<u8>>, CredentialError> {
    let items = pem::parse_many(text).map_err(|_| CredentialError::BadPem(what))?;
    let certs: Vec<Vec<u8>> = items
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(CredentialError::MissingPem(what, "CERTIFICATE"));
    }
    for cert in &certs {
        parse_certificate(cert, what)?;
    }
    Ok(certs)
}

/// The one `PRIVATE KEY` (PKCS#8) item of a PEM text, checked to be P-256.
pub fn key_from_pem(text: &[u8], what: &'static str) -> Result<SecretKey, CredentialError> {
    let items = pem::parse_many(text).map_err(|_| CredentialError::BadPem(what))?;
    let der = items
        .into_iter()
        .find(|p| p.tag() == "PRIVATE KEY")
        .map(|p| p.into_contents())
        .ok_or(CredentialError::MissingPem(what, "PRIVATE KEY"))?;
    let key = SecretKey(der);
    key.ecdsa_p256(what)?;
    Ok(key)
}

/// PEM text of DER certificates.
pub fn certificates_to_pem(certs: &[Vec<u8>]) -> String {
    certs
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone())))
        .collect()
}

/// Parses a whole DER certificate; trailing bytes are refused.
pub(crate) fn parse_certificate<'a>(
    der: &'a [u8],
    what: &'static str,
) -> Result<X509Certificate<'a>, CredentialError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(CredentialError::BadCertificate(what)),
    }
}

/// Checks that `key` is the key of the certificate `cert_der`.
pub(crate) fn check_key_matches(
    key: &SecretKey,
    cert_der: &[u8],
    what: &'static str,
) -> Result<(), CredentialError> {
    let cert = parse_certificate(cert_der, what)?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_point(what)?.as_slice() {
        return Err(CredentialError::KeyMismatch);
    }
    Ok(())
}

/// A fresh P-256 key.
pub(crate) fn generate_p256(
    rng: &dyn ring::rand::SecureRandom,
) -> Result<SecretKey, CredentialError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
        .map(|doc| SecretKey(doc.as_ref().to_vec()))
        .map_err(|_| CredentialError::Crypto("key generation"))
}

/// The rcgen key pair for a P-256 key.
pub(crate) fn rcgen_key(key: &SecretKey) -> Result<rcgen::KeyPair, CredentialError> {
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.pkcs8_der());
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|_| CredentialError::BadKey("key"))
}

/// SHA-256 of some bytes.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
