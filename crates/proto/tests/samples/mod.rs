//! Sample values shared by the vector runner and the property tests.

#![allow(dead_code, clippy::unwrap_used)]

use localcert_proto::message::*;
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;

pub(crate) fn origin(s: &str) -> Origin {
    Origin::parse(s).unwrap()
}

/// Stands in for a DER attestation certificate: the protocol treats it as opaque bytes.
pub(crate) const DEVICE_CERT: &[u8] = b"0\x82 sample device attestation certificate";

pub(crate) fn device_tag() -> DeviceTag {
    DeviceTag::from_attestation_certificate(DEVICE_CERT)
}

pub(crate) fn label() -> DeviceLabel {
    DeviceLabel::parse("media-server-1").unwrap()
}

pub(crate) fn name(o: &str) -> LocalName {
    LocalName::derive(&label(), &origin(o), &device_tag())
}

pub(crate) fn cors() -> CorsPolicy {
    CorsPolicy {
        methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["content-type".into()],
        expose_headers: vec![],
        allow_credentials: false,
        max_age: 600,
    }
}

/// The key authorization of the samples (SPEC §5.2's example).
pub(crate) const KEY_AUTHORIZATION: &str =
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

pub(crate) fn attest_request() -> AttestRequest {
    AttestRequest {
        origin: origin("https://vod.example.com"),
        user_handle: b"user-42".to_vec(),
        key_authorization_hash: key_authorization_hash(KEY_AUTHORIZATION),
        device_label: label(),
        pin: None,
    }
}

/// An ATTEST answer: the P-256 generator as the TLS key, and two sample signatures.
pub(crate) fn attest_response() -> AttestResponse {
    let mut public_key = [0u8; 65];
    public_key.copy_from_slice(&hex::decode(&SAMPLE_SPKI[52..]).unwrap());
    AttestResponse {
        public_key,
        csr_signature: std::array::from_fn(|i| i as u8 + 1),
        signature: std::array::from_fn(|i| 0xff - i as u8),
    }
}

/// A P-256 SubjectPublicKeyInfo (the generator point as public key).
pub(crate) const SAMPLE_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

/// Every request, named.
pub(crate) fn requests() -> Vec<(&'static str, Request)> {
    vec![
        ("get_info", Request::GetInfo),
        ("attest", Request::Attest(attest_request())),
        (
            "attest_with_pin",
            Request::Attest(AttestRequest {
                pin: Some("123456".into()),
                ..attest_request()
            }),
        ),
        (
            "install",
            Request::Install(InstallRequest {
                chain: vec![vec![0x30, 0x82, 0x01, 0x00], vec![0x30, 0x81, 0x80]],
                cors: cors(),
                star_url: None,
            }),
        ),
        (
            "install_star",
            Request::Install(InstallRequest {
                chain: vec![vec![0x30, 0x82, 0x01, 0x00]],
                cors: CorsPolicy {
                    allow_credentials: true,
                    expose_headers: vec!["x-request-id".into()],
                    ..cors()
                },
                star_url: Some("https://issuer.test:8443/acme/star/3f9c".into()),
            }),
        ),
        ("list", Request::List),
        (
            "remove",
            Request::Remove(RemoveRequest {
                origin: origin("https://vod.example.com"),
            }),
        ),
    ]
}

/// Every response, named, with the operation it answers.
pub(crate) fn responses() -> Vec<(&'static str, Operation, Response)> {
    let fingerprint = [0xab; FINGERPRINT_LEN];
    vec![
        (
            "info",
            Operation::GetInfo,
            Response::Info(InfoResponse {
                revision: 2,
                product: "Media Server 1".into(),
                device_label: label(),
                attestation_chain: vec![DEVICE_CERT.to_vec(), b"batch certificate".to_vec()],
                presence: PresenceMethod::Button,
                bindings: 1,
                max_bindings: 8,
                known_issuers: vec![certificate_id(b"issuing intermediate")],
            }),
        ),
        (
            "attest",
            Operation::Attest,
            Response::Attest(attest_response()),
        ),
        (
            "install",
            Operation::Install,
            Response::Install(InstallResponse { https_port: 8443 }),
        ),
        (
            "list",
            Operation::List,
            Response::List(vec![BindingSummary {
                origin: origin("https://vod.example.com"),
                name: name("https://vod.example.com"),
                fingerprint,
                not_after: 1_795_000_000,
                star: true,
            }]),
        ),
        ("list_empty", Operation::List, Response::List(vec![])),
        (
            "remove",
            Operation::Remove,
            Response::Remove(RemoveResponse {
                name: name("https://vod.example.com"),
            }),
        ),
        (
            "error",
            Operation::Attest,
            Response::Error(localcert_proto::ErrorCode::UserDenied, None),
        ),
        (
            "error_with_message",
            Operation::Install,
            Response::Error(
                localcert_proto::ErrorCode::ChainMismatch,
                Some("leaf key is not the pending key".into()),
            ),
        ),
    ]
}
