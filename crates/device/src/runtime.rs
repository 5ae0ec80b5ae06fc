//! One way to start a device: [`DeviceBuilder`] gathers the engine's parts (settings,
//! attestation signer, TLS key provider, presence check, store) and the agent's (mDNS, STAR
//! renewal), and builds the running [`Agent`], with the same key provider behind the engine
//! (key generation, CSRs) and HTTPS (handshakes).
//!
//! The daemon gets its builder from `device.toml` ([`crate::config::DaemonConfig::builder`]);
//! the demo, the tests and the bench set the parts they need and keep the defaults for the
//! rest.

use std::path::Path;
use std::sync::Arc;

use crate::agent::Agent;
use crate::engine::{Device, DeviceConfig, SystemClock, WallClock};
use crate::error::Error;
use crate::https::Sites;
use crate::keys::{FileKeys, KeyProvider};
use crate::mdns::Announcer;
use crate::presence::{DenyAll, UserPresence};
use crate::signer::{AttestationSigner, FileSigner};
use crate::star::{Sleeper, StarFetch, TokioSleeper};
use crate::store::{BindingStore, MemoryStore};

/// The parts of a device, before it runs.
pub struct DeviceBuilder {
    config: DeviceConfig,
    signer: Box<dyn AttestationSigner>,
    keys: Arc<dyn KeyProvider>,
    presence: Box<dyn UserPresence>,
    store: Box<dyn BindingStore>,
    announcer: Option<Announcer>,
    fetcher: Option<Arc<dyn StarFetch>>,
    clock: Arc<dyn WallClock>,
    sleeper: Arc<dyn Sleeper>,
}

impl core::fmt::Debug for DeviceBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceBuilder")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .field("mdns", &self.announcer.is_some())
            .field("renewal", &self.fetcher.is_some())
            .finish_non_exhaustive()
    }
}

impl DeviceBuilder {
    /// A device with these settings and attestation signer. Until set otherwise: TLS keys as
    /// PKCS#8 ([`FileKeys`]), bindings in memory ([`MemoryStore`]), every ATTEST refused
    /// ([`DenyAll`]), no mDNS, no STAR renewal, the system clock.
    pub fn new(config: DeviceConfig, signer: Box<dyn AttestationSigner>) -> Self {
        Self {
            config,
            signer,
            keys: Arc::new(FileKeys),
            presence: Box::new(DenyAll),
            store: Box::new(MemoryStore::new()),
            announcer: None,
            fetcher: None,
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
        }
    }

    /// As [`DeviceBuilder::new`], with the attestation key and chain the factory wrote
    /// (`attestation.key.pem`, `attestation.pem`).
    pub fn from_credential_files(
        config: DeviceConfig,
        key: &Path,
        chain: &Path,
    ) -> Result<Self, Error> {
        Ok(Self::new(
            config,
            Box::new(FileSigner::from_files(key, chain)?),
        ))
    }

    /// Where TLS keys are made and used.
    pub fn keys(mut self, keys: Arc<dyn KeyProvider>) -> Self {
        self.keys = keys;
        self
    }

    /// How an ATTEST is confirmed.
    pub fn presence(mut self, presence: impl UserPresence + 'static) -> Self {
        self.presence = Box::new(presence);
        self
    }

    /// As [`DeviceBuilder::presence`], boxed.
    pub fn boxed_presence(mut self, presence: Box<dyn UserPresence>) -> Self {
        self.presence = presence;
        self
    }

    /// Where bindings are kept.
    pub fn store(mut self, store: impl BindingStore + 'static) -> Self {
        self.store = Box::new(store);
        self
    }

    /// Announces names over mDNS.
    pub fn announcer(mut self, announcer: Announcer) -> Self {
        self.announcer = Some(announcer);
        self
    }

    /// Renews STAR certificates with `fetcher`.
    pub fn fetcher(mut self, fetcher: Arc<dyn StarFetch>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// The wall clock (certificate validity, renewal) and the renewal loops' sleeper: tests
    /// move them by hand.
    pub fn time(mut self, clock: Arc<dyn WallClock>, sleeper: Arc<dyn Sleeper>) -> Self {
        self.clock = clock;
        self.sleeper = sleeper;
        self
    }

    /// Just the sans-IO engine, for firmware that drives it with its own runtime (and for
    /// engine tests). mDNS and renewal settings are not used.
    pub fn engine(self) -> Device {
        Device::new(self.config, self.signer, self.presence, self.store)
            .with_keys(self.keys)
            .with_clock(Box::new(self.clock))
    }

    /// The agent: the engine, an HTTPS site table on the same key provider, mDNS and renewal.
    /// Bindings already in the store are served (and announced, and renewed) at once, so call
    /// it inside a tokio runtime. Run [`Agent::run`] for timeouts, and serve
    /// [`Agent::sites`] with [`crate::https::serve`].
    pub fn build(self) -> Arc<Agent> {
        let sites = Sites::with_keys(self.keys.clone());
        let (announcer, fetcher) = (self.announcer, self.fetcher);
        let (clock, sleeper) = (self.clock.clone(), self.sleeper.clone());
        let device = Device::new(self.config, self.signer, self.presence, self.store)
            .with_keys(self.keys)
            .with_clock(Box::new(self.clock));
        let agent = Agent::with_time(device, sites, announcer, fetcher, clock, sleeper);
        agent.start_bindings();
        agent
    }
}
