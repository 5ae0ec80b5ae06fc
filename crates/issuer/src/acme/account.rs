//! ACME accounts: newAccount with External Account Binding, account status, its orders list.

use std::time::SystemTime;

use localcert_proto::origin::Origin;
use serde_json::{Value, json};

use super::wire::{KeyChangePayload, NewAccountPayload, Response, StatusPayload, parse_payload};
use super::{AcmeServer, Authenticated, Outcome, random_id};
use crate::error::Refusal;
use crate::jws::{self, Jwk, Jws, Signer};
use crate::store::{Account, AccountStatus, KeyChange, RelyingPartyStatus};

impl AcmeServer {
    pub(super) fn account_url(&self, account: &Account) -> String {
        self.url(&format!("/acme/account/{}", account.id))
    }

    pub(super) fn account_json(&self, account: &Account) -> Value {
        json!({
            "status": account.status.as_str(),
            "orders": self.url(&format!("/acme/account/{}/orders", account.id)),
        })
    }

    pub(super) fn new_account(
        &self,
        auth: &Authenticated,
        now: SystemTime,
        origin: &mut Option<Origin>,
    ) -> Outcome {
        let payload: NewAccountPayload = parse_payload(&auth.jws, "newAccount")?;
        let Signer::Jwk(key) = &auth.jws.signer else {
            return Err(Refusal::Malformed("newAccount must use jwk".into()).into());
        };
        if let Some(existing) = &auth.account {
            if existing.status != AccountStatus::Valid {
                return Err(Refusal::AccountNotValid.into());
            }
            return Ok(Response::json(200, &self.account_json(existing))
                .with("location", self.account_url(existing)));
        }
        if payload.only_return_existing {
            return Err(Refusal::AccountDoesNotExist.into());
        }
        let eab = payload
            .external_account_binding
            .ok_or(Refusal::ExternalAccountRequired)?;
        let kid = jws::eab_kid(&eab)?;
        let rp = self
            .store
            .relying_party_by_kid(&kid)?
            .ok_or(Refusal::ExternalAccountBinding("unknown key id"))?;
        *origin = Some(rp.origin.clone());
        jws::verify_eab(&eab, &kid, &rp.eab_hmac_key, &auth.jws.url, key)?;
        if rp.status != RelyingPartyStatus::Active {
            return Err(Refusal::ExternalAccountBinding("relying party is revoked").into());
        }
        let account = Account {
            id: random_id(16)?,
            eab_kid: kid,
            origin: rp.origin.clone(),
            jwk: key.to_json(),
            thumbprint: key.thumbprint(),
            status: AccountStatus::Valid,
        };
        let audit = Self::entry(
            now,
            "account-created",
            Some(&rp.origin),
            &account.id,
            "EAB verified",
        );
        if let Err(error) = self.store.create_account(&account, &audit) {
            // A concurrent newAccount with the same key got there first: that account it is.
            return match self.store.account_by_thumbprint(&account.thumbprint)? {
                Some(existing) => Ok(Response::json(200, &self.account_json(&existing))
                    .with("location", self.account_url(&existing))),
                None => Err(error.into()),
            };
        }
        Ok(Response::json(201, &self.account_json(&account))
            .with("location", self.account_url(&account)))
    }

    /// keyChange (RFC 8555 §7.3.5): the outer JWS is signed by the account's current key, its
    /// payload is a JWS signed by the new key over the account URL and the old key.
    pub(super) fn key_change(&self, auth: &Authenticated, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        let inner = Jws::parse_key_change(&auth.jws.payload)?;
        let Signer::Jwk(new_key) = &inner.signer else {
            return Err(Refusal::Malformed("the inner keyChange JWS must use jwk".into()).into());
        };
        inner.verify(new_key)?;
        self.tally.verified(1);
        if inner.url != auth.jws.url {
            return Err(Refusal::Malformed(
                "the inner keyChange JWS url differs from the outer one".into(),
            )
            .into());
        }
        let payload: KeyChangePayload = serde_json::from_slice(&inner.payload)
            .map_err(|e| Refusal::Malformed(format!("keyChange payload: {e}")))?;
        if payload.account != self.account_url(account) {
            return Err(Refusal::KeyChange("account is not the signer's account").into());
        }
        if Jwk::from_value(&payload.old_key)?.to_json() != account.jwk {
            return Err(Refusal::KeyChange("oldKey is not the account's current key").into());
        }
        let thumbprint = new_key.thumbprint();
        let audit = Self::entry(
            now,
            "account-key-changed",
            Some(&account.origin),
            &account.id,
            &format!("new key thumbprint {thumbprint}"),
        );
        match self.store.change_account_key(
            &account.id,
            &account.thumbprint,
            &new_key.to_json(),
            &thumbprint,
            &audit,
        )? {
            KeyChange::Changed => {
                let mut account = account.clone();
                account.jwk = new_key.to_json();
                account.thumbprint = thumbprint;
                Ok(Response::json(200, &self.account_json(&account))
                    .with("location", self.account_url(&account)))
            }
            // A concurrent keyChange won: this request's old key is no longer the account's.
            KeyChange::Stale => {
                Err(Refusal::KeyChange("oldKey is not the account's current key").into())
            }
            KeyChange::KeyInUse(holder) => {
                let refusal = Refusal::KeyInUse;
                self.audit(
                    now,
                    "refused",
                    Some(&account.origin),
                    "/acme/key-change",
                    &refusal.to_string(),
                );
                Ok(Response::problem(&refusal)
                    .with("location", self.url(&format!("/acme/account/{holder}"))))
            }
        }
    }

    pub(super) fn account(&self, auth: &Authenticated, id: &str, now: SystemTime) -> Outcome {
        let account = auth.account()?;
        if account.id != id {
            return Err(Refusal::NotFound.into());
        }
        if !auth.jws.is_post_as_get() {
            let payload: StatusPayload = parse_payload(&auth.jws, "account")?;
            match payload.status.as_deref() {
                None => {}
                Some("deactivated") => {
                    let audit = Self::entry(
                        now,
                        "account-deactivated",
                        Some(&account.origin),
                        id,
                        "by its owner",
                    );
                    self.store
                        .set_account_status(id, AccountStatus::Deactivated, &audit)?;
                    let mut account = account.clone();
                    account.status = AccountStatus::Deactivated;
                    return Ok(Response::json(200, &self.account_json(&account))
                        .with("location", self.account_url(&account)));
                }
                Some(_) => {
                    return Err(
                        Refusal::Malformed("an account can only be deactivated".into()).into(),
                    );
                }
            }
        }
        Ok(Response::json(200, &self.account_json(account))
            .with("location", self.account_url(account)))
    }

    pub(super) fn orders(&self, auth: &Authenticated, id: &str) -> Outcome {
        let account = auth.account()?;
        if account.id != id {
            return Err(Refusal::NotFound.into());
        }
        let orders: Vec<String> = self
            .store
            .order_ids(id)?
            .iter()
            .map(|order_id| self.order_url(order_id))
            .collect();
        Ok(Response::json(200, &json!({ "orders": orders })))
    }
}
