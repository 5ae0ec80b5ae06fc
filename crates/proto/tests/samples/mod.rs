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

pub(crate) fn attest_request() -> AttestRequest {
    AttestRequest {
        origin: origin("https://vod.example.com"),
        user_handle: b"user-42".to_vec(),
        key_authorization: "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ".into(),
        device_label: label(),
        pin: None,
    }
}

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
                revision: 1,
                product: "Media Server 1".into(),
                device_label: label(),
                attestation_chain: vec![DEVICE_CERT.to_vec(), b"batch certificate".to_vec()],
                presence: PresenceMethod::Button,
                bindings: 1,
                max_bindings: 8,
            }),
        ),
        (
            "attest",
            Operation::Attest,
            Response::Attest(AttestResponse {
                csr: vec![0x30, 0x81, 0xf0, 1, 2, 3],
                attestation_object: vec![0xa2, 0x63],
            }),
        ),
        (
            "install",
            Operation::Install,
            Response::Install(InstallResponse {
                name: name("https://vod.example.com"),
                https_port: 8443,
                fingerprint,
            }),
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
