//! Request and response messages, carried in MSG frames.
//!
//! A request is `[operation byte] ++ CBOR map` (GET_INFO and LIST have no map); a response is
//! `[status byte] ++ CBOR map`, status 0 meaning success. Maps have small unsigned integer keys
//! and must be in deterministic encoding (RFC 8949 §4.2); decoding is strict. The maps'
//! encoders and decoders are in `maps`.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cbor;
use crate::csr::{P256_POINT_LEN, RAW_SIGNATURE_LEN};
use crate::error::{DecodeError, ErrorCode};
use crate::name::{DeviceLabel, LocalName};
use crate::origin::Origin;

mod maps;

use maps::{CborMap, decode_error_message, decode_list, decode_map, encode_list};

/// The longest user handle (as WebAuthn's `user.id`).
pub const MAX_USER_HANDLE_LEN: usize = 64;
/// A SHA-256 digest: the key authorization's hash in ATTEST.
pub const DIGEST_LEN: usize = 32;
/// The shortest PIN.
pub const MIN_PIN_LEN: usize = 4;
/// The longest PIN.
pub const MAX_PIN_LEN: usize = 32;
/// The longest product name.
pub const MAX_PRODUCT_LEN: usize = 64;
/// The longest DER certificate.
pub const MAX_CERTIFICATE_LEN: usize = 2048;
/// The most certificates in a chain (leaf first).
pub const MAX_CHAIN_LEN: usize = 3;
/// The longest DER ECDSA P-256 signature (the attestation object's `sig`).
pub const MAX_SIGNATURE_LEN: usize = 72;
/// The most issuer certificates a device reports holding (GET_INFO key 8).
pub const MAX_KNOWN_ISSUERS: usize = 4;
/// A certificate id: the first bytes of the SHA-256 of the certificate's DER.
pub const CERTIFICATE_ID_LEN: usize = 8;
/// The longest STAR renewal URL.
pub const MAX_URL_LEN: usize = 512;
/// The most origin bindings a LIST reports.
pub const MAX_BINDINGS: usize = 16;
/// The most methods or headers in a CORS policy list.
pub const MAX_CORS_ITEMS: usize = 16;
/// The longest method or header name in a CORS policy.
pub const MAX_TOKEN_LEN: usize = 64;
/// The longest CORS max-age, in seconds.
pub const MAX_CORS_MAX_AGE: u64 = 86_400;
/// The longest error message.
pub const MAX_ERROR_MESSAGE_LEN: usize = 128;
/// A SHA-256 certificate fingerprint.
pub const FINGERPRINT_LEN: usize = 32;

/// The id of a certificate in GET_INFO's `known_issuers`: the first [`CERTIFICATE_ID_LEN`]
/// bytes of the SHA-256 of its DER. It only tells a UA which certificates INSTALL may omit;
/// the device verifies the chain it builds, so a collision costs a refusal, never trust.
pub fn certificate_id(der: &[u8]) -> [u8; CERTIFICATE_ID_LEN] {
    let digest = Sha256::digest(der);
    let mut id = [0; CERTIFICATE_ID_LEN];
    id.copy_from_slice(&digest[..CERTIFICATE_ID_LEN]);
    id
}

/// SHA-256 of an ACME key authorization, as ATTEST carries it (the transcript's second
/// element).
pub fn key_authorization_hash(key_authorization: &str) -> [u8; DIGEST_LEN] {
    Sha256::digest(key_authorization.as_bytes()).into()
}

/// How long a device keeps the key of an ATTEST waiting for its INSTALL (a fail-safe: a key
/// that is never installed is dropped).
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// How long a device waits for its user to approve an ATTEST before it answers USER_TIMEOUT.
pub const USER_PRESENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The operation byte of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Product, attestation chain and capabilities.
    GetInfo = 0x01,
    /// Make a key and CSR for an origin and sign the attestation transcript.
    Attest = 0x02,
    /// Install the issued chain and CORS policy for the pending key.
    Install = 0x03,
    /// List origin bindings.
    List = 0x04,
    /// Remove an origin binding.
    Remove = 0x05,
}

impl Operation {
    /// The operation for a byte.
    pub fn from_u8(byte: u8) -> Result<Self, DecodeError> {
        Ok(match byte {
            0x01 => Self::GetInfo,
            0x02 => Self::Attest,
            0x03 => Self::Install,
            0x04 => Self::List,
            0x05 => Self::Remove,
            _ => return Err(DecodeError::UnknownOperation(byte)),
        })
    }
}

