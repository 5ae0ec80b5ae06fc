//! The agent runtime: the [`Device`] engine behind a mutex, driven on tokio, with its events
//! wired to HTTPS ([`Sites`]), mDNS ([`Announcer`]) and STAR renewal tasks.
//!
//! Transports (the BlueZ backend, an in-process link) feed fragments through
//! [`Agent::with_device`] and then call [`Agent::kick`]; they send what
//! [`Device::poll_fragment`] yields whenever [`Agent::outbox_changed`] fires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use localcert_proto::origin::Origin;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::WallClock;
use crate::engine::{Device, Event, SystemClock};
use crate::https::Sites;
use crate::mdns::Announcer;
use crate::star::{self, Sleeper, StarFetch, TokioSleeper};
use crate::store::Binding;

/// A callback that sees the agent's events.
type Observer = dyn Fn(&Event) + Send + Sync;

/// The running agent.
pub struct Agent {
    device: Mutex<Device>,
    outbox: watch::Sender<u64>,
    sites: Arc<Sites>,
    announcer: Mutex<Option<Announcer>>,
    fetcher: Option<Arc<dyn StarFetch>>,
    /// Running renewal loops by origin, with the URL each follows.
    renewals: Mutex<HashMap<Origin, (String, JoinHandle<()>)>>,
    wake: tokio::sync::Notify,
    clock: Arc<dyn WallClock>,
    sleeper: Arc<dyn Sleeper>,
    /// Sees every event after the agent acted on it (logs, a demo's narration).
    observer: Mutex<Option<Box<Observer>>>,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent serving `device`'s bindings on `sites`, announcing them with `announcer` and
    /// renewing STAR certificates with `fetcher` (either may be absent).
    pub fn new(
        device: Device,
        sites: Arc<Sites>,
        announcer: Option<Announcer>,
        fetcher: Option<Arc<dyn StarFetch>>,
    ) -> Arc<Self> {
        Self::with_time(
            device,
            sites,
            announcer,
            fetcher,
            Arc::new(SystemClock),
            Arc::new(TokioSleeper),
        )
    }

    /// As [`Agent::new`], with the clock and sleeper the renewal loops use (tests run them in
    /// virtual time).
    pub fn with_time(
        device: Device,
        sites: Arc<Sites>,
        announcer: Option<Announcer>,
        fetcher: Option<Arc<dyn StarFetch>>,
        clock: Arc<dyn WallClock>,
        sleeper: Arc<dyn Sleeper>,
    ) -> Arc<Self> {
        let (outbox, _) = watch::channel(0);
        Arc::new(Self {
            device: Mutex::new(device),
            outbox,
            sites,
            announcer: Mutex::new(announcer),
            fetcher,
            renewals: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            clock,
            sleeper,
            observer: Mutex::new(None),
        })
    }

