//! The issuer's decisions, as pure functions over the request, the stored order, the trust
//! configuration and `now`: no I/O, no clock, so every refusal is unit-tested without HTTP.
//!
//! - [`check_identifiers`] at newOrder: `dns` identifiers only, single-label `.local` names in
//!   the account's origin namespace, never an IP or a wildcard.
//! - [`check_attestation`] at the challenge response: the chain to a manufacturer root, the
//!   revocation list, the signature over the exact transcript, the names of this device.
//! - [`check_csr`] at finalize: the CSR (read by `localcert_proto::profile`), its own
//!   signature, its key equal to the attested key, its names equal to the order's identifiers,
//!   nothing else asked for.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::SystemTime;

use localcert_proto::NameError;
use localcert_proto::attestation::AttestationObject;
use localcert_proto::name::{DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use localcert_proto::profile::{self, ProfileError};
use localcert_proto::transcript::Transcript;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Refusal};

/// The most identifiers one order may carry.
pub const MAX_IDENTIFIERS: usize = 4;

/// The ACME identifier type we issue for.
pub const DNS_IDENTIFIER: &str = "dns";

/// Which manufacturers the issuer trusts, and which of their certificates it no longer does.
#[derive(Debug, Default)]
pub struct TrustConfig {
    roots: Vec<TrustAnchor<'static>>,
    revoked: HashSet<[u8; 32]>,
}

impl TrustConfig {
    /// Trusts the given manufacturer root certificates (DER); refuses any certificate whose
    /// SHA-256 is in `revoked` (device or batch certificates).
    pub fn new(
        manufacturer_roots: &[Vec<u8>],
        revoked: impl IntoIterator<Item = [u8; 32]>,
    ) -> Result<Self, Error> {
        let roots = manufacturer_roots
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|anchor| anchor.to_owned())
                    .map_err(|e| Error::Config(format!("manufacturer root: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            roots,
            revoked: revoked.into_iter().collect(),
        })
    }
}

/// One identifier of a newOrder request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identifier<'a> {
    /// The type, e.g. `dns`.
    pub kind: &'a str,
    /// The value, e.g. `tv-vod-example-com-5n1kq3-8w2d.local`.
    pub value: &'a str,
}

/// Checks a newOrder's identifiers against the account's origin; returns the names.
pub fn check_identifiers(
    identifiers: &[Identifier<'_>],
    origin: &Origin,
) -> Result<Vec<LocalName>, Refusal> {
    if identifiers.is_empty() {
        return Err(Refusal::Identifiers("no identifiers"));
    }
    if identifiers.len() > MAX_IDENTIFIERS {
        return Err(Refusal::Identifiers("too many identifiers"));
    }
    let mut names = Vec::with_capacity(identifiers.len());
    for identifier in identifiers {
        if identifier.kind != DNS_IDENTIFIER {
            return Err(Refusal::UnsupportedIdentifier(truncated(identifier.kind)));
        }
        let name = check_name(identifier.value, origin)?;
        if names.contains(&name) {
            return Err(Refusal::Identifiers("duplicate identifier"));
        }
        names.push(name);
    }
    Ok(names)
}

fn check_name(value: &str, origin: &Origin) -> Result<LocalName, Refusal> {
    let shown = truncated(value);
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err(Refusal::IpIdentifier(shown));
    }
    if value.contains('*') {
        return Err(Refusal::WildcardIdentifier(shown));
    }
    let name = LocalName::parse(value).map_err(|_| Refusal::NotLocalName(shown.clone()))?;
    name.in_origin_namespace(origin)
        .map_err(|_| Refusal::OutsideNamespace {
            name: shown,
            origin: origin.to_string(),
        })?;
    Ok(name)
}

/// Keeps attacker-chosen text short in messages and logs.
fn truncated(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The stored facts a challenge response is checked against.
#[derive(Clone, Copy, Debug)]
pub struct ChallengeContext<'a> {
    /// The account's origin.
    pub origin: &'a Origin,
    /// `token || '.' || base64url(JWK thumbprint)` of this challenge and account.
    pub key_authorization: &'a str,
    /// The order's names, in order.
    pub names: &'a [LocalName],
    /// When the challenge stops being answerable.
    pub expires: SystemTime,
    /// Whether the challenge has already been answered (valid or invalid).
    pub already_answered: bool,
}

