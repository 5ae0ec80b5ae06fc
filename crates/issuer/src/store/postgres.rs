//! [`Store`] on PostgreSQL: the same transactions as the SQLite store, written for several
//! writers. Where SQLite relies on its single writer, these take row locks: the relying party
//! on account creation and revocation, the order on attestation and on issuance. Every change
//! goes through [`PgStore::audited`], which commits it with its audit line.

use std::time::SystemTime;

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use super::postgres_conn::{
    AUTHZ_COLUMNS, CERT_COLUMNS, ORDER_COLUMNS, PgStore, audit_in, count, db_error, execute,
    query_opt, seconds,
};
use super::postgres_rows::{
    account_from_row, audit_from_row, authz_from_row, cert_from_row, order_from_row, order_status,
    rp_from_row,
};
use crate::error::{Error, Refusal};
use crate::nonce::NonceId;
use crate::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, CertRecord, IssueOutcome,
    KeyChange, Order, OrderStatus, RelyingParty, RevocationSummary, Store, unix,
};

const ACCOUNT_SELECT: &str = "SELECT a.id, a.eab_kid, r.origin, a.jwk, a.thumbprint, a.status
     FROM accounts a JOIN relying_parties r ON a.eab_kid = r.eab_kid";

impl Store for PgStore {
    fn add_relying_party(&self, rp: &RelyingParty) -> Result<(), Error> {
        self.audited(async |tx| {
            let inserted = execute(
                tx,
                "INSERT INTO relying_parties (origin, eab_kid, eab_hmac_key, status, created)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (origin) DO NOTHING",
                &[
                    &rp.origin.as_str(),
                    &rp.eab_kid,
                    &rp.eab_hmac_key,
                    &rp.status.as_str(),
                    &unix(rp.created),
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(Error::AlreadyRegistered(rp.origin.to_string()));
            }
            let audit = AuditEntry {
                at: rp.created,
                event: "rp-added".into(),
                origin: Some(rp.origin.to_string()),
                subject: rp.eab_kid.clone(),
                detail: "relying party registered".into(),
            };
            Ok(((), Some(audit)))
        })
    }

    fn relying_parties(&self) -> Result<Vec<RelyingParty>, Error> {
        self.read_all(
            "SELECT origin, eab_kid, eab_hmac_key, status, created FROM relying_parties
             ORDER BY origin COLLATE \"C\"",
            &[],
            rp_from_row,
        )
    }

    fn relying_party_by_kid(&self, kid: &str) -> Result<Option<RelyingParty>, Error> {
        self.read_one(
            "SELECT origin, eab_kid, eab_hmac_key, status, created FROM relying_parties
             WHERE eab_kid = $1",
            &[&kid],
            rp_from_row,
        )
    }

    fn revoke_relying_party(
        &self,
        origin: &Origin,
        now: SystemTime,
    ) -> Result<Option<RevocationSummary>, Error> {
        self.audited(async |tx| {
            let Some(row) = query_opt(
                tx,
                "SELECT eab_kid FROM relying_parties WHERE origin = $1 FOR UPDATE",
                &[&origin.as_str()],
            )
            .await?
            else {
                return Ok((None, None));
            };
            let kid: String = row.try_get(0).map_err(db_error)?;
            execute(
                tx,
                "UPDATE relying_parties SET status = 'revoked' WHERE eab_kid = $1",
                &[&kid],
            )
            .await?;
            let accounts = execute(
                tx,
                "UPDATE accounts SET status = 'revoked' WHERE eab_kid = $1 AND status != 'revoked'",
                &[&kid],
            )
            .await?;
            let certificates = execute(
                tx,
                "UPDATE certificates SET revoked_at = $2, revocation_reason = 9
                 WHERE revoked_at IS NULL AND not_after > $2 AND order_id IN (
                     SELECT o.id FROM orders o JOIN accounts a ON o.account_id = a.id
                     WHERE a.eab_kid = $1)",
                &[&kid, &unix(now)],
            )
            .await?;
            let star_orders = execute(
                tx,
                "UPDATE orders SET star_canceled = TRUE
                 WHERE star_end IS NOT NULL AND NOT star_canceled AND account_id IN (
                     SELECT id FROM accounts WHERE eab_kid = $1)",
                &[&kid],
            )
            .await?;
            execute(
                tx,
                "UPDATE orders SET status = 'invalid'
                 WHERE status IN ('pending', 'ready') AND account_id IN (
                     SELECT id FROM accounts WHERE eab_kid = $1)",
                &[&kid],
            )
            .await?;
            let summary = RevocationSummary {
                accounts: count(accounts),
                certificates: count(certificates),
                star_orders: count(star_orders),
            };
            let audit = AuditEntry {
                at: now,
                event: "rp-revoked".into(),
                origin: Some(origin.to_string()),
                subject: kid,
                detail: format!(
                    "{} account(s) revoked, {} certificate(s) revoked, {} STAR order(s) canceled",
                    summary.accounts, summary.certificates, summary.star_orders
                ),
            };
            Ok((Some(summary), Some(audit)))
        })
    }

    fn consume_nonce(&self, nonce: &NonceId, now: SystemTime) -> Result<bool, Error> {
        let expires = i64::try_from(nonce.expires).unwrap_or(i64::MAX);
        // The primary key decides: exactly one replica's insert of this id succeeds. Expired
        // ids go too (through the index on `expires`), so the table stays small.
        let taken = self.read_one(
            "WITH expired AS (DELETE FROM consumed_nonces WHERE expires <= $3),
                  taken AS (INSERT INTO consumed_nonces (id, expires) VALUES ($1, $2)
                            ON CONFLICT DO NOTHING RETURNING 1)
             SELECT count(*) FROM taken",
            &[&nonce.id.as_slice(), &expires, &unix(now)],
            |row| row.try_get::<_, i64>(0).map_err(db_error),
        )?;
        Ok(taken == Some(1) && expires > unix(now))
    }

    fn create_account(&self, account: &Account, audit: &AuditEntry) -> Result<(), Error> {
        self.audited(async |tx| {
            // The relying party's row lock serializes newAccounts with its key id across
            // replicas: the second one sees the first one's account below.
            query_opt(
                tx,
                "SELECT 1 FROM relying_parties WHERE eab_kid = $1 FOR UPDATE",
                &[&account.eab_kid],
            )
            .await?;
            if query_opt(
                tx,
                "SELECT 1 FROM accounts WHERE eab_kid = $1",
                &[&account.eab_kid],
            )
            .await?
            .is_some()
            {
                return Err(Refusal::EabKeyBound.into());
            }
            execute(
                tx,
                "INSERT INTO accounts (id, eab_kid, jwk, thumbprint, status)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &account.id,
                    &account.eab_kid,
                    &account.jwk,
                    &account.thumbprint,
                    &account.status.as_str(),
                ],
            )
            .await?;
            Ok(((), Some(audit.clone())))
        })
    }

