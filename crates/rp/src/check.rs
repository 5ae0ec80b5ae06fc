//! The checks on what the device says, made before anything reaches the issuer: a wrong answer
//! is refused here and leaves the ACME order untouched (the issuer would mark it invalid).

use localcert_proto::attestation::AttestationObject;
use localcert_proto::gatt::PROTOCOL_REVISION;
use localcert_proto::message::{AttestResponse, InfoResponse};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::profile;
use localcert_proto::transcript::Transcript;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

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

/// Checks a CSR from the device with the protocol's profile parser: it asks for `name` and
/// nothing else; returns its DER SPKI.
///
/// The CSR's own signature is the issuer's to check; the UA needs the key, to pin the endpoint.
pub fn csr_spki(csr: &[u8], name: &LocalName) -> Result<Vec<u8>, String> {
    let claims = profile::parse_csr(csr).map_err(|e| format!("the CSR: {e}"))?;
    if !claims.asks_exactly_for(std::slice::from_ref(name)) {
        let asked: Vec<&str> = claims
            .requested_names()
            .iter()
            .map(|n| n.as_str())
            .collect();
        return Err(format!("the CSR asks for {asked:?}, expected [{name}]"));
    }
    if claims.has_extras() {
        return Err("the CSR asks for extensions or attributes besides its name".into());
    }
    Ok(claims.spki)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every CSR of `protocol/vectors/profile.json`: only those that ask for the one name and
    /// nothing more pass, and they yield the CSR's key.
    #[test]
    fn csr_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../protocol/vectors/profile.json"
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let typical = &file["csrs"]["cases"][0];
        assert_eq!(typical["name"], "typical");
        let name = LocalName::parse(typical["claims"]["names"][0].as_str().unwrap()).unwrap();
        let mut passed = vec![];
        for case in file["csrs"]["cases"].as_array().unwrap() {
            let der = hex::decode(case["der"].as_str().unwrap()).unwrap();
            if let Ok(spki) = csr_spki(&der, &name) {
                assert_eq!(
                    hex::encode(spki),
                    case["claims"]["spki"],
                    "{}",
                    case["name"]
                );
                passed.push(case["name"].as_str().unwrap());
            }
        }
        assert_eq!(passed, ["typical", "empty_subject", "common_name_only"]);
    }
}
