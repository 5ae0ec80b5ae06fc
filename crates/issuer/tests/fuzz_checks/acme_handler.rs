//! The ACME server driven in process through `AcmeServer::handle`, as a stranger on the
//! internet and as a client with a real account would drive it.
//!
//! Input: up to [`MAX_STEPS`] steps, each an operation byte, a flag byte and a chunk (a length
//! byte pair and that many bytes). Operations: a raw request (method, path, content type, body
//! all from the input); a POST signed by the client's key to a URL the server handed out, with
//! the chunk as payload; the honest steps of the flow (newAccount with EAB, newOrder, the
//! attestation, finalize), so the fuzzer starts from every state of an order; the clock moving;
//! a request replayed with its spent nonce.
//!
//! Properties, for every response: it carries a `Replay-Nonce`, its status is not 5xx (the
//! in-memory store is always available, so a 5xx is a bug) except the 503 `serverInternal`
//! of an intermediate that cannot sign any more, once the clock is that close to its end, and
//! an error is an RFC 7807 problem document with an ACME error type.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use localcert_issuer::acme::{AcmeServer, Policy, Response};
use localcert_issuer::ca::{self, CaFiles, IssuingCa};
use localcert_issuer::store::{RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use localcert_issuer::validate::TrustConfig;
use localcert_proto::origin::Origin;
use serde_json::{Value, json};

use super::common::client::{BASE, Client, b64, nonce, path};
use super::common::{Device, Manufacturer, TlsKey};

/// The most steps run for one input.
const MAX_STEPS: usize = 24;
/// How far the clock may move: past every order, challenge and STAR lifetime, and past the
/// intermediate's end (5 years; a finalize there was a bare 500, found by this target with a
/// 25-year jump, and is now a 503 naming the intermediate's validity).
const MAX_CLOCK_ADVANCE: Duration = Duration::from_secs(30 * 365 * 86_400);
const KID: &str = "kid-fuzz";
const HMAC: &[u8] = &[42; 32];
const USER: &[u8] = b"user-fuzz";
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "",
];
const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/jose+json"),
    None,
    Some("application/json"),
    Some("application/jose+json; charset=utf-8"),
];

struct Fixture {
    ca_dir: tempfile::TempDir,
    maker: Manufacturer,
    device: Device,
    tls: TlsKey,
    origin: Origin,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca_dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        ca::init_ca(&CaFiles::in_dir(ca_dir.path()), "fuzz", now).unwrap();
        let maker = Manufacturer::new("Fuzz TVs");
        let device = maker.device("0001");
        Fixture {
            ca_dir,
            maker,
            device,
            tls: TlsKey::new(),
            origin: Origin::parse("https://vod.example.com").unwrap(),
            now,
        }
    })
}

/// Reads the input as steps.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn chunk(&mut self) -> &'a [u8] {
        let len = match (self.byte(), self.byte()) {
            (Some(hi), Some(lo)) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => 0,
        };
        let (chunk, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        chunk
    }
}

/// What the client has learnt from the server's answers.
#[derive(Default)]
struct Learnt {
    order: Option<String>,
    authz: Option<String>,
    chall: Option<String>,
    token: Option<String>,
    certificate: Option<String>,
    star: Option<String>,
    last: Option<(String, Vec<u8>)>,
}

struct Session {
    server: AcmeServer,
    client: Client,
    learnt: Learnt,
    now: SystemTime,
    ca_not_after: SystemTime,
}

pub(crate) fn acme_handler(data: &[u8]) {
    let f = fixture();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    store
        .add_relying_party(&RelyingParty {
            origin: f.origin.clone(),
            eab_kid: KID.into(),
            eab_hmac_key: HMAC.to_vec(),
            status: RelyingPartyStatus::Active,
            created: f.now,
        })
        .unwrap();
    let ca = IssuingCa::load(&CaFiles::in_dir(f.ca_dir.path())).unwrap();
    let trust = TrustConfig::new(std::slice::from_ref(&f.maker.root_der), []).unwrap();
    let ca_not_after = ca.not_after();
    let mut session = Session {
        server: AcmeServer::new(store, ca, trust, Policy::default(), BASE),
        client: Client::new(),
        learnt: Learnt::default(),
        now: f.now,
        ca_not_after,
    };
    let mut input = Input(data);
    for _ in 0..MAX_STEPS {
        let (Some(op), Some(flag)) = (input.byte(), input.byte()) else {
            return;
        };
        let chunk = input.chunk();
        session.step(op, flag, chunk);
    }
}

