//! The certificate profile: what a localcert leaf certificate and a device's CSR claim, read by
//! one parser that every role calls (the device before INSTALL, the UA and the RP backend when
//! they check a device, the issuer at finalize).
//!
//! The parser checks structure and the profile's rules, not signatures or chains: those need a
//! crypto provider and trust anchors, which stay with the caller. The origin-binding OID has a
//! 127-bit arc (SPEC §8.4), so certificates are read with x509-parser, which keeps OIDs as bytes.

use core::fmt;

use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{OID_PKCS9_EXTENSION_REQUEST, OID_X509_EXT_SUBJECT_ALT_NAME};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::binding::{ORIGIN_BINDING_OID_DER, OriginBinding};
use crate::name::LocalName;

/// Why a certificate or CSR does not fit the profile. Each variant is one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileError {
    /// The bytes are not a DER certificate (or CSR).
    Malformed,
    /// Bytes follow the certificate (or CSR).
    TrailingBytes,
    /// No subjectAltName extension.
    SubjectAltNameMissing,
    /// The subjectAltName extension appears more than once.
    SubjectAltNameRepeated,
    /// The subjectAltName extension does not decode, or names nothing.
    SubjectAltNameMalformed,
    /// A subjectAltName entry that is not a dNSName.
    NonDnsName,
    /// A dNSName (or common name) that is not a `.local` name of SPEC §8.3.
    NotLocalName,
    /// A common name that is not text.
    CommonNameNotText,
    /// The leaf has no origin-binding extension.
    OriginBindingMissing,
    /// The origin-binding extension appears more than once.
    OriginBindingRepeated,
    /// The origin-binding extension is marked critical (SPEC §8.4: it is non-critical).
    OriginBindingCritical,
    /// The origin-binding extension's value does not decode.
    OriginBindingMalformed,
    /// The CSR carries more than one extensionRequest attribute.
    ExtensionRequestRepeated,
}

impl ProfileError {
    /// The rule's stable snake-case name, as in `protocol/vectors/profile.json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TrailingBytes => "trailing_bytes",
            Self::SubjectAltNameMissing => "subject_alt_name_missing",
            Self::SubjectAltNameRepeated => "subject_alt_name_repeated",
            Self::SubjectAltNameMalformed => "subject_alt_name_malformed",
            Self::NonDnsName => "non_dns_name",
            Self::NotLocalName => "not_local_name",
            Self::CommonNameNotText => "common_name_not_text",
            Self::OriginBindingMissing => "origin_binding_missing",
            Self::OriginBindingRepeated => "origin_binding_repeated",
            Self::OriginBindingCritical => "origin_binding_critical",
            Self::OriginBindingMalformed => "origin_binding_malformed",
            Self::ExtensionRequestRepeated => "extension_request_repeated",
        }
    }

    /// A short sentence for people.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "does not parse",
            Self::TrailingBytes => "trailing bytes",
            Self::SubjectAltNameMissing => "no subjectAltName",
            Self::SubjectAltNameRepeated => "subjectAltName appears more than once",
            Self::SubjectAltNameMalformed => "subjectAltName is malformed or empty",
            Self::NonDnsName => "a subjectAltName that is not a DNS name",
            Self::NotLocalName => "a name that is not a .local name",
            Self::CommonNameNotText => "a common name that is not text",
            Self::OriginBindingMissing => "no origin-binding extension",
            Self::OriginBindingRepeated => "the origin-binding extension appears more than once",
            Self::OriginBindingCritical => "the origin-binding extension is critical",
            Self::OriginBindingMalformed => "the origin-binding extension is malformed",
            Self::ExtensionRequestRepeated => "more than one extensionRequest attribute",
        }
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ProfileError {}

/// What a leaf certificate claims, once it fits the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafClaims {
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The subjectAltName dNSNames, in certificate order (at least one).
    pub names: Vec<LocalName>,
    /// The origin-binding extension (exactly one, non-critical).
    pub binding: OriginBinding,
    /// notBefore, seconds since the Unix epoch (0 for earlier times).
    pub not_before: u64,
    /// notAfter, seconds since the Unix epoch (0 for earlier times).
    pub not_after: u64,
}

/// Reads a leaf certificate (DER) and checks the profile: only `.local` dNSNames in one
/// subjectAltName, and the origin-binding extension exactly once, non-critical, decodable.
pub fn parse_leaf(der: &[u8]) -> Result<LeafClaims, ProfileError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| ProfileError::Malformed)?;
    if !rest.is_empty() {
        return Err(ProfileError::TrailingBytes);
    }
    let extensions = cert.extensions();
    let names = san_names(extensions)?.ok_or(ProfileError::SubjectAltNameMissing)?;
    let mut bindings = extensions
        .iter()
        .filter(|e| e.oid.as_bytes() == ORIGIN_BINDING_OID_DER);
    let binding = bindings.next().ok_or(ProfileError::OriginBindingMissing)?;
    if bindings.next().is_some() {
        return Err(ProfileError::OriginBindingRepeated);
    }
    if binding.critical {
        return Err(ProfileError::OriginBindingCritical);
    }
    let binding =
        OriginBinding::from_der(binding.value).map_err(|_| ProfileError::OriginBindingMalformed)?;
    let unix = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(LeafClaims {
        spki: cert.public_key().raw.to_vec(),
        names,
        binding,
        not_before: unix(cert.validity().not_before.timestamp()),
        not_after: unix(cert.validity().not_after.timestamp()),
    })
}

