//! The RP backend's test world: the real issuer serving ACME over HTTPS on loopback, a backend
//! in front of it, and a simulated device that answers with the fixture device's attestation
//! key (the device engine itself is another crate's; its answers are produced here with
//! proto's transcript and attestation code).

// Each test crate that includes this uses part of it; they allow unwrap/expect/panic.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use localcert_issuer::loopback::LoopbackIssuer;
use localcert_issuer::store::SqliteStore;
use localcert_issuer::validate::TrustConfig;
use localcert_proto::message::{
    AttestResponse, InfoResponse, InstallResponse, PresenceMethod, Response,
};
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use localcert_proto::transcript::HashedTranscript;
use localcert_rp::config::{Config, Limits, UserToken};
use localcert_rp::{AcmeSettings, Backend, Eab, TokenAuth};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ORIGIN: &str = "https://vod.example.com";
pub const KID: &str = "kid-vod";
pub const HMAC: &[u8] = &[7; 32];
pub const ORIGIN2: &str = "https://music.example.net:8443";
pub const KID2: &str = "kid-music";
pub const HMAC2: &[u8] = &[9; 32];
pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789ab";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn pem(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The real issuer on loopback, with two registered origins.
pub struct Issuer {
    serving: LoopbackIssuer,
    pub store: Arc<SqliteStore>,
    pub directory_url: String,
    pub tls_root: PathBuf,
    pub issuer_root: Vec<u8>,
    pub dir: tempfile::TempDir,
}

impl Issuer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust =
            TrustConfig::new(&[pem(&fixtures().join("manufacturer/root.pem"))], vec![]).unwrap();
        let serving = LoopbackIssuer::start(
            dir.path(),
            &[(ORIGIN, KID, HMAC), (ORIGIN2, KID2, HMAC2)],
            trust,
        )
        .await
        .unwrap();
        Self {
            store: serving.store.clone(),
            directory_url: serving.directory_url.clone(),
            tls_root: serving.tls_root.clone(),
            issuer_root: serving.issuer_root.clone(),
            serving,
            dir,
        }
    }

    /// A backend configuration for [`ORIGIN`] with users alice and bob.
    pub fn config(&self, limits: Limits) -> Config {
        Config {
            origin: Origin::parse(ORIGIN).unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            base_path: "/localcert".into(),
            static_dir: None,
            acme: AcmeSettings {
                directory_url: self.directory_url.clone(),
                tls_root: Some(self.tls_root.clone()),
                eab: Eab {
                    kid: KID.into(),
                    key: HMAC.to_vec(),
                },
                // Every backend of this issuer is the same origin: one account, reused.
                account_file: Some(self.dir.path().join("rp-account.json")),
            },
            limits,
            cors: localcert_rp::config::default_cors(),
            users: vec![
                UserToken {
                    token: ALICE.into(),
                    handle: b"alice".to_vec(),
                },
                UserToken {
                    token: BOB.into(),
                    handle: b"bob".to_vec(),
                },
            ],
        }
    }

    /// The issuer's orders as (status, its authorizations' statuses), oldest first: what the
    /// refusal tests compare before and after.
    pub fn orders(&self) -> Vec<(String, String)> {
        let db = rusqlite::Connection::open(self.dir.path().join("issuer.sqlite")).unwrap();
        let mut statement = db
            .prepare(
                "SELECT o.status, group_concat(a.status) FROM orders o \
                 JOIN authorizations a ON a.order_id = o.id GROUP BY o.id ORDER BY o.rowid",
            )
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

pub fn backend(config: &Config) -> Arc<Backend> {
    Backend::new(config, Arc::new(TokenAuth::new(&config.users)))
}

/// One HTTP exchange with the router, in process.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: String,
    pub origin: Option<&'a str>,
    pub bearer: Option<&'a str>,
    pub cookie: Option<String>,
    pub body: Vec<u8>,
}

impl<'a> Call<'a> {
    pub fn post(path: impl Into<String>, body: &Value) -> Self {
        Self {
            method: "POST",
            path: path.into(),
            origin: Some(ORIGIN),
            bearer: Some(ALICE),
            cookie: None,
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET",
            path: path.into(),
            origin: None,
            bearer: None,
            cookie: None,
            body: vec![],
        }
    }

