//! The attestation object carried in the ACME `device-attest-01` challenge response (`attObj`).
//!
//! CBOR `{"fmt": "localcert-v1", "attStmt": {"alg": -7, "sig": …, "x5c": […], "spki": …,
//! "userHandle": …}}` with text keys in deterministic order. `sig` is an ASN.1 DER ECDSA
//! signature over the [`Transcript`](crate::transcript::Transcript).
//!
//! The device does not send it (revision 2): its ATTEST answer carries the CSR and `sig`, and
//! the UA builds the object from GET_INFO's chain, the CSR's key and the user handle it sent.

use minicbor::Decoder;

use crate::cbor::{self, TextMap};
use crate::error::DecodeError;
pub use crate::message::MAX_SIGNATURE_LEN;
use crate::message::{MAX_CERTIFICATE_LEN, MAX_CHAIN_LEN, MAX_USER_HANDLE_LEN};

/// The `fmt` of our attestation statement format.
pub const ATTESTATION_FORMAT: &str = "localcert-v1";
/// COSE algorithm ES256 (ECDSA with P-256 and SHA-256).
pub const COSE_ES256: i64 = -7;
/// The longest SubjectPublicKeyInfo: a P-256 one is 91 bytes.
pub const MAX_SPKI_LEN: usize = 512;

const OBJECT_KEYS: &[&str] = &["fmt", "attStmt"];
const STATEMENT_KEYS: &[&str] = &["alg", "sig", "x5c", "spki", "userHandle"];

/// A decoded attestation object. `alg` is always ES256 and `fmt` always ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationObject {
    /// DER ECDSA signature over the transcript, by the device's attestation key.
    pub sig: Vec<u8>,
    /// The attestation chain, DER, device certificate first (no root).
    pub x5c: Vec<Vec<u8>>,
    /// The DER SubjectPublicKeyInfo of the TLS key the CSR carries.
    pub spki: Vec<u8>,
    /// The user handle from the ATTEST request.
    pub user_handle: Vec<u8>,
}

impl AttestationObject {
    /// The deterministic CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(|e| {
            e.map(2)?.str("fmt")?.str(ATTESTATION_FORMAT)?;
            e.str("attStmt")?.map(5)?;
            e.str("alg")?.i64(COSE_ES256)?;
            e.str("sig")?.bytes(&self.sig)?;
            e.str("x5c")?.array(self.x5c.len() as u64)?;
            self.x5c.iter().try_for_each(|c| e.bytes(c).map(|_| ()))?;
            e.str("spki")?.bytes(&self.spki)?;
            e.str("userHandle")?.bytes(&self.user_handle)?;
            Ok(())
        })
    }

    /// Strict decoding; refuses any other `fmt` or `alg`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        cbor::decode_canonical(bytes, "AttestationObject", decode_object, Self::encode)
    }
}

fn decode_object(d: &mut Decoder<'_>) -> Result<AttestationObject, DecodeError> {
    let mut object = TextMap::begin(d, "AttestationObject", OBJECT_KEYS)?;
    object.key(d)?;
    if cbor::text(d, "AttestationObject.fmt", 1, 64)? != ATTESTATION_FORMAT {
        return Err(DecodeError::InvalidValue("AttestationObject.fmt"));
    }
    object.key(d)?;
    let mut stmt = TextMap::begin(d, "AttestationObject.attStmt", STATEMENT_KEYS)?;
    stmt.key(d)?;
    if cbor::int(d, "attStmt.alg")? != COSE_ES256 {
        return Err(DecodeError::InvalidValue("attStmt.alg"));
    }
    stmt.key(d)?;
    let sig = cbor::bytes(d, "attStmt.sig", 1, MAX_SIGNATURE_LEN)?.to_vec();
    stmt.key(d)?;
    let x5c = cbor::bytes_array(
        d,
        "attStmt.x5c",
        (1, MAX_CHAIN_LEN),
        (1, MAX_CERTIFICATE_LEN),
    )?;
    stmt.key(d)?;
    let spki = cbor::bytes(d, "attStmt.spki", 1, MAX_SPKI_LEN)?.to_vec();
    stmt.key(d)?;
    let user_handle = cbor::bytes(d, "attStmt.userHandle", 1, MAX_USER_HANDLE_LEN)?.to_vec();
    Ok(AttestationObject {
        sig,
        x5c,
        spki,
        user_handle,
    })
}
