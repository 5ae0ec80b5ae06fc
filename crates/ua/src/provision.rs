//! The provisioning flow (SPEC.md §1, steps 3 to 14): GET_INFO, the ACME account and order,
//! ATTEST, the mDNS check, the `device-attest-01` challenge, finalize, download, INSTALL and the
//! verification of the endpoint. Every step checks what it received before the next one uses it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, DeviceAttestation, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use localcert_proto::ErrorCode;
use localcert_proto::attestation::AttestationObject;
use localcert_proto::message::{
    AttestRequest, AttestResponse, CorsPolicy, InfoResponse, InstallRequest, InstallResponse,
    Request, Response,
};
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::link::{BleLink, LinkError};
use crate::sim::LinkStats;
use crate::transport::{Transport, TransportError};
use crate::verify::{self, CheckReport, Expectation};

/// A step of the flow, numbered as in SPEC.md §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// 3: read the device's info.
    GetInfo,
    /// 4: ACME account (EAB) and order for the device's name.
    Order,
    /// 5-9: the device makes a key, a CSR and an attestation.
    Attest,
    /// 10: the name answers over mDNS.
    Mdns,
    /// 11: the challenge answered with the attestation; finalize with the CSR.
    Challenge,
    /// 12: download the certificate chain.
    Download,
    /// 13: install chain and CORS policy on the device.
    Install,
    /// 14: HTTPS request from our origin, checked.
    Verify,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::GetInfo,
        Step::Order,
        Step::Attest,
        Step::Mdns,
        Step::Challenge,
        Step::Download,
        Step::Install,
        Step::Verify,
    ];

    /// What the step does, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Step::GetInfo => "3 GET_INFO: product and attestation chain",
            Step::Order => "4 ACME account (EAB) and order; device-attest-01 challenge",
            Step::Attest => "5-9 ATTEST: user presence, TLS key, CSR, signed transcript",
            Step::Mdns => "10 the name answers over mDNS",
            Step::Challenge => "11 challenge answered with the attestation; finalize with the CSR",
            Step::Download => "12 certificate chain downloaded",
            Step::Install => "13 INSTALL: chain and CORS policy on the device",
            Step::Verify => "14 HTTPS from the origin: chain, name, key pin, origin binding, CORS",
        }
    }
}

/// Where the flow reports progress.
pub trait Progress: Send {
    /// A step starts.
    fn start(&mut self, step: Step);
    /// A step ended well; `detail` says what it found.
    fn done(&mut self, step: Step, detail: &str);
    /// The device asks its user for approval (KEEPALIVE USER_PRESENCE_NEEDED).
    fn user_presence_needed(&mut self) {}
    /// The BLE connection dropped; the flow starts again from GET_INFO.
    fn retrying(&mut self, _attempt: u32, _reason: &str) {}
}

/// Produces a fresh connection to the chosen device (a new one after a drop).
pub trait Connector: Send {
    /// The link type.
    type Link: BleLink;
    /// Connects.
    fn connect(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Self::Link, LinkError>> + Send;
}

/// Finds the addresses of a `.local` name.
pub trait Resolver: Send + Sync {
    /// The addresses of `name`; an error says why there are none.
    fn resolve(
        &self,
        name: &LocalName,
    ) -> impl std::future::Future<Output = Result<Vec<IpAddr>, String>> + Send;
}

/// What the flow needs to know.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The ACME directory URL.
    pub directory_url: String,
    /// PEM file of the root that signs the issuer's own HTTPS certificate.
    pub acme_tls_root: Option<std::path::PathBuf>,
    /// The issuer root that signs device certificates (DER), for verification.
    pub issuer_root: Vec<u8>,
    /// EAB key id.
    pub eab_kid: String,
    /// EAB HMAC key (raw bytes).
    pub eab_key: Vec<u8>,
    /// Our origin.
    pub origin: Origin,
    /// The user handle.
    pub user_handle: Vec<u8>,
    /// The device label; `None` takes the device's suggestion.
    pub device_label: Option<DeviceLabel>,
    /// The PIN, for devices that ask for one.
    pub pin: Option<String>,
    /// The CORS policy to install.
    pub cors: CorsPolicy,
    /// Ask for a STAR (auto-renewed) certificate.
    pub star: bool,
    /// How often to start again after a BLE drop.
    pub max_attempts: u32,
    /// The path the verification requests.
    pub check_path: String,
}

