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

#[derive(Clone)]
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

/// A minimal ACME client that drives `AcmeServer::handle` directly (no sockets).
pub mod child;
pub mod harness;
pub mod issuance;

pub mod client {
    use std::time::SystemTime;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use localcert_issuer::acme::{AcmeServer, Response};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::{Value, json};

    pub const BASE: &str = "https://localhost:8443";

    pub fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub struct Client {
        key: EcdsaKeyPair,
        pub kid: Option<String>,
    }

    impl Client {
        pub fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self::from_pkcs8(pkcs8.as_ref())
        }

        pub fn from_pkcs8(pkcs8: &[u8]) -> Self {
            let key = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8,
                &SystemRandom::new(),
            )
            .unwrap();
            Self { key, kid: None }
        }

        pub fn jwk(&self) -> Value {
            let point = self.key.public_key().as_ref();
            json!({"crv": "P-256", "kty": "EC", "x": b64(&point[1..33]), "y": b64(&point[33..])})
        }

        pub fn thumbprint(&self) -> String {
            use sha2::Digest;
            let jwk = self.jwk();
            let canonical = format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                jwk["x"].as_str().unwrap(),
                jwk["y"].as_str().unwrap()
            );
            b64(&sha2::Sha256::digest(canonical.as_bytes()))
        }

        /// A signed JWS body for `url` with this nonce and payload ("" for POST-as-GET).
        pub fn jws(&self, url: &str, nonce: &str, payload: &[u8]) -> Vec<u8> {
            let mut header = json!({"alg": "ES256", "nonce": nonce, "url": url});
            match &self.kid {
                Some(kid) => header["kid"] = json!(kid),
                None => header["jwk"] = self.jwk(),
            }
            self.sign(&header, payload)
        }

        /// The inner JWS of a keyChange to this client's key (RFC 8555 §7.3.5): `jwk`, no
        /// nonce, over the account URL and the old key.
        pub fn key_change(&self, url: &str, account: &str, old_key: &Value) -> Value {
            let header = json!({"alg": "ES256", "url": url, "jwk": self.jwk()});
            let payload = json!({"account": account, "oldKey": old_key});
            serde_json::from_slice(&self.sign(&header, payload.to_string().as_bytes())).unwrap()
        }

        /// A flattened JWS of `payload` with the protected `header`, signed by this key.
        pub fn sign(&self, header: &Value, payload: &[u8]) -> Vec<u8> {
            let protected = b64(header.to_string().as_bytes());
            let payload = b64(payload);
            let sig = self
                .key
                .sign(
                    &SystemRandom::new(),
                    format!("{protected}.{payload}").as_bytes(),
                )
                .unwrap();
            json!({"protected": protected, "payload": payload, "signature": b64(sig.as_ref())})
                .to_string()
                .into_bytes()
        }

        pub fn eab(&self, kid: &str, hmac: &[u8]) -> Value {
            let protected = b64(json!({"alg": "HS256", "kid": kid,
                "url": format!("{BASE}/acme/new-account")})
            .to_string()
            .as_bytes());
            let payload = b64(self.jwk().to_string().as_bytes());
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hmac);
            let tag = ring::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
            json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())})
        }
    }

    pub fn nonce(server: &AcmeServer, now: SystemTime) -> String {
        let response = server.handle("HEAD", "/acme/new-nonce", None, b"", now);
        response.header("replay-nonce").unwrap().to_owned()
    }

    /// POSTs `payload` (None: POST-as-GET) to `path`, signed by `client`.
    pub fn post(
        server: &AcmeServer,
        client: &Client,
        path: &str,
        payload: Option<&Value>,
        now: SystemTime,
    ) -> Response {
        let nonce = nonce(server, now);
        let payload = payload
            .map(|p| p.to_string().into_bytes())
            .unwrap_or_default();
        let body = client.jws(&format!("{BASE}{path}"), &nonce, &payload);
        server.handle("POST", path, Some("application/jose+json"), &body, now)
    }

    pub fn body(response: &Response) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    /// The ACME error type of a problem response, e.g. `badNonce`.
    pub fn problem(response: &Response) -> String {
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        let value = body(response);
        value["type"]
            .as_str()
            .unwrap()
            .strip_prefix("urn:ietf:params:acme:error:")
            .unwrap()
            .to_owned()
    }

    /// The path of an absolute URL of this server.
    pub fn path(url: &str) -> String {
        url.strip_prefix(BASE).unwrap().to_owned()
    }
}
