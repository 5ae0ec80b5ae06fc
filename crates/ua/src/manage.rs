//! Managing a device's origin bindings over BLE (SPEC §5.4): LIST what it serves, REMOVE one
//! origin. One connection per call, through any [`Connector`] (btleplug or the in-memory link).

use localcert_proto::ErrorCode;
use localcert_proto::message::{BindingSummary, RemoveRequest, Request, Response};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use crate::provision::Connector;
use crate::transport::{Transport, TransportError};

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// BLE failed (connection, framing, timeout).
    #[error("BLE: {0}")]
    Ble(#[from] TransportError),
    /// The device refused the request, e.g. NOT_FOUND for an origin it has no binding for.
    #[error("the device refused: {code}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// The device's code.
        code: ErrorCode,
        /// The device's message for people (never acted on).
        detail: Option<String>,
    },
    /// The device answered with a response of another kind.
    #[error("the device answered with a response of another kind")]
    Unexpected,
}

/// What REMOVE took away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The name the device no longer serves.
    pub name: LocalName,
    /// Whether the binding was renewed through STAR (its delegation goes on at the issuer
    /// until the origin cancels it).
    pub star: bool,
}

/// Requests in turn on one fresh connection, closed after the last answer or the first failure.
async fn ask<C: Connector>(
    connector: &mut C,
    requests: &[Request],
) -> Result<Vec<Response>, ManageError> {
    let link = connector
        .connect()
        .await
        .map_err(|e| ManageError::Ble(e.into()))?;
    let Some((first, rest)) = requests.split_first() else {
        return Ok(Vec::new());
    };
    // The first request goes beside the info read (a turn fewer when it is one fragment).
    let (mut transport, first_answer) = Transport::open_with(link, first, |_| {}).await?;
    let mut answers = Vec::with_capacity(requests.len());
    let mut failure = None;
    let mut outcome: Result<Response, TransportError> = Ok(first_answer);
    let mut rest = rest.iter();
    loop {
        match outcome {
            Ok(Response::Error(code, detail)) => {
                failure = Some(ManageError::Refused { code, detail });
                break;
            }
            Ok(answer) => answers.push(answer),
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
        let Some(request) = rest.next() else {
            break;
        };
        outcome = transport.request(request, |_| {}).await;
    }
    transport.close().await;
    failure.map_or(Ok(answers), Err)
}

/// The device's bindings: origin, name, certificate fingerprint, expiry, STAR.
pub async fn list<C: Connector>(connector: &mut C) -> Result<Vec<BindingSummary>, ManageError> {
    match ask(connector, &[Request::List]).await?.pop() {
        Some(Response::List(bindings)) => Ok(bindings),
        _ => Err(ManageError::Unexpected),
    }
}

/// Removes the binding of `origin`: the device stops serving its name and deletes its key and
/// certificate. LIST first, on the same connection, tells whether it was a STAR binding.
pub async fn remove<C: Connector>(
    connector: &mut C,
    origin: &Origin,
) -> Result<Removed, ManageError> {
    let requests = [
        Request::List,
        Request::Remove(RemoveRequest {
            origin: origin.clone(),
        }),
    ];
    match &ask(connector, &requests).await?[..] {
        [Response::List(bindings), Response::Remove(removed)] => Ok(Removed {
            name: removed.name.clone(),
            star: bindings.iter().any(|b| &b.origin == origin && b.star),
        }),
        _ => Err(ManageError::Unexpected),
    }
}
