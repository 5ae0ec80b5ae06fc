//! The requests that change or read the device's state (SPEC §5): GET_INFO, ATTEST once the
//! user approved, INSTALL, LIST's summaries, REMOVE, and STAR renewal.

use std::time::Instant;

use localcert_proto::ErrorCode;
use localcert_proto::csr::{self, P256_POINT_LEN, RAW_SIGNATURE_LEN};
use localcert_proto::gatt::PROTOCOL_REVISION;
use localcert_proto::message::{
    AttestRequest, AttestResponse, InfoResponse, InstallRequest, InstallResponse,
    MAX_KNOWN_ISSUERS, RemoveRequest, RemoveResponse, Response, certificate_id,
};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::transcript::HashedTranscript;

use super::{Device, Event, IssuerTrust};
use crate::keys::DeviceKey;
use crate::pending::LeafLookup;
use crate::pki;
use crate::store::Binding;
use crate::verify::{self, Expected, Refused, refused};

impl Device {
    pub(super) fn info(&self) -> Response {
        Response::Info(InfoResponse {
            revision: PROTOCOL_REVISION,
            product: self.config.product.clone(),
            device_label: self.config.device_label.clone(),
            attestation_chain: self.signer.chain().to_vec(),
            presence: self.presence.method(),
            bindings: self.store.bindings().len() as u64,
            max_bindings: self.config.max_bindings as u64,
            known_issuers: self
                .config
                .issuer_intermediates
                .iter()
                .take(MAX_KNOWN_ISSUERS)
                .map(|c| certificate_id(c))
                .collect(),
        })
    }

    pub(super) fn has_room_for(&self, origin: &Origin) -> bool {
        self.store.get(origin).is_some() || self.store.bindings().len() < self.config.max_bindings
    }

    pub(super) fn attest(
        &mut self,
        now: Instant,
        request: &AttestRequest,
    ) -> Result<AttestResponse, Refused> {
        let internal = |reason| refused(ErrorCode::Other, reason);
        if !self.has_room_for(&request.origin) {
            return Err(refused(
                ErrorCode::StorageFull,
                "no room for another origin binding",
            ));
        }
        let name = LocalName::derive(&request.device_label, &request.origin, &self.device_tag);
        let names = vec![name.clone()];
        let key = self
            .keys
            .generate(self.rng.as_ref())
            .map_err(|_| internal("key generation failed"))?;
        // The CSR in parts (SPEC §5.2): the UA rebuilds the same request info from the key and
        // the name it derived, so only the key and the signatures cross the link.
        let (point, csr_signature) = match self.csr_parts(&key, &names) {
            Ok(made) => made,
            Err(r) => {
                self.destroy_key(&key);
                return Err(r);
            }
        };
        let spki = csr::p256_spki(&point);
        let transcript = HashedTranscript {
            key_authorization_hash: &request.key_authorization_hash,
            origin: &request.origin,
            user_handle: &request.user_handle,
            csr_spki: &spki,
            names: &names,
        };
        let signature = self
            .signer
            .sign(&transcript.to_bytes(), self.rng.as_ref())
            .ok()
            .as_deref()
            .and_then(csr::raw_signature);
        let Some(signature) = signature else {
            self.destroy_key(&key);
            return Err(internal("attestation signing failed"));
        };

        // SPEC §5.2: the key waits for its INSTALL; it replaces the origin's earlier one.
        let dropped = self.pending.insert(
            now,
            request.origin.clone(),
            pki::sha256(&request.user_handle),
            names,
            key,
            spki,
        );
        self.drop_pending(dropped);
        self.events.push_back(Event::Pending {
            origin: request.origin.clone(),
            name,
        });
        // The UA builds the attestation object from GET_INFO's chain, the key and its own user
        // handle: sending them back would only repeat them (SPEC §7.2).
        Ok(AttestResponse {
            public_key: point,
            csr_signature,
            signature,
        })
    }

    /// The key's public point and its raw signature (in its provider) over the CSR's request
    /// info for `names` (SPEC §5.2.1).
    fn csr_parts(
        &self,
        key: &DeviceKey,
        names: &[LocalName],
    ) -> Result<([u8; P256_POINT_LEN], [u8; RAW_SIGNATURE_LEN]), Refused> {
        let internal = |reason| refused(ErrorCode::Other, reason);
        let point: [u8; P256_POINT_LEN] = self
            .keys
            .public_point(key)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(internal("key generation failed"))?;
        let signature = self
            .keys
            .sign(key, &csr::request_info(&point, names), self.rng.as_ref())
            .ok()
            .as_deref()
            .and_then(csr::raw_signature)
            .ok_or(internal("CSR signing failed"))?;
        Ok((point, signature))
    }

    /// The issuer certificates a chain must lead to.
    pub(super) fn anchors(&self) -> &[Vec<u8>] {
        match &self.config.trust {
            IssuerTrust::Roots(roots) => roots,
        }
    }