/// What a device's CSR (PKCS#10) claims. Nothing here is copied into a certificate (SPEC §7.3):
/// the extras are reported so that a checker can refuse them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrClaims {
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The subjectAltName dNSNames, in order (empty when the CSR has no subjectAltName).
    pub names: Vec<LocalName>,
    /// The subject's common names, in order.
    pub common_names: Vec<LocalName>,
    /// The OIDs (DER content bytes) of requested extensions other than subjectAltName.
    pub other_extensions: Vec<Vec<u8>>,
    /// The OIDs (DER content bytes) of attributes other than extensionRequest.
    pub other_attributes: Vec<Vec<u8>>,
    /// The signed part (CertificationRequestInfo, DER), for the caller's signature check.
    pub signed: Vec<u8>,
    /// The signature algorithm's OID (DER content bytes).
    pub signature_algorithm: Vec<u8>,
    /// The signature (the BIT STRING's bytes).
    pub signature: Vec<u8>,
}

impl CsrClaims {
    /// Every name the CSR asks for: its dNSNames, then common names not among them. A name
    /// listed twice in subjectAltName stays twice, so a caller can refuse duplicates.
    pub fn requested_names(&self) -> Vec<&LocalName> {
        let mut names: Vec<&LocalName> = self.names.iter().collect();
        for cn in &self.common_names {
            if !self.names.contains(cn) {
                names.push(cn);
            }
        }
        names
    }

    /// Whether the CSR asks for exactly `names` (in any order, each once).
    pub fn asks_exactly_for(&self, names: &[LocalName]) -> bool {
        let requested = self.requested_names();
        requested.len() == names.len() && names.iter().all(|n| requested.contains(&n))
    }

    /// Whether the CSR asks for more than names: other extensions or attributes. A device's
    /// CSR never does (SPEC §5.2), and nothing of it would be copied anyway (SPEC §7.3).
    pub fn has_extras(&self) -> bool {
        !self.other_extensions.is_empty() || !self.other_attributes.is_empty()
    }
}

/// Reads a CSR (DER): only `.local` dNSNames in at most one subjectAltName, `.local` common
/// names, at most one extensionRequest. The signature is not checked here.
pub fn parse_csr(der: &[u8]) -> Result<CsrClaims, ProfileError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|_| ProfileError::Malformed)?;
    if !rest.is_empty() {
        return Err(ProfileError::TrailingBytes);
    }
    let info = &csr.certification_request_info;
    let mut requests = info
        .iter_attributes()
        .filter_map(|a| match a.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(r) => Some(&r.extensions),
            _ => None,
        });
    let extensions = requests.next().map(Vec::as_slice).unwrap_or_default();
    if requests.next().is_some() {
        return Err(ProfileError::ExtensionRequestRepeated);
    }
    let names = san_names(extensions)?.unwrap_or_default();
    Ok(CsrClaims {
        spki: info.subject_pki.raw.to_vec(),
        names,
        common_names: common_names(&info.subject)?,
        other_extensions: extensions
            .iter()
            .filter(|e| e.oid != OID_X509_EXT_SUBJECT_ALT_NAME)
            .map(|e| e.oid.as_bytes().to_vec())
            .collect(),
        other_attributes: info
            .iter_attributes()
            .filter(|a| a.oid != OID_PKCS9_EXTENSION_REQUEST)
            .map(|a| a.oid.as_bytes().to_vec())
            .collect(),
        signed: info.raw.to_vec(),
        signature_algorithm: csr.signature_algorithm.algorithm.as_bytes().to_vec(),
        signature: csr.signature_value.data.to_vec(),
    })
}

/// The dNSNames of the one subjectAltName extension, or `None` without one.
fn san_names(extensions: &[X509Extension<'_>]) -> Result<Option<Vec<LocalName>>, ProfileError> {
    let mut sans = extensions
        .iter()
        .filter(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME);
    let Some(san) = sans.next() else {
        return Ok(None);
    };
    if sans.next().is_some() {
        return Err(ProfileError::SubjectAltNameRepeated);
    }
    let ParsedExtension::SubjectAlternativeName(san) = san.parsed_extension() else {
        return Err(ProfileError::SubjectAltNameMalformed);
    };
    if san.general_names.is_empty() {
        return Err(ProfileError::SubjectAltNameMalformed);
    }
    san.general_names
        .iter()
        .map(|general| match general {
            GeneralName::DNSName(dns) => {
                LocalName::parse(dns).map_err(|_| ProfileError::NotLocalName)
            }
            _ => Err(ProfileError::NonDnsName),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn common_names(subject: &X509Name<'_>) -> Result<Vec<LocalName>, ProfileError> {
    subject
        .iter_common_name()
        .map(|cn| {
            let text = cn.as_str().map_err(|_| ProfileError::CommonNameNotText)?;
            LocalName::parse(text).map_err(|_| ProfileError::NotLocalName)
        })
        .collect()
}
