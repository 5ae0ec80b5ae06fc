//! ACME authorizations and their single `device-attest-01` challenge.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::order::is_expired;
use super::wire::{ChallengePayload, Response, parse_payload, rfc3339};
use super::{AcmeServer, Authenticated, DEVICE_ATTEST_01, Failure, Outcome, Step, Then};
use crate::error::Refusal;
use crate::jws;
use crate::store::{Account, Attested, Authorization, AuthzStatus, Change, Changed, Order};
use crate::validate::{self, ChallengeContext};

impl AcmeServer {
    /// The authorization and its order, if they belong to `account`.
    pub(super) fn owned_authz(
        &self,
        account: &Account,
        id: &str,
    ) -> Result<(Authorization, Order), Failure> {
        let authz = self.store.authorization(id)?.ok_or(Refusal::NotFound)?;
        let order = self.owned_order(account, &authz.order_id)?;
        Ok((authz, order))
    }

    pub(super) fn challenge_json(&self, authz: &Authorization) -> Value {
        let mut value = json!({
            "type": DEVICE_ATTEST_01,
            "url": self.url(&format!("/acme/chall/{}", authz.id)),
            "token": authz.token,
            "status": match authz.status {
                AuthzStatus::Pending => "pending",
                AuthzStatus::Valid => "valid",
                AuthzStatus::Deactivated => "invalid",
            },
        });
        if let Some(attested) = &authz.attested {
            value["validated"] = json!(rfc3339(attested.at));
        }
        value
    }

    pub(super) fn authz(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let (authz, _) = self.owned_authz(auth.account()?, id)?;
        // RFC 8555 §7.1.6: a pending authorization past its expiry is expired.
        let status = match authz.status {
            AuthzStatus::Pending if now >= authz.expires => "expired",
            status => status.as_str(),
        };
        Ok(Response::json(
            200,
            &json!({
                "identifier": {"type": "dns", "value": authz.name.as_str()},
                "status": status,
                "expires": rfc3339(authz.expires),
                "challenges": [self.challenge_json(&authz)],
            }),
        ))
    }

    pub(super) fn challenge(
        &self,
        auth: &Authenticated,
        id: &str,
        now: SystemTime,
    ) -> Result<Step, Failure> {
        let account = auth.account()?;
        let (authz, order) = self.owned_authz(account, id)?;
        if auth.jws.is_post_as_get() {
            return Ok(Step::Answer(Response::json(
                200,
                &self.challenge_json(&authz),
            )));
        }
        let payload: ChallengePayload = parse_payload(&auth.jws, "challenge")?;
        if is_expired(&order, now) {
            return Err(Refusal::OrderExpired.into());
        }
        let att_obj = payload.att_obj.ok_or(Refusal::Malformed(
            "device-attest-01 response needs attObj".into(),
        ))?;
        let att_obj = jws::b64_decode("attObj", &att_obj)?;
        let key_authorization = format!("{}.{}", authz.token, account.thumbprint);
        let ctx = ChallengeContext {
            origin: &account.origin,
            key_authorization: &key_authorization,
            names: &order.names,
            expires: authz.expires,
            already_answered: authz.status != AuthzStatus::Pending,
        };
        let device = validate::check_attestation(&att_obj, &ctx, &self.trust, now)?;
        self.tally.verified(device.signatures_verified);
        let attested = Attested {
            spki: device.spki,
            user_handle: device.user_handle,
            device_certificate_sha256: device.device_certificate_sha256,
            at: now,
        };
        let audit = Self::entry(
            now,
            "attested",
            Some(&account.origin),
            &order.id,
            &format!(
                "{} by device certificate {}",
                authz.name, attested.device_certificate_sha256
            ),
        );
        let change = Change::RecordAttestation {
            authz_id: id.to_owned(),
            attested: attested.clone(),
            audit,
        };
        let then: Then = Box::new(move |server, recorded| {
            if !matches!(recorded?, Changed::Recorded(true)) {
                return Err(Refusal::ChallengeUsed.into());
            }
            let mut authz = authz;
            authz.status = AuthzStatus::Valid;
            authz.attested = Some(attested);
            let up = server.url(&format!("/acme/authz/{}", authz.id));
            Ok(Response::json(200, &server.challenge_json(&authz))
                .with("link", format!("<{up}>;rel=\"up\"")))
        });
        Ok(Step::Commit(Box::new(change), then))
    }
}
