//! A database that already holds many issued certificates, made fast with direct bulk inserts
//! (one transaction, prepared statements, no journal while generating) into the schema the
//! store itself creates: each issuance is what the ACME flow leaves behind, an order, its valid
//! authorization, the certificate and three audit rows. Each generated account has its own
//! relying party (an EAB key binds one account).

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{Connection, params};

use crate::BoxResult;
use crate::common::issuance::HMAC;

/// Issued certificates per account.
const PER_ACCOUNT: u64 = 100;

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes `count` issued certificates to a new database at `path`, with the bench's `clients`
/// relying parties registered.
pub fn generate(path: &Path, clients: usize, count: u64, chain_pem: &str) -> BoxResult<()> {
    let now = SystemTime::now();
    crate::parties::register(path, clients, 0)?;
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let t = unix(now);
    let tx = conn.transaction()?;
    {
        let mut party = tx.prepare(
            "INSERT INTO relying_parties (origin, eab_kid, eab_hmac_key, status, created)
             VALUES (?1, ?2, ?3, 'active', ?4)",
        )?;
        let mut account = tx.prepare(
            "INSERT INTO accounts (id, eab_kid, jwk, thumbprint, status)
             VALUES (?1, ?2, ?3, ?4, 'valid')",
        )?;
        let mut order = tx.prepare(
            "INSERT INTO orders (id, account_id, names, status, expires, star_canceled,
                 certificate_id) VALUES (?1, ?2, ?3, 'valid', ?4, 0, ?5)",
        )?;
        let mut authz = tx.prepare(
            "INSERT INTO authorizations (id, order_id, name, status, token, expires,
                 attested_spki, user_handle, device_certificate_sha256, attested_at)
             VALUES (?1, ?2, ?3, 'valid', ?4, ?5, ?6, ?7, ?8, ?5)",
        )?;
        let mut cert = tx.prepare(
            "INSERT INTO certificates (id, order_id, serial, chain_pem, not_before, not_after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut audit = tx.prepare(
            "INSERT INTO audit (at, event, origin, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let spki = vec![4u8; 91];
        for i in 0..count {
            let account_id = format!("gen-account-{:08}", i / PER_ACCOUNT);
            let origin = format!("https://gen{}.bench.example", i / PER_ACCOUNT);
            let kid = format!("gen-kid-{:08}", i / PER_ACCOUNT);
            if i % PER_ACCOUNT == 0 {
                party.execute(params![origin, kid, HMAC, t])?;
                account.execute(params![
                    account_id,
                    kid,
                    "{}",
                    format!("gen-thumbprint-{:08}", i / PER_ACCOUNT)
                ])?;
            }
            let order_id = format!("gen-order-{i:010}");
            let cert_id = format!("gen-cert-{i:010}");
            let name = format!("tv-gen-{i:010}.local");
            let at = t - (count - i) as i64;
            order.execute(params![order_id, account_id, name, at + 3600, cert_id])?;
            authz.execute(params![
                format!("gen-authz-{i:010}"),
                order_id,
                name,
                format!("gen-token-{i:010}"),
                at,
                spki,
                b"user".as_slice(),
                "00".repeat(32)
            ])?;
            cert.execute(params![
                cert_id,
                order_id,
                format!("{i:032x}"),
                chain_pem,
                at - 300,
                at + 7 * 86_400
            ])?;
            for (event, detail) in [
                ("order-created", name.as_str()),
                ("attested", "by device certificate"),
                ("issued", "serial"),
            ] {
                audit.execute(params![at, event, origin, order_id, detail])?;
            }
        }
    }
    tx.commit()?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(())
}
