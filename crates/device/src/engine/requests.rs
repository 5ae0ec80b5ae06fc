//! The requests that change or read the device's state (SPEC §5): GET_INFO, ATTEST once the
//! user approved, INSTALL, LIST's summaries, REMOVE, and STAR renewal.

use std::time::Instant;

use localcert_proto::ErrorCode;
use localcert_proto::attestation::AttestationObject;
use localcert_proto::gatt::PROTOCOL_REVISION;
use localcert_proto::message::{
    AttestRequest, AttestResponse, InfoResponse, InstallRequest, InstallResponse, MAX_CSR_LEN,
    RemoveRequest, RemoveResponse, Response,
};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_proto::transcript::Transcript;
use rcgen::PublicKeyData;

use super::{Device, Event, IssuerTrust};
use crate::keys::{DeviceKey, RcgenKey};
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
        let (csr, spki) = match self.csr(&key, &name) {
            Ok(made) => made,
            Err(r) => {
                self.destroy_key(&key);
                return Err(r);
            }
        };
        let transcript = Transcript {
            key_authorization: &request.key_authorization,
            origin: &request.origin,
            user_handle: &request.user_handle,
            csr_spki: &spki,
            names: &names,
        };
        let sig = match self.signer.sign(&transcript.to_bytes(), self.rng.as_ref()) {
            Ok(sig) => sig,
            Err(_) => {
                self.destroy_key(&key);
                return Err(internal("attestation signing failed"));
            }
        };
        let attestation_object = AttestationObject {
            sig,
            x5c: self.signer.chain().to_vec(),
            spki: spki.clone(),
            user_handle: request.user_handle.clone(),
        }
        .encode();

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
        Ok(AttestResponse {
            csr,
            attestation_object,
        })
    }

    /// A CSR for `name` signed by `key` (in its provider), and the key's SubjectPublicKeyInfo.
    fn csr(&self, key: &DeviceKey, name: &LocalName) -> Result<(Vec<u8>, Vec<u8>), Refused> {
        let internal = |reason| refused(ErrorCode::Other, reason);
        let signing = RcgenKey::new(self.keys.as_ref(), key, self.rng.as_ref())
            .map_err(|_| internal("key generation failed"))?;
        let mut params = rcgen::CertificateParams::new(vec![name.as_str().to_owned()])
            .map_err(|_| internal("CSR generation failed"))?;
        // The issuer decides what the certificate says; the CSR only proves the key.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let csr = params
            .serialize_request(&signing)
            .map_err(|_| internal("CSR generation failed"))?
            .der()
            .to_vec();
        if csr.len() > MAX_CSR_LEN {
            return Err(internal("CSR too long"));
        }
        Ok((csr, signing.subject_public_key_info()))
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
        verify::check_chain(
            &request.chain,
            self.anchors(),
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
            chain: request.chain.clone(),
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
            name,
            https_port: self.config.https_port,
            fingerprint: leaf_info.fingerprint,
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
        verify::check_chain(&chain, self.anchors(), &names, self.clock.unix_time())?;
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
