//! An issuer driven through `AcmeServer::handle` (no sockets) with a controlled clock: a CA,
//! a durable SQLite store with one relying party, a manufacturer and one of its devices, and
//! the steps of an issuance as one-liners (shared by tests/acme.rs and tests/conformance.rs).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use localcert_issuer::acme::{AcmeServer, Policy, Response};
use localcert_issuer::ca::{self, CaFiles, IssuingCa};
use localcert_issuer::store::{AuditEntry, RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use localcert_issuer::validate::TrustConfig;
use localcert_proto::origin::Origin;
use serde_json::{Value, json};

use super::client::{BASE, Client, b64, body, path, post, problem};
use super::{Device, Manufacturer, TlsKey};

/// The relying party's EAB key id.
pub const KID: &str = "kid-vod";
/// Its HMAC key.
pub const HMAC: &[u8] = &[42; 32];
/// The user handle the device attests.
pub const USER: &[u8] = b"user-1";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub server: AcmeServer,
    pub maker: Manufacturer,
    pub device: Device,
    pub origin: Origin,
    pub now: SystemTime,
    strangers: AtomicUsize,
}

/// An order and its one authorization, challenge and token.
pub struct PendingOrder {
    pub order: String,
    pub authz: String,
    pub chall: String,
    pub token: String,
}

/// The issuer's parts as the in-process tests build them: a CA made at `ca_made`, a durable
/// SQLite store holding one relying party ([`KID`], [`HMAC`]), a manufacturer, one of its
/// devices and the trust in that manufacturer.
pub struct Parts {
    pub ca: IssuingCa,
    pub store: Arc<SqliteStore>,
    pub origin: Origin,
    pub maker: Manufacturer,
    pub device: Device,
    pub trust: TrustConfig,
}

impl Parts {
    /// The parts in `dir`, at `now`.
    pub fn new(dir: &Path, now: SystemTime, ca_made: SystemTime) -> Self {
        let files = CaFiles::in_dir(dir);
        ca::init_ca(&files, "test", ca_made).unwrap();
        let ca = IssuingCa::load(&files).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.join("issuer.sqlite")).unwrap());
        let origin = Origin::parse("https://vod.example.com").unwrap();
        store
            .add_relying_party(&RelyingParty {
                origin: origin.clone(),
                eab_kid: KID.into(),
                eab_hmac_key: HMAC.to_vec(),
                status: RelyingPartyStatus::Active,
                created: now,
            })
            .unwrap();
        let maker = Manufacturer::new("Acme TVs");
        let trust = TrustConfig::new(std::slice::from_ref(&maker.root_der), []).unwrap();
        let device = maker.device("0001");
        Self {
            ca,
            store,
            origin,
            maker,
            device,
            trust,
        }
    }
}

impl Harness {
    pub fn new() -> Self {
        let now = SystemTime::now();
        Self::with_ca_made_at(now, now)
    }

