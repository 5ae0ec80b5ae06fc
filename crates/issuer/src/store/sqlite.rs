//! The SQLite store: one file, WAL journal, `synchronous=FULL`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::sqlite_rows::{
    AUTHZ_COLUMNS, CERT_COLUMNS, ORDER_COLUMNS, SCHEMA, account_from_row, audit_in, authz_from_row,
    cert_from_row, order_from_row, rp_from_row, status,
};
use super::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, CertRecord, IssueOutcome, NewCert,
    Order, OrderStatus, RelyingParty, RevocationSummary, Store, from_unix, unix,
};
use crate::error::Error;

/// The SQLite store: one file, WAL journal, one connection behind a mutex.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
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