/// What the flow achieved.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The device's product name.
    pub product: String,
    /// The name now served.
    pub name: LocalName,
    /// Where it was reached.
    pub endpoint: SocketAddr,
    /// SHA-256 of the leaf.
    pub fingerprint: [u8; 32],
    /// The leaf's notAfter (Unix seconds).
    pub not_after: i64,
    /// The DER SPKI of the device's TLS key, as seen over BLE.
    pub spki: Vec<u8>,
    /// The issued chain, DER.
    pub chain: Vec<Vec<u8>>,
    /// The verification's findings.
    pub check: CheckReport,
    /// Time per step (wall clock).
    pub step_times: Vec<(Step, Duration)>,
    /// BLE request/response exchanges.
    pub exchanges: u64,
    /// Attempts made (1 without drops).
    pub attempts: u32,
}

/// How the flow failed; each variant maps to its own exit code in the CLI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The device refused a request.
    #[error("{step:?}: the device refused: {code}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    DeviceRefused {
        /// The step.
        step: Step,
        /// The device's code.
        code: ErrorCode,
        /// The device's message.
        detail: Option<String>,
    },
    /// The device answered, but the answer is wrong (bad CSR, attestation, name, …).
    #[error("{step:?}: the device's answer is not acceptable: {reason}")]
    DeviceInvalid {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
    /// BLE failed and attempts ran out.
    #[error("{step:?}: BLE: {source}")]
    Ble {
        /// The step.
        step: Step,
        /// The transport error.
        source: TransportError,
    },
    /// The issuer refused or failed.
    #[error("{step:?}: issuer: {reason}")]
    Issuer {
        /// The step.
        step: Step,
        /// The problem document's detail or the HTTP failure.
        reason: String,
    },
    /// The name does not answer over mDNS.
    #[error("{step:?}: {reason}")]
    Mdns {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
    /// The endpoint failed verification.
    #[error("{step:?}: verification failed: {source}")]
    Verify {
        /// The step.
        step: Step,
        /// What failed.
        source: verify::CheckError,
    },
}

impl ProvisionError {
    fn is_ble_drop(&self) -> bool {
        matches!(
            self,
            Self::Ble {
                source: TransportError::Link(LinkError::Disconnected),
                ..
            }
        )
    }
}

fn issuer(step: Step) -> impl Fn(instant_acme::Error) -> ProvisionError {
    move |e| {
        let reason = match &e {
            instant_acme::Error::Api(problem) => {
                format!(
                    "{} ({})",
                    problem.detail.as_deref().unwrap_or("no detail"),
                    problem.r#type.as_deref().unwrap_or("no type")
                )
            }
            other => other.to_string(),
        };
        ProvisionError::Issuer { step, reason }
    }
}

fn invalid(step: Step, reason: impl Into<String>) -> ProvisionError {
    ProvisionError::DeviceInvalid {
        step,
        reason: reason.into(),
    }
}

struct Timer<'p, P: Progress> {
    progress: &'p mut P,
    times: Vec<(Step, Duration)>,
    current: Option<(Step, Instant)>,
}

impl<P: Progress> Timer<'_, P> {
    fn start(&mut self, step: Step) {
        self.progress.start(step);
        self.current = Some((step, Instant::now()));
    }

    fn done(&mut self, detail: &str) {
        if let Some((step, started)) = self.current.take() {
            self.times.push((step, started.elapsed()));
            self.progress.done(step, detail);
        }
    }
}

async fn ask<L: BleLink, P: Progress>(
    transport: &mut Transport<L>,
    step: Step,
    request: &Request,
    progress: &mut P,
) -> Result<Response, ProvisionError> {
    let response = transport
        .request(request, |status| {
            if status == localcert_proto::frame::KeepAliveStatus::UserPresenceNeeded {
                progress.user_presence_needed();
            }
        })
        .await
        .map_err(|source| ProvisionError::Ble { step, source })?;
    match response {
        Response::Error(code, detail) => Err(ProvisionError::DeviceRefused { step, code, detail }),
        other => Ok(other),
    }
}

/// Checks a CSR from the device: its only names are `name`; returns its DER SPKI.
///
/// The signature is the issuer's to check; the UA needs the key, to pin the endpoint later.
pub fn csr_spki(csr: &[u8], name: &LocalName) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::FromDer;
    let (rest, req) = x509_parser::certification_request::X509CertificationRequest::from_der(csr)
        .map_err(|_| "the CSR does not parse".to_owned())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the CSR".into());
    }
    let mut names = vec![];
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for general in &san.general_names {
                match general {
                    GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    _ => return Err("the CSR asks for a name that is not a DNS name".into()),
                }
            }
        }
    }
    if names != [name.as_str()] {
        return Err(format!("the CSR asks for {names:?}, expected [{name}]"));
    }
    Ok(req.certification_request_info.subject_pki.raw.to_vec())
}

struct Attested {
    info: InfoResponse,
    name: LocalName,
    attest: AttestResponse,
    spki: Vec<u8>,
}

