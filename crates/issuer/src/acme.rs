//! The ACME server (RFC 8555) with External Account Binding, `device-attest-01` and STAR
//! (RFC 8739), as a function from (method, path, headers, body, now) to a response, so it is
//! tested without sockets; [`crate::serve`] puts it behind axum and rustls.
//!
//! Every refusal becomes an RFC 7807 problem document with its ACME error type and an audit
//! entry; a refused request changes nothing but the nonce it spent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use localcert_proto::origin::Origin;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::ca::IssuingCa;
use crate::error::{Error, ProblemType, Refusal};
use crate::jws::{self, Jwk, Jws, Signer};
use crate::nonce::NonceKey;
use crate::store::{Account, AccountStatus, AuditEntry, Change, Changed, Store};
use crate::untrusted::bounded;
use crate::validate::TrustConfig;

mod account;
mod certificate;
mod challenge;
mod finalize;
mod order;
mod revocation;
mod wire;

pub use wire::{Response, rfc3339};

/// The challenge type we offer, the only one.
pub const DEVICE_ATTEST_01: &str = "device-attest-01";

/// The ACME profile of a plain order.
pub const PROFILE_DEFAULT: &str = "default";
/// The ACME profile that asks for STAR auto-renewal.
pub const PROFILE_STAR: &str = "star";
/// `Retry-After` of the 503 sent while the store is unavailable (a database restarting).
pub const RETRY_AFTER_SECS: u64 = 2;
/// Audit entries deleted per transaction by [`AcmeServer::prune_audit`].
pub const AUDIT_PRUNE_BATCH: usize = 10_000;

/// What the operator decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Lifetime of a certificate from a plain order.
    pub leaf_lifetime: Duration,
    /// How long a challenge can be answered.
    pub challenge_lifetime: Duration,
    /// How long a pending order lives.
    pub order_lifetime: Duration,
    /// How long a nonce stays usable.
    pub nonce_lifetime: Duration,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Shortest STAR certificate lifetime a client may ask for.
    pub star_min_lifetime: Duration,
    /// Longest STAR certificate lifetime a client may ask for.
    pub star_max_lifetime: Duration,
    /// Longest STAR delegation (end-date minus now).
    pub star_max_duration: Duration,
    /// STAR certificate lifetime for orders with the `star` profile.
    pub star_profile_lifetime: Duration,
    /// STAR delegation duration for orders with the `star` profile.
    pub star_profile_duration: Duration,
    /// How long a CRL is valid.
    pub crl_lifetime: Duration,
    /// How long audit entries are kept ([`AcmeServer::prune_audit`] deletes older ones).
    pub audit_retention: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            leaf_lifetime: Duration::from_secs(7 * DAY),
            challenge_lifetime: Duration::from_secs(600),
            order_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(3600),
            max_body_bytes: 64 * 1024,
            star_min_lifetime: Duration::from_secs(3600),
            star_max_lifetime: Duration::from_secs(7 * DAY),
            star_max_duration: Duration::from_secs(365 * DAY),
            star_profile_lifetime: Duration::from_secs(DAY),
            star_profile_duration: Duration::from_secs(90 * DAY),
            crl_lifetime: Duration::from_secs(DAY),
            audit_retention: Duration::from_secs(365 * DAY),
        }
    }
}

fn random_id(len: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Certificate("random number generator failed".into()))?;
    Ok(jws::b64(&bytes))
}

/// A refusal or an internal failure, on its way to becoming a response.
#[derive(Debug)]
enum Failure {
    Refused(Refusal),
    Internal(Error),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Refused(r) => Self::Refused(r),
            other => Self::Internal(other),
        }
    }
}

type Outcome = Result<Response, Failure>;

/// A request as the transport hands it to [`AcmeServer::handle_async`].
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    /// The method.
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The Content-Type header, if any.
    pub content_type: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
    /// When it arrived.
    pub now: SystemTime,
}

/// What a request comes to: an answer now, or a change to commit first and how to answer
/// once it is durable (see [`Store::submit`]).
enum Step {
    Answer(Response),
    Commit(Box<Change>, Then),
}

/// How to answer once a change is durable (or failed).
type Then = Box<dyn FnOnce(&AcmeServer, Result<Changed, Error>) -> Outcome + Send>;

fn answer(outcome: Outcome) -> Result<Step, Failure> {
    outcome.map(Step::Answer)
}

