//! A store that is away (a PostgreSQL restart, a failover) is not a server fault: every request
//! that needs it gets 503 `serverInternal` with `Retry-After`, nothing is spent or changed, and
//! once the store is back the same client carries on.
//! tests/postgres/run.sh shows the same with a real PostgreSQL restarted under load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use common::client::{BASE, Client, body, nonce, post};
use localcert_issuer::Error;
use localcert_issuer::acme::{AcmeServer, Policy, RETRY_AFTER_SECS, Response};
use localcert_issuer::ca::{self, CaFiles, IssuingCa};
use localcert_issuer::nonce::NonceId;
use localcert_issuer::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, CertRecord, IssueOutcome,
    KeyChange, Order, OrderStatus, RelyingParty, RelyingPartyStatus, RevocationSummary,
    SqliteStore, Store,
};
use localcert_issuer::validate::TrustConfig;
use localcert_proto::origin::Origin;
use serde_json::json;

const KID: &str = "kid-vod";
const HMAC: &[u8] = &[42; 32];

/// A SQLite store that can be switched off: then every call fails as a database that is down.
struct Switchable {
    inner: SqliteStore,
    down: AtomicBool,
}

impl Switchable {
    fn up(&self) -> Result<&SqliteStore, Error> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::StoreUnavailable("connection refused".into()))
        } else {
            Ok(&self.inner)
        }
    }
}

impl Store for Switchable {
    fn add_relying_party(&self, rp: &RelyingParty) -> Result<(), Error> {
        self.up()?.add_relying_party(rp)
    }
    fn relying_parties(&self) -> Result<Vec<RelyingParty>, Error> {
        self.up()?.relying_parties()
    }
    fn relying_party_by_kid(&self, kid: &str) -> Result<Option<RelyingParty>, Error> {
        self.up()?.relying_party_by_kid(kid)
    }
    fn revoke_relying_party(
        &self,
        origin: &Origin,
        now: SystemTime,
    ) -> Result<Option<RevocationSummary>, Error> {
        self.up()?.revoke_relying_party(origin, now)
    }
    fn consume_nonce(&self, nonce: &NonceId, now: SystemTime) -> Result<bool, Error> {
        self.up()?.consume_nonce(nonce, now)
    }
    fn create_account(&self, account: &Account, audit: &AuditEntry) -> Result<(), Error> {
        self.up()?.create_account(account, audit)
    }
    fn account(&self, id: &str) -> Result<Option<Account>, Error> {
        self.up()?.account(id)
    }
    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, Error> {
        self.up()?.account_by_thumbprint(thumbprint)
    }
    fn change_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        jwk: &str,
        thumbprint: &str,
        audit: &AuditEntry,
    ) -> Result<KeyChange, Error> {
        self.up()?
            .change_account_key(id, old_thumbprint, jwk, thumbprint, audit)
    }
    fn set_account_status(
        &self,
        id: &str,
        status: AccountStatus,
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        self.up()?.set_account_status(id, status, audit)
    }
    fn create_order(
        &self,
        order: &Order,
        authorizations: &[Authorization],
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        self.up()?.create_order(order, authorizations, audit)
    }
    fn order(&self, id: &str) -> Result<Option<Order>, Error> {
        self.up()?.order(id)
    }
    fn order_ids(&self, account_id: &str) -> Result<Vec<String>, Error> {
        self.up()?.order_ids(account_id)
    }
    fn authorizations(&self, order_id: &str) -> Result<Vec<Authorization>, Error> {
        self.up()?.authorizations(order_id)
    }
    fn authorization(&self, id: &str) -> Result<Option<Authorization>, Error> {
        self.up()?.authorization(id)
    }
    fn record_attestation(
        &self,
        authz_id: &str,
        attested: &Attested,
        audit: &AuditEntry,
    ) -> Result<bool, Error> {
        self.up()?.record_attestation(authz_id, attested, audit)
    }
    fn cancel_order_audited(&self, id: &str, audit: &AuditEntry) -> Result<(), Error> {
        self.up()?.cancel_order_audited(id, audit)
    }
    fn star_orders_due(&self, now: SystemTime) -> Result<Vec<Order>, Error> {
        self.up()?.star_orders_due(now)
    }
    fn issue(
        &self,
        order_id: &str,
        expected: OrderStatus,
        replaces: Option<&str>,
        cert: &CertRecord,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, Error> {
        self.up()?.issue(order_id, expected, replaces, cert, audit)
    }
    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, Error> {
        self.up()?.certificate(id)
    }
    fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertRecord>, Error> {
        self.up()?.certificate_by_serial(serial)
    }
    fn revoke_certificate(
        &self,
        id: &str,
        reason: u8,
        now: SystemTime,
        audit: &AuditEntry,
    ) -> Result<bool, Error> {
        self.up()?.revoke_certificate(id, reason, now, audit)
    }
    fn revoked_unexpired(&self, now: SystemTime) -> Result<Vec<CertRecord>, Error> {
        self.up()?.revoked_unexpired(now)
    }
    fn audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        self.up()?.audit(entry)
    }
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.up()?.audit_log(limit)
    }
    fn prune_audit(&self, before: SystemTime, limit: usize) -> Result<usize, Error> {
        self.up()?.prune_audit(before, limit)
    }
}

