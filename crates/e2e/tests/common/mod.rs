//! A whole world on loopback for the UA's tests: an issuer serving ACME over HTTPS, a device
//! engine with its HTTPS server, and an in-memory link between the UA and the device.

// Each test crate that includes this uses part of it; they allow unwrap/expect/panic.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use localcert_device::agent::Agent;
use localcert_device::gatt::{Connection, GattServer};
use localcert_device::presence::AutoApprove;
use localcert_device::star::{HttpsFetcher, StarFetch};
use localcert_device::{DeviceBuilder, DeviceConfig, IssuerTrust};
use localcert_issuer::acme::AcmeServer;
use localcert_issuer::loopback::LoopbackIssuer;
use localcert_issuer::store::SqliteStore;
use localcert_issuer::validate::TrustConfig;
use localcert_proto::message::CorsPolicy;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use localcert_ua::LinkProfile;
use localcert_ua::provision::{self, Outcome, Plan, Progress, ProvisionError, Step};
use localcert_ua::resolve::StaticResolver;
use localcert_ua::sim::SimConnector;
use localcert_ua::verify::Expectation;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub const ORIGIN: &str = "https://vod.example.com";
pub const KID: &str = "kid-vod";
pub const HMAC: &[u8] = &[7; 32];
pub const ORIGIN2: &str = "https://music.example.net:8443";
pub const KID2: &str = "kid-music";
pub const HMAC2: &[u8] = &[9; 32];
pub const BODY: &str = "hello from the device";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn pem(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The device of most tests: fixture device-1's attestation credential, every ATTEST approved.
pub fn fixture_device(config: DeviceConfig) -> DeviceBuilder {
    let dir = fixtures().join("devices/device-1");
    DeviceBuilder::from_credential_files(
        config,
        &dir.join("attestation.key.pem"),
        &dir.join("attestation.pem"),
    )
    .unwrap()
    .presence(AutoApprove)
}

pub struct World {
    issuer: LoopbackIssuer,
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub server: Arc<AcmeServer>,
    pub issuer_addr: std::net::SocketAddr,
    pub issuer_root: Vec<u8>,
    pub directory_url: String,
    pub tls_root: PathBuf,
    pub agent: Arc<Agent>,
    /// The device's BLE session driver; each in-memory connection is a new central.
    pub gatt: Arc<GattServer<u64>>,
    centrals: Arc<AtomicU64>,
    pub sites: Arc<localcert_device::https::Sites>,
    pub https_port: u16,
    shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl World {
    /// Issuer and device, both serving on loopback.
    pub async fn start() -> Self {
        Self::start_with_revoked(vec![]).await
    }

    /// As [`World::start`], with these device or batch certificates (SHA-256) revoked at the
    /// issuer.
    pub async fn start_with_revoked(revoked: Vec<[u8; 32]>) -> Self {
        Self::start_with(revoked, fixture_device).await
    }

    /// As [`World::start_with_revoked`], with the device `device` makes from its settings
    /// (HTTPS port and trusted issuer filled in).
    pub async fn start_with(
        revoked: Vec<[u8; 32]>,
        device: impl FnOnce(DeviceConfig) -> DeviceBuilder,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust =
            TrustConfig::new(&[pem(&fixtures().join("manufacturer/root.pem"))], revoked).unwrap();
        let issuer = LoopbackIssuer::start(
            dir.path(),
            &[(ORIGIN, KID, HMAC), (ORIGIN2, KID2, HMAC2)],
            trust,
        )
        .await
        .unwrap();
        let issuer_addr = issuer.addr;
        let issuer_root = issuer.issuer_root.clone();
        let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_port = https.local_addr().unwrap().port();
        let mut config = DeviceConfig::new("Media Server 1");
        config.https_port = https_port;
        config.trust = IssuerTrust::Roots(vec![issuer_root.clone()]);
        // The issuing intermediate beside the root: INSTALL carries the leaf alone.
        let intermediate = localcert_issuer::ca::CaFiles::in_dir(dir.path()).intermediate_cert;
        config.issuer_intermediates = vec![pem(&intermediate)];
        // STAR renewals come from the issuer on loopback, over its own TLS certificate.
        let fetcher: Arc<dyn StarFetch> = Arc::new(
            HttpsFetcher::new(&[pem(&issuer.tls_root)])
                .unwrap()
                .resolve_to(issuer_addr),
        );
        let agent = device(config).fetcher(fetcher).build();
        let sites = agent.sites().clone();
        let handler = tower::service_fn(|_req| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(BODY))))
        });
        let (stop_device, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(localcert_device::https::serve(
            https,
            sites.clone(),
            handler,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            tls_root: issuer.tls_root.clone(),
            store: issuer.store.clone(),
            server: issuer.server.clone(),
            directory_url: issuer.directory_url.clone(),
            issuer,
            dir,
            issuer_addr,
            issuer_root,
            gatt: Arc::new(GattServer::new(agent.clone())),
            centrals: Arc::new(AtomicU64::new(0)),
            agent,
            sites,
            https_port,
            shutdown: vec![stop_device],
        }
    }

    /// The plan for the second registered origin.
    pub fn plan2(&self) -> Plan {
        Plan {
            origin: Origin::parse(ORIGIN2).unwrap(),
            eab_kid: KID2.into(),
            eab_key: HMAC2.to_vec(),
            acme_account_file: Some(self.dir.path().join("account-2.json")),
            ..self.plan()
        }
    }

    pub fn plan(&self) -> Plan {
        Plan {
            directory_url: self.directory_url.clone(),
            acme_tls_root: Some(self.tls_root.clone()),
            issuer_root: self.issuer_root.clone(),
            eab_kid: KID.into(),
            eab_key: HMAC.to_vec(),
            // One account per EAB key at the issuer: every provisioning of the world reuses it.
            acme_account_file: Some(self.dir.path().join("account-1.json")),
            origin: Origin::parse(ORIGIN).unwrap(),
            user_handle: b"user-1".to_vec(),
            device_label: None,
            pin: None,
            cors: CorsPolicy {
                methods: vec!["GET".into(), "POST".into()],
                allow_headers: vec!["content-type".into()],
                expose_headers: vec![],
                allow_credentials: false,
                max_age: 600,
            },
            star: false,
            max_attempts: 3,
            check_path: "/".into(),
        }
    }

    /// A connector whose first connection drops at fragment `drop_at` (if any); installed
    /// bindings go straight to the HTTPS server.
    pub fn connector(
        &self,
        profile: LinkProfile,
        drop_at: Option<usize>,
    ) -> SimConnector<impl FnMut() -> Connection<u64> + Send + use<>> {
        let (gatt, centrals) = (self.gatt.clone(), self.centrals.clone());
        let connector = SimConnector::new(
            move || gatt.connection(centrals.fetch_add(1, Ordering::Relaxed)),
            profile,
        );
        match drop_at {
            Some(n) => connector.drop_first_at(n),
            None => connector,
        }
    }

    /// The name this device gets for `origin` with its own label.
    pub fn name_for(&self, origin: &str) -> LocalName {
        let origin = Origin::parse(origin).unwrap();
        self.agent
            .with_device(|d| LocalName::derive(&d.config().device_label, &origin, d.device_tag()))
    }

    /// Resolves the device's names for both origins to 127.0.0.1 (mDNS is tested elsewhere).
    pub fn resolver_for_device(&self) -> StaticResolver {
        let mut r = StaticResolver::default();
        for origin in [ORIGIN, ORIGIN2] {
            r.insert(
                self.name_for(origin).as_str(),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            );
        }
        r
    }
}