/// How the device confirms that its user wants an ATTEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceMethod {
    /// No confirmation (demo and test devices only).
    None = 0,
    /// A physical button on the device.
    Button = 1,
    /// A PIN sent in the ATTEST request.
    Pin = 2,
}

/// GET_INFO response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoResponse {
    /// 1: protocol revision.
    pub revision: u64,
    /// 2: product name, free text.
    pub product: String,
    /// 3: the device label the device suggests.
    pub device_label: DeviceLabel,
    /// 4: attestation certificate chain, DER, device certificate first.
    pub attestation_chain: Vec<Vec<u8>>,
    /// 5: how the device confirms an ATTEST.
    pub presence: PresenceMethod,
    /// 6: origin bindings in use.
    pub bindings: u64,
    /// 7: origin bindings the device can hold.
    pub max_bindings: u64,
    /// 8: ids ([`certificate_id`]) of the issuer certificates the device holds beside its
    /// trusted roots; INSTALL may omit them.
    pub known_issuers: Vec<[u8; CERTIFICATE_ID_LEN]>,
}

/// ATTEST request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestRequest {
    /// 1: the web origin the certificate will be bound to.
    pub origin: Origin,
    /// 2: the user handle, opaque, 1 to 64 bytes.
    pub user_handle: Vec<u8>,
    /// 3: SHA-256 of the ACME key authorization of the `device-attest-01` challenge
    /// ([`key_authorization_hash`]).
    pub key_authorization_hash: [u8; DIGEST_LEN],
    /// 4: the device label for the name.
    pub device_label: DeviceLabel,
    /// 5: the PIN, when the device asks for one.
    pub pin: Option<String>,
}

/// ATTEST response: the CSR and the transcript signature, in parts. The UA rebuilds the CSR
/// ([`AttestResponse::csr`]) and the attestation object ([`crate::attestation`]) from them and
/// from what it already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestResponse {
    /// 1: the new TLS key, an uncompressed SEC1 P-256 point.
    pub public_key: [u8; P256_POINT_LEN],
    /// 2: the TLS key's raw ECDSA signature over the CSR's `CertificationRequestInfo`
    /// ([`crate::csr::request_info`]).
    pub csr_signature: [u8; RAW_SIGNATURE_LEN],
    /// 3: the attestation key's raw ECDSA signature over the transcript.
    pub signature: [u8; RAW_SIGNATURE_LEN],
}

impl AttestResponse {
    /// The DER SubjectPublicKeyInfo of the TLS key (the transcript's and the issuer's `spki`).
    pub fn spki(&self) -> Vec<u8> {
        crate::csr::p256_spki(&self.public_key)
    }

    /// The CSR the device signed, for `names` (the names the UA derived, in order).
    pub fn csr(&self, names: &[LocalName]) -> Vec<u8> {
        crate::csr::assemble(
            &crate::csr::request_info(&self.public_key, names),
            &self.csr_signature,
        )
    }

    /// The transcript signature as DER, as the attestation object carries it.
    pub fn der_signature(&self) -> Vec<u8> {
        crate::csr::der_signature(&self.signature)
    }
}

/// The CORS policy for an origin binding. The allowed origin is the binding's own; there is no
/// wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsPolicy {
    /// 1: methods allowed in preflight answers, e.g. `GET`.
    pub methods: Vec<String>,
    /// 2: request headers allowed, lower case.
    pub allow_headers: Vec<String>,
    /// 3: response headers exposed, lower case.
    pub expose_headers: Vec<String>,
    /// 4: whether credentialed requests are allowed.
    pub allow_credentials: bool,
    /// 5: how long a preflight answer may be cached, in seconds.
    pub max_age: u64,
}

/// INSTALL request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallRequest {
    /// 1: the issued chain, DER, leaf first, without the issuer certificates the device
    /// reported in `known_issuers`.
    pub chain: Vec<Vec<u8>>,
    /// 2: the CORS policy.
    pub cors: CorsPolicy,
    /// 3: the STAR `star-certificate` URL, for auto-renewed certificates.
    pub star_url: Option<String>,
}

/// INSTALL response. The UA knows the name and the leaf it sent; success is the news.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallResponse {
    /// 1: the HTTPS port.
    pub https_port: u16,
}

/// One origin binding, as LIST reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingSummary {
    /// 1: origin.
    pub origin: Origin,
    /// 2: name.
    pub name: LocalName,
    /// 3: SHA-256 of the leaf certificate.
    pub fingerprint: [u8; FINGERPRINT_LEN],
    /// 4: the leaf's notAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// 5: whether the certificate is renewed through STAR.
    pub star: bool,
}

