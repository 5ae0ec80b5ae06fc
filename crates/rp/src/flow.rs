//! The provisioning flow from the RP's side (SPEC.md §1, steps 4 and 11 to 13), as steps that
//! a caller drives with the device's answers: the browser's page through the HTTP API, or
//! `localcert ua provision` in process.
//!
//! [`Flow::start`] orders the certificate and returns the ATTEST fields; [`Flow::attested`]
//! answers `device-attest-01` with the device's attestation, finalizes with its CSR and returns
//! the INSTALL request; [`Flow::installed`] checks the device's INSTALL answer.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, DeviceAttestation, Identifier, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use localcert_proto::message::{
    AttestRequest, AttestResponse, CorsPolicy, InfoResponse, InstallRequest, InstallResponse,
    key_authorization_hash,
};
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::check;
use crate::error::FlowError;

/// How long to wait for the issuer to validate, and to issue.
pub const ISSUER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the RP decides for a flow: who it is for and what to install.
#[derive(Clone, Debug)]
pub struct FlowParams {
    /// The origin (the one the EAB credentials are registered for).
    pub origin: Origin,
    /// The user handle, from the RP's own authentication.
    pub user_handle: Vec<u8>,
    /// The device label; `None` takes the device's suggestion.
    pub device_label: Option<DeviceLabel>,
    /// Ask for a STAR (auto-renewed) certificate.
    pub star: bool,
    /// The CORS policy to install.
    pub cors: CorsPolicy,
}

/// The ATTEST request's fields, as the RP decides them (the page adds a PIN if the user gave
/// one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestFields {
    /// The origin.
    pub origin: Origin,
    /// The user handle.
    pub user_handle: Vec<u8>,
    /// The challenge's key authorization (ATTEST carries its SHA-256).
    pub key_authorization: String,
    /// The device label for the name.
    pub device_label: DeviceLabel,
}

impl AttestFields {
    /// The ATTEST request with `pin`.
    pub fn request(&self, pin: Option<String>) -> AttestRequest {
        AttestRequest {
            origin: self.origin.clone(),
            user_handle: self.user_handle.clone(),
            key_authorization_hash: key_authorization_hash(&self.key_authorization),
            device_label: self.device_label.clone(),
            pin,
        }
    }
}

/// What [`Flow::installed`] confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The name the device now serves.
    pub name: LocalName,
    /// Its HTTPS port.
    pub https_port: u16,
    /// SHA-256 of the leaf.
    pub fingerprint: [u8; 32],
}

/// Where a flow stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Ordered; waiting for the device's attestation.
    Ordered,
    /// The attestation was accepted and the order finalized; the certificate is not downloaded.
    Finalized,
    /// The chain is issued; waiting for the device's INSTALL answer.
    Issued,
    /// Complete; every later step is refused.
    Installed,
    /// The issuer failed mid-step; the flow cannot go on.
    Failed,
}

struct Issued {
    chain: Vec<Vec<u8>>,
    fingerprint: [u8; 32],
    star_url: Option<String>,
}

/// One provisioning flow: one ACME order for one device's name.
pub struct Flow {
    params: FlowParams,
    info: InfoResponse,
    name: LocalName,
    attest: AttestFields,
    order: Order,
    stage: Stage,
    spki: Option<Vec<u8>>,
    issued: Option<Issued>,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("name", &self.name)
            .field("stage", &self.stage)
            .field("order", &self.order.url())
            .finish_non_exhaustive()
    }
}

fn retries() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .timeout(ISSUER_TIMEOUT)
}

impl Flow {
    /// Derives the device's name from its GET_INFO answer, orders a certificate for it and
    /// returns the ATTEST fields.
    pub async fn start(
        account: &Account,
        params: FlowParams,
        info: InfoResponse,
    ) -> Result<(Self, AttestFields), FlowError> {
        let device_cert = check::info_device_certificate(&info).map_err(FlowError::device)?;
        let label = params
            .device_label
            .clone()
            .unwrap_or_else(|| info.device_label.clone());
        let name = LocalName::derive(
            &label,
            &params.origin,
            &DeviceTag::from_attestation_certificate(device_cert),
        );
        let identifiers = [Identifier::Dns(name.as_str().to_owned())];
        let mut new_order = NewOrder::new(&identifiers);
        if params.star {
            new_order = new_order.profile("star");
        }
        let mut order = account
            .new_order(&new_order)
            .await
            .map_err(FlowError::issuer)?;
        let key_authorization = {
            let mut authorizations = order.authorizations();
            let mut authz = authorizations
                .next()
                .await
                .ok_or_else(|| FlowError::Issuer("the order has no authorization".into()))?
                .map_err(FlowError::issuer)?;
            if authz.status != AuthorizationStatus::Pending {
                let status = authz.status;
                return Err(FlowError::Issuer(format!("authorization is {status:?}")));
            }
            let challenge = authz
                .challenge(ChallengeType::DeviceAttest01)
                .ok_or_else(|| FlowError::Issuer("no device-attest-01 challenge".into()))?;
            challenge.key_authorization().as_str().to_owned()
        };
        let attest = AttestFields {
            origin: params.origin.clone(),
            user_handle: params.user_handle.clone(),
            key_authorization,
            device_label: label,
        };
        let flow = Self {
            params,
            info,
            name,
            attest: attest.clone(),
            order,
            stage: Stage::Ordered,
            spki: None,
            issued: None,
        };
        Ok((flow, attest))
    }

    /// The name ordered.
    pub fn name(&self) -> &LocalName {
        &self.name
    }