fn assert_unavailable(response: &Response) {
    assert_eq!(
        response.status,
        503,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("retry-after"),
        Some(RETRY_AFTER_SECS.to_string().as_str())
    );
    assert_eq!(
        body(response)["type"],
        "urn:ietf:params:acme:error:serverInternal"
    );
    // Nonces need no store: the answer carries a fresh one for the retry (RFC 8555 §6.5).
    assert!(response.header("replay-nonce").is_some());
}

#[test]
fn a_store_that_is_away_gets_503_with_retry_after_then_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let files = CaFiles::in_dir(dir.path());
    ca::init_ca(&files, "test", now).unwrap();
    let store = Arc::new(Switchable {
        inner: SqliteStore::open(&dir.path().join("issuer.sqlite")).unwrap(),
        down: AtomicBool::new(false),
    });
    store
        .add_relying_party(&RelyingParty {
            origin: Origin::parse("https://vod.example.com").unwrap(),
            eab_kid: KID.into(),
            eab_hmac_key: HMAC.to_vec(),
            status: RelyingPartyStatus::Active,
            created: now,
        })
        .unwrap();
    let server = AcmeServer::new(
        store.clone(),
        IssuingCa::load(&files).unwrap(),
        TrustConfig::new(&[], []).unwrap(),
        Policy::default(),
        BASE,
    );
    let client = Client::new();
    let payload = json!({"termsOfServiceAgreed": true,
        "externalAccountBinding": client.eab(KID, HMAC)});
    // A nonce handed out before the outage, spent during it.
    let early = nonce(&server, now);

    store.down.store(true, Ordering::SeqCst);
    // Nonces are minted without the store: a client can get one, and spend it later.
    let minted = server.handle("HEAD", "/acme/new-nonce", None, b"", now);
    assert_eq!(minted.status, 200);
    assert!(minted.header("replay-nonce").is_some());
    assert_unavailable(&server.handle("GET", "/crl", None, b"", now));
    let jws = client.jws(
        &format!("{BASE}/acme/new-account"),
        &early,
        payload.to_string().as_bytes(),
    );
    let response = server.handle(
        "POST",
        "/acme/new-account",
        Some("application/jose+json"),
        &jws,
        now,
    );
    assert_unavailable(&response);
    // The directory needs no database; it is served, without a nonce.
    let directory = server.handle("GET", "/acme/directory", None, b"", now);
    assert_eq!(directory.status, 200);

    store.down.store(false, Ordering::SeqCst);
    // Nothing was spent or changed while the store was away: the early nonce still works.
    let response = server.handle(
        "POST",
        "/acme/new-account",
        Some("application/jose+json"),
        &jws,
        now,
    );
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(response.header("replay-nonce").is_some());
    let mut client = client;
    client.kid = response.header("location").map(str::to_owned);
    let response = post(
        &server,
        &client,
        "/acme/new-order",
        Some(&json!({
        "identifiers": [{"type": "dns", "value": "tv-not-local.example"}]})),
        now,
    );
    assert_eq!(response.status, 400, "served again, refusing on its merits");
}