    /// Calls `observer` with every event, after the agent has acted on it.
    pub fn observe(&self, observer: impl Fn(&Event) + Send + Sync + 'static) {
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(observer));
    }

    /// Acts on the engine's pending events now: serves, announces, renews, withdraws.
    ///
    /// [`Agent::run`] does this after every timeout and kick; an in-process transport that
    /// needs a binding served before its INSTALL response is read calls it directly.
    pub fn pump(self: &Arc<Self>) {
        let events: Vec<Event> =
            self.with_device(|d| std::iter::from_fn(|| d.poll_event()).collect());
        for event in events {
            self.handle_event(&event);
            if let Some(observer) = self
                .observer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                observer(&event);
            }
        }
    }

    /// Runs `f` with the engine locked. Never hold it across an await.
    pub fn with_device<T>(&self, f: impl FnOnce(&mut Device) -> T) -> T {
        f(&mut self.lock_device())
    }

    fn lock_device(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the agent that fragments went in: it processes events and timeouts and
    /// signals [`Agent::outbox_changed`].
    pub fn kick(&self) {
        self.outbox.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }

    /// Fires whenever a session may have fragments to send.
    pub fn outbox_changed(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// The HTTPS site table.
    pub fn sites(&self) -> &Arc<Sites> {
        &self.sites
    }

    /// Serves, announces and renews the bindings already in the store.
    pub fn start_bindings(self: &Arc<Self>) {
        let bindings: Vec<Binding> = self.with_device(|d| d.bindings().to_vec());
        for binding in bindings {
            self.serve_binding(&binding);
        }
    }

    /// The timer and event loop. Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            let deadline = self.with_device(|d| d.poll_timeout());
            match deadline {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
            self.with_device(|d| d.handle_timeout(Instant::now()));
            self.pump();
            self.outbox.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn with_announcer(&self, f: impl FnOnce(&mut Announcer) -> Result<(), crate::Error>) {
        let mut guard = self.announcer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(announcer) = guard.as_mut() {
            if let Err(e) = f(announcer) {
                tracing::warn!(error = %e, "mDNS");
            }
        }
    }

    fn handle_event(self: &Arc<Self>, event: &Event) {
        match event {
            Event::Pending { name, .. } => self.with_announcer(|a| a.announce(name)),
            Event::PendingDropped { name } => {
                let bound = self.with_device(|d| d.bindings().iter().any(|b| &b.name == name));
                if !bound {
                    self.with_announcer(|a| a.withdraw(name));
                }
            }
            Event::Installed(binding) => self.serve_binding(binding),
            Event::Removed { origin, name } => {
                self.sites.remove(name);
                self.with_announcer(|a| a.withdraw(name));
                if let Some((_, task)) = self.renewals().remove(origin) {
                    task.abort();
                }
            }
        }
    }

    fn renewals(&self) -> MutexGuard<'_, HashMap<Origin, (String, JoinHandle<()>)>> {
        self.renewals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve_binding(self: &Arc<Self>, binding: &Binding) {
        if let Err(e) = self.sites.apply(binding) {
            tracing::error!(origin = %binding.origin, error = %e, "cannot serve binding");
        }
        self.with_announcer(|a| a.announce(&binding.name));
        let (Some(url), Some(fetcher)) = (binding.star_url.clone(), self.fetcher.clone()) else {
            return;
        };
        let mut renewals = self.renewals();
        match renewals.get(&binding.origin) {
            // Already renewing from this URL: the loop follows the chains it installs.
            Some((running, task)) if running == &url && !task.is_finished() => return,
            // A new INSTALL (new key, new URL) replaces the old delegation.
            Some((_, task)) => task.abort(),
            None => {}
        }
        let agent = Arc::downgrade(self);
        let origin = binding.origin.clone();
        let chain = binding.chain.clone();
        let task_url = url.clone();
        let (clock, sleeper) = (self.clock.clone(), self.sleeper.clone());
        let task = tokio::spawn(async move {
            let url = task_url;
            let install_agent = agent.clone();
            let install_origin = origin.clone();
            let end = star::renewal_loop(
                &url,
                chain,
                fetcher.as_ref(),
                clock.as_ref(),
                sleeper.as_ref(),
                jitter,
                move |chain| {
                    let Some(agent) = install_agent.upgrade() else {
                        return Ok(());
                    };
                    let result = agent.with_device(|d| d.renew(&install_origin, chain));
                    agent.kick();
                    result
                },
            )
            .await;
            tracing::info!(%origin, ?end, "STAR renewal stopped");
            if let Some(agent) = agent.upgrade() {
                if let Err(r) = agent.with_device(|d| d.end_renewal(&origin)) {
                    tracing::warn!(%origin, reason = r.reason, "cannot record the end of renewal");
                }
            }
        });
        renewals.insert(binding.origin.clone(), (url, task));
    }
}

/// A uniform draw from `[0, 1)` for renewal jitter.
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_be_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DeviceConfig, IssuerTrust};
    use crate::presence::AutoApprove;
    use crate::runtime::DeviceBuilder;
    use crate::signer::FileSigner;
    use crate::test_pki::TestCa;
    use localcert_proto::binding::OriginBinding;
    use localcert_proto::frame::{Frame, Reassembler};
    use localcert_proto::gatt::fragment_len;
    use localcert_proto::message::{AttestRequest, CorsPolicy, InstallRequest, Request, Response};
    use localcert_proto::name::DeviceLabel;

    fn exchange(agent: &Agent, id: crate::engine::SessionId, request: &Request) -> Response {
        let frame = Frame::msg(request.encode());
        agent.with_device(|d| {
            for f in frame.fragments(fragment_len(185)).unwrap() {
                d.handle_fragment(id, Instant::now(), &f);
            }
        });
        agent.kick();
        let mut r = Reassembler::new();
        let frame = agent.with_device(|d| {
            std::iter::from_fn(|| d.poll_fragment(id))
                .find_map(|f| r.handle_fragment(Instant::now(), &f).unwrap())
                .unwrap()
        });
        Response::decode(request.operation(), &frame.data).unwrap()
    }

    /// ATTEST for https://vod.example.com with label `tv`: the origin, the name and the key.
    fn attest_tv(
        agent: &Agent,
        id: crate::engine::SessionId,
    ) -> (Origin, localcert_proto::name::LocalName, Vec<u8>) {
        let origin = Origin::parse("https://vod.example.com").unwrap();
        let label = DeviceLabel::parse("tv").unwrap();
        let Response::Attest(att) = exchange(
            agent,
            id,
            &Request::Attest(AttestRequest {
                origin: origin.clone(),
                user_handle: b"u".to_vec(),
                key_authorization_hash: [7; 32],
                device_label: label.clone(),
                pin: None,
            }),
        ) else {
            panic!("attest failed");
        };
        let spki = att.spki();
        let name = agent.with_device(|d| {
            localcert_proto::name::LocalName::derive(&label, &origin, d.device_tag())
        });
        (origin, name, spki)
    }

    /// INSTALL of `chain` with a GET-only CORS policy.
    fn install_request(chain: Vec<Vec<u8>>, star_url: Option<&str>) -> Request {
        Request::Install(InstallRequest {
            chain,
            cors: CorsPolicy {
                methods: vec!["GET".into()],
                allow_headers: vec![],
                expose_headers: vec![],
                allow_credentials: false,
                max_age: 60,
            },
            star_url: star_url.map(str::to_owned),
        })
    }

    /// The whole device side in one process: provisioning through the engine, then HTTPS
    /// serving the installed chain with the binding's CORS policy.
    #[tokio::test]
    async fn provisioned_binding_is_served_over_https() {
        let ca = TestCa::new("Issuer");
        let root = crate::factory::new_root("M").unwrap();
        let cred = crate::factory::new_device(&root, "TV", "1").unwrap();
        let mut config = DeviceConfig::new("TV");
        config.trust = IssuerTrust::Roots(vec![ca.root.clone()]);
        let agent = DeviceBuilder::new(
            config,
            Box::new(FileSigner::new(&cred.key, cred.chain).unwrap()),
        )
        .presence(AutoApprove)
        .build();
        let sites = agent.sites().clone();
        tokio::spawn(agent.clone().run());
        let id = agent.with_device(|d| {
            let id = d.connect(185);
            d.set_subscribed(id, true);
            id
        });

        let (origin, name, spki) = attest_tv(&agent, id);
        let now = time::OffsetDateTime::now_utc();
        let chain = ca.issue(
            &spki,
            &[name.as_str()],
            Some(&OriginBinding::new(origin.clone(), b"u")),
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        );
        let install = install_request(chain.clone(), None);
        assert!(matches!(
            exchange(&agent, id, &install),
            Response::Install(_)
        ));
        // The agent loop applies the Installed event.
        for _ in 0..1000 {
            if sites.names().contains(&name.as_str().to_owned()) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(sites.names(), vec![name.as_str().to_owned()]);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        });
        tokio::spawn(crate::https::serve(
            listener,
            sites,
            handler,
            std::future::pending(),
        ));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.root.clone().into()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(
                rustls_pki_types::ServerName::try_from(name.as_str().to_owned()).unwrap(),
                tcp,
            )
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
            chain[0].as_slice()
        );
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let response = sender
            .send_request(
                http::Request::get("/")
                    .header("origin", origin.as_str())
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            origin.as_str()
        );
    }

    struct FakeTime(std::sync::atomic::AtomicU64);

    impl WallClock for FakeTime {
        fn unix_time(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Sleeper for FakeTime {
        fn sleep(&self, d: std::time::Duration) -> star::BoxFuture<'_, ()> {
            self.0
                .fetch_add(d.as_secs(), std::sync::atomic::Ordering::SeqCst);
            Box::pin(tokio::task::yield_now())
        }
    }

    struct Script(Mutex<Vec<star::Fetched>>);

    impl StarFetch for Script {
        fn fetch<'a>(
            &'a self,
            _: &'a str,
        ) -> star::BoxFuture<'a, Result<star::Fetched, crate::Error>> {
            let next = self.0.lock().unwrap().pop();
            Box::pin(async move { next.ok_or(crate::Error::Service("script done".into())) })
        }
    }

    async fn peer_leaf(sites: Arc<Sites>, root: &[u8], name: &str) -> Vec<u8> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        });
        let server = tokio::spawn(crate::https::serve(
            listener,
            sites,
            handler,
            std::future::pending(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.to_vec().into()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(
                rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        server.abort();
        leaf
    }

    /// A binding installed with a STAR URL is renewed by the agent: the engine checks the new
    /// chain, HTTPS serves it, and when the issuer ends the delegation the binding stops being
    /// marked for renewal.
    #[tokio::test]
    async fn star_bindings_are_renewed_and_served() {
        let start = SystemClock.unix_time();
        let time = Arc::new(FakeTime(std::sync::atomic::AtomicU64::new(start)));
        let ca = TestCa::new("Issuer");
        let root = crate::factory::new_root("M").unwrap();
        let cred = crate::factory::new_device(&root, "TV", "1").unwrap();
        let mut config = DeviceConfig::new("TV");
        config.trust = IssuerTrust::Roots(vec![ca.root.clone()]);
        let script = Arc::new(Script(Mutex::new(Vec::new())));
        let agent = DeviceBuilder::new(
            config,
            Box::new(FileSigner::new(&cred.key, cred.chain).unwrap()),
        )
        .presence(AutoApprove)
        .fetcher(script.clone())
        .time(time.clone(), time.clone())
        .build();
        let sites = agent.sites().clone();
        tokio::spawn(agent.clone().run());
        let id = agent.with_device(|d| {
            let id = d.connect(247);
            d.set_subscribed(id, true);
            id
        });

        let (origin, name, spki) = attest_tv(&agent, id);
        let at = |secs: u64| time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
        let binding = OriginBinding::new(origin.clone(), b"u");
        let first = ca.issue(
            &spki,
            &[name.as_str()],
            Some(&binding),
            at(start - 60),
            at(start + 3 * 3600),
        );
        let second = ca.issue(
            &spki,
            &[name.as_str()],
            Some(&binding),
            at(start - 30),
            at(start + 6 * 3600),
        );
        // Served in reverse: the renewed chain first, then the end of the delegation.
        *script.0.lock().unwrap() =
            vec![star::Fetched::Ended, star::Fetched::Chain(second.clone())];

        let install = install_request(first.clone(), Some("https://issuer.test/star/1"));
        assert!(matches!(
            exchange(&agent, id, &install),
            Response::Install(_)
        ));

        let mut done = false;
        for _ in 0..10_000 {
            let binding = agent.with_device(|d| d.bindings().first().cloned());
            if binding.is_some_and(|b| b.chain == second && b.star_url.is_none()) {
                done = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(done, "renewed and then marked as no longer renewed");
        assert!(script.0.lock().unwrap().is_empty(), "both answers used");
        assert!(
            time.unix_time() >= start + 2 * 3600,
            "fetched at two thirds of the lifetime"
        );
        assert_eq!(peer_leaf(sites, &ca.root, name.as_str()).await, second[0]);
    }
}
