//! Test device credentials: a manufacturer root, a batch intermediate and a device certificate,
//! generated with rcgen, plus the device's side of `device-attest-01`.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use localcert_proto::attestation::AttestationObject;
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use localcert_proto::transcript::Transcript;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

pub struct Manufacturer {
    pub root_der: Vec<u8>,
    pub batch_der: Vec<u8>,
    batch: Issuer<'static, KeyPair>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Manufacturer {
    pub fn new(name: &str) -> Self {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root_params = ca_params(&format!("{name} root"));
        let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let root = Issuer::new(root_params, root_key);
        let batch_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let batch_params = ca_params(&format!("{name} batch 1"));
        let batch_der = batch_params
            .signed_by(&batch_key, &root)
            .unwrap()
            .der()
            .to_vec();
        Self {
            root_der,
            batch_der,
            batch: Issuer::new(batch_params, batch_key),
        }
    }

    pub fn device(&self, serial: &str) -> Device {
        self.device_valid(serial, None)
    }

    /// A device whose certificate expired at `not_after` (a Unix time), if given.
    pub fn device_valid(&self, serial: &str, not_after: Option<i64>) -> Device {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("device {serial}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if let Some(t) = not_after {
            params.not_before = time::OffsetDateTime::from_unix_timestamp(t - 86_400).unwrap();
            params.not_after = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
        }
        let der = params.signed_by(&key, &self.batch).unwrap().der().to_vec();
        Device {
            chain: vec![der, self.batch_der.clone()],
            key_pkcs8: key.serialize_der(),
        }
    }
}

pub struct Device {
    /// Device certificate, then the batch certificate.
    pub chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
}

impl Device {
    pub fn tag(&self) -> DeviceTag {
        DeviceTag::from_attestation_certificate(&self.chain[0])
    }

    pub fn name(&self, label: &str, origin: &Origin) -> LocalName {
        LocalName::derive(&DeviceLabel::parse(label).unwrap(), origin, &self.tag())
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.key_pkcs8,
            &SystemRandom::new(),
        )
        .unwrap();
        key.sign(&SystemRandom::new(), message)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The CBOR attestation object over the transcript of these inputs.
    pub fn attest(
        &self,
        key_authorization: &str,
        origin: &Origin,
        user_handle: &[u8],
        tls_spki: &[u8],
        names: &[LocalName],
    ) -> Vec<u8> {
        let transcript = Transcript {
            key_authorization,
            origin,
            user_handle,
            csr_spki: tls_spki,
            names,
        };
        AttestationObject {
            sig: self.sign(&transcript.to_bytes()),
            x5c: self.chain.clone(),
            spki: tls_spki.to_vec(),
            user_handle: user_handle.to_vec(),
        }
        .encode()
    }
}

/// A TLS key pair for the device.
pub struct TlsKey(pub KeyPair);

impl TlsKey {
    pub fn new() -> Self {
        Self(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap())
    }

    pub fn spki(&self) -> Vec<u8> {
        self.0.subject_public_key_info()
    }

    /// A CSR with these SANs (DNS names or IP addresses, as rcgen parses them).
    pub fn csr(&self, sans: &[&str]) -> Vec<u8> {
        let params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        self.csr_with(params)
    }

    pub fn csr_with(&self, mut params: CertificateParams) -> Vec<u8> {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(&self.0).unwrap().der().to_vec()
    }

    pub fn csr_with_ip(&self, dns: &str) -> Vec<u8> {
        let mut params = CertificateParams::new(vec![dns.to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("192.0.2.1".parse().unwrap()));
        self.csr_with(params)
    }
}