    /// A harness at `now` whose CA was made at `ca_made` (an intermediate expired, about to
    /// expire or not yet valid).
    pub fn with_ca_made_at(now: SystemTime, ca_made: SystemTime) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let parts = Parts::new(dir.path(), now, ca_made);
        let server = AcmeServer::new(
            parts.store.clone(),
            parts.ca,
            parts.trust,
            Policy::default(),
            BASE,
        );
        Self {
            dir,
            store: parts.store,
            server,
            maker: parts.maker,
            device: parts.device,
            origin: parts.origin,
            now,
            strangers: AtomicUsize::new(0),
        }
    }

    pub fn post(&self, client: &Client, path: &str, payload: Option<&Value>) -> Response {
        post(&self.server, client, path, payload, self.now)
    }

    /// newAccount with `client`'s key and the EAB key `kid`.
    pub fn new_account(&self, client: &Client, kid: &str, hmac: &[u8]) -> Response {
        let eab = client.eab(kid, hmac);
        self.post(
            client,
            "/acme/new-account",
            Some(&json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab})),
        )
    }

    /// The relying party's account (its EAB key binds one: call once per harness).
    pub fn account(&self) -> Client {
        self.account_with(KID, HMAC)
    }

    fn account_with(&self, kid: &str, hmac: &[u8]) -> Client {
        let mut client = Client::new();
        let response = self.new_account(&client, kid, hmac);
        assert_eq!(
            response.status,
            201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        client.kid = Some(response.header("location").unwrap().to_owned());
        client
    }

    /// An account of another relying party, registered now.
    pub fn stranger(&self) -> Client {
        let n = self.strangers.fetch_add(1, Ordering::Relaxed);
        let kid = format!("kid-stranger-{n}");
        self.store
            .add_relying_party(&RelyingParty {
                origin: Origin::parse(&format!("https://stranger{n}.example.com")).unwrap(),
                eab_kid: kid.clone(),
                eab_hmac_key: HMAC.to_vec(),
                status: RelyingPartyStatus::Active,
                created: self.now,
            })
            .unwrap();
        self.account_with(&kid, HMAC)
    }

    pub fn name(&self) -> String {
        self.device.name("tv", &self.origin).to_string()
    }

    /// A new order for the device's name, with `extra` in its payload.
    pub fn order(&self, client: &Client, extra: Option<(&str, Value)>) -> PendingOrder {
        let mut payload = json!({"identifiers": [{"type": "dns", "value": self.name()}]});
        if let Some((key, value)) = extra {
            payload[key] = value;
        }
        let response = self.post(client, "/acme/new-order", Some(&payload));
        assert_eq!(
            response.status,
            201,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let order = path(response.header("location").unwrap());
        let authz = path(body(&response)["authorizations"][0].as_str().unwrap());
        let authz_body = body(&self.post(client, &authz, None));
        let challenge = &authz_body["challenges"][0];
        assert_eq!(challenge["type"], "device-attest-01");
        assert_eq!(authz_body["challenges"].as_array().unwrap().len(), 1);
        PendingOrder {
            order,
            authz,
            chall: path(challenge["url"].as_str().unwrap()),
            token: challenge["token"].as_str().unwrap().to_owned(),
        }
    }

    /// `device`'s attestation for `client`'s challenge `token`, of the TLS key `tls`.
    pub fn att_obj(&self, device: &Device, client: &Client, token: &str, tls: &TlsKey) -> Vec<u8> {
        let key_authorization = format!("{token}.{}", client.thumbprint());
        let names = vec![self.device.name("tv", &self.origin)];
        device.attest(&key_authorization, &self.origin, USER, &tls.spki(), &names)
    }

    pub fn answer(&self, client: &Client, chall: &str, att_obj: &[u8]) -> Response {
        self.post(client, chall, Some(&json!({"attObj": b64(att_obj)})))
    }

    pub fn finalize(&self, client: &Client, order: &str, csr: &[u8]) -> Response {
        self.post(
            client,
            &format!("{order}/finalize"),
            Some(&json!({"csr": b64(csr)})),
        )
    }

    /// A whole issuance; the leaf's DER.
    pub fn issue(&self, client: &Client) -> Vec<u8> {
        let p = self.order(client, None);
        let tls = TlsKey::new();
        let att = self.att_obj(&self.device, client, &p.token, &tls);
        assert_eq!(self.answer(client, &p.chall, &att).status, 200);
        let finalized = self.finalize(client, &p.order, &tls.csr(&[&self.name()]));
        assert_eq!(finalized.status, 200);
        let cert = path(body(&finalized)["certificate"].as_str().unwrap());
        let chain = self.post(client, &cert, None);
        ca::pem_blocks(&chain.body, "CERTIFICATE")
            .unwrap()
            .remove(0)
    }

    pub fn order_status(&self, client: &Client, order: &str) -> String {
        body(&self.post(client, order, None))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn last_audit(&self) -> AuditEntry {
        self.store.audit_log(1).unwrap().pop().unwrap()
    }

    /// Asserts a refusal: the problem type, an audit entry saying so, the order unchanged.
    pub fn assert_refused(&self, response: &Response, kind: &str, client: &Client, order: &str) {
        assert_eq!(
            problem(response),
            kind,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let audit = self.last_audit();
        assert_eq!(audit.event, "refused");
        assert_eq!(body(response)["detail"].as_str().unwrap(), audit.detail);
        assert_eq!(self.order_status(client, order), "pending");
    }
}
