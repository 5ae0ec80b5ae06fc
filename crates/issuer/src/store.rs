//! Issuer state behind one trait: relying parties, ACME accounts, nonces, orders with their
//! authorizations, certificates and the audit log. [`SqliteStore`] is the embedded default; the
//! trait is synchronous and transaction-shaped so a PostgreSQL implementation (several stateless
//! replicas) can follow without changing callers.
//!
//! Issuance is one transaction: the order moves from `ready` to `valid` conditionally, the leaf
//! is signed inside the transaction and recorded with it. If the process dies before the commit,
//! nothing was recorded and nothing was handed out; after it, the certificate is stored. Two
//! concurrent finalizes cannot both pass the conditional update.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::error::Error;

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

            fn parse(s: &str) -> rusqlite::Result<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(rusqlite::Error::InvalidColumnType(
                        0, s.to_owned(), rusqlite::types::Type::Text)),
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

/// A new certificate, made by the signer inside the issuance transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCert {
    /// The serial, hex.
    pub serial: String,
    /// The chain, PEM.
    pub chain_pem: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
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

/// Why an issuance did not happen.
#[derive(Debug)]
pub enum IssueOutcome {
    /// Issued and recorded.
    Issued(CertRecord),
    /// The order was not in the expected state (another request got there first).
    NotReady(OrderStatus),
}

/// Issuer state. Every method is one transaction.
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

    /// Stores a fresh nonce.
    fn put_nonce(&self, nonce: &str, expires: SystemTime) -> Result<(), Error>;
    /// Consumes a nonce: true if it existed and had not expired (and now never will again).
    fn take_nonce(&self, nonce: &str, now: SystemTime) -> Result<bool, Error>;

    /// Creates an account.
    fn create_account(&self, account: &Account) -> Result<(), Error>;
    /// The account with this id.
    fn account(&self, id: &str) -> Result<Option<Account>, Error>;
    /// The account with this key thumbprint.
    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, Error>;
    /// Changes an account's status.
    fn set_account_status(&self, id: &str, status: AccountStatus) -> Result<(), Error>;

    /// Creates an order with its authorizations.
    fn create_order(&self, order: &Order, authorizations: &[Authorization]) -> Result<(), Error>;
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
    fn record_attestation(&self, authz_id: &str, attested: &Attested) -> Result<bool, Error>;
    /// Cancels an order: a STAR order stops renewing, a pending or ready one becomes invalid.
    fn cancel_order(&self, id: &str) -> Result<(), Error>;
    /// Orders whose STAR renewal is due: not canceled, not ended, and whose latest certificate
    /// has passed half of its lifetime at `now`.
    fn star_orders_due(&self, now: SystemTime) -> Result<Vec<Order>, Error>;

    /// Issues for an order in `expected` status: signs with `sign` inside the transaction and
    /// records the certificate with the order `valid`. A STAR renewal names the certificate it
    /// `replaces`: it happens only if that is still the order's latest and the order was not
    /// canceled, so two replicas cannot both renew.
    fn issue(
        &self,
        order_id: &str,
        expected: OrderStatus,
        replaces: Option<&str>,
        new_id: &str,
        now: SystemTime,
        sign: &mut dyn FnMut() -> Result<NewCert, Error>,
    ) -> Result<IssueOutcome, Error>;
    /// The certificate with this id.
    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, Error>;
    /// The certificate with this serial (hex).
    fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertRecord>, Error>;
    /// Revokes a certificate. False if it was already revoked.
    fn revoke_certificate(&self, id: &str, reason: u8, now: SystemTime) -> Result<bool, Error>;
    /// Revoked certificates that have not expired at `now` (for the CRL).
    fn revoked_unexpired(&self, now: SystemTime) -> Result<Vec<CertRecord>, Error>;

    /// Appends to the audit log.
    fn audit(&self, entry: &AuditEntry) -> Result<(), Error>;
    /// The latest `limit` audit entries, oldest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, Error>;
}

