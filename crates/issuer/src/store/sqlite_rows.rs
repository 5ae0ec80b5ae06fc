//! The SQLite schema and the mapping between its rows and the store's types.

use std::time::Duration;

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rusqlite::{Connection, Row, params};

use super::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, AuthzStatus, CertRecord, Order,
    OrderStatus, RelyingParty, RelyingPartyStatus, Star, from_unix, unix,
};

pub(super) const SCHEMA: &str = "
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
DROP TABLE IF EXISTS nonces;
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
CREATE INDEX IF NOT EXISTS authorizations_by_order ON authorizations(order_id);
CREATE INDEX IF NOT EXISTS accounts_by_kid ON accounts(eab_kid);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit(at);
CREATE INDEX IF NOT EXISTS orders_star_active ON orders(certificate_id)
    WHERE star_end IS NOT NULL AND star_canceled = 0;
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(not_after)
    WHERE revoked_at IS NOT NULL;
";

pub(super) const ORDER_COLUMNS: &str = "id, account_id, names, status, expires, star_end, star_lifetime, star_canceled, certificate_id";
pub(super) const AUTHZ_COLUMNS: &str = "id, order_id, name, status, token, expires, attested_spki, \
     user_handle, device_certificate_sha256, attested_at";
pub(super) const CERT_COLUMNS: &str =
    "id, order_id, serial, chain_pem, not_before, not_after, revoked_at, revocation_reason";

/// A status column's value, or an error naming the bad text.
pub(super) fn status<T>(parse: fn(&str) -> Option<T>, text: String) -> rusqlite::Result<T> {
    parse(&text).ok_or_else(|| bad_column(&text))
}

pub(super) fn bad_column(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.to_owned(), rusqlite::types::Type::Text)
}

fn origin_from(s: String) -> rusqlite::Result<Origin> {
    Origin::parse(&s).map_err(|_| bad_column("origin"))
}

pub(super) fn rp_from_row(row: &Row<'_>) -> rusqlite::Result<RelyingParty> {
    Ok(RelyingParty {
        origin: origin_from(row.get(0)?)?,
        eab_kid: row.get(1)?,
        eab_hmac_key: row.get(2)?,
        status: status(RelyingPartyStatus::parse, row.get(3)?)?,
        created: from_unix(row.get(4)?),
    })
}

pub(super) fn account_from_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: row.get(0)?,
        eab_kid: row.get(1)?,
        origin: origin_from(row.get(2)?)?,
        jwk: row.get(3)?,
        thumbprint: row.get(4)?,
        status: status(AccountStatus::parse, row.get(5)?)?,
    })
}

pub(super) fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
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
        status: status(OrderStatus::parse, row.get(3)?)?,
        expires: from_unix(row.get(4)?),
        star,
        certificate_id: row.get(8)?,
    })
}

pub(super) fn authz_from_row(row: &Row<'_>) -> rusqlite::Result<Authorization> {
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
        status: status(AuthzStatus::parse, row.get(3)?)?,
        token: row.get(4)?,
        expires: from_unix(row.get(5)?),
        attested,
    })
}

pub(super) fn cert_from_row(row: &Row<'_>) -> rusqlite::Result<CertRecord> {
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

pub(super) fn audit_in(tx: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
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
