//! ACME orders: newOrder (with STAR auto-renewal), the order resource and its cancel.

use std::time::{Duration, SystemTime};

use localcert_proto::name::LocalName;
use serde_json::{Value, json};

use super::wire::{
    AutoRenewalPayload, NewOrderPayload, Response, StatusPayload, parse_payload, parse_rfc3339,
    rfc3339,
};
use super::{
    AcmeServer, Authenticated, Failure, Outcome, PROFILE_DEFAULT, PROFILE_STAR, Step, Then,
    random_id,
};
use crate::error::{Error, Refusal};
use crate::store::{Account, Authorization, AuthzStatus, Change, Order, OrderStatus, Star};
use crate::validate::{self, Identifier};

impl AcmeServer {
    pub(super) fn new_order(&self, auth: &Authenticated, now: SystemTime) -> Result<Step, Failure> {
        let account = auth.account()?;
        let payload: NewOrderPayload = parse_payload(&auth.jws, "newOrder")?;
        if payload.not_before.is_some() || payload.not_after.is_some() {
            return Err(
                Refusal::Malformed("notBefore and notAfter are not supported".into()).into(),
            );
        }
        let identifiers: Vec<Identifier<'_>> = payload
            .identifiers
            .iter()
            .map(|i| Identifier {
                kind: &i.kind,
                value: &i.value,
            })
            .collect();
        let names = validate::check_identifiers(&identifiers, &account.origin)?;
        let auto_renewal = match (payload.auto_renewal, payload.profile.as_deref()) {
            (auto_renewal, None | Some(PROFILE_DEFAULT)) => auto_renewal,
            (None, Some(PROFILE_STAR)) => Some(AutoRenewalPayload {
                start_date: None,
                end_date: rfc3339(now + self.policy.star_profile_duration),
                lifetime: self.policy.star_profile_lifetime.as_secs(),
                lifetime_adjust: None,
            }),
            (Some(_), Some(PROFILE_STAR)) => {
                return Err(Refusal::Malformed(
                    "give either auto-renewal or the star profile, not both".into(),
                )
                .into());
            }
            (_, Some(_)) => return Err(Refusal::InvalidProfile.into()),
        };
        let star = auto_renewal
            .map(|ar| self.check_auto_renewal(&ar, now))
            .transpose()?;
        let order = Order {
            id: random_id(16)?,
            account_id: account.id.clone(),
            names: names.clone(),
            status: OrderStatus::Pending,
            expires: now + self.policy.order_lifetime,
            star,
            certificate_id: None,
        };
        let authorizations = names
            .into_iter()
            .map(|name| {
                Ok(Authorization {
                    id: random_id(16)?,
                    order_id: order.id.clone(),
                    name,
                    status: AuthzStatus::Pending,
                    // ≥ 32 random bytes (draft-ietf-acme-device-attest, RFC 8555 §8.1).
                    token: random_id(32)?,
                    expires: now + self.policy.challenge_lifetime,
                    attested: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let detail = format!(
            "{}{}",
            order
                .names
                .iter()
                .map(LocalName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            if order.star.is_some() { " (STAR)" } else { "" }
        );
        let audit = Self::entry(
            now,
            "order-created",
            Some(&account.origin),
            &order.id,
            &detail,
        );
        let change = Change::CreateOrder {
            order: order.clone(),
            authorizations: authorizations.clone(),
            audit,
        };
        let then: Then = Box::new(move |server, created| {
            created?;
            Ok(
                Response::json(201, &server.order_json(&order, &authorizations, now)?)
                    .with("location", server.order_url(&order.id)),
            )
        });
        Ok(Step::Commit(Box::new(change), then))
    }

    pub(super) fn check_auto_renewal(
        &self,
        ar: &AutoRenewalPayload,
        now: SystemTime,
    ) -> Result<Star, Refusal> {
        if let Some(start) = &ar.start_date {
            if parse_rfc3339("start-date", start)? > now {
                return Err(Refusal::AutoRenewal("a future start-date is not supported"));
            }
        }
        if ar.lifetime_adjust.is_some_and(|a| a > 0) {
            return Err(Refusal::AutoRenewal("lifetime-adjust is not supported"));
        }
        let end = parse_rfc3339("end-date", &ar.end_date)?;
        let lifetime = Duration::from_secs(ar.lifetime);
        if lifetime < self.policy.star_min_lifetime || lifetime > self.policy.star_max_lifetime {
            return Err(Refusal::AutoRenewal(
                "lifetime is outside the server's limits",
            ));
        }
        if end <= now + lifetime / 2 || end > now + self.policy.star_max_duration {
            return Err(Refusal::AutoRenewal(
                "end-date is outside the server's limits",
            ));
        }
        Ok(Star {
            end,
            lifetime,
            canceled: false,
        })
    }

    pub(super) fn order_url(&self, id: &str) -> String {
        self.url(&format!("/acme/order/{id}"))
    }

    pub(super) fn order_json(
        &self,
        order: &Order,
        authorizations: &[Authorization],
        now: SystemTime,
    ) -> Result<Value, Error> {
        let status = match order.star {
            Some(star) if star.canceled => "canceled",
            _ if is_expired(order, now) => OrderStatus::Invalid.as_str(),
            _ => order.status.as_str(),
        };
        let mut value = json!({
            "status": status,
            "expires": rfc3339(order.expires),
            "identifiers": order.names.iter()
                .map(|n| json!({"type": "dns", "value": n.as_str()}))
                .collect::<Vec<_>>(),
            "authorizations": authorizations.iter()
                .map(|a| self.url(&format!("/acme/authz/{}", a.id)))
                .collect::<Vec<_>>(),
            "finalize": self.url(&format!("/acme/order/{}/finalize", order.id)),
        });
        if let Some(cert_id) = &order.certificate_id {
            value["certificate"] = json!(self.url(&format!("/acme/cert/{cert_id}")));
        }
        if let (Some(_), Some(_)) = (&order.star, &order.certificate_id) {
            // RFC 8739 clients read `star-certificate`; plain ACME clients (instant-acme) read
            // `certificate`: both name the URL that always serves the current certificate.
            value["certificate"] = json!(self.star_url(&order.id));
        }
        if let Some(star) = order.star {
            value["auto-renewal"] = json!({
                "end-date": rfc3339(star.end),
                "lifetime": star.lifetime.as_secs(),
                "allow-certificate-get": true,
            });
            if order.certificate_id.is_some() {
                value["star-certificate"] = json!(self.star_url(&order.id));
            }
        }
        Ok(value)
    }

    /// The order, if it belongs to `account`.
    pub(super) fn owned_order(&self, account: &Account, id: &str) -> Result<Order, Failure> {
        match self.store.order(id)? {
            Some(order) if order.account_id == account.id => Ok(order),
            _ => Err(Refusal::NotFound.into()),
        }
    }

    pub(super) fn order(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let mut order = self.owned_order(account, id)?;
        if !auth.jws.is_post_as_get() {
            let payload: StatusPayload = parse_payload(&auth.jws, "order")?;
            match payload.status.as_deref() {
                None => {}
                Some("canceled") => {
                    let audit = Self::entry(
                        now,
                        "order-canceled",
                        Some(&account.origin),
                        id,
                        "by its account",
                    );
                    self.store.cancel_order_audited(id, &audit)?;
                    order = self.owned_order(account, id)?;
                }
                Some(_) => {
                    return Err(Refusal::Malformed("an order can only be canceled".into()).into());
                }
            }
        }
        let authorizations = self.store.authorizations(id)?;
        Ok(
            Response::json(200, &self.order_json(&order, &authorizations, now)?)
                .with("location", self.order_url(id)),
        )
    }
}

/// A pending or ready order past its expiry is invalid (RFC 8555 §7.1.6).
pub(super) fn is_expired(order: &Order, now: SystemTime) -> bool {
    matches!(order.status, OrderStatus::Pending | OrderStatus::Ready) && now >= order.expires
}