/// The largest attestation object accepted, in bytes.
pub const MAX_ATTESTATION_BYTES: usize = 4096;
/// The largest certificate in an attestation chain, in bytes.
pub const MAX_ATTESTATION_CERTIFICATE_BYTES: usize = 2048;
/// The most certificates in an attestation chain.
pub const MAX_ATTESTATION_CERTIFICATES: usize = 3;

/// What a valid attestation established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedDevice {
    /// The DER SPKI of the TLS key the device attested (the CSR must carry exactly this).
    pub spki: Vec<u8>,
    /// The user handle.
    pub user_handle: Vec<u8>,
    /// The device tag, from the attestation certificate.
    pub device_tag: DeviceTag,
    /// SHA-256 of the attestation certificate, hex (for the audit log).
    pub device_certificate_sha256: String,
    /// How many signatures were verified: one per chain certificate, and the attestation's.
    pub signatures_verified: u64,
}

/// Checks a `device-attest-01` response (`att_obj`: the decoded CBOR bytes).
pub fn check_attestation(
    att_obj: &[u8],
    ctx: &ChallengeContext<'_>,
    trust: &TrustConfig,
    now: SystemTime,
) -> Result<AttestedDevice, Refusal> {
    if ctx.already_answered {
        return Err(Refusal::ChallengeUsed);
    }
    if now >= ctx.expires {
        return Err(Refusal::ChallengeExpired);
    }
    // The limits of SPEC §5, enforced here rather than trusted to the device's side.
    if att_obj.len() > MAX_ATTESTATION_BYTES {
        return Err(Refusal::AttestationMalformed(format!(
            "{} bytes, over the limit of {MAX_ATTESTATION_BYTES}",
            att_obj.len()
        )));
    }
    let object = AttestationObject::decode(att_obj)
        .map_err(|e| Refusal::AttestationMalformed(e.to_string()))?;
    if object.x5c.len() > MAX_ATTESTATION_CERTIFICATES {
        return Err(Refusal::AttestationMalformed(format!(
            "{} certificates, over the limit of {MAX_ATTESTATION_CERTIFICATES}",
            object.x5c.len()
        )));
    }
    if let Some(big) = object
        .x5c
        .iter()
        .find(|c| c.len() > MAX_ATTESTATION_CERTIFICATE_BYTES)
    {
        return Err(Refusal::AttestationMalformed(format!(
            "a certificate of {} bytes, over the limit of {MAX_ATTESTATION_CERTIFICATE_BYTES}",
            big.len()
        )));
    }
    let (device_der, intermediates) = object
        .x5c
        .split_first()
        .ok_or(Refusal::AttestationCertificateMalformed)?;
    for der in &object.x5c {
        let digest: [u8; 32] = Sha256::digest(der).into();
        if trust.revoked.contains(&digest) {
            return Err(Refusal::AttestationRevoked(hex::encode(digest)));
        }
    }
    verify_chain(device_der, intermediates, trust, now)?;
    let (_, device_cert) = x509_parser::parse_x509_certificate(device_der)
        .map_err(|_| Refusal::AttestationCertificateMalformed)?;
    let device_key =
        p256_point(device_cert.public_key()).ok_or(Refusal::AttestationCertificateMalformed)?;

    // The attested TLS key must be a P-256 SPKI in its one DER encoding: it is copied into
    // the certificate, so nothing non-canonical may ride along.
    let canonical = match SubjectPublicKeyInfo::from_der(&object.spki) {
        Ok(([], spki)) => p256_point(&spki).map(p256_spki_der),
        _ => None,
    };
    if canonical.as_deref() != Some(object.spki.as_slice()) {
        return Err(Refusal::AttestedKey);
    }

    let transcript = Transcript {
        key_authorization: ctx.key_authorization,
        origin: ctx.origin,
        user_handle: &object.user_handle,
        csr_spki: &object.spki,
        names: ctx.names,
    }
    .to_bytes();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, device_key)
        .verify(&transcript, &object.sig)
        .map_err(|_| Refusal::AttestationSignature)?;

    let device_tag = DeviceTag::from_attestation_certificate(device_der);
    for name in ctx.names {
        name.check_device(ctx.origin, &device_tag)
            .map_err(|e| match e {
                NameError::WrongDevice => Refusal::WrongDevice(name.to_string()),
                _ => Refusal::OutsideNamespace {
                    name: name.to_string(),
                    origin: ctx.origin.to_string(),
                },
            })?;
    }
    Ok(AttestedDevice {
        spki: object.spki,
        user_handle: object.user_handle,
        device_tag,
        device_certificate_sha256: hex::encode(Sha256::digest(device_der)),
        signatures_verified: object.x5c.len() as u64 + 1,
    })
}

