//! The provisioning flow (SPEC.md §1, steps 3 to 14): GET_INFO, the ACME account and order,
//! ATTEST, the mDNS check, the `device-attest-01` challenge, finalize, download, INSTALL and the
//! verification of the endpoint. Every step checks what it received before the next one uses it.
//!
//! The ACME side is the RP library's [`Flow`] (one ACME client path for the browser's backend
//! and this harness); this module adds BLE, mDNS, progress and the endpoint verification.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use localcert_proto::ErrorCode;
use localcert_proto::message::{CorsPolicy, InstallResponse, Request, Response};
use localcert_proto::name::{DeviceLabel, LocalName};
use localcert_proto::origin::Origin;
use localcert_rp::{AcmeAccount, AcmeSettings, Eab, Flow, FlowError, FlowParams};

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
    /// Where the ACME account is kept between runs (an EAB key binds one account); `None`:
    /// a new account for this run only.
    pub acme_account_file: Option<std::path::PathBuf>,
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

impl Plan {
    /// The origin's ACME account settings: the account the RP backend (or `localcert rp
    /// cancel-star`) holds, with the same account file.
    pub fn acme_settings(&self) -> AcmeSettings {
        AcmeSettings {
            directory_url: self.directory_url.clone(),
            tls_root: self.acme_tls_root.clone(),
            eab: Eab {
                kid: self.eab_kid.clone(),
                key: self.eab_key.clone(),
            },
            account_file: self.acme_account_file.clone(),
        }
    }
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

fn flow_error(step: Step) -> impl Fn(FlowError) -> ProvisionError {
    move |e| match e {
        FlowError::DeviceInvalid(reason) => ProvisionError::DeviceInvalid { step, reason },
        FlowError::Issuer(reason) => ProvisionError::Issuer { step, reason },
        other => ProvisionError::Issuer {
            step,
            reason: other.to_string(),
        },
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
        .request(request, presence_hint(progress))
        .await
        .map_err(|source| ProvisionError::Ble { step, source })?;
    answer(step, response)
}

/// Opens the session with `request` pipelined beside the info read ([`Transport::open_with`]).
async fn open_asking<L: BleLink, P: Progress>(
    link: L,
    step: Step,
    request: &Request,
    progress: &mut P,
) -> Result<(Transport<L>, Response), ProvisionError> {
    let (transport, response) = Transport::open_with(link, request, presence_hint(progress))
        .await
        .map_err(|source| ProvisionError::Ble { step, source })?;
    Ok((transport, answer(step, response)?))
}

/// Tells the user to act when the device asks for presence.
fn presence_hint<P: Progress>(
    progress: &mut P,
) -> impl FnMut(localcert_proto::frame::KeepAliveStatus) + Send + '_ {
    |status| {
        if status == localcert_proto::frame::KeepAliveStatus::UserPresenceNeeded {
            progress.user_presence_needed();
        }
    }
}

fn answer(step: Step, response: Response) -> Result<Response, ProvisionError> {
    match response {
        Response::Error(code, detail) => Err(ProvisionError::DeviceRefused { step, code, detail }),
        other => Ok(other),
    }
}

pub use localcert_rp::check::csr_spki;

/// Runs the whole flow against the device `connector` reaches and the issuer in `plan`.
///
/// A BLE drop anywhere starts again from GET_INFO with a new order (the device drops its
/// pending key when the connection ends), up to `plan.max_attempts` times. The ACME account is
/// made once, at the first order.
pub async fn provision<C: Connector, R: Resolver, P: Progress>(
    plan: &Plan,
    connector: &mut C,
    resolver: &R,
    progress: &mut P,
) -> Result<(Outcome, Option<LinkStats>), ProvisionError> {
    let account = AcmeAccount::new(plan.acme_settings());
    let mut attempt = 1;
    loop {
        match provision_once(plan, &account, connector, resolver, progress).await {
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
    account: &AcmeAccount,
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
    let (mut transport, answer) =
        open_asking(link, Step::GetInfo, &Request::GetInfo, timer.progress).await?;
    let Response::Info(info) = answer else {
        return Err(invalid(Step::GetInfo, "answer of another kind"));
    };
    let product = info.product.clone();
    timer.done(&format!("{product} (label {})", info.device_label));

    timer.start(Step::Order);
    let params = FlowParams {
        origin: plan.origin.clone(),
        user_handle: plan.user_handle.clone(),
        device_label: plan.device_label.clone(),
        star: plan.star,
        cors: plan.cors.clone(),
    };
    let account = account.get().await.map_err(flow_error(Step::Order))?;
    let (mut flow, fields) = Flow::start(account, params, info)
        .await
        .map_err(flow_error(Step::Order))?;
    let name = flow.name().clone();
    timer.done(&format!("account {}, order for {name}", account.id()));

    timer.start(Step::Attest);
    let request = Request::Attest(fields.request(plan.pin.clone()));
    let Response::Attest(attest) =
        ask(&mut transport, Step::Attest, &request, timer.progress).await?
    else {
        return Err(invalid(Step::Attest, "answer of another kind"));
    };
    let attested = flow
        .check_attestation(&attest)
        .map_err(flow_error(Step::Attest))?;
    let spki = attested.spki;
    timer.done(&format!(
        "TLS key, CSR for {name} ({} bytes) and signed transcript",
        attested.csr.len()
    ));

    timer.start(Step::Mdns);
    let addresses = resolver
        .resolve(&name)
        .await
        .map_err(|reason| ProvisionError::Mdns {
            step: Step::Mdns,
            reason,
        })?;
    if addresses.is_empty() {
        let reason = format!("{name} has no address");
        return Err(ProvisionError::Mdns {
            step: Step::Mdns,
            reason,
        });
    }
    let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    timer.done(&format!("{name} → {}", shown.join(", ")));

    timer.start(Step::Challenge);
    flow.answer_challenge(&attest)
        .await
        .map_err(flow_error(Step::Challenge))?;
    timer.done("attestation accepted, CSR finalized");

    timer.start(Step::Download);
    let install = flow.download().await.map_err(flow_error(Step::Download))?;
    let chain = flow.chain().map(<[_]>::to_vec).unwrap_or_default();
    timer.done(&format!(
        "{} certificates, {} for the device (it holds the rest)",
        chain.len(),
        install.chain.len()
    ));

    timer.start(Step::Install);
    let request = Request::Install(install);
    let Response::Install(installed) =
        ask(&mut transport, Step::Install, &request, timer.progress).await?
    else {
        return Err(invalid(Step::Install, "answer of another kind"));
    };
    let InstallResponse { https_port, .. } = installed;
    let done = flow
        .installed(&installed)
        .map_err(flow_error(Step::Install))?;
    let exchanges = transport.exchanges();
    let stats = transport.link().stats();
    transport.close().await;
    timer.done(&format!("serving https://{name}:{https_port}"));

    timer.start(Step::Verify);
    let expect = Expectation {
        name: name.clone(),
        origin: plan.origin.clone(),
        issuer_roots: vec![plan.issuer_root.clone()],
        pinned_spki: Some(spki.clone()),
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
        product,
        name,
        endpoint,
        fingerprint: done.fingerprint,
        not_after: check.not_after,
        spki,
        chain,
        check,
        step_times: timer.times,
        exchanges,
        attempts: 1,
    };
    Ok((outcome, stats))
}