    fn account(&self, id: &str) -> Result<Option<Account>, Error> {
        self.read_one(
            &format!("{ACCOUNT_SELECT} WHERE a.id = $1"),
            &[&id],
            account_from_row,
        )
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, Error> {
        self.read_one(
            &format!("{ACCOUNT_SELECT} WHERE a.thumbprint = $1"),
            &[&thumbprint],
            account_from_row,
        )
    }

    fn change_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        jwk: &str,
        thumbprint: &str,
        audit: &AuditEntry,
    ) -> Result<KeyChange, Error> {
        self.audited(async |tx| {
            // The unique thumbprint settles two accounts racing to the same key: the loser's
            // update fails and rolls back.
            if let Some(row) = query_opt(
                tx,
                "SELECT id FROM accounts WHERE thumbprint = $1",
                &[&thumbprint],
            )
            .await?
            {
                let holder: String = row.try_get(0).map_err(db_error)?;
                return Ok((KeyChange::KeyInUse(holder), None));
            }
            let changed = execute(
                tx,
                "UPDATE accounts SET jwk = $3, thumbprint = $4 WHERE id = $1 AND thumbprint = $2",
                &[&id, &old_thumbprint, &jwk, &thumbprint],
            )
            .await?;
            Ok(if changed == 1 {
                (KeyChange::Changed, Some(audit.clone()))
            } else {
                (KeyChange::Stale, None)
            })
        })
    }

    fn set_account_status(
        &self,
        id: &str,
        status: AccountStatus,
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        self.audited(async |tx| {
            execute(
                tx,
                "UPDATE accounts SET status = $2 WHERE id = $1",
                &[&id, &status.as_str()],
            )
            .await?;
            Ok(((), Some(audit.clone())))
        })
    }

