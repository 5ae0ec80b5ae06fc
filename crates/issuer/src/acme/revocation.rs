//! Revocation: revokeCert by the certificate's account, and the CRL.

use std::time::SystemTime;

use super::wire::{Response, RevokePayload, parse_payload};
use super::{AcmeServer, Authenticated, Outcome};
use crate::ca;
use crate::error::Refusal;
use crate::jws;

impl AcmeServer {
    pub(super) fn revoke_cert(&self, auth: &Authenticated, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let payload: RevokePayload = parse_payload(&auth.jws, "revokeCert")?;
        let reason = payload.reason.unwrap_or(0);
        // RFC 5280 reasons a subscriber may give (not CA compromise, hold or removeFromCRL).
        let reason = match reason {
            0 | 1 | 3 | 4 | 5 | 9 => reason as u8,
            other => return Err(Refusal::BadRevocationReason(other).into()),
        };
        let der = jws::b64_decode("certificate", &payload.certificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| Refusal::Malformed("certificate does not parse".into()))?;
        let serial = hex::encode(parsed.raw_serial());
        let record = self
            .store
            .certificate_by_serial(&serial)?
            .ok_or(Refusal::NotFound)?;
        let issued_der = ca::pem_blocks(record.chain_pem.as_bytes(), "CERTIFICATE")?;
        if issued_der.first() != Some(&der) {
            return Err(Refusal::NotFound.into());
        }
        // RFC 8555 §7.6: only the account that ordered it may revoke by account key.
        match self.store.order(&record.order_id)? {
            Some(order) if order.account_id == account.id => {}
            _ => return Err(Refusal::NotYourCertificate.into()),
        }
        let audit = Self::entry(
            now,
            "revoked",
            Some(&account.origin),
            &serial,
            &format!("reason {reason}"),
        );
        if !self
            .store
            .revoke_certificate(&record.id, reason, now, &audit)?
        {
            return Err(Refusal::AlreadyRevoked.into());
        }
        Ok(Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    pub(super) fn crl(&self, now: SystemTime) -> Outcome {
        let revoked = self
            .store
            .revoked_unexpired(now)?
            .into_iter()
            .filter_map(|c| {
                let serial = hex::decode(&c.serial).ok()?;
                let (at, reason) = c.revoked?;
                Some((serial, at, reason))
            })
            .collect::<Vec<_>>();
        let der = self.ca.crl(&revoked, now, now + self.policy.crl_lifetime)?;
        Ok(Response {
            status: 200,
            headers: vec![("content-type", "application/pkix-crl".into())],
            body: der,
        })
    }
}