    /// The device's GET_INFO answer.
    pub fn info(&self) -> &InfoResponse {
        &self.info
    }

    /// Where the flow stands.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The DER SPKI of the device's TLS key, once its attestation was accepted.
    pub fn spki(&self) -> Option<&[u8]> {
        self.spki.as_deref()
    }

    /// The issued chain (DER, leaf first), once downloaded.
    pub fn chain(&self) -> Option<&[Vec<u8>]> {
        self.issued.as_ref().map(|i| i.chain.as_slice())
    }

    /// Checks the device's ATTEST answer against this flow without changing anything; returns
    /// the device's TLS key and the attestation object for the issuer.
    pub fn check_attestation(&self, attest: &AttestResponse) -> Result<check::Attested, FlowError> {
        check::attestation(
            attest,
            &check::Expected {
                info: &self.info,
                key_authorization: &self.attest.key_authorization,
                origin: &self.params.origin,
                user_handle: &self.params.user_handle,
                name: &self.name,
            },
        )
        .map_err(FlowError::DeviceInvalid)
    }

    fn expect(&self, stage: Stage, step: &'static str) -> Result<(), FlowError> {
        match self.stage {
            s if s == stage => Ok(()),
            Stage::Installed => Err(FlowError::State("the flow is complete")),
            Stage::Failed => Err(FlowError::State("the flow failed; start a new one")),
            _ => Err(FlowError::State(step)),
        }
    }

    fn failed(&mut self, e: instant_acme::Error) -> FlowError {
        self.stage = Stage::Failed;
        FlowError::issuer(e)
    }

    /// Answers the challenge with the device's attestation (checked first: a wrong one changes
    /// nothing) and finalizes the order with its CSR.
    pub async fn answer_challenge(&mut self, attest: &AttestResponse) -> Result<(), FlowError> {
        self.expect(Stage::Ordered, "the attestation was already accepted")?;
        let check::Attested {
            spki,
            csr,
            attestation_object,
        } = self.check_attestation(attest)?;
        let sent = async {
            let mut authorizations = self.order.authorizations();
            let mut authz = authorizations.next().await.ok_or_else(|| {
                instant_acme::Error::Str("the order has no authorization any more")
            })??;
            let mut challenge = authz
                .challenge(ChallengeType::DeviceAttest01)
                .ok_or(instant_acme::Error::Str("the challenge is gone"))?;
            challenge
                .send_device_attestation(&DeviceAttestation {
                    att_obj: attestation_object.into(),
                })
                .await
        }
        .await;
        sent.map_err(|e| self.failed(e))?;
        let status = self.order.poll_ready(&retries()).await;
        match status.map_err(|e| self.failed(e))? {
            OrderStatus::Ready => {}
            other => {
                self.stage = Stage::Failed;
                return Err(FlowError::Issuer(format!("order is {other:?}")));
            }
        }
        let finalized = self.order.finalize_csr(&csr).await;
        finalized.map_err(|e| self.failed(e))?;
        self.spki = Some(spki);
        self.stage = Stage::Finalized;
        Ok(())
    }

    /// Downloads the chain and returns the INSTALL request for the device.
    pub async fn download(&mut self) -> Result<InstallRequest, FlowError> {
        self.expect(Stage::Finalized, "the order is not finalized")?;
        let pem = self.order.poll_certificate(&retries()).await;
        let pem = pem.map_err(|e| self.failed(e))?;
        let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.map(|c| c.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                self.stage = Stage::Failed;
                FlowError::Issuer(format!("certificate chain PEM: {e}"))
            })?;
        let Some(leaf) = chain.first() else {
            self.stage = Stage::Failed;
            return Err(FlowError::Issuer("empty certificate chain".into()));
        };
        let fingerprint: [u8; 32] = Sha256::digest(leaf).into();
        // For a STAR order the `certificate` URL is the `star-certificate` URL (RFC 8739),
        // which always serves the current certificate: the device fetches renewals from it.
        let star_url = match (self.params.star, &self.order.state().certificate) {
            (false, _) => None,
            (true, Some(url)) => Some(url.clone()),
            (true, None) => {
                self.stage = Stage::Failed;
                return Err(FlowError::Issuer(
                    "the STAR order names no certificate URL".into(),
                ));
            }
        };
        let issued = Issued {
            chain,
            fingerprint,
            star_url,
        };
        let request = InstallRequest {
            chain: check::install_chain(&issued.chain, &self.info),
            cors: self.params.cors.clone(),
            star_url: issued.star_url.clone(),
        };
        self.issued = Some(issued);
        self.stage = Stage::Issued;
        Ok(request)
    }

    /// [`Flow::answer_challenge`] then [`Flow::download`].
    pub async fn attested(&mut self, attest: &AttestResponse) -> Result<InstallRequest, FlowError> {
        self.answer_challenge(attest).await?;
        self.download().await
    }

    /// SHA-256 of the issued leaf, once downloaded.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        self.issued.as_ref().map(|i| i.fingerprint)
    }

    /// Takes the device's INSTALL answer (success: the device checked the leaf against its
    /// pending key and name, and serves it) and completes the flow. The endpoint check over
    /// HTTPS then sees the leaf itself.
    pub fn installed(&mut self, response: &InstallResponse) -> Result<Installed, FlowError> {
        self.expect(Stage::Issued, "no certificate was issued yet")?;
        let Some(issued) = &self.issued else {
            return Err(FlowError::State("no certificate was issued yet"));
        };
        self.stage = Stage::Installed;
        Ok(Installed {
            name: self.name.clone(),
            https_port: response.https_port,
            fingerprint: issued.fingerprint,
        })
    }
}
