//! Checks of an issued chain before the device installs it: the leaf is for the pending key,
//! carries exactly the pending names and the origin binding, and chains to the trusted issuer.
//!
//! The leaf's origin-binding OID has a 128-bit arc, so certificates are read with x509-parser
//! (OIDs as bytes) and verified with rustls-webpki (skips unknown non-critical extensions).

use localcert_proto::ErrorCode;
use localcert_proto::binding::{ORIGIN_BINDING_OID_DER, OriginBinding};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use x509_parser::extensions::GeneralName;

use crate::pki;

/// Why a chain was refused: the wire code and a short reason for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The wire code.
    pub code: ErrorCode,
    /// A short, static reason.
    pub reason: &'static str,
}

pub(crate) const fn refused(code: ErrorCode, reason: &'static str) -> Refused {
    Refused { code, reason }
}

/// What the leaf must match.
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    pub spki: &'a [u8],
    pub names: &'a [LocalName],
    pub origin: &'a Origin,
    pub user_handle_digest: &'a [u8; 32],
}

/// What a verified leaf says.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedLeaf {
    pub not_after: u64,
    pub fingerprint: [u8; 32],
}

/// The DER SubjectPublicKeyInfo of a leaf, or a refusal if it cannot be parsed.
pub(crate) fn leaf_spki(leaf: &[u8]) -> Result<Vec<u8>, Refused> {
    pki::parse_certificate(leaf, "leaf")
        .map(|c| c.public_key().raw.to_vec())
        .map_err(|_| {
            refused(
                ErrorCode::CertificateInvalid,
                "leaf certificate cannot be parsed",
            )
        })
}

/// What a leaf claims: its key, its DNS names and (if the extension parses) its origin.
#[derive(Debug)]
pub(crate) struct LeafClaims {
    pub spki: Vec<u8>,
    pub names: Vec<String>,
    pub origin: Option<Origin>,
}

/// Reads the claims of a leaf, to find the pending key it is meant for.
pub(crate) fn leaf_claims(leaf: &[u8]) -> Result<LeafClaims, Refused> {
    let cert = pki::parse_certificate(leaf, "leaf").map_err(|_| {
        refused(
            ErrorCode::CertificateInvalid,
            "leaf certificate cannot be parsed",
        )
    })?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let origin = cert
        .extensions()
        .iter()
        .find(|e| e.oid.as_bytes() == ORIGIN_BINDING_OID_DER)
        .and_then(|e| OriginBinding::from_der(e.value).ok())
        .map(|b| b.origin);
    Ok(LeafClaims {
        spki: cert.public_key().raw.to_vec(),
        names,
        origin,
    })
}

/// Checks the leaf's fields against what the device asked for.
pub(crate) fn check_leaf(leaf: &[u8], expected: &Expected<'_>) -> Result<VerifiedLeaf, Refused> {
    let cert = pki::parse_certificate(leaf, "leaf").map_err(|_| {
        refused(
            ErrorCode::CertificateInvalid,
            "leaf certificate cannot be parsed",
        )
    })?;
    if cert.public_key().raw != expected.spki {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf key is not the pending key",
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| {
            refused(
                ErrorCode::CertificateInvalid,
                "leaf subjectAltName is malformed",
            )
        })?
        .ok_or(refused(
            ErrorCode::ChainMismatch,
            "leaf has no subjectAltName",
        ))?;
    let mut names = Vec::new();
    for general_name in &san.value.general_names {
        match general_name {
            GeneralName::DNSName(n) => names.push(*n),
            _ => {
                return Err(refused(
                    ErrorCode::ChainMismatch,
                    "leaf has a non-DNS subjectAltName",
                ));
            }
        }
    }
    let mut want: Vec<&str> = expected.names.iter().map(LocalName::as_str).collect();
    names.sort_unstable();
    want.sort_unstable();
    if names != want {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf names are not the pending names",
        ));
    }
    let mut bindings = cert
        .extensions()
        .iter()
        .filter(|e| e.oid.as_bytes() == ORIGIN_BINDING_OID_DER);
    let binding = bindings.next().ok_or(refused(
        ErrorCode::ChainMismatch,
        "leaf has no origin-binding extension",
    ))?;
    if bindings.next().is_some() {
        return Err(refused(
            ErrorCode::CertificateInvalid,
            "leaf repeats the origin-binding extension",
        ));
    }
    let binding = OriginBinding::from_der(binding.value).map_err(|_| {
        refused(
            ErrorCode::CertificateInvalid,
            "origin-binding extension is malformed",
        )
    })?;
    if &binding.origin != expected.origin {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf is bound to another origin",
        ));
    }
    if &binding.user_handle_digest != expected.user_handle_digest {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf is bound to another user",
        ));
    }
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(VerifiedLeaf {
        not_after,
        fingerprint: pki::sha256(leaf),
    })
}

/// Verifies `chain` (leaf first) to one of `anchors` (DER certificates) at `now_unix`, for TLS
/// server use and for every name in `names`.
pub(crate) fn check_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    names: &[LocalName],
    now_unix: u64,
) -> Result<(), Refused> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or(refused(ErrorCode::InvalidParameter, "empty chain"))?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let trust: Vec<TrustAnchor<'_>> = anchor_ders
        .iter()
        .filter_map(|a| webpki::anchor_from_trusted_cert(a).ok())
        .collect();
    if trust.is_empty() {
        return Err(refused(
            ErrorCode::UntrustedIssuer,
            "the device trusts no issuer yet",
        ));
    }
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        // An anchor sent along in the chain is not an intermediate.
        .filter(|c| !anchors.contains(c))
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|_| {
        refused(
            ErrorCode::CertificateInvalid,
            "leaf certificate cannot be parsed",
        )
    })?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust,
        &intermediates,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(map_webpki)?;
    for name in names {
        let server_name = ServerName::try_from(name.as_str())
            .map_err(|_| refused(ErrorCode::ChainMismatch, "name is not a DNS name"))?;
        ee.verify_is_valid_for_subject_name(&server_name)
            .map_err(|_| refused(ErrorCode::ChainMismatch, "leaf is not valid for the name"))?;
    }
    Ok(())
}

fn map_webpki(e: webpki::Error) -> Refused {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => refused(ErrorCode::CertificateInvalid, "certificate expired"),
        E::CertNotValidYet { .. } => {
            refused(ErrorCode::CertificateInvalid, "certificate not valid yet")
        }
        E::CaUsedAsEndEntity | E::EndEntityUsedAsCa => refused(
            ErrorCode::CertificateInvalid,
            "certificate used in the wrong role",
        ),
        E::RequiredEkuNotFoundContext(_) => refused(
            ErrorCode::CertificateInvalid,
            "leaf is not for TLS server use",
        ),
        E::NameConstraintViolation => refused(
            ErrorCode::UntrustedIssuer,
            "leaf violates the issuer's name constraints",
        ),
        E::UnknownIssuer
        | E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => refused(
            ErrorCode::UntrustedIssuer,
            "chain does not lead to a trusted issuer",
        ),
        _ => refused(
            ErrorCode::CertificateInvalid,
            "certificate chain is invalid",
        ),
    }
}

/// The leaf's validity window `(notBefore, notAfter)` in Unix seconds.
pub(crate) fn leaf_window(leaf: &[u8]) -> Option<(u64, u64)> {
    let cert = pki::parse_certificate(leaf, "leaf").ok()?;
    let v = cert.validity();
    Some((
        u64::try_from(v.not_before.timestamp()).ok()?,
        u64::try_from(v.not_after.timestamp()).ok()?,
    ))
}
