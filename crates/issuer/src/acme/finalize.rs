//! ACME finalize: the CSR checked against the attested key, the leaf signed and recorded in
//! one store transaction.

use std::time::{Duration, SystemTime};

use localcert_proto::binding::OriginBinding;
use localcert_proto::origin::Origin;

use super::order::is_expired;
use super::wire::{FinalizePayload, Response, parse_payload};
use super::{AcmeServer, Authenticated, Failure, Step, Then, random_id};
use crate::ca;
use crate::error::{Error, Refusal};
use crate::jws;
use crate::leaf::{self, LeafSpec};
use crate::store::{
    Attested, Authorization, AuthzStatus, CertRecord, Change, Changed, IssueOutcome, Order,
    OrderStatus,
};
use crate::validate;

impl AcmeServer {
    /// The attested key and user handle of an order whose authorizations are all valid and
    /// agree on them.
    pub(super) fn attested_key(&self, order_id: &str) -> Result<Attested, Failure> {
        attested_key_of(&self.store.authorizations(order_id)?)
    }

    pub(super) fn sign_leaf(
        &self,
        order: &Order,
        origin: &Origin,
        attested: &Attested,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<CertRecord, Error> {
        let not_after = now + lifetime;
        // An intermediate out of its validity is the operator's to fix: a clear refusal
        // (503), not an internal error.
        self.ca.check_signing(now, not_after)?;
        let serial = ca::random_serial_bytes()?;
        let binding = OriginBinding::new(origin.clone(), &attested.user_handle);
        let not_before = now.checked_sub(ca::BACKDATE).unwrap_or(now);
        let der = leaf::issue_leaf(
            &self.ca,
            &LeafSpec {
                names: &order.names,
                spki_der: &attested.spki,
                binding: &binding,
                not_before,
                not_after,
                serial: &serial,
            },
        )?;
        self.tally
            .certificates_signed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(CertRecord {
            id: random_id(16)?,
            order_id: order.id.clone(),
            serial: hex::encode(serial),
            chain_pem: leaf::chain_pem(&der, &self.ca),
            not_before,
            not_after,
            revoked: None,
        })
    }

    pub(super) fn lifetime(&self, order: &Order, now: SystemTime) -> Duration {
        match order.star {
            Some(star) => star
                .lifetime
                .min(star.end.duration_since(now).unwrap_or(Duration::ZERO)),
            None => self.policy.leaf_lifetime,
        }
    }

    pub(super) fn finalize(
        &self,
        auth: &Authenticated,
        id: &str,
        now: SystemTime,
    ) -> Result<Step, Failure> {
        let account = auth.account()?;
        let order = self.owned_order(account, id)?;
        let payload: FinalizePayload = parse_payload(&auth.jws, "finalize")?;
        if is_expired(&order, now) {
            return Err(Refusal::OrderNotReady(OrderStatus::Invalid.as_str()).into());
        }
        if order.status != OrderStatus::Ready {
            return Err(Refusal::OrderNotReady(order.status.as_str()).into());
        }
        let authorizations = self.store.authorizations(id)?;
        let attested = attested_key_of(&authorizations)?;
        let csr = jws::b64_decode("csr", &payload.csr)?;
        validate::check_csr(&csr, &order.names, &attested.spki)?;
        self.tally.verified(1);
        let lifetime = self.lifetime(&order, now);
        // Signed before the store's transaction (which then stays short); handed out only
        // after it committed, thrown away if another request got there first.
        let cert = self.sign_leaf(&order, &account.origin, &attested, now, lifetime)?;
        let audit = Self::entry(
            now,
            "issued",
            Some(&account.origin),
            id,
            &format!("serial {}", cert.serial),
        );
        let change = Change::Issue {
            order_id: id.to_owned(),
            expected: OrderStatus::Ready,
            cert,
            audit,
        };
        let origin = account.origin.clone();
        let then: Then = Box::new(move |server, issued| {
            let cert = match issued? {
                Changed::Issued(IssueOutcome::Issued(cert)) => cert,
                Changed::Issued(IssueOutcome::NotReady(status)) => {
                    return Err(Refusal::OrderNotReady(status.as_str()).into());
                }
                other => {
                    return Err(Error::Store(format!("issue answered {other:?}")).into());
                }
            };
            tracing::info!(order = order.id, serial = cert.serial, %origin, "issued");
            let mut order = order;
            order.status = OrderStatus::Valid;
            order.certificate_id = Some(cert.id);
            Ok(
                Response::json(200, &server.order_json(&order, &authorizations, now)?)
                    .with("location", server.order_url(&order.id)),
            )
        });
        Ok(Step::Commit(Box::new(change), then))
    }
}

/// The attested key and user handle of these authorizations, if all are valid and agree.
fn attested_key_of(authorizations: &[Authorization]) -> Result<Attested, Failure> {
    let mut attested: Option<Attested> = None;
    for authz in authorizations {
        let this = authz
            .attested
            .as_ref()
            .filter(|_| authz.status == AuthzStatus::Valid)
            .ok_or(Refusal::OrderNotReady("pending"))?;
        match &attested {
            Some(first) if first.spki != this.spki || first.user_handle != this.user_handle => {
                return Err(Refusal::AttestedKey.into());
            }
            Some(_) => {}
            None => attested = Some(this.clone()),
        }
    }
    attested.ok_or(Refusal::OrderNotReady("pending").into())
}
