//! ACME wire types: the HTTP response before any transport, the JSON payloads clients send,
//! and RFC 3339 times.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ProblemType, Refusal};
use crate::jws::Jws;
use crate::untrusted::bounded;

/// An HTTP response, before any transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    pub(super) fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    pub(super) fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// An RFC 7807 problem document; its detail may quote the request, so it is
    /// [`bounded`].
    pub fn problem(refusal: &Refusal) -> Self {
        Self::problem_of(
            refusal.problem_type(),
            refusal.http_status(),
            &bounded(&refusal.to_string()),
        )
    }

    pub(super) fn problem_of(kind: ProblemType, status: u16, detail: &str) -> Self {
        let mut body = json!({"type": kind.urn(), "detail": detail, "status": status});
        if kind == ProblemType::BadSignatureAlgorithm {
            // RFC 8555 §6.2: the problem lists the algorithms the server accepts.
            body["algorithms"] = json!(crate::jws::ALGORITHMS);
        }
        Self {
            status,
            headers: vec![("content-type", "application/problem+json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

pub use crate::ca::rfc3339;

pub(super) fn parse_rfc3339(what: &'static str, s: &str) -> Result<SystemTime, Refusal> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| Refusal::Malformed(format!("{what} is not an RFC 3339 time")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewAccountPayload {
    #[serde(default)]
    pub(super) only_return_existing: bool,
    #[serde(default)]
    pub(super) external_account_binding: Option<Value>,
}

/// The inner payload of a keyChange (RFC 8555 §7.3.5).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyChangePayload {
    pub(super) account: String,
    pub(super) old_key: Value,
}

#[derive(Deserialize)]
pub(super) struct IdentifierPayload {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewOrderPayload {
    pub(super) identifiers: Vec<IdentifierPayload>,
    pub(super) not_before: Option<Value>,
    pub(super) not_after: Option<Value>,
    #[serde(rename = "auto-renewal")]
    pub(super) auto_renewal: Option<AutoRenewalPayload>,
    /// An ACME profile (draft-aaron-acme-profiles): `star` asks for STAR with the server's
    /// default lifetime and duration, for clients that cannot send `auto-renewal`.
    pub(super) profile: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct AutoRenewalPayload {
    pub(super) start_date: Option<String>,
    pub(super) end_date: String,
    pub(super) lifetime: u64,
    pub(super) lifetime_adjust: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChallengePayload {
    pub(super) att_obj: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct StatusPayload {
    pub(super) status: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct FinalizePayload {
    pub(super) csr: String,
}

#[derive(Deserialize)]
pub(super) struct RevokePayload {
    pub(super) certificate: String,
    pub(super) reason: Option<i64>,
}

pub(super) fn parse_payload<T: for<'de> Deserialize<'de>>(
    jws: &Jws,
    what: &str,
) -> Result<T, Refusal> {
    serde_json::from_slice(&jws.payload)
        .map_err(|e| Refusal::Malformed(format!("{what} payload: {e}")))
}