/// The properties every response has.
fn check(response: &Response, what: &str, issuer_ending: bool) {
    let body = String::from_utf8_lossy(&response.body);
    if issuer_ending && response.status == 503 {
        let problem: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            problem["type"], "urn:ietf:params:acme:error:serverInternal",
            "{what}: {body}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("the issuing CA cannot sign now")),
            "{what}: {body}"
        );
        return;
    }
    assert!(
        response
            .header("replay-nonce")
            .is_some_and(|n| !n.is_empty()),
        "{what}: no Replay-Nonce in {} {body}",
        response.status
    );
    assert!(
        (200..500).contains(&response.status),
        "{what}: status {} {body}",
        response.status
    );
    if response.status >= 400 {
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json"),
            "{what}: {body}"
        );
        let problem: Value = serde_json::from_slice(&response.body).unwrap();
        let kind = problem["type"].as_str().unwrap_or_default();
        assert!(
            kind.starts_with("urn:ietf:params:acme:error:"),
            "{what}: {body}"
        );
    }
}

impl Session {
    fn step(&mut self, op: u8, flag: u8, chunk: &[u8]) {
        match op % 8 {
            0 => self.raw(flag, chunk),
            1 => {
                let target = self.target(flag, chunk);
                self.signed(&target, chunk, flag & 0x80 != 0);
            }
            2 => self.new_account(flag),
            3 => self.new_order(flag),
            4 => self.attest(flag, chunk),
            5 => self.finalize(flag, chunk),
            6 => {
                let secs = chunk
                    .iter()
                    .take(4)
                    .fold(0u64, |n, &b| n << 8 | u64::from(b));
                let latest = fixture().now + MAX_CLOCK_ADVANCE;
                self.now = (self.now + Duration::from_secs(secs)).min(latest);
            }
            _ => self.replay(),
        }
    }

    fn handle(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let response = self
            .server
            .handle(method, path, content_type, body, self.now);
        // Within the longest leaf lifetime of the intermediate's end, finalize may be refused.
        let policy = Policy::default();
        let longest = policy.leaf_lifetime.max(policy.star_max_lifetime);
        let issuer_ending = self.now + longest > self.ca_not_after;
        check(&response, &format!("{method} {path}"), issuer_ending);
        self.learn(&response);
        response
    }