/// REMOVE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveRequest {
    /// 1: the origin whose binding to remove.
    pub origin: Origin,
}

/// REMOVE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveResponse {
    /// 1: the name that is no longer served.
    pub name: LocalName,
}

/// A request, UA to device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// GET_INFO.
    GetInfo,
    /// ATTEST.
    Attest(AttestRequest),
    /// INSTALL.
    Install(InstallRequest),
    /// LIST.
    List,
    /// REMOVE.
    Remove(RemoveRequest),
}

/// A response, device to UA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// GET_INFO succeeded.
    Info(InfoResponse),
    /// ATTEST succeeded.
    Attest(AttestResponse),
    /// INSTALL succeeded.
    Install(InstallResponse),
    /// LIST succeeded.
    List(Vec<BindingSummary>),
    /// REMOVE succeeded.
    Remove(RemoveResponse),
    /// The request failed: an error code and, optionally, a short message for people.
    Error(ErrorCode, Option<String>),
}

impl Request {
    /// The operation.
    pub fn operation(&self) -> Operation {
        match self {
            Self::GetInfo => Operation::GetInfo,
            Self::Attest(_) => Operation::Attest,
            Self::Install(_) => Operation::Install,
            Self::List => Operation::List,
            Self::Remove(_) => Operation::Remove,
        }
    }

    /// The MSG payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.operation() as u8];
        match self {
            Self::GetInfo | Self::List => {}
            Self::Attest(r) => out.extend(cbor::encode(|e| r.encode_map(e))),
            Self::Install(r) => out.extend(cbor::encode(|e| r.encode_map(e))),
            Self::Remove(r) => out.extend(cbor::encode(|e| r.encode_map(e))),
        }
        out
    }

    /// Strict decoding of a MSG payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&op, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let no_body = |request: Request| {
            if body.is_empty() {
                Ok(request)
            } else {
                Err(DecodeError::TrailingBytes("Request"))
            }
        };
        match Operation::from_u8(op)? {
            Operation::GetInfo => no_body(Self::GetInfo),
            Operation::List => no_body(Self::List),
            Operation::Attest => decode_map::<AttestRequest>(body).map(Self::Attest),
            Operation::Install => decode_map::<InstallRequest>(body).map(Self::Install),
            Operation::Remove => decode_map::<RemoveRequest>(body).map(Self::Remove),
        }
    }
}

impl Response {
    /// The MSG payload.
    pub fn encode(&self) -> Vec<u8> {
        let map = match self {
            Self::Info(r) => cbor::encode(|e| r.encode_map(e)),
            Self::Attest(r) => cbor::encode(|e| r.encode_map(e)),
            Self::Install(r) => cbor::encode(|e| r.encode_map(e)),
            Self::List(bindings) => cbor::encode(|e| encode_list(e, bindings)),
            Self::Remove(r) => cbor::encode(|e| r.encode_map(e)),
            Self::Error(code, message) => {
                let mut out = vec![code.to_u8()];
                if let Some(message) = message {
                    out.extend(cbor::encode(|e| {
                        e.map(1)?.u8(1)?.str(message)?;
                        Ok(())
                    }));
                }
                return out;
            }
        };
        let mut out = vec![0];
        out.extend(map);
        out
    }

    /// Strict decoding of the MSG payload that answers a request for `operation`.
    pub fn decode(operation: Operation, bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&status, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if status != 0 {
            let code = ErrorCode::from_u8(status).ok_or(DecodeError::UnknownStatus(status))?;
            if body.is_empty() {
                return Ok(Self::Error(code, None));
            }
            let message =
                cbor::decode_canonical(body, "ErrorResponse", decode_error_message, |m| {
                    cbor::encode(|e| {
                        e.map(1)?.u8(1)?.str(m)?;
                        Ok(())
                    })
                })?;
            return Ok(Self::Error(code, Some(message)));
        }
        match operation {
            Operation::GetInfo => decode_map(body).map(Self::Info),
            Operation::Attest => decode_map(body).map(Self::Attest),
            Operation::Install => decode_map(body).map(Self::Install),
            Operation::List => cbor::decode_canonical(body, "ListResponse", decode_list, |b| {
                cbor::encode(|e| encode_list(e, b))
            })
            .map(Self::List),
            Operation::Remove => decode_map(body).map(Self::Remove),
        }
    }
}
