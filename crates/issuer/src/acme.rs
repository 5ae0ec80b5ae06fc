//! The ACME server (RFC 8555) with External Account Binding, `device-attest-01` and STAR
//! (RFC 8739), as a function from (method, path, headers, body, now) to a response, so it is
//! tested without sockets; [`crate::serve`] puts it behind axum and rustls.
//!
//! Every refusal becomes an RFC 7807 problem document with its ACME error type and an audit
//! entry; a refused request changes nothing but the nonce it spent.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use localcert_proto::binding::OriginBinding;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ca::{self, IssuingCa};
use crate::error::{Error, ProblemType, Refusal};
use crate::jws::{self, Jwk, Jws, Signer};
use crate::leaf::{self, LeafSpec};
use crate::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, AuthzStatus, CertRecord,
    IssueOutcome, NewCert, Order, OrderStatus, RelyingPartyStatus, Star, Store,
};
use crate::validate::{self, ChallengeContext, Identifier, TrustConfig};

/// The challenge type we offer, the only one.
pub const DEVICE_ATTEST_01: &str = "device-attest-01";

/// The ACME profile of a plain order.
pub const PROFILE_DEFAULT: &str = "default";
/// The ACME profile that asks for STAR auto-renewal.
pub const PROFILE_STAR: &str = "star";

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
        }
    }
}

