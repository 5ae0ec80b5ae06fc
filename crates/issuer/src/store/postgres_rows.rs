//! PostgreSQL rows to the store's types; a stored value that does not parse is a store error.

use std::time::Duration;

use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use tokio_postgres::Row;

use super::postgres_conn::describe;
use crate::error::Error;
use crate::store::{
    Account, AccountStatus, Attested, AuditEntry, Authorization, AuthzStatus, CertRecord, Order,
    OrderStatus, RelyingParty, RelyingPartyStatus, Star, from_unix,
};

fn bad_column(what: &str, value: &str) -> Error {
    Error::Store(format!("stored {what} {value:?} is invalid"))
}

/// The whole-second times the schema stores, as durations.
fn seconds(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, Error> {
    row.try_get(index)
        .map_err(|e| Error::Store(format!("column {index}: {}", describe(&e))))
}

fn status<T>(parse: fn(&str) -> Option<T>, value: &str) -> Result<T, Error> {
    parse(value).ok_or_else(|| bad_column("status", value))
}

fn origin_from(value: &str) -> Result<Origin, Error> {
    Origin::parse(value).map_err(|_| bad_column("origin", value))
}

fn name_from(value: &str) -> Result<LocalName, Error> {
    LocalName::parse(value).map_err(|_| bad_column("name", value))
}

pub(super) fn rp_from_row(row: &Row) -> Result<RelyingParty, Error> {
    Ok(RelyingParty {
        origin: origin_from(get(row, 0)?)?,
        eab_kid: get(row, 1)?,
        eab_hmac_key: get(row, 2)?,
        status: status(RelyingPartyStatus::parse, get(row, 3)?)?,
        created: from_unix(get(row, 4)?),
    })
}

pub(super) fn account_from_row(row: &Row) -> Result<Account, Error> {
    Ok(Account {
        id: get(row, 0)?,
        eab_kid: get(row, 1)?,
        origin: origin_from(get(row, 2)?)?,
        jwk: get(row, 3)?,
        thumbprint: get(row, 4)?,
        status: status(AccountStatus::parse, get(row, 5)?)?,
    })
}

pub(super) fn order_status(value: &str) -> Result<OrderStatus, Error> {
    status(OrderStatus::parse, value)
}

pub(super) fn order_from_row(row: &Row) -> Result<Order, Error> {
    let names = get::<&str>(row, 2)?
        .split(',')
        .map(name_from)
        .collect::<Result<Vec<_>, _>>()?;
    let star_end: Option<i64> = get(row, 5)?;
    let star_lifetime: Option<i64> = get(row, 6)?;
    let star = match (star_end, star_lifetime) {
        (Some(end), Some(lifetime)) => Some(Star {
            end: from_unix(end),
            lifetime: seconds(lifetime),
            canceled: get(row, 7)?,
        }),
        _ => None,
    };
    Ok(Order {
        id: get(row, 0)?,
        account_id: get(row, 1)?,
        names,
        status: order_status(get(row, 3)?)?,
        expires: from_unix(get(row, 4)?),
        star,
        certificate_id: get(row, 8)?,
    })
}

pub(super) fn authz_from_row(row: &Row) -> Result<Authorization, Error> {
    let spki: Option<Vec<u8>> = get(row, 6)?;
    let attested = match spki {
        Some(spki) => Some(Attested {
            spki,
            user_handle: get::<Option<Vec<u8>>>(row, 7)?.unwrap_or_default(),
            device_certificate_sha256: get::<Option<String>>(row, 8)?.unwrap_or_default(),
            at: from_unix(get::<Option<i64>>(row, 9)?.unwrap_or(0)),
        }),
        None => None,
    };
    Ok(Authorization {
        id: get(row, 0)?,
        order_id: get(row, 1)?,
        name: name_from(get(row, 2)?)?,
        status: status(AuthzStatus::parse, get(row, 3)?)?,
        token: get(row, 4)?,
        expires: from_unix(get(row, 5)?),
        attested,
    })
}

pub(super) fn cert_from_row(row: &Row) -> Result<CertRecord, Error> {
    let revoked_at: Option<i64> = get(row, 6)?;
    let reason: Option<i16> = get(row, 7)?;
    Ok(CertRecord {
        id: get(row, 0)?,
        order_id: get(row, 1)?,
        serial: get(row, 2)?,
        chain_pem: get(row, 3)?,
        not_before: from_unix(get(row, 4)?),
        not_after: from_unix(get(row, 5)?),
        revoked: revoked_at.map(|t| {
            (
                from_unix(t),
                reason.and_then(|r| u8::try_from(r).ok()).unwrap_or(0),
            )
        }),
    })
}

pub(super) fn audit_from_row(row: &Row) -> Result<AuditEntry, Error> {
    Ok(AuditEntry {
        at: from_unix(get(row, 0)?),
        event: get(row, 1)?,
        origin: get(row, 2)?,
        subject: get(row, 3)?,
        detail: get(row, 4)?,
    })
}
