//! A change handed to the store whole, answered through a callback once durable, so that the
//! caller need not hold a thread while it waits for the commit ([`super::Store::submit`]).
//! The three changes of every issuance (order, attestation, certificate) go this way.

use super::{Attested, AuditEntry, Authorization, CertRecord, IssueOutcome, Order, OrderStatus};
use crate::error::Error;

/// A change, with the audit entry that records it.
#[derive(Debug)]
pub enum Change {
    /// [`super::Store::create_order`].
    CreateOrder {
        /// The order.
        order: Order,
        /// Its authorizations.
        authorizations: Vec<Authorization>,
        /// Its audit entry.
        audit: AuditEntry,
    },
    /// [`super::Store::record_attestation`].
    RecordAttestation {
        /// The authorization.
        authz_id: String,
        /// What was attested.
        attested: Attested,
        /// Its audit entry.
        audit: AuditEntry,
    },
    /// [`super::Store::issue`] of a plain order (no STAR renewal).
    Issue {
        /// The order.
        order_id: String,
        /// The state the order must be in.
        expected: OrderStatus,
        /// The certificate.
        cert: CertRecord,
        /// Its audit entry.
        audit: AuditEntry,
    },
}

/// What a [`Change`] returned.
#[derive(Debug)]
pub enum Changed {
    /// The order was created.
    Created,
    /// The attestation was recorded (false: the authorization was no longer pending).
    Recorded(bool),
    /// The issuance's outcome.
    Issued(IssueOutcome),
}

/// Called with a submitted change's result once it is durable (or failed).
pub type Done = Box<dyn FnOnce(Result<Changed, Error>) + Send>;