/// An HTTP response, before any transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// An RFC 7807 problem document.
    pub fn problem(refusal: &Refusal) -> Self {
        Self::problem_of(
            refusal.problem_type(),
            refusal.http_status(),
            &refusal.to_string(),
        )
    }

    fn problem_of(kind: ProblemType, status: u16, detail: &str) -> Self {
        let body = json!({"type": kind.urn(), "detail": detail, "status": status});
        Self {
            status,
            headers: vec![("content-type", "application/problem+json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// Formats a time as RFC 3339 (UTC), in whole seconds as stored and as in certificates.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_rfc3339(what: &'static str, s: &str) -> Result<SystemTime, Refusal> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| Refusal::Malformed(format!("{what} is not an RFC 3339 time")))
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccountPayload {
    #[serde(default)]
    only_return_existing: bool,
    #[serde(default)]
    external_account_binding: Option<Value>,
}

#[derive(Deserialize)]
struct IdentifierPayload {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrderPayload {
    identifiers: Vec<IdentifierPayload>,
    not_before: Option<Value>,
    not_after: Option<Value>,
    #[serde(rename = "auto-renewal")]
    auto_renewal: Option<AutoRenewalPayload>,
    /// An ACME profile (draft-aaron-acme-profiles): `star` asks for STAR with the server's
    /// default lifetime and duration, for clients that cannot send `auto-renewal`.
    profile: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct AutoRenewalPayload {
    start_date: Option<String>,
    end_date: String,
    lifetime: u64,
    lifetime_adjust: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChallengePayload {
    att_obj: Option<String>,
}

#[derive(Deserialize)]
struct StatusPayload {
    status: Option<String>,
}

#[derive(Deserialize)]
struct FinalizePayload {
    csr: String,
}

#[derive(Deserialize)]
struct RevokePayload {
    certificate: String,
    reason: Option<i64>,
}

fn parse_payload<T: for<'de> Deserialize<'de>>(jws: &Jws, what: &str) -> Result<T, Refusal> {
    serde_json::from_slice(&jws.payload)
        .map_err(|e| Refusal::Malformed(format!("{what} payload: {e}")))
}

/// The ACME server.
pub struct AcmeServer {
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
    /// A server whose URLs start with `base_url` (e.g. `https://localhost:8443`).
    pub fn new(
        store: Arc<dyn Store>,
        ca: IssuingCa,
        trust: TrustConfig,
        policy: Policy,
        base_url: &str,
    ) -> Self {
        Self {
            store,
            ca,
            trust,
            policy,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
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
        let mut origin = None;
        let outcome = self.route(method, path, content_type, body, now, &mut origin);
        let response = match outcome {
            Ok(response) => response,
            Err(Failure::Refused(refusal)) => {
                tracing::info!(path, %refusal, "refused");
                self.audit(now, "refused", origin.as_ref(), path, &refusal.to_string());
                Response::problem(&refusal)
            }
            Err(Failure::Internal(error)) => {
                tracing::error!(path, %error, "internal error");
                self.audit(now, "error", origin.as_ref(), path, &error.to_string());
                Response::problem_of(ProblemType::ServerInternal, 500, "internal error")
            }
        };
        self.finish(response, now)
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
        match self.new_nonce(now) {
            Ok(nonce) => response.with("replay-nonce", nonce),
            Err(error) => {
                tracing::error!(%error, "cannot store a nonce");
                response
            }
        }
    }

    fn new_nonce(&self, now: SystemTime) -> Result<String, Error> {
        let nonce = random_id(16)?;
        self.store
            .put_nonce(&nonce, now + self.policy.nonce_lifetime)?;
        Ok(nonce)
    }

    fn audit(
        &self,
        now: SystemTime,
        event: &str,
        origin: Option<&Origin>,
        subject: &str,
        detail: &str,
    ) {
        let entry = AuditEntry {
            at: now,
            event: event.into(),
            origin: origin.map(Origin::to_string),
            subject: subject.chars().take(200).collect(),
            detail: detail.into(),
        };
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
    ) -> Outcome {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["acme", "directory"]) => Ok(self.directory()),
            ("GET" | "HEAD", ["acme", "new-nonce"]) => Ok(Response {
                status: if method == "HEAD" { 200 } else { 204 },
                headers: Vec::new(),
                body: Vec::new(),
            }),
            ("GET", ["acme", "star", order_id]) => self.star_certificate(order_id, now),
            ("GET", ["crl"]) => self.crl(now),
            ("POST", ["acme", ..]) => {
                if content_type.map(|c| c.split(';').next().unwrap_or("").trim())
                    != Some("application/jose+json")
                {
                    return Err(Refusal::Malformed(
                        "Content-Type must be application/jose+json".into(),
                    )
                    .into());
                }
                let auth = self.authenticate(path, body, now)?;
                *origin = auth.account.as_ref().map(|a| a.origin.clone());
                match segments.as_slice() {
                    ["acme", "new-account"] => self.new_account(&auth, now, origin),
                    ["acme", "new-order"] => self.new_order(&auth, now),
                    ["acme", "revoke-cert"] => self.revoke_cert(&auth, now),
                    ["acme", "account", id] => self.account(&auth, id, now),
                    ["acme", "account", id, "orders"] => self.orders(&auth, id),
                    ["acme", "order", id] => self.order(&auth, id, now),
                    ["acme", "order", id, "finalize"] => self.finalize(&auth, id, now),
                    ["acme", "authz", id] => self.authz(&auth, id),
                    ["acme", "chall", id] => self.challenge(&auth, id, now),
                    ["acme", "cert", id] => self.certificate(&auth, id),
                    // POST-as-GET of the STAR URL (RFC 8739 §3.3): the same public content.
                    ["acme", "star", id] => self.star_certificate(id, now),
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
                "revokeCert": self.url("/acme/revoke-cert"),
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
        if !self.store.take_nonce(&jws.nonce, now)? {
            return Err(Refusal::BadNonce.into());
        }
        let is_new_account = path == "/acme/new-account";
        match &jws.signer {
            Signer::Jwk(key) if is_new_account => {
                jws.verify(key)?;
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

    fn account_url(&self, account: &Account) -> String {
        self.url(&format!("/acme/account/{}", account.id))
    }

    fn account_json(&self, account: &Account) -> Value {
        json!({
            "status": account.status.as_str(),
            "orders": self.url(&format!("/acme/account/{}/orders", account.id)),
        })
    }

    fn new_account(
        &self,
        auth: &Authenticated,
        now: SystemTime,
        origin: &mut Option<Origin>,
    ) -> Outcome {
        let payload: NewAccountPayload = parse_payload(&auth.jws, "newAccount")?;
        let Signer::Jwk(key) = &auth.jws.signer else {
            return Err(Refusal::Malformed("newAccount must use jwk".into()).into());
        };
        if let Some(existing) = &auth.account {
            if existing.status != AccountStatus::Valid {
                return Err(Refusal::AccountNotValid.into());
            }
            return Ok(Response::json(200, &self.account_json(existing))
                .with("location", self.account_url(existing)));
        }
        if payload.only_return_existing {
            return Err(Refusal::AccountDoesNotExist.into());
        }
        let eab = payload
            .external_account_binding
            .ok_or(Refusal::ExternalAccountRequired)?;
        let kid = jws::eab_kid(&eab)?;
        let rp = self
            .store
            .relying_party_by_kid(&kid)?
            .ok_or(Refusal::ExternalAccountBinding("unknown key id"))?;
        *origin = Some(rp.origin.clone());
        jws::verify_eab(&eab, &kid, &rp.eab_hmac_key, &auth.jws.url, key)?;
        if rp.status != RelyingPartyStatus::Active {
            return Err(Refusal::ExternalAccountBinding("relying party is revoked").into());
        }
        let account = Account {
            id: random_id(16)?,
            eab_kid: kid,
            origin: rp.origin.clone(),
            jwk: key.to_json(),
            thumbprint: key.thumbprint(),
            status: AccountStatus::Valid,
        };
        if let Err(error) = self.store.create_account(&account) {
            // A concurrent newAccount with the same key got there first: that account it is.
            return match self.store.account_by_thumbprint(&account.thumbprint)? {
                Some(existing) => Ok(Response::json(200, &self.account_json(&existing))
                    .with("location", self.account_url(&existing))),
                None => Err(error.into()),
            };
        }
        self.audit(
            now,
            "account-created",
            Some(&rp.origin),
            &account.id,
            "EAB verified",
        );
        Ok(Response::json(201, &self.account_json(&account))
            .with("location", self.account_url(&account)))
    }

    fn account(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        if account.id != id {
            return Err(Refusal::NotFound.into());
        }
        if !auth.jws.is_post_as_get() {
            let payload: StatusPayload = parse_payload(&auth.jws, "account")?;
            match payload.status.as_deref() {
                None => {}
                Some("deactivated") => {
                    self.store
                        .set_account_status(id, AccountStatus::Deactivated)?;
                    self.audit(
                        now,
                        "account-deactivated",
                        Some(&account.origin),
                        id,
                        "by its owner",
                    );
                    let mut account = account.clone();
                    account.status = AccountStatus::Deactivated;
                    return Ok(Response::json(200, &self.account_json(&account))
                        .with("location", self.account_url(&account)));
                }
                Some(_) => {
                    return Err(
                        Refusal::Malformed("an account can only be deactivated".into()).into(),
                    );
                }
            }
        }
        Ok(Response::json(200, &self.account_json(account))
            .with("location", self.account_url(account)))
    }

    fn orders(&self, auth: &Authenticated, id: &str) -> Outcome {
        let account = auth.account()?;
        if account.id != id {
            return Err(Refusal::NotFound.into());
        }
        let orders: Vec<String> = self
            .store
            .order_ids(id)?
            .iter()
            .map(|order_id| self.order_url(order_id))
            .collect();
        Ok(Response::json(200, &json!({ "orders": orders })))
    }

    fn new_order(&self, auth: &Authenticated, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let payload: NewOrderPayload = parse_payload(&auth.jws, "newOrder")?;
        if payload.not_before.is_some() || payload.not_after.is_some() {
            return Err(
                Refusal::Malformed("notBefore and notAfter are not supported".into()).into(),
            );
        }
        let identifiers: Vec<Identifier<'_>> = payload
            .identifiers
            .iter()
            .map(|i| Identifier {
                kind: &i.kind,
                value: &i.value,
            })
            .collect();
        let names = validate::check_identifiers(&identifiers, &account.origin)?;
        let auto_renewal = match (payload.auto_renewal, payload.profile.as_deref()) {
            (auto_renewal, None | Some(PROFILE_DEFAULT)) => auto_renewal,
            (None, Some(PROFILE_STAR)) => Some(AutoRenewalPayload {
                start_date: None,
                end_date: rfc3339(now + self.policy.star_profile_duration),
                lifetime: self.policy.star_profile_lifetime.as_secs(),
                lifetime_adjust: None,
            }),
            (Some(_), Some(PROFILE_STAR)) => {
                return Err(Refusal::Malformed(
                    "give either auto-renewal or the star profile, not both".into(),
                )
                .into());
            }
            (_, Some(_)) => return Err(Refusal::InvalidProfile.into()),
        };
        let star = auto_renewal
            .map(|ar| self.check_auto_renewal(&ar, now))
            .transpose()?;
        let order = Order {
            id: random_id(16)?,
            account_id: account.id.clone(),
            names: names.clone(),
            status: OrderStatus::Pending,
            expires: now + self.policy.order_lifetime,
            star,
            certificate_id: None,
        };
        let authorizations = names
            .into_iter()
            .map(|name| {
                Ok(Authorization {
                    id: random_id(16)?,
                    order_id: order.id.clone(),
                    name,
                    status: AuthzStatus::Pending,
                    // ≥ 32 random bytes (draft-ietf-acme-device-attest, RFC 8555 §8.1).
                    token: random_id(32)?,
                    expires: now + self.policy.challenge_lifetime,
                    attested: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.store.create_order(&order, &authorizations)?;
        let detail = format!(
            "{}{}",
            order
                .names
                .iter()
                .map(LocalName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            if order.star.is_some() { " (STAR)" } else { "" }
        );
        self.audit(
            now,
            "order-created",
            Some(&account.origin),
            &order.id,
            &detail,
        );
        Ok(
            Response::json(201, &self.order_json(&order, &authorizations, now)?)
                .with("location", self.order_url(&order.id)),
        )
    }

    fn check_auto_renewal(
        &self,
        ar: &AutoRenewalPayload,
        now: SystemTime,
    ) -> Result<Star, Refusal> {
        if let Some(start) = &ar.start_date {
            if parse_rfc3339("start-date", start)? > now {
                return Err(Refusal::AutoRenewal("a future start-date is not supported"));
            }
        }
        if ar.lifetime_adjust.is_some_and(|a| a > 0) {
            return Err(Refusal::AutoRenewal("lifetime-adjust is not supported"));
        }
        let end = parse_rfc3339("end-date", &ar.end_date)?;
        let lifetime = Duration::from_secs(ar.lifetime);
        if lifetime < self.policy.star_min_lifetime || lifetime > self.policy.star_max_lifetime {
            return Err(Refusal::AutoRenewal(
                "lifetime is outside the server's limits",
            ));
        }
        if end <= now + lifetime / 2 || end > now + self.policy.star_max_duration {
            return Err(Refusal::AutoRenewal(
                "end-date is outside the server's limits",
            ));
        }
        Ok(Star {
            end,
            lifetime,
            canceled: false,
        })
    }

    fn order_url(&self, id: &str) -> String {
        self.url(&format!("/acme/order/{id}"))
    }

    fn order_json(
        &self,
        order: &Order,
        authorizations: &[Authorization],
        now: SystemTime,
    ) -> Result<Value, Error> {
        let status = match order.star {
            Some(star) if star.canceled => "canceled",
            _ if is_expired(order, now) => OrderStatus::Invalid.as_str(),
            _ => order.status.as_str(),
        };
        let mut value = json!({
            "status": status,
            "expires": rfc3339(order.expires),
            "identifiers": order.names.iter()
                .map(|n| json!({"type": "dns", "value": n.as_str()}))
                .collect::<Vec<_>>(),
            "authorizations": authorizations.iter()
                .map(|a| self.url(&format!("/acme/authz/{}", a.id)))
                .collect::<Vec<_>>(),
            "finalize": self.url(&format!("/acme/order/{}/finalize", order.id)),
        });
        if let Some(cert_id) = &order.certificate_id {
            value["certificate"] = json!(self.url(&format!("/acme/cert/{cert_id}")));
        }
        if let (Some(_), Some(_)) = (&order.star, &order.certificate_id) {
            // RFC 8739 clients read `star-certificate`; plain ACME clients (instant-acme) read
            // `certificate`: both name the URL that always serves the current certificate.
            value["certificate"] = json!(self.star_url(&order.id));
        }
        if let Some(star) = order.star {
            value["auto-renewal"] = json!({
                "end-date": rfc3339(star.end),
                "lifetime": star.lifetime.as_secs(),
                "allow-certificate-get": true,
            });
            if order.certificate_id.is_some() {
                value["star-certificate"] = json!(self.star_url(&order.id));
            }
        }
        Ok(value)
    }

    /// The order, if it belongs to `account`.
    fn owned_order(&self, account: &Account, id: &str) -> Result<Order, Failure> {
        match self.store.order(id)? {
            Some(order) if order.account_id == account.id => Ok(order),
            _ => Err(Refusal::NotFound.into()),
        }
    }

    fn order(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let mut order = self.owned_order(account, id)?;
        if !auth.jws.is_post_as_get() {
            let payload: StatusPayload = parse_payload(&auth.jws, "order")?;
            match payload.status.as_deref() {
                None => {}
                Some("canceled") => {
                    self.store.cancel_order(id)?;
                    self.audit(
                        now,
                        "order-canceled",
                        Some(&account.origin),
                        id,
                        "by its account",
                    );
                    order = self.owned_order(account, id)?;
                }
                Some(_) => {
                    return Err(Refusal::Malformed("an order can only be canceled".into()).into());
                }
            }
        }
        let authorizations = self.store.authorizations(id)?;
        Ok(
            Response::json(200, &self.order_json(&order, &authorizations, now)?)
                .with("location", self.order_url(id)),
        )
    }

    /// The authorization and its order, if they belong to `account`.
    fn owned_authz(&self, account: &Account, id: &str) -> Result<(Authorization, Order), Failure> {
        let authz = self.store.authorization(id)?.ok_or(Refusal::NotFound)?;
        let order = self.owned_order(account, &authz.order_id)?;
        Ok((authz, order))
    }

    fn challenge_json(&self, authz: &Authorization) -> Value {
        let mut value = json!({
            "type": DEVICE_ATTEST_01,
            "url": self.url(&format!("/acme/chall/{}", authz.id)),
            "token": authz.token,
            "status": match authz.status {
                AuthzStatus::Pending => "pending",
                AuthzStatus::Valid => "valid",
                AuthzStatus::Deactivated => "invalid",
            },
        });
        if let Some(attested) = &authz.attested {
            value["validated"] = json!(rfc3339(attested.at));
        }
        value
    }

    fn authz(&self, auth: &Authenticated, id: &str) -> Outcome {
        let (authz, _) = self.owned_authz(auth.account()?, id)?;
        Ok(Response::json(
            200,
            &json!({
                "identifier": {"type": "dns", "value": authz.name.as_str()},
                "status": authz.status.as_str(),
                "expires": rfc3339(authz.expires),
                "challenges": [self.challenge_json(&authz)],
            }),
        ))
    }

    fn challenge(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let (authz, order) = self.owned_authz(account, id)?;
        if auth.jws.is_post_as_get() {
            return Ok(Response::json(200, &self.challenge_json(&authz)));
        }
        let payload: ChallengePayload = parse_payload(&auth.jws, "challenge")?;
        if is_expired(&order, now) {
            return Err(Refusal::OrderExpired.into());
        }
        let att_obj = payload.att_obj.ok_or(Refusal::Malformed(
            "device-attest-01 response needs attObj".into(),
        ))?;
        let att_obj = jws::b64_decode("attObj", &att_obj)?;
        let key_authorization = format!("{}.{}", authz.token, account.thumbprint);
        let ctx = ChallengeContext {
            origin: &account.origin,
            key_authorization: &key_authorization,
            names: &order.names,
            expires: authz.expires,
            already_answered: authz.status != AuthzStatus::Pending,
        };
        let device = validate::check_attestation(&att_obj, &ctx, &self.trust, now)?;
        let attested = Attested {
            spki: device.spki,
            user_handle: device.user_handle,
            device_certificate_sha256: device.device_certificate_sha256,
            at: now,
        };
        if !self.store.record_attestation(id, &attested)? {
            return Err(Refusal::ChallengeUsed.into());
        }
        self.audit(
            now,
            "attested",
            Some(&account.origin),
            &order.id,
            &format!(
                "{} by device certificate {}",
                authz.name, attested.device_certificate_sha256
            ),
        );
        let authz = self.store.authorization(id)?.ok_or(Refusal::NotFound)?;
        Ok(Response::json(200, &self.challenge_json(&authz)).with(
            "link",
            format!("<{}>;rel=\"up\"", self.url(&format!("/acme/authz/{id}"))),
        ))
    }

    /// The attested key and user handle of an order whose authorizations are all valid and
    /// agree on them.
    fn attested_key(&self, order_id: &str) -> Result<Attested, Failure> {
        let authorizations = self.store.authorizations(order_id)?;
        let mut attested: Option<Attested> = None;
        for authz in &authorizations {
            let this = authz
                .attested
                .as_ref()
                .filter(|_| authz.status == AuthzStatus::Valid)
                .ok_or(Refusal::OrderNotReady("pending"))?;
            match &attested {
                Some(first) if first.spki != this.spki || first.user_handle != this.user_handle => {
                    return Err(Refusal::AttestedKey.into());
                }
                Some(_) => {}
                None => attested = Some(this.clone()),
            }
        }
        attested.ok_or(Refusal::OrderNotReady("pending").into())
    }

    fn sign_leaf(
        &self,
        order: &Order,
        origin: &Origin,
        attested: &Attested,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<NewCert, Error> {
        let serial = ca::random_serial_bytes()?;
        let binding = OriginBinding::new(origin.clone(), &attested.user_handle);
        let not_before = now.checked_sub(ca::BACKDATE).unwrap_or(now);
        let not_after = now + lifetime;
        let der = leaf::issue_leaf(
            &self.ca,
            &LeafSpec {
                names: &order.names,
                spki_der: &attested.spki,
                binding: &binding,
                not_before,
                not_after,
                serial: &serial,
            },
        )?;
        Ok(NewCert {
            serial: hex::encode(serial),
            chain_pem: leaf::chain_pem(&der, &self.ca),
            not_before,
            not_after,
        })
    }

    fn lifetime(&self, order: &Order, now: SystemTime) -> Duration {
        match order.star {
            Some(star) => star
                .lifetime
                .min(star.end.duration_since(now).unwrap_or(Duration::ZERO)),
            None => self.policy.leaf_lifetime,
        }
    }

    fn finalize(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let order = self.owned_order(account, id)?;
        let payload: FinalizePayload = parse_payload(&auth.jws, "finalize")?;
        if is_expired(&order, now) {
            return Err(Refusal::OrderNotReady(OrderStatus::Invalid.as_str()).into());
        }
        if order.status != OrderStatus::Ready {
            return Err(Refusal::OrderNotReady(order.status.as_str()).into());
        }
        let attested = self.attested_key(id)?;
        let csr = jws::b64_decode("csr", &payload.csr)?;
        validate::check_csr(&csr, &order.names, &attested.spki)?;
        let lifetime = self.lifetime(&order, now);
        let cert_id = random_id(16)?;
        let outcome = self
            .store
            .issue(id, OrderStatus::Ready, None, &cert_id, now, &mut || {
                self.sign_leaf(&order, &account.origin, &attested, now, lifetime)
            })?;
        match outcome {
            IssueOutcome::NotReady(status) => {
                return Err(Refusal::OrderNotReady(status.as_str()).into());
            }
            IssueOutcome::Issued(cert) => {
                tracing::info!(order = id, serial = cert.serial, origin = %account.origin, "issued");
            }
        }
        let order = self.owned_order(account, id)?;
        let authorizations = self.store.authorizations(id)?;
        Ok(
            Response::json(200, &self.order_json(&order, &authorizations, now)?)
                .with("location", self.order_url(id)),
        )
    }

    fn certificate(&self, auth: &Authenticated, id: &str) -> Outcome {
        let account = auth.account()?;
        let cert = self.store.certificate(id)?.ok_or(Refusal::NotFound)?;
        self.owned_order(account, &cert.order_id)?;
        Ok(pem_chain(&cert))
    }

    fn star_certificate(&self, order_id: &str, now: SystemTime) -> Outcome {
        let order = self.store.order(order_id)?.ok_or(Refusal::NotFound)?;
        let star = order.star.ok_or(Refusal::NotFound)?;
        if star.canceled {
            return Err(Refusal::AutoRenewalCanceled.into());
        }
        let cert_id = order.certificate_id.ok_or(Refusal::NotFound)?;
        let cert = self.store.certificate(&cert_id)?.ok_or(Refusal::NotFound)?;
        if now >= star.end && now >= cert.not_after {
            return Err(Refusal::AutoRenewalExpired.into());
        }
        Ok(pem_chain(&cert)
            .with("cert-not-before", rfc3339(cert.not_before))
            .with("cert-not-after", rfc3339(cert.not_after)))
    }

    fn revoke_cert(&self, auth: &Authenticated, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let payload: RevokePayload = parse_payload(&auth.jws, "revokeCert")?;
        let reason = payload.reason.unwrap_or(0);
        // RFC 5280 reasons a subscriber may give (not CA compromise, hold or removeFromCRL).
        let reason = match reason {
            0 | 1 | 3 | 4 | 5 | 9 => reason as u8,
            other => return Err(Refusal::BadRevocationReason(other).into()),
        };
        let der = jws::b64_decode("certificate", &payload.certificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| Refusal::Malformed("certificate does not parse".into()))?;
        let serial = hex::encode(parsed.raw_serial());
        let record = self
            .store
            .certificate_by_serial(&serial)?
            .ok_or(Refusal::NotFound)?;
        self.owned_order(account, &record.order_id)?;
        let issued_der = ca::pem_blocks(record.chain_pem.as_bytes(), "CERTIFICATE")?;
        if issued_der.first() != Some(&der) {
            return Err(Refusal::NotFound.into());
        }
        if !self.store.revoke_certificate(&record.id, reason, now)? {
            return Err(Refusal::AlreadyRevoked.into());
        }
        self.audit(
            now,
            "revoked",
            Some(&account.origin),
            &serial,
            &format!("reason {reason}"),
        );
        Ok(Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    fn crl(&self, now: SystemTime) -> Outcome {
        let revoked = self
            .store
            .revoked_unexpired(now)?
            .into_iter()
            .filter_map(|c| {
                let serial = hex::decode(&c.serial).ok()?;
                let (at, reason) = c.revoked?;
                Some((serial, at, reason))
            })
            .collect::<Vec<_>>();
        let der = self.ca.crl(&revoked, now, now + self.policy.crl_lifetime)?;
        Ok(Response {
            status: 200,
            headers: vec![("content-type", "application/pkix-crl".into())],
            body: der,
        })
    }

    /// Issues the next certificate of every STAR order due at `now` (half of the current
    /// certificate's lifetime gone). Returns how many were issued.
    pub fn renew_due(&self, now: SystemTime) -> Result<usize, Error> {
        self.renew_due_ahead(now, Duration::ZERO)
    }

    /// Like [`Self::renew_due`], but also renews what falls due within `lead`: a loop that
    /// checks every `lead` thereby publishes each next certificate by half of the current
    /// one's lifetime, never after it.
    pub fn renew_due_ahead(&self, now: SystemTime, lead: Duration) -> Result<usize, Error> {
        let mut renewed = 0;
        for order in self.store.star_orders_due(now + lead)? {
            let Some(current) = order.certificate_id.clone() else {
                continue;
            };
            let Some(account) = self.store.account(&order.account_id)? else {
                continue;
            };
            let attested = match self.attested_key(&order.id) {
                Ok(attested) => attested,
                Err(_) => continue,
            };
            let lifetime = self.lifetime(&order, now);
            if lifetime.is_zero() {
                continue;
            }
            let cert_id = random_id(16)?;
            let outcome = self.store.issue(
                &order.id,
                OrderStatus::Valid,
                Some(&current),
                &cert_id,
                now,
                &mut || self.sign_leaf(&order, &account.origin, &attested, now, lifetime),
            )?;
            if let IssueOutcome::Issued(cert) = outcome {
                tracing::info!(
                    order = order.id,
                    serial = cert.serial,
                    "STAR certificate renewed"
                );
                renewed += 1;
            }
        }
        Ok(renewed)
    }
}

/// A pending or ready order past its expiry is invalid (RFC 8555 §7.1.6).
fn is_expired(order: &Order, now: SystemTime) -> bool {
    matches!(order.status, OrderStatus::Pending | OrderStatus::Ready) && now >= order.expires
}

fn pem_chain(cert: &CertRecord) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type", "application/pem-certificate-chain".into())],
        body: cert.chain_pem.clone().into_bytes(),
    }
}
