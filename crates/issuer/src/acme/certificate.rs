//! Certificate download, the STAR certificate URL (RFC 8739 §3.3) and STAR renewals.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::wire::{Response, rfc3339};
use super::{AcmeServer, Authenticated, Outcome};
use crate::error::{Error, Refusal};
use crate::jws;
use crate::store::{CertRecord, IssueOutcome, OrderStatus};

impl AcmeServer {
    pub(super) fn certificate(&self, auth: &Authenticated, id: &str) -> Outcome {
        let account = auth.account()?;
        let cert = self.store.certificate(id)?.ok_or(Refusal::NotFound)?;
        self.owned_order(account, &cert.order_id)?;
        Ok(pem_chain(&cert))
    }

    pub(super) fn star_certificate(&self, order_id: &str, now: SystemTime) -> Outcome {
        let order = self.store.order(order_id)?.ok_or(Refusal::NotFound)?;
        let star = order.star.ok_or(Refusal::NotFound)?;
        if star.canceled {
            return Err(Refusal::AutoRenewalCanceled.into());
        }
        let cert_id = order.certificate_id.ok_or(Refusal::NotFound)?;
        let cert = self.store.certificate(&cert_id)?.ok_or(Refusal::NotFound)?;
        if now >= star.end && now >= cert.not_after {
            return Err(Refusal::AutoRenewalExpired.into());
        }
        Ok(pem_chain(&cert)
            .with("cert-not-before", rfc3339(cert.not_before))
            .with("cert-not-after", rfc3339(cert.not_after)))
    }

    /// ACME Renewal Information (RFC 9773) for a certificate that is not STAR (STAR
    /// certificates are renewed by the server): `cert_id` is base64url(the AKI key identifier)
    /// "." base64url(the serial). The suggested window runs from two thirds to five sixths of
    /// the certificate's lifetime, or ends now if the certificate was revoked.
    pub(super) fn renewal_info(&self, cert_id: &str, now: SystemTime) -> Outcome {
        let (aki, serial) = cert_id
            .split_once('.')
            .ok_or(Refusal::Malformed("a certificate id is AKI.serial".into()))?;
        if jws::b64_decode("AKI", aki)? != self.ca.key_identifier() {
            return Err(Refusal::NotFound.into());
        }
        let serial = hex::encode(jws::b64_decode("serial", serial)?);
        let cert = self
            .store
            .certificate_by_serial(&serial)?
            .ok_or(Refusal::NotFound)?;
        let order = self.store.order(&cert.order_id)?.ok_or(Refusal::NotFound)?;
        if order.star.is_some() {
            return Err(Refusal::NotFound.into());
        }
        let lifetime = cert
            .not_after
            .duration_since(cert.not_before)
            .unwrap_or(Duration::ZERO);
        let (start, end) = match cert.revoked {
            Some(_) => (
                now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
                now,
            ),
            None => (
                cert.not_before + lifetime * 2 / 3,
                cert.not_before + lifetime * 5 / 6,
            ),
        };
        Ok(Response::json(
            200,
            &json!({"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}),
        )
        .with("retry-after", "21600".into()))
    }

    /// Issues the next certificate of every STAR order due at `now` (half of the current
    /// certificate's lifetime gone). Returns how many were issued.
    pub fn renew_due(&self, now: SystemTime) -> Result<usize, Error> {
        self.renew_due_ahead(now, Duration::ZERO)
    }

    /// Like [`Self::renew_due`], but also renews what falls due within `lead`: a loop that
    /// checks every `lead` thereby publishes each next certificate by half of the current
    /// one's lifetime, never after it.
    pub fn renew_due_ahead(&self, now: SystemTime, lead: Duration) -> Result<usize, Error> {
        let mut renewed = 0;
        for order in self.store.star_orders_due(now + lead)? {
            let Some(current) = order.certificate_id.clone() else {
                continue;
            };
            let Some(account) = self.store.account(&order.account_id)? else {
                continue;
            };
            let attested = match self.attested_key(&order.id) {
                Ok(attested) => attested,
                Err(_) => continue,
            };
            let lifetime = self.lifetime(&order, now);
            if lifetime.is_zero() {
                continue;
            }
            let cert = self.sign_leaf(&order, &account.origin, &attested, now, lifetime)?;
            let audit = Self::entry(
                now,
                "issued",
                Some(&account.origin),
                &order.id,
                &format!("serial {} (STAR renewal)", cert.serial),
            );
            let outcome =
                self.store
                    .issue(&order.id, OrderStatus::Valid, Some(&current), &cert, &audit)?;
            if let IssueOutcome::Issued(cert) = outcome {
                tracing::info!(
                    order = order.id,
                    serial = cert.serial,
                    "STAR certificate renewed"
                );
                renewed += 1;
            }
        }
        Ok(renewed)
    }
}

pub(super) fn pem_chain(cert: &CertRecord) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type", "application/pem-certificate-chain".into())],
        body: cert.chain_pem.clone().into_bytes(),
    }
}