/// The SQLite store: one file, WAL journal, one connection behind a mutex.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relying_parties (
    origin TEXT PRIMARY KEY,
    eab_kid TEXT NOT NULL UNIQUE,
    eab_hmac_key BLOB NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    eab_kid TEXT NOT NULL REFERENCES relying_parties(eab_kid),
    jwk TEXT NOT NULL,
    thumbprint TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    names TEXT NOT NULL,
    status TEXT NOT NULL,
    expires INTEGER NOT NULL,
    star_end INTEGER,
    star_lifetime INTEGER,
    star_canceled INTEGER NOT NULL DEFAULT 0,
    certificate_id TEXT
);
CREATE TABLE IF NOT EXISTS authorizations (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    expires INTEGER NOT NULL,
    attested_spki BLOB,
    user_handle BLOB,
    device_certificate_sha256 TEXT,
    attested_at INTEGER
);
CREATE TABLE IF NOT EXISTS certificates (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(id),
    serial TEXT NOT NULL UNIQUE,
    chain_pem TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    revoked_at INTEGER,
    revocation_reason INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    origin TEXT,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_account ON orders(account_id);
CREATE INDEX IF NOT EXISTS certificates_by_order ON certificates(order_id);
";

const ORDER_COLUMNS: &str = "id, account_id, names, status, expires, star_end, star_lifetime, star_canceled, certificate_id";
const AUTHZ_COLUMNS: &str = "id, order_id, name, status, token, expires, attested_spki, \
     user_handle, device_certificate_sha256, attested_at";
const CERT_COLUMNS: &str =
    "id, order_id, serial, chain_pem, not_before, not_after, revoked_at, revocation_reason";

fn bad_column(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

fn origin_from(s: String) -> rusqlite::Result<Origin> {
    Origin::parse(&s).map_err(|_| bad_column("origin"))
}

fn rp_from_row(row: &Row<'_>) -> rusqlite::Result<RelyingParty> {
    Ok(RelyingParty {
        origin: origin_from(row.get(0)?)?,
        eab_kid: row.get(1)?,
        eab_hmac_key: row.get(2)?,
        status: RelyingPartyStatus::parse(&row.get::<_, String>(3)?)?,
        created: from_unix(row.get(4)?),
    })
}

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: row.get(0)?,
        eab_kid: row.get(1)?,
        origin: origin_from(row.get(2)?)?,
        jwk: row.get(3)?,
        thumbprint: row.get(4)?,
        status: AccountStatus::parse(&row.get::<_, String>(5)?)?,
    })
}

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    let names: String = row.get(2)?;
    let names = names
        .split(',')
        .map(|n| LocalName::parse(n).map_err(|_| bad_column("names")))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let star_end: Option<i64> = row.get(5)?;
    let star_lifetime: Option<i64> = row.get(6)?;
    let star = match (star_end, star_lifetime) {
        (Some(end), Some(lifetime)) => Some(Star {
            end: from_unix(end),
            lifetime: Duration::from_secs(u64::try_from(lifetime).unwrap_or(0)),
            canceled: row.get(7)?,
        }),
        _ => None,
    };
    Ok(Order {
        id: row.get(0)?,
        account_id: row.get(1)?,
        names,
        status: OrderStatus::parse(&row.get::<_, String>(3)?)?,
        expires: from_unix(row.get(4)?),
        star,
        certificate_id: row.get(8)?,
    })
}

fn authz_from_row(row: &Row<'_>) -> rusqlite::Result<Authorization> {
    let spki: Option<Vec<u8>> = row.get(6)?;
    let attested = match spki {
        Some(spki) => Some(Attested {
            spki,
            user_handle: row.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
            device_certificate_sha256: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
            at: from_unix(row.get::<_, Option<i64>>(9)?.unwrap_or(0)),
        }),
        None => None,
    };
    Ok(Authorization {
        id: row.get(0)?,
        order_id: row.get(1)?,
        name: LocalName::parse(&row.get::<_, String>(2)?).map_err(|_| bad_column("name"))?,
        status: AuthzStatus::parse(&row.get::<_, String>(3)?)?,
        token: row.get(4)?,
        expires: from_unix(row.get(5)?),
        attested,
    })
}