/// An authenticated request: the verified JWS and, unless it is newAccount, its account.
struct Authenticated {
    jws: Jws,
    account: Option<Account>,
}

impl Authenticated {
    fn account(&self) -> Result<&Account, Failure> {
        self.account
            .as_ref()
            .ok_or(Failure::Refused(Refusal::AccountDoesNotExist))
    }
}

/// Work the server has done since it started (for monitoring and the benchmark's crypto
/// bound): requests handled, signatures verified (JWS, attestation chains and signatures,
/// CSRs) and certificates signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests handled.
    pub requests: u64,
    /// Signatures verified.
    pub signatures_verified: u64,
    /// Certificates signed.
    pub certificates_signed: u64,
}

#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    signatures_verified: AtomicU64,
    certificates_signed: AtomicU64,
}

impl Tally {
    fn verified(&self, n: u64) {
        self.signatures_verified.fetch_add(n, Ordering::Relaxed);
    }
}

/// The ACME server.
pub struct AcmeServer {
    tally: Tally,
    nonces: Option<NonceKey>,
    store: Arc<dyn Store>,
    ca: IssuingCa,
    trust: TrustConfig,
    policy: Policy,
    base_url: String,
}

impl std::fmt::Debug for AcmeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AcmeServer {
    /// A server whose URLs start with `base_url` (e.g. `https://localhost:8443`), minting
    /// nonces with a random key of its own (see [`Self::with_nonce_key`] for replicas).
    pub fn new(
        store: Arc<dyn Store>,
        ca: IssuingCa,
        trust: TrustConfig,
        policy: Policy,
        base_url: &str,
    ) -> Self {
        Self {
            tally: Tally::default(),
            // Only a failing system RNG leaves no key; then no nonce is minted or accepted.
            nonces: NonceKey::random().ok(),
            store,
            ca,
            trust,
            policy,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Mints and accepts nonces with `key`: replicas sharing it accept each other's nonces.
    pub fn with_nonce_key(mut self, key: NonceKey) -> Self {
        self.nonces = Some(key);
        self
    }

    fn star_url(&self, order_id: &str) -> String {
        self.url(&format!("/acme/star/{order_id}"))
    }

    /// The directory URL.
    pub fn directory_url(&self) -> String {
        self.url("/acme/directory")
    }

    /// The root's SHA-256 fingerprint.
    pub fn root_fingerprint(&self) -> String {
        self.ca.root_fingerprint()
    }

    /// What the server has done since it started.
    pub fn counters(&self) -> Counters {
        Counters {
            requests: self.tally.requests.load(Ordering::Relaxed),
            signatures_verified: self.tally.signatures_verified.load(Ordering::Relaxed),
            certificates_signed: self.tally.certificates_signed.load(Ordering::Relaxed),
        }
    }

    /// Whether [`Self::handle`] may run this request on an async worker thread: the store
    /// hands the worker off before it waits ([`Store::callable_from_async_workers`]), and the
    /// request is one that only reads (see [`Self::changes_state`]). A change is better run on
    /// a blocking thread: it waits for a group commit, and handing the worker off for that wait
    /// cost more than the hop (measured with the bench's `inline` lever).
    pub fn handles_on_async_workers(&self, method: &str, path: &str) -> bool {
        self.store.callable_from_async_workers() && !Self::changes_state(method, path)
    }

    /// Whether [`Self::handle_async`] should handle this request: the store takes a change
    /// whole without waiting ([`Store::submits_without_waiting`]), and the request is one of
    /// the changes every issuance makes (newOrder, a challenge answer, finalize), which are
    /// then computed on the async worker and await their commit there, holding no thread.
    pub fn submits_on_async_workers(&self, method: &str, path: &str) -> bool {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.store.submits_without_waiting()
            && method == "POST"
            && matches!(
                segments.as_slice(),
                ["acme", "new-order"] | ["acme", "chall", _] | ["acme", "order", _, "finalize"]
            )
    }

    /// Whether a request of this method and path changes state: newAccount, keyChange,
    /// newOrder, revokeCert, an account update, finalize, a challenge answer. The others only
    /// read, but for the audit entry of a refusal and an order cancel.
    pub fn changes_state(method: &str, path: &str) -> bool {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        method == "POST"
            && matches!(
                segments.as_slice(),
                [
                    "acme",
                    "new-account" | "key-change" | "new-order" | "revoke-cert"
                ] | ["acme", "account" | "chall", _]
                    | ["acme", "order", _, "finalize"]
            )
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Handles one request. `content_type` is the request's Content-Type header, if any.
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Response {
        let request = Incoming {
            method,
            path,
            content_type,
            body,
            now,
        };
        let (step, origin) = self.start(&request);
        let outcome = step.and_then(|step| match step {
            Step::Answer(response) => Ok(response),
            Step::Commit(change, then) => then(self, self.store.apply(*change)),
        });
        self.conclude(outcome, path, origin.as_ref(), now)
    }

    /// [`Self::handle`] for an async worker: a change is submitted to the store
    /// ([`Store::submit`]) and its commit awaited, holding no thread. For the requests of
    /// [`Self::submits_on_async_workers`] (and reads, see [`Self::handles_on_async_workers`]).
    pub async fn handle_async(&self, request: Incoming<'_>) -> Response {
        let (step, origin) = self.start(&request);
        let (change, then) = match step {
            Ok(Step::Commit(change, then)) => (change, then),
            Ok(Step::Answer(response)) => {
                return self.conclude(Ok(response), request.path, origin.as_ref(), request.now);
            }
            Err(failure) => {
                return self.conclude(Err(failure), request.path, origin.as_ref(), request.now);
            }
        };
        let (done, committed) = tokio::sync::oneshot::channel();
        self.store.submit(
            *change,
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        );
        let result = committed
            .await
            .unwrap_or_else(|_| Err(Error::Store("the store dropped a change unanswered".into())));
        let outcome = then(self, result);
        self.conclude(outcome, request.path, origin.as_ref(), request.now)
    }

    /// Counts the request and routes it; also the origin of its account, once known.
    fn start(&self, request: &Incoming<'_>) -> (Result<Step, Failure>, Option<Origin>) {
        self.tally.requests.fetch_add(1, Ordering::Relaxed);
        let mut origin = None;
        let step = self.route(
            request.method,
            request.path,
            request.content_type,
            request.body,
            request.now,
            &mut origin,
        );
        (step, origin)
    }

    /// The response to an outcome: a refusal or failure becomes a problem document, logged
    /// and audited.
    fn conclude(
        &self,
        outcome: Outcome,
        path: &str,
        origin: Option<&Origin>,
        now: SystemTime,
    ) -> Response {
        let response = match outcome {
            Ok(response) => response,
            Err(Failure::Refused(refusal)) => {
                let detail = bounded(&refusal.to_string());
                if matches!(refusal, Refusal::IssuerNotValid { .. }) {
                    // The operator's to fix, not the client's.
                    tracing::error!(path = %bounded(path), %detail, "cannot issue");
                } else {
                    tracing::info!(path = %bounded(path), %detail, "refused");
                }
                self.audit(now, "refused", origin, path, &detail);
                Response::problem(&refusal)
            }
            Err(Failure::Internal(Error::StoreUnavailable(detail))) => {
                // Nothing was changed; the client should come back (RFC 8555 §6.6, RFC 9110
                // §10.2.3). No audit entry: the audit log is in the same database.
                tracing::warn!(path = %bounded(path), detail = %bounded(&detail), "store unavailable");
                Response::problem_of(ProblemType::ServerInternal, 503, "store unavailable")
                    .with("retry-after", RETRY_AFTER_SECS.to_string())
            }
            Err(Failure::Internal(error)) => {
                let detail = bounded(&error.to_string());
                tracing::error!(path = %bounded(path), %detail, "internal error");
                self.audit(now, "error", origin, path, &detail);
                Response::problem_of(ProblemType::ServerInternal, 500, "internal error")
            }
        };
        self.finish(response, now)
    }

    /// Deletes the audit entries older than the policy's retention, [`AUDIT_PRUNE_BATCH`] per
    /// transaction, and records how many in the audit log. Returns how many.
    pub fn prune_audit(&self, now: SystemTime) -> Result<usize, Error> {
        let before = now
            .checked_sub(self.policy.audit_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut pruned = 0;
        loop {
            let batch = self.store.prune_audit(before, AUDIT_PRUNE_BATCH)?;
            pruned += batch;
            if batch < AUDIT_PRUNE_BATCH {
                break;
            }
        }
        if pruned > 0 {
            let days = self.policy.audit_retention.as_secs() / 86_400;
            let detail = format!("{pruned} entries older than {days} days deleted");
            self.store
                .audit(&Self::entry(now, "audit-pruned", None, "audit", &detail))?;
        }
        Ok(pruned)
    }

    /// A problem response for a body over the limit (the transport detects it).
    pub fn too_large(&self, path: &str, now: SystemTime) -> Response {
        let refusal = Refusal::TooLarge(self.policy.max_body_bytes);
        self.audit(now, "refused", None, path, &refusal.to_string());
        self.finish(Response::problem(&refusal), now)
    }

    /// Adds a fresh nonce and the directory link to every response.
    fn finish(&self, response: Response, now: SystemTime) -> Response {
        let response = response.with("link", format!("<{}>;rel=\"index\"", self.directory_url()));
        let response = response.with("cache-control", "no-store".into());
        if response.header("replay-nonce").is_some() {
            return response;
        }
        match self.new_nonce(now) {
            Ok(nonce) => response.with("replay-nonce", nonce),
            Err(error) => {
                tracing::error!(%error, "cannot mint a nonce");
                response
            }
        }
    }

    fn new_nonce(&self, now: SystemTime) -> Result<String, Error> {
        self.nonces
            .as_ref()
            .ok_or_else(|| Error::Store("no nonce key".into()))?
            .mint(now + self.policy.nonce_lifetime)
    }

    /// An audit line, for the store to write with the change it records. The subject and
    /// detail may quote the request: both are [`bounded`].
    fn entry(
        now: SystemTime,
        event: &str,
        origin: Option<&Origin>,
        subject: &str,
        detail: &str,
    ) -> AuditEntry {
        AuditEntry {
            at: now,
            event: event.into(),
            origin: origin.map(Origin::to_string),
            subject: bounded(subject),
            detail: bounded(detail),
        }
    }

    /// Audits a decision that changed nothing (a refusal, an error).
    fn audit(
        &self,
        now: SystemTime,
        event: &str,
        origin: Option<&Origin>,
        subject: &str,
        detail: &str,
    ) {
        let entry = Self::entry(now, event, origin, subject, detail);
        if let Err(error) = self.store.audit(&entry) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }

    fn route(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        now: SystemTime,
        origin: &mut Option<Origin>,
    ) -> Result<Step, Failure> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["acme", "directory"]) => Ok(Step::Answer(self.directory())),
            // The one response whose point is its nonce: if none can be minted, it is an
            // error, never a success without one.
            ("GET" | "HEAD", ["acme", "new-nonce"]) => Ok(Step::Answer(Response {
                status: if method == "HEAD" { 200 } else { 204 },
                headers: vec![("replay-nonce", self.new_nonce(now)?)],
                body: Vec::new(),
            })),
            ("GET", ["acme", "star", order_id]) => answer(self.star_certificate(order_id, now)),
            ("GET", ["acme", "renewal-info", cert_id]) => answer(self.renewal_info(cert_id, now)),
            ("GET", ["crl"]) => answer(self.crl(now)),
            ("POST", ["acme", ..]) => {
                if content_type.map(|c| c.split(';').next().unwrap_or("").trim())
                    != Some("application/jose+json")
                {
                    return Err(Refusal::UnsupportedMediaType.into());
                }
                let auth = self.authenticate(path, body, now)?;
                *origin = auth.account.as_ref().map(|a| a.origin.clone());
                match segments.as_slice() {
                    ["acme", "new-account"] => answer(self.new_account(&auth, now, origin)),
                    ["acme", "key-change"] => answer(self.key_change(&auth, now)),
                    ["acme", "new-order"] => self.new_order(&auth, now),
                    ["acme", "revoke-cert"] => answer(self.revoke_cert(&auth, now)),
                    ["acme", "account", id] => answer(self.account(&auth, id, now)),
                    ["acme", "account", id, "orders"] => answer(self.orders(&auth, id)),
                    ["acme", "order", id] => answer(self.order(&auth, id, now)),
                    ["acme", "order", id, "finalize"] => self.finalize(&auth, id, now),
                    ["acme", "authz", id] => answer(self.authz(&auth, id, now)),
                    ["acme", "chall", id] => self.challenge(&auth, id, now),
                    ["acme", "cert", id] => answer(self.certificate(&auth, id)),
                    // POST-as-GET of the STAR URL (RFC 8739 §3.3): the same public content.
                    ["acme", "star", id] => answer(self.star_certificate(id, now)),
                    _ => Err(Refusal::NotFound.into()),
                }
            }
            _ => Err(Refusal::NotFound.into()),
        }
    }

    fn directory(&self) -> Response {
        let star_lifetime = |d: Duration| d.as_secs();
        Response::json(
            200,
            &json!({
                "newNonce": self.url("/acme/new-nonce"),
                "newAccount": self.url("/acme/new-account"),
                "newOrder": self.url("/acme/new-order"),
                "keyChange": self.url("/acme/key-change"),
                "revokeCert": self.url("/acme/revoke-cert"),
                "renewalInfo": self.url("/acme/renewal-info"),
                "meta": {
                    "externalAccountRequired": true,
                    "profiles": {
                        PROFILE_DEFAULT: "a certificate with the server's leaf lifetime",
                        PROFILE_STAR: "short-term, automatically renewed certificates (RFC 8739) with the server's default lifetime and duration",
                    },
                    "auto-renewal": {
                        "min-lifetime": star_lifetime(self.policy.star_min_lifetime),
                        "max-duration": star_lifetime(self.policy.star_max_duration),
                        "allow-certificate-get": true,
                    },
                },
            }),
        )
    }

    /// Parses the JWS, checks its URL and nonce, finds the account and verifies the signature.
    fn authenticate(
        &self,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Authenticated, Failure> {
        let jws = Jws::parse(body)?;
        if jws.url != self.url(path) {
            return Err(Refusal::UrlMismatch.into());
        }
        let nonce = self
            .nonces
            .as_ref()
            .and_then(|key| key.check(&jws.nonce, now))
            .ok_or(Refusal::BadNonce)?;
        if !self.store.consume_nonce(&nonce, now)? {
            return Err(Refusal::BadNonce.into());
        }
        let is_new_account = path == "/acme/new-account";
        match &jws.signer {
            Signer::Jwk(key) if is_new_account => {
                jws.verify(key)?;
                self.tally.verified(1);
                let account = self.store.account_by_thumbprint(&key.thumbprint())?;
                Ok(Authenticated { jws, account })
            }
            Signer::Jwk(_) => {
                Err(Refusal::Malformed("this request must use kid, not jwk".into()).into())
            }
            Signer::Kid(_) if is_new_account => {
                Err(Refusal::Malformed("newAccount must use jwk, not kid".into()).into())
            }
            Signer::Kid(kid) => {
                let id = kid
                    .strip_prefix(&self.url("/acme/account/"))
                    .ok_or(Refusal::AccountDoesNotExist)?;
                let account = self
                    .store
                    .account(id)?
                    .ok_or(Refusal::AccountDoesNotExist)?;
                let key = serde_json::from_str::<Value>(&account.jwk)
                    .map_err(|e| Error::Store(format!("stored JWK: {e}")))?;
                jws.verify(&Jwk::from_value(&key)?)?;
                self.tally.verified(1);
                if account.status != AccountStatus::Valid {
                    return Err(Refusal::AccountNotValid.into());
                }
                Ok(Authenticated {
                    jws,
                    account: Some(account),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AcmeServer;

    #[test]
    fn changes_are_told_from_reads_by_method_and_path() {
        for (method, path) in [
            ("POST", "/acme/new-account"),
            ("POST", "/acme/key-change"),
            ("POST", "/acme/new-order"),
            ("POST", "/acme/revoke-cert"),
            ("POST", "/acme/account/a1"),
            ("POST", "/acme/chall/c1"),
            ("POST", "/acme/order/o1/finalize"),
        ] {
            assert!(AcmeServer::changes_state(method, path), "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/acme/directory"),
            ("HEAD", "/acme/new-nonce"),
            ("GET", "/crl"),
            ("GET", "/acme/star/o1"),
            ("POST", "/acme/order/o1"),
            ("POST", "/acme/authz/z1"),
            ("POST", "/acme/cert/c1"),
            ("POST", "/acme/account/a1/orders"),
            ("GET", "/acme/new-order"),
            ("POST", "/acme/new-order/x"),
        ] {
            assert!(!AcmeServer::changes_state(method, path), "{method} {path}");
        }
    }
}
