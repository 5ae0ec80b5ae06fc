//! The SQLite store's statements, one function per operation, on a connection that is already
//! inside the right transaction (a write runs in its savepoint of a group commit). Statements
//! are prepared once per connection and cached; every lookup has an index (see the schema).

use std::time::SystemTime;

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite_rows::{
    AUTHZ_COLUMNS, CERT_COLUMNS, ORDER_COLUMNS, account_from_row, audit_in, authz_from_row,
    cert_from_row, order_from_row, rp_from_row, status,
};
use super::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, CertRecord, IssueOutcome,
    KeyChange, Order, OrderStatus, RelyingParty, RevocationSummary, from_unix, unix,
};
use crate::error::{Error, Refusal};

fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

pub(super) fn add_relying_party(conn: &Connection, rp: &RelyingParty) -> Result<(), Error> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM relying_parties WHERE origin = ?1)")?
        .query_row([rp.origin.as_str()], |r| r.get(0))?;
    if exists {
        return Err(Error::AlreadyRegistered(rp.origin.to_string()));
    }
    execute(
        conn,
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
        conn,
        &AuditEntry {
            at: rp.created,
            event: "rp-added".into(),
            origin: Some(rp.origin.to_string()),
            subject: rp.eab_kid.clone(),
            detail: "relying party registered".into(),
        },
    )?;
    Ok(())
}

pub(super) fn relying_parties(conn: &Connection) -> rusqlite::Result<Vec<RelyingParty>> {
    let mut stmt = conn.prepare_cached(
        "SELECT origin, eab_kid, eab_hmac_key, status, created FROM relying_parties
         ORDER BY origin",
    )?;
    let rows = stmt.query_map([], rp_from_row)?;
    rows.collect()
}

pub(super) fn relying_party_by_kid(
    conn: &Connection,
    kid: &str,
) -> rusqlite::Result<Option<RelyingParty>> {
    conn.prepare_cached(
        "SELECT origin, eab_kid, eab_hmac_key, status, created FROM relying_parties
         WHERE eab_kid = ?1",
    )?
    .query_row([kid], rp_from_row)
    .optional()
}

