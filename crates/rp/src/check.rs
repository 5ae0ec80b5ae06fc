//! The checks on what the device says, made before anything reaches the issuer: a wrong answer
//! is refused here and leaves the ACME order untouched (the issuer would mark it invalid).

use localcert_proto::attestation::AttestationObject;
use localcert_proto::gatt::PROTOCOL_REVISION;
use localcert_proto::message::{AttestResponse, InfoResponse, certificate_id};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::profile;
use localcert_proto::transcript::Transcript;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

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

/// What an accepted ATTEST answer gives the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The DER SPKI of the device's TLS key (the CSR's).
    pub spki: Vec<u8>,
    /// The CSR (DER), rebuilt from the answer's key and signature for the flow's name.
    pub csr: Vec<u8>,
    /// The attestation object for the issuer (SPEC §7.2), built from GET_INFO's chain, the
    /// CSR's key, the flow's user handle and the device's signature.
    pub attestation_object: Vec<u8>,
}

/// Checks an ATTEST answer against the flow and builds the CSR and the attestation object.
///
/// The CSR is rebuilt for exactly the flow's name (SPEC §5.2) and its signature by the new key
/// must verify; the transcript signature (by the key of GET_INFO's device certificate) must
/// cover this order's transcript over that key. The issuer checks the chain up to a
/// manufacturer root.
pub fn attestation(attest: &AttestResponse, expected: &Expected<'_>) -> Result<Attested, String> {
    let names = std::slice::from_ref(expected.name);
    let spki = attest.spki();
    let csr = attest.csr(names);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &attest.public_key)
        .verify(
            &localcert_proto::csr::request_info(&attest.public_key, names),
            &attest.csr_signature,
        )
        .map_err(|_| "the CSR signature does not verify for this name and key")?;
    // The rebuilt CSR passes the profile the issuer applies, for this name and key.
    if csr_spki(&csr, expected.name)? != spki {
        return Err("the rebuilt CSR is not for the answer's key".into());
    }
    let device_cert = expected
        .info
        .attestation_chain
        .first()
        .ok_or("GET_INFO carries no attestation certificate")?;
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
        &ECDSA_P256_SHA256_FIXED,
        cert.public_key().subject_public_key.data.as_ref(),
    )
    .verify(&transcript, &attest.signature)
    .map_err(|_| "the attestation signature does not cover this order, origin, user and name")?;
    let attestation_object = AttestationObject {
        sig: attest.der_signature(),
        x5c: expected.info.attestation_chain.clone(),
        spki: spki.clone(),
        user_handle: expected.user_handle.to_vec(),
    }
    .encode();
    Ok(Attested {
        spki,
        csr,
        attestation_object,
    })
}

/// The chain to send in INSTALL: the issued chain without the issuer certificates the device
/// reported holding (GET_INFO's `known_issuers`). The leaf always goes.
pub fn install_chain(issued: &[Vec<u8>], info: &InfoResponse) -> Vec<Vec<u8>> {
    issued
        .iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || !info.known_issuers.contains(&certificate_id(c)))
        .map(|(_, c)| c.clone())
        .collect()
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

    use localcert_proto::message::PresenceMethod;
    use localcert_proto::name::DeviceLabel;

    fn info(known: &[&[u8]]) -> InfoResponse {
        InfoResponse {
            revision: 2,
            product: "p".into(),
            device_label: DeviceLabel::from_text("p"),
            attestation_chain: vec![b"device".to_vec()],
            presence: PresenceMethod::None,
            bindings: 0,
            max_bindings: 1,
            known_issuers: known.iter().map(|c| certificate_id(c)).collect(),
        }
    }

    #[test]
    fn install_omits_exactly_the_issuers_the_device_holds() {
        let issued = vec![b"leaf".to_vec(), b"inter".to_vec(), b"cross".to_vec()];
        assert_eq!(install_chain(&issued, &info(&[])), issued);
        assert_eq!(
            install_chain(&issued, &info(&[b"inter"])),
            vec![b"leaf".to_vec(), b"cross".to_vec()]
        );
        assert_eq!(
            install_chain(&issued, &info(&[b"cross", b"inter"])),
            vec![b"leaf".to_vec()]
        );
        // The leaf goes even if its id were reported.
        assert_eq!(
            install_chain(&issued, &info(&[b"leaf", b"inter", b"cross"])),
            vec![b"leaf".to_vec()]
        );
    }
}
