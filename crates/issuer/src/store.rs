//! Issuer state behind one trait: relying parties, ACME accounts, nonces, orders with their
//! authorizations, certificates and the audit log. [`SqliteStore`] is the embedded default;
//! [`PgStore`] puts the same contract on PostgreSQL for several stateless replicas. The trait is
//! synchronous and transaction-shaped; `tests/store.rs` runs one contract suite on both.
//!
//! Issuance is one transaction: the order moves from `ready` to `valid` conditionally and the
//! leaf, signed just before, is recorded with it. The certificate is handed out only after the
//! commit: if the process dies before, nothing was recorded and nothing was handed out. Two
//! concurrent finalizes cannot both pass the conditional update (the loser's signature is
//! thrown away).

use std::time::{Duration, SystemTime};

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use crate::error::Error;
use crate::nonce::NonceId;

mod postgres;
mod postgres_conn;
mod postgres_rows;
mod postgres_tls;
mod sqlite;
mod sqlite_ops;
mod sqlite_rows;
mod staged;

pub use postgres_conn::{POOL_TIMEOUT, PgOptions, PgStore};
pub use sqlite::{SqliteStore, SqliteTuning};
pub use staged::{Change, Changed, Done};

/// Seconds since the Unix epoch, as stored.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time `secs` seconds after the Unix epoch (the epoch itself for negative values).
pub fn from_unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// The RFC 8555 spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// The status with this RFC 8555 spelling, if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

status_enum!(
    /// A relying party's registration.
    RelyingPartyStatus {
        /// Registered; its EAB key may create accounts.
        Active = "active",
        /// Revoked by the operator.
        Revoked = "revoked",
    }
);

status_enum!(
    /// An ACME account's status.
    AccountStatus {
        /// Usable.
        Valid = "valid",
        /// Deactivated by its owner.
        Deactivated = "deactivated",
        /// Revoked by the operator.
        Revoked = "revoked",
    }
);

status_enum!(
    /// An ACME order's status.
    OrderStatus {
        /// Waiting for its authorizations.
        Pending = "pending",
        /// Authorized; waiting for finalize.
        Ready = "ready",
        /// Certificate issued.
        Valid = "valid",
        /// Failed or canceled.
        Invalid = "invalid",
    }
);

status_enum!(
    /// An authorization's (and its single challenge's) status.
    AuthzStatus {
        /// Waiting for the device-attest-01 response.
        Pending = "pending",
        /// Attested.
        Valid = "valid",
        /// Deactivated or revoked.
        Deactivated = "deactivated",
    }
);

/// A registered web origin and its External Account Binding key.
#[derive(Clone, PartialEq, Eq)]
pub struct RelyingParty {
    /// The origin.
    pub origin: Origin,
    /// EAB key identifier.
    pub eab_kid: String,
    /// EAB HMAC key.
    pub eab_hmac_key: Vec<u8>,
    /// Status.
    pub status: RelyingPartyStatus,
    /// When it was registered.
    pub created: SystemTime,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The HMAC key is a secret: never in logs.
        f.debug_struct("RelyingParty")
            .field("origin", &self.origin)
            .field("eab_kid", &self.eab_kid)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An ACME account, bound to one relying party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Identifier (the last segment of the account URL).
    pub id: String,
    /// The relying party's EAB key id.
    pub eab_kid: String,
    /// The relying party's origin.
    pub origin: Origin,
    /// The account key as a JWK (JSON).
    pub jwk: String,
    /// RFC 7638 thumbprint of the key, base64url.
    pub thumbprint: String,
    /// Status.
    pub status: AccountStatus,
}

/// STAR (RFC 8739) auto-renewal parameters of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Star {
    /// When the renewals stop.
    pub end: SystemTime,
    /// Lifetime of each certificate.
    pub lifetime: Duration,
    /// Whether the client canceled the renewals.
    pub canceled: bool,
}

/// An ACME order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Identifier.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The names.
    pub names: Vec<LocalName>,
    /// Status.
    pub status: OrderStatus,
    /// When a pending or ready order expires.
    pub expires: SystemTime,
    /// STAR parameters, for an auto-renewal order.
    pub star: Option<Star>,
    /// The latest certificate.
    pub certificate_id: Option<String>,
}

/// An authorization for one name with its single `device-attest-01` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// Identifier (also the challenge's).
    pub id: String,
    /// The order.
    pub order_id: String,
    /// The name.
    pub name: LocalName,
    /// Status.
    pub status: AuthzStatus,
    /// The challenge token (≥ 32 random bytes, base64url).
    pub token: String,
    /// When the challenge expires.
    pub expires: SystemTime,
    /// What the device attested, once valid.
    pub attested: Option<Attested>,
}

/// What a valid challenge recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The attested TLS key (DER SPKI).
    pub spki: Vec<u8>,
    /// The user handle.
    pub user_handle: Vec<u8>,
    /// SHA-256 of the attestation certificate, hex.
    pub device_certificate_sha256: String,
    /// When it was validated.
    pub at: SystemTime,
}