pub(super) fn revoke_relying_party(
    conn: &Connection,
    origin: &Origin,
    now: SystemTime,
) -> Result<Option<RevocationSummary>, Error> {
    let kid: Option<String> = conn
        .prepare_cached("SELECT eab_kid FROM relying_parties WHERE origin = ?1")?
        .query_row([origin.as_str()], |r| r.get(0))
        .optional()?;
    let Some(kid) = kid else {
        return Ok(None);
    };
    execute(
        conn,
        "UPDATE relying_parties SET status = 'revoked' WHERE eab_kid = ?1",
        [&kid],
    )?;
    let accounts = execute(
        conn,
        "UPDATE accounts SET status = 'revoked' WHERE eab_kid = ?1 AND status != 'revoked'",
        [&kid],
    )?;
    let certificates = execute(
        conn,
        "UPDATE certificates SET revoked_at = ?2, revocation_reason = 9
         WHERE revoked_at IS NULL AND not_after > ?2 AND order_id IN (
             SELECT o.id FROM orders o JOIN accounts a ON o.account_id = a.id
             WHERE a.eab_kid = ?1)",
        params![kid, unix(now)],
    )?;
    let star_orders = execute(
        conn,
        "UPDATE orders SET star_canceled = 1
         WHERE star_end IS NOT NULL AND star_canceled = 0 AND account_id IN (
             SELECT id FROM accounts WHERE eab_kid = ?1)",
        [&kid],
    )?;
    execute(
        conn,
        "UPDATE orders SET status = 'invalid'
         WHERE status IN ('pending', 'ready') AND account_id IN (
             SELECT id FROM accounts WHERE eab_kid = ?1)",
        [&kid],
    )?;
    audit_in(
        conn,
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
    Ok(Some(RevocationSummary {
        accounts,
        certificates,
        star_orders,
    }))
}

pub(super) fn create_account(
    conn: &Connection,
    account: &Account,
    audit: &AuditEntry,
) -> Result<(), Error> {
    // The single writer makes this check and the insert one step: no other account can slip in.
    let bound: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE eab_kid = ?1)")?
        .query_row([&account.eab_kid], |r| r.get(0))?;
    if bound {
        return Err(Refusal::EabKeyBound.into());
    }
    execute(
        conn,
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
    audit_in(conn, audit)?;
    Ok(())
}

/// The account whose `column` (`a.id` or `a.thumbprint`, both unique) is `value`.
pub(super) fn account(
    conn: &Connection,
    column: &str,
    value: &str,
) -> rusqlite::Result<Option<Account>> {
    conn.prepare_cached(&format!(
        "SELECT a.id, a.eab_kid, r.origin, a.jwk, a.thumbprint, a.status
         FROM accounts a JOIN relying_parties r ON a.eab_kid = r.eab_kid
         WHERE {column} = ?1"
    ))?
    .query_row([value], account_from_row)
    .optional()
}

pub(super) fn change_account_key(
    conn: &Connection,
    id: &str,
    old_thumbprint: &str,
    jwk: &str,
    thumbprint: &str,
    audit: &AuditEntry,
) -> Result<KeyChange, Error> {
    let holder: Option<String> = conn
        .prepare_cached("SELECT id FROM accounts WHERE thumbprint = ?1")?
        .query_row([thumbprint], |r| r.get(0))
        .optional()?;
    if let Some(holder) = holder {
        return Ok(KeyChange::KeyInUse(holder));
    }
    let changed = execute(
        conn,
        "UPDATE accounts SET jwk = ?3, thumbprint = ?4 WHERE id = ?1 AND thumbprint = ?2",
        params![id, old_thumbprint, jwk, thumbprint],
    )?;
    if changed != 1 {
        return Ok(KeyChange::Stale);
    }
    audit_in(conn, audit)?;
    Ok(KeyChange::Changed)
}

pub(super) fn set_account_status(
    conn: &Connection,
    id: &str,
    status: AccountStatus,
    audit: &AuditEntry,
) -> Result<(), Error> {
    execute(
        conn,
        "UPDATE accounts SET status = ?2 WHERE id = ?1",
        params![id, status.as_str()],
    )?;
    audit_in(conn, audit)?;
    Ok(())
}

pub(super) fn create_order(
    conn: &Connection,
    order: &Order,
    authorizations: &[Authorization],
    audit: &AuditEntry,
) -> Result<(), Error> {
    let names: Vec<&str> = order.names.iter().map(LocalName::as_str).collect();
    execute(
        conn,
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
        execute(
            conn,
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
    audit_in(conn, audit)?;
    Ok(())
}

pub(super) fn order(conn: &Connection, id: &str) -> rusqlite::Result<Option<Order>> {
    conn.prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
        .query_row([id], order_from_row)
        .optional()
}

pub(super) fn order_ids(conn: &Connection, account_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM orders WHERE account_id = ?1 ORDER BY rowid")?;
    let rows = stmt.query_map([account_id], |r| r.get(0))?;
    rows.collect()
}

pub(super) fn authorizations(
    conn: &Connection,
    order_id: &str,
) -> rusqlite::Result<Vec<Authorization>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {AUTHZ_COLUMNS} FROM authorizations WHERE order_id = ?1 ORDER BY rowid"
    ))?;
    let rows = stmt.query_map([order_id], authz_from_row)?;
    rows.collect()
}

pub(super) fn authorization(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<Option<Authorization>> {
    conn.prepare_cached(&format!(
        "SELECT {AUTHZ_COLUMNS} FROM authorizations WHERE id = ?1"
    ))?
    .query_row([id], authz_from_row)
    .optional()
}

pub(super) fn record_attestation(
    conn: &Connection,
    authz_id: &str,
    attested: &Attested,
    audit: &AuditEntry,
) -> Result<bool, Error> {
    let updated = execute(
        conn,
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
    execute(
        conn,
        "UPDATE orders SET status = 'ready'
         WHERE status = 'pending'
           AND id = (SELECT order_id FROM authorizations WHERE id = ?1)
           AND NOT EXISTS (SELECT 1 FROM authorizations
               WHERE order_id = orders.id AND status != 'valid')",
        [authz_id],
    )?;
    audit_in(conn, audit)?;
    Ok(true)
}

pub(super) fn cancel_order(conn: &Connection, id: &str, audit: &AuditEntry) -> Result<(), Error> {
    execute(
        conn,
        "UPDATE orders SET star_canceled = 1 WHERE id = ?1 AND star_end IS NOT NULL",
        [id],
    )?;
    execute(
        conn,
        "UPDATE orders SET status = 'invalid' WHERE id = ?1 AND status IN ('pending', 'ready')",
        [id],
    )?;
    audit_in(conn, audit)?;
    Ok(())
}

pub(super) fn star_orders_due(conn: &Connection, now: SystemTime) -> rusqlite::Result<Vec<Order>> {
    let columns = ORDER_COLUMNS
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    // `orders_star_active` (a partial index) keeps this off the bulk of plain orders.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {columns} FROM orders o JOIN certificates c ON o.certificate_id = c.id
         WHERE o.star_end IS NOT NULL AND o.star_canceled = 0 AND o.status = 'valid'
           AND c.not_after < o.star_end
           AND c.not_before + (c.not_after - c.not_before) / 2 <= ?1"
    ))?;
    let rows = stmt.query_map([unix(now)], order_from_row)?;
    rows.collect()
}

