//! Leaf certificates, built field by field from validated data.
//!
//! The origin-binding extension's OID has a 127-bit arc that `const-oid` (and so x509-cert) and
//! rcgen cannot represent, so the TBSCertificate is our own `der` structure whose extension
//! identifiers are raw OBJECT IDENTIFIER bytes; standard extension values are still encoded with
//! x509-cert's types. Nothing here comes from a CSR except the (attested) public key.

use std::time::SystemTime;

use der::asn1::{Any, BitString, Ia5String, ObjectIdentifier, OctetString, Uint};
use der::{Decode, Encode, Sequence, Tag};
use localcert_proto::binding::{ORIGIN_BINDING_OID_DER, OriginBinding};
use localcert_proto::name::LocalName;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, SubjectAltName,
};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::time::{Time, Validity};

use crate::ca::IssuingCa;
use crate::error::Error;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_AUTHORITY_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");

/// Everything a leaf says, all of it validated before it gets here.
#[derive(Clone, Debug)]
pub struct LeafSpec<'a> {
    /// The DNS names (SAN dNSName), from the order.
    pub names: &'a [LocalName],
    /// The attested DER SubjectPublicKeyInfo.
    pub spki_der: &'a [u8],
    /// The origin and user the certificate is bound to.
    pub binding: &'a OriginBinding,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The serial number: positive, at least 64 random bits.
    pub serial: &'a [u8],
}

#[derive(Sequence)]
struct RawExtension {
    /// An OBJECT IDENTIFIER kept as bytes, so any arc size fits.
    extn_id: Any,
    #[asn1(optional = "true")]
    critical: Option<bool>,
    extn_value: OctetString,
}

impl RawExtension {
    fn new(oid_der_content: &[u8], critical: bool, value: Vec<u8>) -> Result<Self, Error> {
        Ok(Self {
            extn_id: Any::new(Tag::ObjectIdentifier, oid_der_content)?,
            // DER omits the DEFAULT FALSE.
            critical: critical.then_some(true),
            extn_value: OctetString::new(value)?,
        })
    }
}

#[derive(Sequence)]
struct TbsCertificate {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial_number: Uint,
    signature: AlgorithmIdentifierOwned,
    issuer: Any,
    validity: Validity,
    subject: Any,
    subject_public_key_info: Any,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<RawExtension>,
}

#[derive(Sequence)]
struct Certificate {
    tbs_certificate: Any,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

fn ecdsa_with_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    }
}

/// The key identifier of an SPKI: the first 20 bytes of SHA-256 over the public key bits
/// (RFC 7093 method 1).
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, Error> {
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki_der)?;
    let digest = Sha256::digest(spki.subject_public_key.raw_bytes());
    Ok(digest.get(..20).unwrap_or_default().to_vec())
}

/// Builds and signs a leaf certificate (DER).
pub fn issue_leaf(ca: &IssuingCa, spec: &LeafSpec<'_>) -> Result<Vec<u8>, Error> {
    if spec.names.is_empty() {
        return Err(Error::Certificate("a leaf needs at least one name".into()));
    }
    if spec.not_after > ca.not_after() {
        return Err(Error::Certificate(
            "the issuing intermediate expires before this leaf would".into(),
        ));
    }
    if spec.not_after <= spec.not_before {
        return Err(Error::Certificate("empty validity period".into()));
    }
    if spec.serial.len() < 8 {
        return Err(Error::Certificate("serial needs at least 64 bits".into()));
    }
    let dns_names = spec
        .names
        .iter()
        .map(|n| Ok(GeneralName::DnsName(Ia5String::new(n.as_str())?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(ca.key_identifier())?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let basic_constraints = BasicConstraints {
        ca: false,
        path_len_constraint: None,
    };
    // KeyUsage BIT STRING with only digitalSignature (bit 0) set.
    let key_usage = BitString::new(7, [0x80])?;
    let extensions = vec![
        RawExtension::new(
            ID_CE_BASIC_CONSTRAINTS.as_bytes(),
            true,
            basic_constraints.to_der()?,
        )?,
        RawExtension::new(ID_CE_KEY_USAGE.as_bytes(), true, key_usage.to_der()?)?,
        RawExtension::new(
            ID_CE_EXT_KEY_USAGE.as_bytes(),
            false,
            ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH]).to_der()?,
        )?,
        RawExtension::new(
            ID_CE_SUBJECT_KEY_IDENTIFIER.as_bytes(),
            false,
            OctetString::new(key_identifier(spec.spki_der)?)?.to_der()?,
        )?,
        RawExtension::new(
            ID_CE_AUTHORITY_KEY_IDENTIFIER.as_bytes(),
            false,
            aki.to_der()?,
        )?,
        // Critical because the subject is empty (RFC 5280 §4.2.1.6).
        RawExtension::new(
            ID_CE_SUBJECT_ALT_NAME.as_bytes(),
            true,
            SubjectAltName(dns_names).to_der()?,
        )?,
        RawExtension::new(ORIGIN_BINDING_OID_DER, false, spec.binding.to_der())?,
    ];
    let tbs = TbsCertificate {
        version: 2,
        serial_number: Uint::new(spec.serial)?,
        signature: ecdsa_with_sha256(),
        issuer: Any::from_der(ca.subject_der())?,
        validity: Validity::new(
            Time::try_from(spec.not_before)?,
            Time::try_from(spec.not_after)?,
        ),
        // An empty subject: the SAN says everything and nothing about the device leaks.
        subject: Any::new(Tag::Sequence, Vec::new())?,
        subject_public_key_info: Any::from_der(spec.spki_der)?,
        extensions,
    }
    .to_der()?;
    let signature = ca.sign(&tbs)?;
    let certificate = Certificate {
        tbs_certificate: Any::from_der(&tbs)?,
        signature_algorithm: ecdsa_with_sha256(),
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(certificate.to_der()?)
}

/// PEM of a chain: leaf, then intermediate (the root is installed, not sent).
pub fn chain_pem(leaf_der: &[u8], ca: &IssuingCa) -> String {
    [leaf_der, ca.cert_der()]
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
        .collect()
}