fn cert_from_row(row: &Row<'_>) -> rusqlite::Result<CertRecord> {
    let revoked_at: Option<i64> = row.get(6)?;
    let reason: Option<u8> = row.get(7)?;
    Ok(CertRecord {
        id: row.get(0)?,
        order_id: row.get(1)?,
        serial: row.get(2)?,
        chain_pem: row.get(3)?,
        not_before: from_unix(row.get(4)?),
        not_after: from_unix(row.get(5)?),
        revoked: revoked_at.map(|t| (from_unix(t), reason.unwrap_or(0))),
    })
}

fn audit_in(tx: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, event, origin, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            unix(entry.at),
            entry.event,
            entry.origin,
            entry.subject,
            entry.detail
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (and creates, mode 0600) the database file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            // Create it owner-only before SQLite does: it holds EAB keys.
            crate::ca::write_private_file(path, b"")?;
        }
        Self::setup(Connection::open(path)?)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, Error> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self, Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        self.conn
            .lock()
            .map_err(|_| Error::Store("connection lock poisoned".into()))
    }
}

impl Store for SqliteStore {
    fn add_relying_party(&self, rp: &RelyingParty) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM relying_parties WHERE origin = ?1)",
            [rp.origin.as_str()],
            |r| r.get(0),
        )?;
        if exists {
            return Err(Error::AlreadyRegistered(rp.origin.to_string()));
        }
        tx.execute(
            "INSERT INTO relying_parties (origin, eab_kid, eab_hmac_key, status, created)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                rp.origin.as_str(),
                rp.eab_kid,
                rp.eab_hmac_key,
                rp.status.as_str(),
                unix(rp.created)
            ],
        )?;
        audit_in(
            &tx,
            &AuditEntry {
                at: rp.created,
                event: "rp-added".into(),
                origin: Some(rp.origin.to_string()),
                subject: rp.eab_kid.clone(),
                detail: "relying party registered".into(),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    fn relying_parties(&self) -> Result<Vec<RelyingParty>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT origin, eab_kid, eab_hmac_key, status, created FROM relying_parties
             ORDER BY origin",
        )?;
        let rows = stmt.query_map([], rp_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn relying_party_by_kid(&self, kid: &str) -> Result<Option<RelyingParty>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT origin, eab_kid, eab_hmac_key, status, created FROM relying_parties
                 WHERE eab_kid = ?1",
                [kid],
                rp_from_row,
            )
            .optional()?)
    }

    fn revoke_relying_party(
        &self,
        origin: &Origin,
        now: SystemTime,
    ) -> Result<Option<RevocationSummary>, Error> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let kid: Option<String> = tx
            .query_row(
                "SELECT eab_kid FROM relying_parties WHERE origin = ?1",
                [origin.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(kid) = kid else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE relying_parties SET status = 'revoked' WHERE eab_kid = ?1",
            [&kid],
        )?;
        let accounts = tx.execute(
            "UPDATE accounts SET status = 'revoked' WHERE eab_kid = ?1 AND status != 'revoked'",
            [&kid],
        )?;
        let certificates = tx.execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = 9
             WHERE revoked_at IS NULL AND not_after > ?2 AND order_id IN (
                 SELECT o.id FROM orders o JOIN accounts a ON o.account_id = a.id
                 WHERE a.eab_kid = ?1)",
            params![kid, unix(now)],
        )?;
        let star_orders = tx.execute(
            "UPDATE orders SET star_canceled = 1
             WHERE star_end IS NOT NULL AND star_canceled = 0 AND account_id IN (
                 SELECT id FROM accounts WHERE eab_kid = ?1)",
            [&kid],
        )?;
        tx.execute(
            "UPDATE orders SET status = 'invalid'
             WHERE status IN ('pending', 'ready') AND account_id IN (
                 SELECT id FROM accounts WHERE eab_kid = ?1)",
            [&kid],
        )?;
        let summary = RevocationSummary {
            accounts,
            certificates,
            star_orders,
        };
        audit_in(
            &tx,
            &AuditEntry {
                at: now,
                event: "rp-revoked".into(),
                origin: Some(origin.to_string()),
                subject: kid,
                detail: format!(
                    "{accounts} account(s) revoked, {certificates} certificate(s) revoked, \
                     {star_orders} STAR order(s) canceled"
                ),
            },
        )?;
        tx.commit()?;
        Ok(Some(summary))
    }

    fn put_nonce(&self, nonce: &str, expires: SystemTime) -> Result<(), Error> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO nonces (nonce, expires) VALUES (?1, ?2)",
            params![nonce, unix(expires)],
        )?;
        Ok(())
    }

    fn take_nonce(&self, nonce: &str, now: SystemTime) -> Result<bool, Error> {
        let conn = self.conn()?;
        // Expired nonces go too, so the table stays small.
        conn.execute("DELETE FROM nonces WHERE expires <= ?1", [unix(now)])?;
        Ok(conn.execute("DELETE FROM nonces WHERE nonce = ?1", [nonce])? == 1)
    }

    fn create_account(&self, account: &Account) -> Result<(), Error> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO accounts (id, eab_kid, jwk, thumbprint, status)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                account.id,
                account.eab_kid,
                account.jwk,
                account.thumbprint,
                account.status.as_str()
            ],
        )?;
        Ok(())
    }

    fn account(&self, id: &str) -> Result<Option<Account>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT a.id, a.eab_kid, r.origin, a.jwk, a.thumbprint, a.status
                 FROM accounts a JOIN relying_parties r ON a.eab_kid = r.eab_kid
                 WHERE a.id = ?1",
                [id],
                account_from_row,
            )
            .optional()?)
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT a.id, a.eab_kid, r.origin, a.jwk, a.thumbprint, a.status
                 FROM accounts a JOIN relying_parties r ON a.eab_kid = r.eab_kid
                 WHERE a.thumbprint = ?1",
                [thumbprint],
                account_from_row,
            )
            .optional()?)
    }

    fn set_account_status(&self, id: &str, status: AccountStatus) -> Result<(), Error> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE accounts SET status = ?2 WHERE id = ?1",
            params![id, status.as_str()],
        )?;
        Ok(())
    }

    fn create_order(&self, order: &Order, authorizations: &[Authorization]) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let names: Vec<&str> = order.names.iter().map(LocalName::as_str).collect();
        tx.execute(
            &format!(
                "INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                order.id,
                order.account_id,
                names.join(","),
                order.status.as_str(),
                unix(order.expires),
                order.star.map(|s| unix(s.end)),
                order
                    .star
                    .map(|s| i64::try_from(s.lifetime.as_secs()).unwrap_or(i64::MAX)),
                order.star.is_some_and(|s| s.canceled),
                order.certificate_id,
            ],
        )?;
        for authz in authorizations {
            tx.execute(
                "INSERT INTO authorizations (id, order_id, name, status, token, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    authz.id,
                    authz.order_id,
                    authz.name.as_str(),
                    authz.status.as_str(),
                    authz.token,
                    unix(authz.expires)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn order(&self, id: &str) -> Result<Option<Order>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
                [id],
                order_from_row,
            )
            .optional()?)
    }

    fn order_ids(&self, account_id: &str) -> Result<Vec<String>, Error> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id FROM orders WHERE account_id = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([account_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn authorizations(&self, order_id: &str) -> Result<Vec<Authorization>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {AUTHZ_COLUMNS} FROM authorizations WHERE order_id = ?1 ORDER BY rowid"
        ))?;
        let rows = stmt.query_map([order_id], authz_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn authorization(&self, id: &str) -> Result<Option<Authorization>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {AUTHZ_COLUMNS} FROM authorizations WHERE id = ?1"),
                [id],
                authz_from_row,
            )
            .optional()?)
    }

    fn record_attestation(&self, authz_id: &str, attested: &Attested) -> Result<bool, Error> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let updated = tx.execute(
            "UPDATE authorizations SET status = 'valid', attested_spki = ?2, user_handle = ?3,
                 device_certificate_sha256 = ?4, attested_at = ?5
             WHERE id = ?1 AND status = 'pending'",
            params![
                authz_id,
                attested.spki,
                attested.user_handle,
                attested.device_certificate_sha256,
                unix(attested.at)
            ],
        )?;
        if updated != 1 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE orders SET status = 'ready'
             WHERE status = 'pending'
               AND id = (SELECT order_id FROM authorizations WHERE id = ?1)
               AND NOT EXISTS (SELECT 1 FROM authorizations
                   WHERE order_id = orders.id AND status != 'valid')",
            [authz_id],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn cancel_order(&self, id: &str) -> Result<(), Error> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE orders SET star_canceled = 1 WHERE id = ?1 AND star_end IS NOT NULL",
            [id],
        )?;
        conn.execute(
            "UPDATE orders SET status = 'invalid' WHERE id = ?1 AND status IN ('pending', 'ready')",
            [id],
        )?;
        Ok(())
    }

    fn star_orders_due(&self, now: SystemTime) -> Result<Vec<Order>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM orders o JOIN certificates c ON o.certificate_id = c.id
             WHERE o.status = 'valid' AND o.star_end IS NOT NULL AND o.star_canceled = 0
               AND c.not_after < o.star_end
               AND c.not_before + (c.not_after - c.not_before) / 2 <= ?1",
            ORDER_COLUMNS
                .split(", ")
                .map(|c| format!("o.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let rows = stmt.query_map([unix(now)], order_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn issue(
        &self,
        order_id: &str,
        expected: OrderStatus,
        replaces: Option<&str>,
        new_id: &str,
        now: SystemTime,
        sign: &mut dyn FnMut() -> Result<NewCert, Error>,
    ) -> Result<IssueOutcome, Error> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<(String, Option<String>, bool)> = tx
            .query_row(
                "SELECT status, certificate_id, star_canceled FROM orders WHERE id = ?1",
                [order_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((status, certificate_id, star_canceled)) = current else {
            return Err(Error::Store(format!("no order {order_id}")));
        };
        let status = OrderStatus::parse(&status)?;
        let replaces_latest = match replaces {
            Some(old) => certificate_id.as_deref() == Some(old) && !star_canceled,
            None => true,
        };
        if status != expected || !replaces_latest {
            return Ok(IssueOutcome::NotReady(status));
        }
        // Signed inside the transaction: handed out only after the commit below.
        let cert = sign()?;
        tx.execute(
            &format!("INSERT INTO certificates ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)"),
            params![
                new_id,
                order_id,
                cert.serial,
                cert.chain_pem,
                unix(cert.not_before),
                unix(cert.not_after)
            ],
        )?;
        tx.execute(
            "UPDATE orders SET status = 'valid', certificate_id = ?2 WHERE id = ?1",
            params![order_id, new_id],
        )?;
        let origin: Option<String> = tx
            .query_row(
                "SELECT r.origin FROM orders o JOIN accounts a ON o.account_id = a.id
                 JOIN relying_parties r ON a.eab_kid = r.eab_kid WHERE o.id = ?1",
                [order_id],
                |r| r.get(0),
            )
            .optional()?;
        audit_in(
            &tx,
            &AuditEntry {
                at: now,
                event: "issued".into(),
                origin,
                subject: order_id.to_owned(),
                detail: format!("serial {}", cert.serial),
            },
        )?;
        tx.commit()?;
        Ok(IssueOutcome::Issued(CertRecord {
            id: new_id.to_owned(),
            order_id: order_id.to_owned(),
            serial: cert.serial,
            chain_pem: cert.chain_pem,
            not_before: cert.not_before,
            not_after: cert.not_after,
            revoked: None,
        }))
    }

    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE id = ?1"),
                [id],
                cert_from_row,
            )
            .optional()?)
    }

    fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertRecord>, Error> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1"),
                [serial],
                cert_from_row,
            )
            .optional()?)
    }

    fn revoke_certificate(&self, id: &str, reason: u8, now: SystemTime) -> Result<bool, Error> {
        let conn = self.conn()?;
        Ok(conn.execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
             WHERE id = ?1 AND revoked_at IS NULL",
            params![id, unix(now), reason],
        )? == 1)
    }

    fn revoked_unexpired(&self, now: SystemTime) -> Result<Vec<CertRecord>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {CERT_COLUMNS} FROM certificates
             WHERE revoked_at IS NOT NULL AND not_after > ?1 ORDER BY serial"
        ))?;
        let rows = stmt.query_map([unix(now)], cert_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        let conn = self.conn()?;
        audit_in(&conn, entry)?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT at, event, origin, subject, detail FROM (
                 SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(AuditEntry {
                at: from_unix(r.get(0)?),
                event: r.get(1)?,
                origin: r.get(2)?,
                subject: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