    pub(super) fn install(&mut self, request: &InstallRequest) -> Result<Response, Refused> {
        let leaf = request
            .chain
            .first()
            .ok_or(refused(ErrorCode::InvalidParameter, "empty chain"))?;
        let claims = verify::leaf_claims(leaf)?;
        let pending = self.pending.find(LeafLookup {
            spki: &claims.spki,
            origin: Some(&claims.binding.origin),
            names: &claims.names,
        })?;
        let leaf_info = verify::check_leaf(
            leaf,
            &Expected {
                spki: &pending.spki,
                names: &pending.names,
                origin: &pending.origin,
                user_handle_digest: &pending.user_handle_digest,
            },
        )?;
        // The chain as served: the leaf and the path's intermediates, whether sent or held.
        let chain = verify::check_chain(
            &request.chain,
            self.anchors(),
            &self.config.issuer_intermediates,
            &pending.names,
            self.clock.unix_time(),
        )?;
        if !self.has_room_for(&pending.origin) {
            return Err(refused(
                ErrorCode::StorageFull,
                "no room for another origin binding",
            ));
        }
        let name = pending
            .names
            .first()
            .cloned()
            .ok_or(refused(ErrorCode::Other, "pending key has no name"))?;
        let binding = Binding {
            granted: self.clock.unix_time(),
            star_ended: None,
            origin: pending.origin.clone(),
            name: name.clone(),
            key: pending.key.clone(),
            chain,
            cors: request.cors.clone(),
            star_url: request.star_url.clone(),
            user_handle_digest: pending.user_handle_digest,
            not_after: leaf_info.not_after,
        };
        let replaced = self
            .store
            .get(&binding.origin)
            .map(|b| (b.name.clone(), b.key.clone()));
        // Persist before forgetting the pending key: a failed write leaves INSTALL retryable.
        self.store.put(binding.clone()).map_err(|e| {
            tracing::error!(error = %e, "storing the binding failed");
            refused(ErrorCode::Other, "storage failed")
        })?;
        self.pending.consume(&binding.origin);
        if let Some((old_name, old_key)) = replaced {
            self.destroy_key(&old_key);
            if old_name != name {
                // The origin's earlier binding had another name (another label): stop serving
                // it.
                self.events.push_back(Event::Removed {
                    origin: binding.origin.clone(),
                    name: old_name,
                });
            }
        }
        tracing::info!(origin = %binding.origin, name = %name, "binding installed");
        self.events.push_back(Event::Installed(Box::new(binding)));
        Ok(Response::Install(InstallResponse {
            https_port: self.config.https_port,
        }))
    }

    pub(super) fn remove(&mut self, request: &RemoveRequest) -> Result<Response, Refused> {
        let removed = self.store.remove(&request.origin).map_err(|e| {
            tracing::error!(error = %e, "removing the binding failed");
            refused(ErrorCode::Other, "storage failed")
        })?;
        let binding = removed.ok_or(refused(ErrorCode::NotFound, "no binding for this origin"))?;
        self.destroy_key(&binding.key);
        self.events.push_back(Event::Removed {
            origin: binding.origin.clone(),
            name: binding.name.clone(),
        });
        Ok(Response::Remove(RemoveResponse { name: binding.name }))
    }

    /// Installs a renewed chain (STAR) for an existing binding: same key, same names, same
    /// origin binding, and it must lead to the same trusted issuer.
    pub fn renew(&mut self, origin: &Origin, chain: Vec<Vec<u8>>) -> Result<(), Refused> {
        let current = self
            .store
            .get(origin)
            .ok_or(refused(ErrorCode::NotFound, "no binding for this origin"))?;
        let spki = current
            .chain
            .first()
            .map(|leaf| verify::leaf_claims(leaf))
            .transpose()?
            .map(|claims| claims.spki)
            .unwrap_or_default();
        let leaf = chain
            .first()
            .ok_or(refused(ErrorCode::InvalidParameter, "empty chain"))?;
        let names = vec![current.name.clone()];
        let leaf_info = verify::check_leaf(
            leaf,
            &Expected {
                spki: &spki,
                names: &names,
                origin: &current.origin,
                user_handle_digest: &current.user_handle_digest,
            },
        )?;
        let chain = verify::check_chain(
            &chain,
            self.anchors(),
            &self.config.issuer_intermediates,
            &names,
            self.clock.unix_time(),
        )?;
        let mut binding = current.clone();
        binding.chain = chain;
        binding.not_after = leaf_info.not_after;
        self.store.put(binding.clone()).map_err(|e| {
            tracing::error!(error = %e, "storing the renewed binding failed");
            refused(ErrorCode::Other, "storage failed")
        })?;
        self.events.push_back(Event::Installed(Box::new(binding)));
        Ok(())
    }

    /// Stops STAR renewal for a binding (the delegation was cancelled); it is served until it
    /// expires.
    pub fn end_renewal(&mut self, origin: &Origin) -> Result<(), Refused> {
        let mut binding = self
            .store
            .get(origin)
            .cloned()
            .ok_or(refused(ErrorCode::NotFound, "no binding for this origin"))?;
        binding.star_url = None;
        binding.star_ended = Some(self.clock.unix_time());
        self.store.put(binding).map_err(|e| {
            tracing::error!(error = %e, "storing the binding failed");
            refused(ErrorCode::Other, "storage failed")
        })
    }
}