/// A provisioning's progress, not reported.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: Step) {}
    fn done(&mut self, _: Step, _: &str) {}
}

impl World {
    /// One provisioning over the in-memory link (MTU 247), the device's names on loopback.
    pub async fn provision(&self, plan: &Plan) -> Result<Outcome, ProvisionError> {
        let mut connector = self.connector(LinkProfile::MTU247_15MS_2M, None);
        provision::provision(
            plan,
            &mut connector,
            &self.resolver_for_device(),
            &mut Quiet,
        )
        .await
        .map(|(outcome, _)| outcome)
    }

    /// The `star-certificate` URL of the device's first binding (a STAR one).
    pub fn star_url(&self) -> String {
        self.agent
            .with_device(|d| d.bindings()[0].star_url.clone())
            .expect("a STAR binding")
    }

    /// Fetches `star-certificate` URLs as the device does: the issuer's TLS root, its address.
    pub fn star_fetcher(&self) -> HttpsFetcher {
        HttpsFetcher::new(&[pem(&self.tls_root)])
            .unwrap()
            .resolve_to(self.issuer_addr)
    }

    /// What `origin`'s page expects of the endpoint `outcome` installed.
    pub fn expectation(&self, outcome: &Outcome, origin: &str) -> Expectation {
        Expectation {
            name: outcome.name.clone(),
            origin: Origin::parse(origin).unwrap(),
            issuer_roots: vec![self.issuer_root.clone()],
            pinned_spki: Some(outcome.spki.clone()),
            user_handle: None,
            path: "/".into(),
            crls: vec![],
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for stop in self.shutdown.drain(..) {
            let _ = stop.send(());
        }
    }
}