pub(super) fn issue(
    conn: &Connection,
    order_id: &str,
    expected: OrderStatus,
    replaces: Option<&str>,
    cert: CertRecord,
    audit: &AuditEntry,
) -> Result<IssueOutcome, Error> {
    let current: Option<(String, Option<String>, bool)> = conn
        .prepare_cached("SELECT status, certificate_id, star_canceled FROM orders WHERE id = ?1")?
        .query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((status_text, certificate_id, star_canceled)) = current else {
        return Err(Error::Store(format!("no order {order_id}")));
    };
    let status = status(OrderStatus::parse, status_text)?;
    let replaces_latest = match replaces {
        Some(old) => certificate_id.as_deref() == Some(old) && !star_canceled,
        None => true,
    };
    if status != expected || !replaces_latest {
        return Ok(IssueOutcome::NotReady(status));
    }
    execute(
        conn,
        &format!(
            "INSERT INTO certificates ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)"
        ),
        params![
            cert.id,
            order_id,
            cert.serial,
            cert.chain_pem,
            unix(cert.not_before),
            unix(cert.not_after)
        ],
    )?;
    execute(
        conn,
        "UPDATE orders SET status = 'valid', certificate_id = ?2 WHERE id = ?1",
        params![order_id, cert.id],
    )?;
    audit_in(conn, audit)?;
    Ok(IssueOutcome::Issued(CertRecord {
        order_id: order_id.to_owned(),
        revoked: None,
        ..cert
    }))
}

/// The certificate whose `column` (`id` or `serial`, both unique) is `value`.
pub(super) fn certificate(
    conn: &Connection,
    column: &str,
    value: &str,
) -> rusqlite::Result<Option<CertRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {CERT_COLUMNS} FROM certificates WHERE {column} = ?1"
    ))?
    .query_row([value], cert_from_row)
    .optional()
}

pub(super) fn revoke_certificate(
    conn: &Connection,
    id: &str,
    reason: u8,
    now: SystemTime,
    audit: &AuditEntry,
) -> Result<bool, Error> {
    let revoked = execute(
        conn,
        "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
         WHERE id = ?1 AND revoked_at IS NULL",
        params![id, unix(now), reason],
    )? == 1;
    if revoked {
        audit_in(conn, audit)?;
    }
    Ok(revoked)
}

pub(super) fn revoked_unexpired(
    conn: &Connection,
    now: SystemTime,
) -> rusqlite::Result<Vec<CertRecord>> {
    // `certificates_revoked` (a partial index) holds only revoked certificates.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CERT_COLUMNS} FROM certificates
         WHERE revoked_at IS NOT NULL AND not_after > ?1 ORDER BY serial"
    ))?;
    let rows = stmt.query_map([unix(now)], cert_from_row)?;
    rows.collect()
}

pub(super) fn audit_log(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
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
    rows.collect()
}

pub(super) fn prune_audit(
    conn: &Connection,
    before: SystemTime,
    limit: usize,
) -> Result<usize, Error> {
    // `audit_by_time` finds the oldest rows without a scan.
    Ok(execute(
        conn,
        "DELETE FROM audit WHERE seq IN (
             SELECT seq FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
        params![unix(before), i64::try_from(limit).unwrap_or(i64::MAX)],
    )?)
}

/// Records a consumed nonce (only with [`super::SqliteTuning::durable_nonces`], to measure it).
pub(super) fn record_nonce(conn: &Connection, id: &[u8], expires: u64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS consumed_nonces (id BLOB PRIMARY KEY, expires INTEGER)",
    )?;
    execute(
        conn,
        "INSERT OR IGNORE INTO consumed_nonces (id, expires) VALUES (?1, ?2)",
        params![id, i64::try_from(expires).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}
