//! The bench's relying parties, written straight into the database before the server starts
//! (one transaction). An EAB key id binds one account, so each client has its own party, and
//! runs with new accounts draw a fresh party for every issuance from a pool.

use std::path::Path;
use std::time::SystemTime;

use localcert_issuer::store::{RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use localcert_proto::origin::Origin;
use rusqlite::{Connection, params};

use crate::BoxResult;
use crate::common::issuance::HMAC;

/// A relying party: its origin and EAB key id.
#[derive(Clone, Debug)]
pub struct Party {
    /// The origin.
    pub origin: Origin,
    /// The EAB key id.
    pub kid: String,
}

/// The party of client `i` (`pool = false`) or of pool entry `i`.
pub fn party(pool: bool, i: usize) -> Party {
    let tag = if pool { "n" } else { "c" };
    Party {
        origin: Origin::parse(&format!("https://{tag}{i}.bench.example")).unwrap(),
        kid: format!("kid-{tag}{i}"),
    }
}

/// Registers the `clients` client parties through `store` (PostgreSQL); already registered
/// ones are kept.
pub fn register_in(store: &dyn Store, clients: usize) -> BoxResult<()> {
    for i in 0..clients {
        let p = party(false, i);
        let rp = RelyingParty {
            origin: p.origin,
            eab_kid: p.kid,
            eab_hmac_key: HMAC.to_vec(),
            status: RelyingPartyStatus::Active,
            created: SystemTime::now(),
        };
        match store.add_relying_party(&rp) {
            Ok(()) | Err(localcert_issuer::Error::AlreadyRegistered(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Registers `clients` client parties and `pool` pool parties in the database at `path`
/// (created with the store's schema if needed).
pub fn register(path: &Path, clients: usize, pool: usize) -> BoxResult<()> {
    drop(SqliteStore::open(path)?);
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO relying_parties (origin, eab_kid, eab_hmac_key, status, created)
             VALUES (?1, ?2, ?3, 'active', ?4)",
        )?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs() as i64;
        let all = (0..clients)
            .map(|i| party(false, i))
            .chain((0..pool).map(|i| party(true, i)));
        for p in all {
            insert.execute(params![p.origin.as_str(), p.kid, HMAC, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}