/// Accepts any extended key usage: manufacturers' attestation certificates carry none or their
/// own, and what matters here is the path to a trusted root.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn verify_chain(
    device_der: &[u8],
    intermediates: &[Vec<u8>],
    trust: &TrustConfig,
    now: SystemTime,
) -> Result<(), Refusal> {
    let device = CertificateDer::from(device_der);
    let device = webpki::EndEntityCert::try_from(&device)
        .map_err(|_| Refusal::AttestationCertificateMalformed)?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Refusal::AttestationExpired)?;
    device
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.roots,
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            AnyEku,
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => Refusal::AttestationUntrusted,
            webpki::Error::CertExpired { .. }
            | webpki::Error::CertNotValidYet { .. }
            | webpki::Error::InvalidCertValidity => Refusal::AttestationExpired,
            other => Refusal::AttestationChain(other.to_string()),
        })
}

/// The DER SubjectPublicKeyInfo header of every uncompressed P-256 key (id-ecPublicKey,
/// prime256v1, a 66-byte BIT STRING).
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The DER SPKI of an uncompressed P-256 point.
pub fn p256_spki_der(point: &[u8]) -> Vec<u8> {
    [P256_SPKI_PREFIX, point].concat()
}

/// The uncompressed P-256 point of an SPKI, if it is an EC P-256 key.
fn p256_point<'a>(spki: &'a SubjectPublicKeyInfo<'_>) -> Option<&'a [u8]> {
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    let point = spki.subject_public_key.data.as_ref();
    let ok = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && curve == OID_EC_P256
        && point.len() == 65
        && point.first() == Some(&0x04);
    ok.then_some(point)
}

/// Checks a finalize CSR (DER) against the order's names and the attested key. The CSR is read
/// by the protocol's one profile parser; a CSR that asks for more than names is refused, since
/// nothing of it but the attested key reaches the certificate.
pub fn check_csr(csr_der: &[u8], names: &[LocalName], attested_spki: &[u8]) -> Result<(), Refusal> {
    let csr = profile::parse_csr(csr_der).map_err(|e| match e {
        ProfileError::NonDnsName => Refusal::CsrNonDnsName,
        // A name that is not a `.local` name cannot be one of the order's.
        ProfileError::NotLocalName => Refusal::CsrNamesMismatch,
        other => Refusal::CsrInvalid(other.reason()),
    })?;
    if csr.signature_algorithm != OID_SIG_ECDSA_WITH_SHA256.as_bytes() {
        return Err(Refusal::CsrInvalid(
            "signature algorithm is not ECDSA P-256 SHA-256",
        ));
    }
    let spki = match SubjectPublicKeyInfo::from_der(&csr.spki) {
        Ok(([], spki)) => spki,
        _ => return Err(Refusal::CsrInvalid("key is not P-256")),
    };
    let point = p256_point(&spki).ok_or(Refusal::CsrInvalid("key is not P-256"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(&csr.signed, &csr.signature)
        .map_err(|_| Refusal::CsrInvalid("invalid signature"))?;
    if csr.spki != attested_spki {
        return Err(Refusal::CsrKeyMismatch);
    }
    if csr.has_extras() {
        return Err(Refusal::CsrInvalid(
            "asks for extensions or attributes besides subjectAltName",
        ));
    }
    if !csr.asks_exactly_for(names) {
        return Err(Refusal::CsrNamesMismatch);
    }
    Ok(())
}