    fn create_order(
        &self,
        order: &Order,
        authorizations: &[Authorization],
        audit: &AuditEntry,
    ) -> Result<(), Error> {
        let names: Vec<&str> = order.names.iter().map(LocalName::as_str).collect();
        let names = names.join(",");
        self.audited(async |tx| {
            execute(
                tx,
                "INSERT INTO orders (id, account_id, names, status, expires, star_end,
                     star_lifetime, star_canceled, certificate_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &order.id,
                    &order.account_id,
                    &names,
                    &order.status.as_str(),
                    &unix(order.expires),
                    &order.star.map(|s| unix(s.end)),
                    &order.star.map(|s| seconds(s.lifetime)),
                    &order.star.is_some_and(|s| s.canceled),
                    &order.certificate_id,
                ],
            )
            .await?;
            for authz in authorizations {
                execute(
                    tx,
                    "INSERT INTO authorizations (id, order_id, name, status, token, expires)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &authz.id,
                        &authz.order_id,
                        &authz.name.as_str(),
                        &authz.status.as_str(),
                        &authz.token,
                        &unix(authz.expires),
                    ],
                )
                .await?;
            }
            Ok(((), Some(audit.clone())))
        })
    }

    fn order(&self, id: &str) -> Result<Option<Order>, Error> {
        self.read_one(
            &format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = $1"),
            &[&id],
            order_from_row,
        )
    }

    fn order_ids(&self, account_id: &str) -> Result<Vec<String>, Error> {
        self.read_all(
            "SELECT id FROM orders WHERE account_id = $1 ORDER BY seq",
            &[&account_id],
            |row| row.try_get(0).map_err(db_error),
        )
    }

    fn authorizations(&self, order_id: &str) -> Result<Vec<Authorization>, Error> {
        self.read_all(
            &format!("SELECT {AUTHZ_COLUMNS} FROM authorizations WHERE order_id = $1 ORDER BY seq"),
            &[&order_id],
            authz_from_row,
        )
    }

    fn authorization(&self, id: &str) -> Result<Option<Authorization>, Error> {
        self.read_one(
            &format!("SELECT {AUTHZ_COLUMNS} FROM authorizations WHERE id = $1"),
            &[&id],
            authz_from_row,
        )
    }

    fn record_attestation(
        &self,
        authz_id: &str,
        attested: &Attested,
        audit: &AuditEntry,
    ) -> Result<bool, Error> {
        self.audited(async |tx| {
            let Some(row) = query_opt(
                tx,
                "UPDATE authorizations SET status = 'valid', attested_spki = $2, user_handle = $3,
                     device_certificate_sha256 = $4, attested_at = $5
                 WHERE id = $1 AND status = 'pending'
                 RETURNING order_id",
                &[
                    &authz_id,
                    &attested.spki,
                    &attested.user_handle,
                    &attested.device_certificate_sha256,
                    &unix(attested.at),
                ],
            )
            .await?
            else {
                return Ok((false, None));
            };
            let order_id: String = row.try_get(0).map_err(db_error)?;
            // Two authorizations of one order attested at once on two replicas: the order lock
            // makes the second one's check below see the first one's commit.
            query_opt(
                tx,
                "SELECT 1 FROM orders WHERE id = $1 FOR UPDATE",
                &[&order_id],
            )
            .await?;
            execute(
                tx,
                "UPDATE orders SET status = 'ready'
                 WHERE id = $1 AND status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM authorizations
                       WHERE order_id = $1 AND status != 'valid')",
                &[&order_id],
            )
            .await?;
            Ok((true, Some(audit.clone())))
        })
    }

    fn cancel_order_audited(&self, id: &str, audit: &AuditEntry) -> Result<(), Error> {
        self.audited(async |tx| {
            execute(
                tx,
                "UPDATE orders SET
                     star_canceled = star_canceled OR star_end IS NOT NULL,
                     status = CASE WHEN status IN ('pending', 'ready') THEN 'invalid'
                                   ELSE status END
                 WHERE id = $1",
                &[&id],
            )
            .await?;
            Ok(((), Some(audit.clone())))
        })
    }

    fn star_orders_due(&self, now: SystemTime) -> Result<Vec<Order>, Error> {
        self.read_all(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders o JOIN certificates c
                     ON o.certificate_id = c.id
                 WHERE o.status = 'valid' AND o.star_end IS NOT NULL AND NOT o.star_canceled
                   AND c.not_after < o.star_end
                   AND c.not_before + (c.not_after - c.not_before) / 2 <= $1
                 ORDER BY o.seq"
            ),
            &[&unix(now)],
            order_from_row,
        )
    }

    fn issue(
        &self,
        order_id: &str,
        expected: OrderStatus,
        replaces: Option<&str>,
        cert: &CertRecord,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, Error> {
        let new_id = cert.id.as_str();
        self.audited(async |tx| {
            // The order row stays locked until the commit: a concurrent finalize or renewal on
            // another replica waits here, then reads this one's result.
            let Some(row) = query_opt(
                tx,
                "SELECT status, certificate_id, star_canceled FROM orders
                 WHERE id = $1 FOR UPDATE",
                &[&order_id],
            )
            .await?
            else {
                return Err(Error::Store(format!("no order {order_id}")));
            };
            let status = order_status(row.try_get(0).map_err(db_error)?)?;
            let certificate_id: Option<String> = row.try_get(1).map_err(db_error)?;
            let star_canceled: bool = row.try_get(2).map_err(db_error)?;
            let replaces_latest = match replaces {
                Some(old) => certificate_id.as_deref() == Some(old) && !star_canceled,
                None => true,
            };
            if status != expected || !replaces_latest {
                return Ok((IssueOutcome::NotReady(status), None));
            }
            execute(
                tx,
                &format!(
                    "INSERT INTO certificates ({CERT_COLUMNS}, replaces)
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7)"
                ),
                &[
                    &new_id,
                    &order_id,
                    &cert.serial,
                    &cert.chain_pem,
                    &unix(cert.not_before),
                    &unix(cert.not_after),
                    &replaces,
                ],
            )
            .await?;
            execute(
                tx,
                "UPDATE orders SET status = 'valid', certificate_id = $2 WHERE id = $1",
                &[&order_id, &new_id],
            )
            .await?;
            let issued = CertRecord {
                order_id: order_id.to_owned(),
                revoked: None,
                ..cert.clone()
            };
            Ok((IssueOutcome::Issued(issued), Some(audit.clone())))
        })
    }

    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, Error> {
        self.read_one(
            &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE id = $1"),
            &[&id],
            cert_from_row,
        )
    }

    fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertRecord>, Error> {
        self.read_one(
            &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1"),
            &[&serial],
            cert_from_row,
        )
    }

    fn revoke_certificate(
        &self,
        id: &str,
        reason: u8,
        now: SystemTime,
        audit: &AuditEntry,
    ) -> Result<bool, Error> {
        self.audited(async |tx| {
            let revoked = execute(
                tx,
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
                 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &unix(now), &i16::from(reason)],
            )
            .await?
                == 1;
            Ok((revoked, revoked.then(|| audit.clone())))
        })
    }

    fn revoked_unexpired(&self, now: SystemTime) -> Result<Vec<CertRecord>, Error> {
        self.read_all(
            &format!(
                "SELECT {CERT_COLUMNS} FROM certificates
                 WHERE revoked_at IS NOT NULL AND not_after > $1
                 ORDER BY serial COLLATE \"C\""
            ),
            &[&unix(now)],
            cert_from_row,
        )
    }

    fn audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        self.block(async { audit_in(&self.client().await?, entry).await })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_all(
            "SELECT at, event, origin, subject, detail FROM (
                 SELECT * FROM audit ORDER BY seq DESC LIMIT $1) latest ORDER BY seq",
            &[&limit],
            audit_from_row,
        )
    }

    fn prune_audit(&self, before: SystemTime, limit: usize) -> Result<usize, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.audited(async |tx| {
            // `audit_by_time` finds the oldest rows without a scan.
            let deleted = execute(
                tx,
                "DELETE FROM audit WHERE seq IN (
                     SELECT seq FROM audit WHERE at < $1 ORDER BY at LIMIT $2)",
                &[&unix(before), &limit],
            )
            .await?;
            Ok((count(deleted), None))
        })
    }
}
