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

use crate::engine::{Device, Event, SystemClock};
use crate::https::Sites;
use crate::mdns::Announcer;
use crate::star::{self, StarFetch, TokioSleeper};
use crate::store::Binding;

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
        let (outbox, _) = watch::channel(0);
        Arc::new(Self {
            device: Mutex::new(device),
            outbox,
            sites,
            announcer: Mutex::new(announcer),
            fetcher,
            renewals: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        })
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
            let events: Vec<Event> = self.with_device(|d| {
                d.handle_timeout(Instant::now());
                std::iter::from_fn(|| d.poll_event()).collect()
            });
            for event in events {
                self.handle_event(event);
            }
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

    fn handle_event(self: &Arc<Self>, event: Event) {
        match event {
            Event::Pending { name, .. } => self.with_announcer(|a| a.announce(&name)),
            Event::PendingDropped { name } => {
                let bound = self.with_device(|d| d.bindings().iter().any(|b| b.name == name));
                if !bound {
                    self.with_announcer(|a| a.withdraw(&name));
                }
            }
            Event::Installed(binding) => self.serve_binding(&binding),
            Event::Removed { origin, name } => {
                self.sites.remove(&name);
                self.with_announcer(|a| a.withdraw(&name));
                if let Some((_, task)) = self.renewals().remove(&origin) {
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
        let task = tokio::spawn(async move {
            let url = task_url;
            let install_agent = agent.clone();
            let install_origin = origin.clone();
            let end = star::renewal_loop(
                &url,
                chain,
                fetcher.as_ref(),
                &SystemClock,
                &TokioSleeper,
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