/// An issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    /// Identifier (the last segment of the certificate URL).
    pub id: String,
    /// The order.
    pub order_id: String,
    /// The serial, hex.
    pub serial: String,
    /// The chain, PEM (leaf first).
    pub chain_pem: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// When it was revoked, with the RFC 5280 reason code.
    pub revoked: Option<(SystemTime, u8)>,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub at: SystemTime,
    /// What kind of decision, e.g. `issued`, `refused`, `revoked`.
    pub event: String,
    /// The origin concerned, if known.
    pub origin: Option<String>,
    /// The object concerned (order, certificate serial, account).
    pub subject: String,
    /// Details (the refusal's reason).
    pub detail: String,
}

/// What revoking a relying party did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationSummary {
    /// Accounts deactivated.
    pub accounts: usize,
    /// Unexpired certificates revoked.
    pub certificates: usize,
    /// STAR orders canceled.
    pub star_orders: usize,
}

/// What a key change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// The account now has the new key.
    Changed,
    /// The account's key was no longer the old key (a concurrent change won): nothing changed.
    Stale,
    /// Another account (this id) already has the new key: nothing changed.
    KeyInUse(String),
}

/// Why an issuance did not happen.
#[derive(Debug)]
pub enum IssueOutcome {
    /// Issued and recorded.
    Issued(CertRecord),
    /// The order was not in the expected state (another request got there first).
    NotReady(OrderStatus),
}

/// Issuer state. Every method is one transaction; every change carries the audit entry that
/// records it, written in the same transaction (one commit, and never a change without its
/// audit line or the reverse).
///
/// Nonces are not stored: [`crate::nonce::NonceKey`] mints them (expiry, random id, HMAC tag)
/// and authenticates them without the store. The store only answers "first use?" for an
/// authenticated, unexpired nonce ([`Store::consume_nonce`]), which is where backends differ:
/// - single-node SQLite keeps consumed ids in memory ([`crate::nonce::ReplayWindow`]); the
///   key is random per process, so a restart invalidates every outstanding nonce (clients
///   retry on `badNonce`, RFC 8555 §6.5) and nothing is written or fsynced per request;
/// - several replicas on one database (PostgreSQL) share the HMAC key from the configuration,
///   so a nonce minted by one replica is accepted by another, and record consumed ids in a
///   shared table (`INSERT … ON CONFLICT DO NOTHING`: exactly one replica sees its insert
///   succeed), deleting rows past their expiry; a nonce is then never accepted twice anywhere.
pub trait Store: Send + Sync {
    /// Registers a relying party; fails if its origin or key id exists.
    fn add_relying_party(&self, rp: &RelyingParty) -> Result<(), Error>;
    /// All relying parties.
    fn relying_parties(&self) -> Result<Vec<RelyingParty>, Error>;
    /// The relying party with this EAB key id.
    fn relying_party_by_kid(&self, kid: &str) -> Result<Option<RelyingParty>, Error>;
    /// Revokes a relying party: deactivates its accounts, revokes its unexpired certificates,
    /// cancels its STAR orders, in one transaction with its audit entry.
    fn revoke_relying_party(
        &self,
        origin: &Origin,
        now: SystemTime,
    ) -> Result<Option<RevocationSummary>, Error>;

    /// Consumes an authenticated, unexpired nonce: true the first time, false for a replay
    /// (on any replica sharing this store).
    fn consume_nonce(&self, nonce: &NonceId, now: SystemTime) -> Result<bool, Error>;

