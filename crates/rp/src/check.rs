//! The checks on what the device says, made before anything reaches the issuer: a wrong answer
//! is refused here and leaves the ACME order untouched (the issuer would mark it invalid).

use localcert_proto::attestation::AttestationObject;
use localcert_proto::gatt::PROTOCOL_REVISION;
use localcert_proto::message::{AttestResponse, InfoResponse};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::transcript::Transcript;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// Checks the device's GET_INFO answer before an order is placed for it: the protocol
/// revision this code implements, and an attestation certificate to derive the name from.
/// Returns that certificate.
pub fn info_device_certificate(info: &InfoResponse) -> Result<&[u8], String> {
    if info.revision != PROTOCOL_REVISION {
        return Err(format!(
            "the device speaks protocol revision {}, this backend speaks {PROTOCOL_REVISION}",
            info.revision
        ));
    }
    info.attestation_chain
        .first()
        .map(Vec::as_slice)
        .ok_or_else(|| "GET_INFO carries no attestation certificate".to_owned())
}

/// Checks a CSR from the device: its only names are `name`; returns its DER SPKI.
///
/// The CSR's own signature is the issuer's to check; the UA needs the key, to pin the endpoint.
pub fn csr_spki(csr: &[u8], name: &LocalName) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::FromDer;
    let (rest, req) = x509_parser::certification_request::X509CertificationRequest::from_der(csr)
        .map_err(|_| "the CSR does not parse".to_owned())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the CSR".into());
    }
    let mut names = vec![];
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for general in &san.general_names {
                match general {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    _ => return Err("the CSR asks for a name that is not a DNS name".into()),
                }
            }
        }
    }
    if names != [name.as_str()] {
        return Err(format!("the CSR asks for {names:?}, expected [{name}]"));
    }
    Ok(req.certification_request_info.subject_pki.raw.to_vec())
}

/// What the attestation must be about: this flow's order, origin, user and name.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The device's GET_INFO answer (its attestation chain).
    pub info: &'a InfoResponse,
    /// The key authorization of this flow's `device-attest-01` challenge.
    pub key_authorization: &'a str,
    /// The origin.
    pub origin: &'a Origin,
    /// The user handle.
    pub user_handle: &'a [u8],
    /// The name ordered.
    pub name: &'a LocalName,
}

/// Checks an ATTEST answer against the flow; returns the DER SPKI of the device's TLS key.
///
/// The CSR names exactly the flow's name; the attestation object is for the CSR's key, carries
/// GET_INFO's chain and the flow's user, and its signature (by the device certificate's key)
/// covers this order's transcript. The issuer checks the chain up to a manufacturer root.
pub fn attestation(attest: &AttestResponse, expected: &Expected<'_>) -> Result<Vec<u8>, String> {
    let spki = csr_spki(&attest.csr, expected.name)?;
    let object = AttestationObject::decode(&attest.attestation_object)
        .map_err(|e| format!("attestation object: {e}"))?;
    if object.spki != spki {
        return Err("the attestation is for another key than the CSR's".into());
    }
    if object.x5c != expected.info.attestation_chain {
        return Err("the attestation chain differs from GET_INFO's".into());
    }
    if object.user_handle != expected.user_handle {
        return Err("the attestation is for another user".into());
    }
    let device_cert = object
        .x5c
        .first()
        .ok_or("the attestation carries no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(device_cert)
        .map_err(|_| "the attestation certificate does not parse".to_owned())?;
    let transcript = Transcript {
        key_authorization: expected.key_authorization,
        origin: expected.origin,
        user_handle: expected.user_handle,
        csr_spki: &spki,
        names: std::slice::from_ref(expected.name),
    }
    .to_bytes();
    UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        cert.public_key().subject_public_key.data.as_ref(),
    )
    .verify(&transcript, &object.sig)
    .map_err(|_| "the attestation signature does not cover this order, origin and name")?;
    Ok(spki)
}
