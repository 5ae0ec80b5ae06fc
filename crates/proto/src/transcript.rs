//! The attestation transcript: the exact bytes the device's product secret signs.
//!
//! A deterministic CBOR array:
//! `[domain, SHA-256(key authorization), origin, user handle, SHA-256(CSR SPKI), [names]]`.
//! The issuer rebuilds it from its own records (its key authorization, the account's origin,
//! the order's names) plus the user handle and SPKI the attestation object carries, so a
//! signature over anything else fails.

use sha2::{Digest, Sha256};

use crate::cbor;
use crate::message::{DIGEST_LEN, key_authorization_hash};
use crate::name::LocalName;
use crate::origin::Origin;

/// Domain separation: the first element of every transcript.
pub const TRANSCRIPT_DOMAIN: &str = "localcert attestation v1";

/// The inputs of a transcript.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// The ACME key authorization of the `device-attest-01` challenge.
    pub key_authorization: &'a str,
    /// The origin the certificate is for.
    pub origin: &'a Origin,
    /// The user handle.
    pub user_handle: &'a [u8],
    /// The DER SubjectPublicKeyInfo of the key in the CSR.
    pub csr_spki: &'a [u8],
    /// The names, in the order of the CSR and the ACME order.
    pub names: &'a [LocalName],
}

impl Transcript<'_> {
    /// The bytes to sign (ES256: ECDSA P-256 over their SHA-256).
    pub fn to_bytes(&self) -> Vec<u8> {
        HashedTranscript {
            key_authorization_hash: &key_authorization_hash(self.key_authorization),
            origin: self.origin,
            user_handle: self.user_handle,
            csr_spki: self.csr_spki,
            names: self.names,
        }
        .to_bytes()
    }
}

/// The same transcript from the key authorization's hash, as a device gets it in ATTEST
/// (revision 2 sends the hash, not the key authorization).
#[derive(Clone, Copy, Debug)]
pub struct HashedTranscript<'a> {
    /// SHA-256 of the ACME key authorization.
    pub key_authorization_hash: &'a [u8; DIGEST_LEN],
    /// The origin the certificate is for.
    pub origin: &'a Origin,
    /// The user handle.
    pub user_handle: &'a [u8],
    /// The DER SubjectPublicKeyInfo of the key in the CSR.
    pub csr_spki: &'a [u8],
    /// The names, in the order of the CSR and the ACME order.
    pub names: &'a [LocalName],
}

impl HashedTranscript<'_> {
    /// The bytes to sign; equal to [`Transcript::to_bytes`] for the same inputs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let spki_hash = Sha256::digest(self.csr_spki);
        cbor::encode(|e| {
            e.array(6)?.str(TRANSCRIPT_DOMAIN)?;
            e.bytes(self.key_authorization_hash)?;
            e.str(self.origin.as_str())?;
            e.bytes(self.user_handle)?;
            e.bytes(&spki_hash)?;
            e.array(self.names.len() as u64)?;
            self.names
                .iter()
                .try_for_each(|n| e.str(n.as_str()).map(|_| ()))
        })
    }
}