    /// Creates an account. An EAB key id binds one account: if its relying party already has
    /// one (whatever its status), nothing is created and the refusal is
    /// [`crate::error::Refusal::EabKeyBound`].
    fn create_account(&self, account: &Account, audit: &AuditEntry) -> Result<(), Error>;
    /// The account with this id.
    fn account(&self, id: &str) -> Result<Option<Account>, Error>;
    /// The account with this key thumbprint.
    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, Error>;
    /// Replaces an account's key (ACME keyChange) if it is still `old_thumbprint`'s.
    fn change_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        jwk: &str,
        thumbprint: &str,
        audit: &AuditEntry,
    ) -> Result<KeyChange, Error>;
    /// Changes an account's status.
    fn set_account_status(
        &self,
        id: &str,
        status: AccountStatus,
        audit: &AuditEntry,
    ) -> Result<(), Error>;

    /// Creates an order with its authorizations.
    fn create_order(
        &self,
        order: &Order,
        authorizations: &[Authorization],
        audit: &AuditEntry,
    ) -> Result<(), Error>;
    /// The order with this id.
    fn order(&self, id: &str) -> Result<Option<Order>, Error>;
    /// The ids of an account's orders, oldest first.
    fn order_ids(&self, account_id: &str) -> Result<Vec<String>, Error>;
    /// The authorizations of an order.
    fn authorizations(&self, order_id: &str) -> Result<Vec<Authorization>, Error>;
    /// The authorization (and challenge) with this id.
    fn authorization(&self, id: &str) -> Result<Option<Authorization>, Error>;
    /// Marks a pending authorization valid with what was attested, and its order ready when all
    /// its authorizations are valid. False if the authorization was no longer pending.
    fn record_attestation(
        &self,
        authz_id: &str,
        attested: &Attested,
        audit: &AuditEntry,
    ) -> Result<bool, Error>;
    /// Cancels an order: a STAR order stops renewing, a pending or ready one becomes invalid.
    fn cancel_order_audited(&self, id: &str, audit: &AuditEntry) -> Result<(), Error>;
    /// [`Store::cancel_order_audited`] with an audit line saying the operator canceled it.
    fn cancel_order(&self, id: &str) -> Result<(), Error> {
        self.cancel_order_audited(
            id,
            &AuditEntry {
                at: SystemTime::now(),
                event: "order-canceled".into(),
                origin: None,
                subject: id.to_owned(),
                detail: "by the operator".into(),
            },
        )
    }
    /// Orders whose STAR renewal is due: not canceled, not ended, and whose latest certificate
    /// has passed half of its lifetime at `now`.
    fn star_orders_due(&self, now: SystemTime) -> Result<Vec<Order>, Error>;

    /// Records `cert` (signed by the caller, not yet handed out) for an order in `expected`
    /// status and makes the order `valid` with it as its latest certificate, in one
    /// transaction. A STAR renewal names the certificate it `replaces`: it happens only if
    /// that is still the order's latest and the order was not canceled, so two replicas cannot
    /// both renew. If the order is no longer as expected, nothing is recorded and the
    /// certificate must be thrown away.
    fn issue(
        &self,
        order_id: &str,
        expected: OrderStatus,
        replaces: Option<&str>,
        cert: &CertRecord,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, Error>;
    /// The certificate with this id.
    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, Error>;
    /// The certificate with this serial (hex).
    fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertRecord>, Error>;
    /// Revokes a certificate. False if it was already revoked.
    fn revoke_certificate(
        &self,
        id: &str,
        reason: u8,
        now: SystemTime,
        audit: &AuditEntry,
    ) -> Result<bool, Error>;
    /// Revoked certificates that have not expired at `now` (for the CRL).
    fn revoked_unexpired(&self, now: SystemTime) -> Result<Vec<CertRecord>, Error>;

    /// Appends to the audit log.
    fn audit(&self, entry: &AuditEntry) -> Result<(), Error>;
    /// The latest `limit` audit entries, oldest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, Error>;
    /// Deletes at most `limit` audit entries older than `before` (oldest first), in one
    /// transaction; returns how many. Callers repeat while it returns `limit`, so that no
    /// transaction grows with the backlog.
    fn prune_audit(&self, before: SystemTime, limit: usize) -> Result<usize, Error>;

    /// Whether the store may be called on an async runtime's worker thread: it then computes
    /// briefly and waits (for the writer's commit, a free connection) only with the worker
    /// handed off to another thread (`block_in_place`). The server then handles the requests
    /// that only read on its workers, with no hop to a blocking thread and back. Otherwise
    /// callers run it on a blocking thread.
    fn callable_from_async_workers(&self) -> bool {
        false
    }

    /// Applies `change` here, waiting for its commit.
    fn apply(&self, change: Change) -> Result<Changed, Error> {
        match change {
            Change::CreateOrder {
                order,
                authorizations,
                audit,
            } => self
                .create_order(&order, &authorizations, &audit)
                .map(|()| Changed::Created),
            Change::RecordAttestation {
                authz_id,
                attested,
                audit,
            } => self
                .record_attestation(&authz_id, &attested, &audit)
                .map(Changed::Recorded),
            Change::Issue {
                order_id,
                expected,
                cert,
                audit,
            } => self
                .issue(&order_id, expected, None, &cert, &audit)
                .map(Changed::Issued),
        }
    }

    /// Applies `change` and calls `done` with its result once it is durable. A store that
    /// [`Self::submits_without_waiting`] returns at once and calls `done` from its own thread
    /// after the commit; the default applies it here, waiting.
    fn submit(&self, change: Change, done: Done) {
        done(self.apply(change));
    }

    /// Whether [`Self::submit`] returns without waiting for the commit: the server then
    /// handles the changes it can submit whole on its async workers, awaiting the commit
    /// instead of holding a blocking thread (worker → blocking thread → database thread →
    /// blocking thread → worker becomes worker → database thread → worker).
    fn submits_without_waiting(&self) -> bool {
        false
    }
}

/// Runs `wait` (a blocking wait) so that it stalls no async task: on a worker of tokio's
/// multi-thread runtime the worker's other tasks move to another thread first
/// (`block_in_place`); elsewhere (a plain or blocking thread) it simply runs. Never on a
/// current-thread runtime, where handing off is impossible and the wait simply blocks.
pub(crate) fn wait_off_worker<R>(wait: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}
