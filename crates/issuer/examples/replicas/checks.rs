//! What the shared database must hold after a run, read straight from PostgreSQL (the URL in
//! `LOCALCERT_TEST_POSTGRES_URL`, its password in `LOCALCERT_POSTGRES_PASSWORD`).

use std::collections::HashMap;

use sha2::Digest;

use crate::flow::Acked;

pub(crate) async fn connect() -> Result<tokio_postgres::Client, String> {
    let url = std::env::var("LOCALCERT_TEST_POSTGRES_URL")
        .map_err(|_| "LOCALCERT_TEST_POSTGRES_URL is not set")?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if let Ok(password) = std::env::var("LOCALCERT_POSTGRES_PASSWORD") {
        config.password(password);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn rows(db: &tokio_postgres::Client, sql: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    db.query(sql, &[]).await.map_err(|e| format!("{sql}: {e}"))
}

fn leaf_sha256(chain_pem: &str) -> Option<String> {
    let leaf = pem::parse_many(chain_pem).ok()?.into_iter().next()?;
    Some(hex::encode(sha2::Sha256::digest(leaf.contents())))
}

/// Every acknowledged issuance is in the database exactly once, and no order was issued twice.
pub(crate) async fn issuances(acked: &[(String, String, String)]) -> Result<String, String> {
    let db = connect().await?;
    let mut problems = Vec::new();
    let stored: HashMap<String, (String, String)> = rows(
        &db,
        "SELECT id, order_id, chain_pem FROM certificates WHERE replaces IS NULL",
    )
    .await?
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    let mut per_order: HashMap<&str, usize> = HashMap::new();
    for (order_id, cert_id, sha256) in acked {
        *per_order.entry(order_id).or_default() += 1;
        match stored.get(cert_id) {
            None => problems.push(format!("acknowledged certificate {cert_id} is lost")),
            Some((stored_order, chain)) => {
                if stored_order != order_id {
                    problems.push(format!(
                        "{cert_id} belongs to {stored_order}, not {order_id}"
                    ));
                }
                if leaf_sha256(chain).as_deref() != Some(sha256.as_str()) {
                    problems.push(format!("{cert_id} is not the certificate the client got"));
                }
            }
        }
    }
    if let Some((order, n)) = per_order.iter().find(|(_, n)| **n > 1) {
        problems.push(format!("order {order} acknowledged {n} times"));
    }
    let twice = rows(
        &db,
        "SELECT order_id, count(*) FROM certificates WHERE replaces IS NULL
         GROUP BY order_id HAVING count(*) > 1",
    )
    .await?;
    for row in &twice {
        let (order, n): (String, i64) = (row.get(0), row.get(1));
        problems.push(format!("order {order} was issued {n} times"));
    }
    // The order rows agree with the certificates: each issued order names its certificate.
    let dangling = rows(
        &db,
        "SELECT o.id FROM orders o LEFT JOIN certificates c ON c.id = o.certificate_id
         WHERE o.status = 'valid' AND (c.id IS NULL OR c.order_id != o.id)",
    )
    .await?;
    for row in &dangling {
        problems.push(format!(
            "valid order {} has no certificate",
            row.get::<_, String>(0)
        ));
    }
    let unpointed = rows(
        &db,
        "SELECT c.id FROM certificates c JOIN orders o ON o.id = c.order_id
         WHERE c.replaces IS NULL AND o.star_end IS NULL
           AND (o.status != 'valid' OR o.certificate_id != c.id)",
    )
    .await?;
    for row in &unpointed {
        problems.push(format!(
            "certificate {} is not its order's certificate",
            row.get::<_, String>(0)
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "{} acknowledged issuances each stored once ({} first certificates in the database, \
             no order issued twice)",
            acked.len(),
            stored.len()
        ))
    } else {
        problems.truncate(10);
        Err(problems.join("; "))
    }
}

/// Each STAR order's certificates form one chain: every renewal replaced the latest
/// certificate exactly once, and each order was renewed at least `min_renewals` times.
pub(crate) async fn star_renewals(
    orders: &[String],
    min_renewals: usize,
) -> Result<String, String> {
    let db = connect().await?;
    let mut problems = Vec::new();
    let mut total = 0;
    for order in orders {
        let certs = db
            .query(
                "SELECT id, replaces FROM certificates WHERE order_id = $1",
                &[order],
            )
            .await
            .map_err(|e| e.to_string())?;
        let firsts = certs
            .iter()
            .filter(|r| r.get::<_, Option<String>>(1).is_none())
            .count();
        let mut replaced: HashMap<String, usize> = HashMap::new();
        for row in &certs {
            if let Some(old) = row.get::<_, Option<String>>(1) {
                *replaced.entry(old).or_default() += 1;
            }
        }
        let renewals = certs.len() - firsts;
        total += renewals;
        if firsts != 1 {
            problems.push(format!("order {order}: {firsts} first certificates"));
        }
        if let Some((old, n)) = replaced.iter().find(|(_, n)| **n > 1) {
            problems.push(format!("order {order}: {old} renewed {n} times"));
        }
        let ids: Vec<String> = certs.iter().map(|r| r.get(0)).collect();
        if replaced.keys().any(|old| !ids.contains(old)) {
            problems.push(format!(
                "order {order}: a renewal replaced another order's certificate"
            ));
        }
        if renewals < min_renewals {
            problems.push(format!(
                "order {order}: {renewals} renewals, fewer than {min_renewals}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "{total} renewals over {} STAR orders, each replacing the latest certificate once",
            orders.len()
        ))
    } else {
        problems.truncate(10);
        Err(problems.join("; "))
    }
}

/// The serials the database lists as revoked and unexpired, hex.
pub(crate) async fn revoked_serials() -> Result<Vec<String>, String> {
    let db = connect().await?;
    Ok(rows(
        &db,
        "SELECT serial FROM certificates
         WHERE revoked_at IS NOT NULL AND not_after > extract(epoch FROM now())::bigint",
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

impl Acked {
    pub(crate) fn parse(line: &str) -> Option<(String, String, String)> {
        let mut parts = line.split_whitespace();
        Some((
            parts.next()?.to_owned(),
            parts.next()?.to_owned(),
            parts.next()?.to_owned(),
        ))
    }
}