    fn raw(&mut self, flag: u8, chunk: &[u8]) {
        let method = METHODS[usize::from(flag) % METHODS.len()];
        let content_type = CONTENT_TYPES[usize::from(flag >> 3) % CONTENT_TYPES.len()];
        // The path is the chunk up to its first newline, the body what follows.
        let (path, body) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (&chunk[..at], &chunk[at + 1..]),
            None => (chunk, &[][..]),
        };
        let path = String::from_utf8_lossy(path).into_owned();
        self.handle(method, &path, content_type, body);
    }

    /// A URL the server handed out (or a fixed one), chosen by `flag`.
    fn target(&self, flag: u8, chunk: &[u8]) -> String {
        let l = &self.learnt;
        let kid = self.client.kid.as_deref().map(path);
        let with = |base: &Option<String>, tail: &str| base.as_ref().map(|b| format!("{b}{tail}"));
        let known = [
            Some("/acme/new-account".to_owned()),
            Some("/acme/new-order".to_owned()),
            Some("/acme/revoke-cert".to_owned()),
            Some("/acme/key-change".to_owned()),
            l.order.clone(),
            with(&l.order, "/finalize"),
            l.authz.clone(),
            l.chall.clone(),
            l.certificate.clone(),
            l.star.clone(),
            kid.clone(),
            kid.map(|k| format!("{k}/orders")),
            // The path written by the fuzzer, in the first line of the chunk.
            Some(
                String::from_utf8_lossy(chunk.split(|&b| b == b'\n').next().unwrap_or_default())
                    .into_owned(),
            ),
        ];
        known[usize::from(flag & 0x7f) % known.len()]
            .clone()
            .unwrap_or_else(|| "/acme/new-order".to_owned())
    }

    /// POSTs `payload` to `path`, signed by the client (with its jwk when `use_jwk`).
    fn signed(&mut self, path: &str, payload: &[u8], use_jwk: bool) -> Response {
        let nonce = nonce(&self.server, self.now);
        let kid = self.client.kid.take();
        if !use_jwk {
            self.client.kid.clone_from(&kid);
        }
        let body = self.client.jws(&format!("{BASE}{path}"), &nonce, payload);
        self.client.kid = kid;
        self.learnt.last = Some((path.to_owned(), body.clone()));
        self.handle("POST", path, Some("application/jose+json"), &body)
    }

    fn replay(&mut self) {
        if let Some((path, body)) = self.learnt.last.clone() {
            self.handle("POST", &path, Some("application/jose+json"), &body);
        }
    }

    fn new_account(&mut self, flag: u8) {
        if flag & 1 == 1 {
            self.client = Client::new();
        }
        let hmac: &[u8] = if flag & 2 == 2 { &[7; 32] } else { HMAC };
        let kid = if flag & 4 == 4 { "kid-unknown" } else { KID };
        let payload = json!({"termsOfServiceAgreed": true,
            "externalAccountBinding": self.client.eab(kid, hmac)});
        let saved = self.client.kid.take();
        let response = self.signed("/acme/new-account", payload.to_string().as_bytes(), true);
        self.client.kid = response.header("location").map(str::to_owned).or(saved);
    }

    fn name(&self) -> String {
        let f = fixture();
        f.device.name("tv", &f.origin).to_string()
    }

    fn new_order(&mut self, flag: u8) {
        let mut payload = json!({"identifiers": [{"type": "dns", "value": self.name()}]});
        if flag & 1 == 1 {
            payload["profile"] = json!("star");
        }
        let response = self.signed("/acme/new-order", payload.to_string().as_bytes(), false);
        if let Some(authz) = self.learnt.authz.clone() {
            if response.status == 201 {
                self.signed(&authz, b"", false);
            }
        }
    }

    fn attest(&mut self, flag: u8, chunk: &[u8]) {
        let (Some(chall), Some(token)) = (self.learnt.chall.clone(), self.learnt.token.clone())
        else {
            return;
        };
        let f = fixture();
        let key_authorization = format!("{token}.{}", self.client.thumbprint());
        let names = vec![f.device.name("tv", &f.origin)];
        let mut att_obj =
            f.device
                .attest(&key_authorization, &f.origin, USER, &f.tls.spki(), &names);
        if flag & 1 == 1 {
            att_obj = super::validation::edited(&att_obj, chunk);
        }
        let payload = json!({"attObj": b64(&att_obj)});
        self.signed(&chall, payload.to_string().as_bytes(), false);
    }

    fn finalize(&mut self, flag: u8, chunk: &[u8]) {
        let Some(order) = self.learnt.order.clone() else {
            return;
        };
        let mut csr = fixture().tls.csr(&[&self.name()]);
        if flag & 1 == 1 {
            csr = super::validation::edited(&csr, chunk);
        }
        let payload = json!({"csr": b64(&csr)});
        self.signed(
            &format!("{order}/finalize"),
            payload.to_string().as_bytes(),
            false,
        );
    }

    /// Remembers the URLs an answer hands out.
    fn learn(&mut self, response: &Response) {
        let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
            return;
        };
        let local = |v: &Value| {
            v.as_str()
                .and_then(|u| u.strip_prefix(BASE))
                .map(str::to_owned)
        };
        let l = &mut self.learnt;
        if body.get("finalize").is_some() {
            if let Some(order) = response
                .header("location")
                .and_then(|u| u.strip_prefix(BASE))
            {
                l.order = Some(order.to_owned());
            }
            if let Some(authz) = local(&body["authorizations"][0]) {
                l.authz = Some(authz);
            }
            if let Some(certificate) = local(&body["certificate"]) {
                l.certificate = Some(certificate);
            }
            if let Some(star) = local(&body["star-certificate"]) {
                l.star = Some(star);
            }
        }
        if let Some(challenge) = body["challenges"].get(0) {
            l.chall = local(&challenge["url"]).or(l.chall.take());
            l.token = challenge["token"]
                .as_str()
                .map(str::to_owned)
                .or(l.token.take());
        }
    }
}