    pub async fn send(self, backend: &Arc<Backend>) -> (StatusCode, Value) {
        let (status, bytes) = self.send_raw(backend).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn send_raw(self, backend: &Arc<Backend>) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(self.method).uri(&self.path);
        if let Some(origin) = self.origin {
            request = request.header("origin", origin);
        }
        if let Some(token) = self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(cookie) = self.cookie {
            request = request.header("cookie", cookie);
        }
        let request = request.body(Body::from(self.body)).unwrap();
        let response = backend.router().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(value: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(value.as_str().unwrap()).unwrap()
}

/// The fixture device's side: its GET_INFO, ATTEST and INSTALL answers.
pub struct SimDevice {
    pub chain: Vec<Vec<u8>>,
    key: EcdsaKeyPair,
    pub label: DeviceLabel,
}

impl SimDevice {
    pub fn new(which: &str) -> Self {
        let dir = fixtures().join("devices").join(which);
        let chain = CertificateDer::pem_file_iter(dir.join("attestation.pem"))
            .unwrap()
            .map(|c| c.unwrap().as_ref().to_vec())
            .collect();
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_file(dir.join("attestation.key.pem")).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        Self {
            chain,
            key,
            label: DeviceLabel::parse("tv").unwrap(),
        }
    }

    pub fn info_response(&self) -> InfoResponse {
        InfoResponse {
            revision: localcert_proto::gatt::PROTOCOL_REVISION,
            product: "Media Server 1".into(),
            device_label: self.label.clone(),
            attestation_chain: self.chain.clone(),
            presence: PresenceMethod::Button,
            bindings: 0,
            max_bindings: 8,
            known_issuers: vec![],
        }
    }

    /// The GET_INFO answer message.
    pub fn info(&self) -> Vec<u8> {
        Response::Info(self.info_response()).encode()
    }

    pub fn name(&self, origin: &str, label: &DeviceLabel) -> LocalName {
        LocalName::derive(
            label,
            &Origin::parse(origin).unwrap(),
            &DeviceTag::from_attestation_certificate(&self.chain[0]),
        )
    }

    /// An ATTEST answer to the fields the backend returned, with its CSR for `csr_name` (the
    /// derived name unless a test says otherwise).
    pub fn attest_for(&self, attest: &Value, csr_name: Option<&str>) -> AttestResponse {
        let origin = Origin::parse(attest["origin"].as_str().unwrap()).unwrap();
        let label = DeviceLabel::parse(attest["device_label"].as_str().unwrap()).unwrap();
        let user_handle = unb64(&attest["user_handle"]);
        let key_authorization_hash: [u8; 32] =
            unb64(&attest["key_authorization_hash"]).try_into().unwrap();
        let name = self.name(origin.as_str(), &label);
        let csr_name = csr_name.map_or_else(|| name.clone(), |n| LocalName::parse(n).unwrap());
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let tls_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap();
        let public_key: [u8; 65] = tls_key.public_key().as_ref().try_into().unwrap();
        let info = localcert_proto::csr::request_info(&public_key, &[csr_name]);
        let csr_signature = raw(tls_key.sign(&rng, &info).unwrap().as_ref());
        let spki = localcert_proto::csr::p256_spki(&public_key);
        let transcript = HashedTranscript {
            key_authorization_hash: &key_authorization_hash,
            origin: &origin,
            user_handle: &user_handle,
            csr_spki: &spki,
            names: &[name],
        }
        .to_bytes();
        let der = self.key.sign(&rng, &transcript).unwrap();
        let signature = localcert_proto::csr::raw_signature(der.as_ref()).unwrap();
        AttestResponse {
            public_key,
            csr_signature,
            signature,
        }
    }

    pub fn attest(&self, attest: &Value) -> Vec<u8> {
        Response::Attest(self.attest_for(attest, None)).encode()
    }

    /// The INSTALL answer a device gives after installing the chain the backend returned.
    pub fn install(&self, answer: &Value, port: u16) -> Vec<u8> {
        assert!(
            answer["install"]["chain"][0].is_string(),
            "a leaf to install"
        );
        Response::Install(InstallResponse { https_port: port }).encode()
    }
}

fn raw(sig: &[u8]) -> [u8; 64] {
    sig.try_into().unwrap()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

/// Starts a flow for alice; returns (flow id, the 201 body).
pub async fn start(backend: &Arc<Backend>, device: &SimDevice) -> (String, Value) {
    let (status, body) = Call::post("/localcert/flows", &json!({"info": b64(&device.info())}))
        .send(backend)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["flow"].as_str().unwrap().to_owned(), body)
}