/// Runs the whole flow against the device `connector` reaches and the issuer in `plan`.
///
/// A BLE drop anywhere starts again from GET_INFO with a new order (the device drops its
/// pending key when the connection ends), up to `plan.max_attempts` times.
pub async fn provision<C: Connector, R: Resolver, P: Progress>(
    plan: &Plan,
    connector: &mut C,
    resolver: &R,
    progress: &mut P,
) -> Result<(Outcome, Option<LinkStats>), ProvisionError> {
    let mut attempt = 1;
    loop {
        match provision_once(plan, connector, resolver, progress).await {
            Err(e) if e.is_ble_drop() && attempt < plan.max_attempts => {
                progress.retrying(attempt, &e.to_string());
                attempt += 1;
            }
            Err(e) => return Err(e),
            Ok((mut outcome, stats)) => {
                outcome.attempts = attempt;
                return Ok((outcome, stats));
            }
        }
    }
}

async fn provision_once<C: Connector, R: Resolver, P: Progress>(
    plan: &Plan,
    connector: &mut C,
    resolver: &R,
    progress: &mut P,
) -> Result<(Outcome, Option<LinkStats>), ProvisionError> {
    let mut timer = Timer {
        progress,
        times: vec![],
        current: None,
    };

    timer.start(Step::GetInfo);
    let ble = |step| move |source| ProvisionError::Ble { step, source };
    let link = connector
        .connect()
        .await
        .map_err(|e| ble(Step::GetInfo)(e.into()))?;
    let mut transport = Transport::open(link).await.map_err(ble(Step::GetInfo))?;
    let Response::Info(info) = ask(
        &mut transport,
        Step::GetInfo,
        &Request::GetInfo,
        timer.progress,
    )
    .await?
    else {
        return Err(invalid(Step::GetInfo, "answer of another kind"));
    };
    let device_cert = info
        .attestation_chain
        .first()
        .ok_or_else(|| invalid(Step::GetInfo, "no attestation certificate"))?;
    let label = plan
        .device_label
        .clone()
        .unwrap_or_else(|| info.device_label.clone());
    let name = LocalName::derive(
        &label,
        &plan.origin,
        &DeviceTag::from_attestation_certificate(device_cert),
    );
    timer.done(&format!("{} (label {label}), name {name}", info.product));

    timer.start(Step::Order);
    let builder = match &plan.acme_tls_root {
        Some(path) => Account::builder_with_root(path),
        None => Account::builder(),
    }
    .map_err(issuer(Step::Order))?;
    let eab = ExternalAccountKey::new(plan.eab_kid.clone(), &plan.eab_key);
    let new_account = NewAccount {
        contact: &[],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, _) = builder
        .create(&new_account, plan.directory_url.clone(), Some(&eab))
        .await
        .map_err(issuer(Step::Order))?;
    let identifiers = [Identifier::Dns(name.as_str().to_owned())];
    let mut new_order = NewOrder::new(&identifiers);
    if plan.star {
        new_order = new_order.profile("star");
    }
    let mut order = account
        .new_order(&new_order)
        .await
        .map_err(issuer(Step::Order))?;
    let mut authorizations = order.authorizations();
    let mut authz = authorizations
        .next()
        .await
        .ok_or_else(|| ProvisionError::Issuer {
            step: Step::Order,
            reason: "the order has no authorization".into(),
        })?
        .map_err(issuer(Step::Order))?;
    if authz.status != AuthorizationStatus::Pending {
        return Err(ProvisionError::Issuer {
            step: Step::Order,
            reason: format!("authorization is {:?}", authz.status),
        });
    }
    let mut challenge = authz
        .challenge(ChallengeType::DeviceAttest01)
        .ok_or_else(|| ProvisionError::Issuer {
            step: Step::Order,
            reason: "the issuer offers no device-attest-01 challenge".into(),
        })?;
    let key_authorization = challenge.key_authorization().as_str().to_owned();
    timer.done(&format!("account {}, order for {name}", account.id()));

    timer.start(Step::Attest);
    let request = Request::Attest(AttestRequest {
        origin: plan.origin.clone(),
        user_handle: plan.user_handle.clone(),
        key_authorization,
        device_label: label,
        pin: plan.pin.clone(),
    });
    let Response::Attest(attest) =
        ask(&mut transport, Step::Attest, &request, timer.progress).await?
    else {
        return Err(invalid(Step::Attest, "answer of another kind"));
    };
    let spki = csr_spki(&attest.csr, &name).map_err(|r| invalid(Step::Attest, r))?;
    let object = AttestationObject::decode(&attest.attestation_object)
        .map_err(|e| invalid(Step::Attest, format!("attestation object: {e}")))?;
    if object.spki != spki {
        return Err(invalid(
            Step::Attest,
            "the attestation is for another key than the CSR's",
        ));
    }
    if object.x5c != info.attestation_chain {
        return Err(invalid(
            Step::Attest,
            "the attestation chain differs from GET_INFO's",
        ));
    }
    let attested = Attested {
        info,
        name,
        attest,
        spki,
    };
    timer.done(&format!(
        "CSR for {} and attestation ({} bytes)",
        attested.name,
        attested.attest.attestation_object.len()
    ));

    timer.start(Step::Mdns);
    let addresses =
        resolver
            .resolve(&attested.name)
            .await
            .map_err(|reason| ProvisionError::Mdns {
                step: Step::Mdns,
                reason,
            })?;
    if addresses.is_empty() {
        let reason = format!("{} has no address", attested.name);
        return Err(ProvisionError::Mdns {
            step: Step::Mdns,
            reason,
        });
    }
    let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    timer.done(&format!("{} → {}", attested.name, shown.join(", ")));

    timer.start(Step::Challenge);
    challenge
        .send_device_attestation(&DeviceAttestation {
            att_obj: attested.attest.attestation_object.clone().into(),
        })
        .await
        .map_err(issuer(Step::Challenge))?;
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .timeout(Duration::from_secs(30));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(issuer(Step::Challenge))?;
    if status != OrderStatus::Ready {
        return Err(ProvisionError::Issuer {
            step: Step::Challenge,
            reason: format!("order is {status:?}"),
        });
    }
    order
        .finalize_csr(&attested.attest.csr)
        .await
        .map_err(issuer(Step::Challenge))?;
    timer.done("attestation accepted, CSR finalized");

    timer.start(Step::Download);
    let pem = order
        .poll_certificate(&retries)
        .await
        .map_err(issuer(Step::Download))?;
    let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ProvisionError::Issuer {
            step: Step::Download,
            reason: format!("certificate chain PEM: {e}"),
        })?;
    let leaf = chain.first().ok_or_else(|| ProvisionError::Issuer {
        step: Step::Download,
        reason: "empty certificate chain".into(),
    })?;
    let fingerprint: [u8; 32] = Sha256::digest(leaf).into();
    timer.done(&format!("{} certificates", chain.len()));

    timer.start(Step::Install);
    // For a STAR order the issuer's `certificate` URL is its `star-certificate` URL (RFC 8739),
    // which always serves the current certificate: the device fetches renewals from it.
    let star_url = match (plan.star, &order.state().certificate) {
        (false, _) => None,
        (true, Some(url)) => Some(url.clone()),
        (true, None) => {
            let reason = "the STAR order names no certificate URL".into();
            return Err(ProvisionError::Issuer {
                step: Step::Install,
                reason,
            });
        }
    };
    let request = Request::Install(InstallRequest {
        chain: chain.clone(),
        cors: plan.cors.clone(),
        star_url,
    });
    let Response::Install(InstallResponse {
        name: installed,
        https_port,
        fingerprint: device_fingerprint,
    }) = ask(&mut transport, Step::Install, &request, timer.progress).await?
    else {
        return Err(invalid(Step::Install, "answer of another kind"));
    };
    if installed != attested.name {
        return Err(invalid(
            Step::Install,
            format!(
                "the device installed {installed}, expected {}",
                attested.name
            ),
        ));
    }
    if device_fingerprint != fingerprint {
        return Err(invalid(
            Step::Install,
            "the device reports another certificate than the issued one",
        ));
    }
    let exchanges = transport.exchanges();
    let stats = transport.link().stats();
    transport.close().await;
    timer.done(&format!("serving https://{}:{https_port}", attested.name));

    timer.start(Step::Verify);
    let expect = Expectation {
        name: attested.name.clone(),
        origin: plan.origin.clone(),
        issuer_roots: vec![plan.issuer_root.clone()],
        pinned_spki: Some(attested.spki.clone()),
        user_handle: Some(plan.user_handle.clone()),
        path: plan.check_path.clone(),
        crls: vec![],
    };
    let (endpoint, check) = verify::check_any(&addresses, https_port, &expect)
        .await
        .map_err(|source| ProvisionError::Verify {
            step: Step::Verify,
            source,
        })?;
    timer.done(&format!(
        "HTTP {} with Access-Control-Allow-Origin {}",
        check.status, check.allow_origin
    ));

    let outcome = Outcome {
        product: attested.info.product,
        name: attested.name,
        endpoint,
        fingerprint,
        not_after: check.not_after,
        spki: attested.spki,
        chain,
        check,
        step_times: timer.times,
        exchanges,
        attempts: 1,
    };
    Ok((outcome, stats))
}
