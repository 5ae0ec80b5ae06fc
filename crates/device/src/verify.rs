//! Checks of an issued chain before the device installs it: the leaf is for the pending key,
//! carries exactly the pending names and the origin binding, and chains to the trusted issuer.
//!
//! The leaf is read by the protocol's one profile parser (`localcert_proto::profile`) and
//! verified with rustls-webpki (which skips unknown non-critical extensions).

use localcert_proto::ErrorCode;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::profile::{self, LeafClaims, ProfileError};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

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
}

/// The profile's refusals as wire codes: what contradicts the pending key is CHAIN_MISMATCH,
/// what breaks the certificate's own rules is CERTIFICATE_INVALID.
fn profile_refusal(error: ProfileError) -> Refused {
    match error {
        ProfileError::Malformed | ProfileError::TrailingBytes => refused(
            ErrorCode::CertificateInvalid,
            "leaf certificate cannot be parsed",
        ),
        ProfileError::SubjectAltNameMissing => {
            refused(ErrorCode::ChainMismatch, "leaf has no subjectAltName")
        }
        ProfileError::NonDnsName => refused(
            ErrorCode::ChainMismatch,
            "leaf has a non-DNS subjectAltName",
        ),
        ProfileError::NotLocalName => refused(
            ErrorCode::ChainMismatch,
            "leaf names are not the pending names",
        ),
        ProfileError::OriginBindingMissing => refused(
            ErrorCode::ChainMismatch,
            "leaf has no origin-binding extension",
        ),
        ProfileError::OriginBindingRepeated => refused(
            ErrorCode::CertificateInvalid,
            "leaf repeats the origin-binding extension",
        ),
        ProfileError::OriginBindingCritical => refused(
            ErrorCode::CertificateInvalid,
            "leaf marks the origin-binding extension critical",
        ),
        ProfileError::OriginBindingMalformed => refused(
            ErrorCode::CertificateInvalid,
            "origin-binding extension is malformed",
        ),
        other => refused(ErrorCode::CertificateInvalid, other.reason()),
    }
}

/// Reads a leaf's claims through the one profile parser (SPEC §8.4).
pub(crate) fn leaf_claims(leaf: &[u8]) -> Result<LeafClaims, Refused> {
    profile::parse_leaf(leaf).map_err(profile_refusal)
}

/// Checks the leaf's fields against what the device asked for.
pub(crate) fn check_leaf(leaf: &[u8], expected: &Expected<'_>) -> Result<VerifiedLeaf, Refused> {
    let claims = leaf_claims(leaf)?;
    if claims.spki != expected.spki {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf key is not the pending key",
        ));
    }
    let mut names: Vec<&LocalName> = claims.names.iter().collect();
    let mut want: Vec<&LocalName> = expected.names.iter().collect();
    names.sort_unstable();
    want.sort_unstable();
    if names != want {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf names are not the pending names",
        ));
    }
    if &claims.binding.origin != expected.origin {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf is bound to another origin",
        ));
    }
    if &claims.binding.user_handle_digest != expected.user_handle_digest {
        return Err(refused(
            ErrorCode::ChainMismatch,
            "leaf is bound to another user",
        ));
    }
    Ok(VerifiedLeaf {
        not_after: claims.not_after,
    })
}

/// Verifies `chain` (leaf first) to one of `anchors` (DER certificates) at `now_unix`, for TLS
/// server use and for every name in `names`. Intermediates come from the chain and from `held`
/// (the issuer certificates the device is configured with, which INSTALL may omit). Returns
/// the chain to serve: the leaf, then the verified path's intermediates (no anchor).
pub(crate) fn check_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    held: &[Vec<u8>],
    names: &[LocalName],
    now_unix: u64,
) -> Result<Vec<Vec<u8>>, Refused> {
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
        .chain(held.iter().filter(|h| !intermediates.contains(h)))
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
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix)),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(map_webpki)?;
    let served: Vec<Vec<u8>> = std::iter::once(leaf.clone())
        .chain(path.intermediate_certificates().map(|c| c.der().to_vec()))
        .collect();
    for name in names {
        let server_name = ServerName::try_from(name.as_str())
            .map_err(|_| refused(ErrorCode::ChainMismatch, "name is not a DNS name"))?;
        ee.verify_is_valid_for_subject_name(&server_name)
            .map_err(|_| refused(ErrorCode::ChainMismatch, "leaf is not valid for the name"))?;
    }
    Ok(served)
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

/// The validity window `(notBefore, notAfter)` of an installed leaf in Unix seconds, for
/// scheduling (the profile was checked when it was installed).
pub(crate) fn leaf_window(leaf: &[u8]) -> Option<(u64, u64)> {
    let cert = pki::parse_certificate(leaf, "leaf").ok()?;
    let v = cert.validity();
    Some((
        u64::try_from(v.not_before.timestamp()).ok()?,
        u64::try_from(v.not_after.timestamp()).ok()?,
    ))
}
