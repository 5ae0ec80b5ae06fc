//! The sans-IO device engine: the protocol as the device speaks it, over the proto crate's
//! framing.
//!
//! A [`Device`] holds what all connections share (signer, presence check, store, pending keys)
//! and one session per connection. The BLE adapter (or an in-memory link) feeds it fragments and
//! `now`, and polls fragments to notify, timeouts and [`Event`]s; it never reads a clock or
//! draws randomness itself except through the [`WallClock`] and RNG it was given.
//!
//! One request at a time per session: ATTEST may wait for the user (KEEPALIVE frames go out
//! meanwhile); anything else answers at once. Framing errors answer with an ERROR frame,
//! request errors with an error response; neither leaves state behind.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use localcert_proto::ErrorCode;
use localcert_proto::frame::{Command, Frame, KEEPALIVE_INTERVAL, KeepAliveStatus, Reassembler};
use localcert_proto::gatt::{GattInfo, fragment_len};
use localcert_proto::message::{
    AttestRequest, MAX_BINDINGS, MAX_ERROR_MESSAGE_LEN, Request, Response,
};
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::{DeviceKey, FileKeys, KeyProvider};
use crate::outbox::Outbox;
use crate::pending::{PendingKey, PendingKeys};
use crate::presence::{PendingPresence, PresenceCheck, PresenceRequest, UserPresence};
use crate::signer::AttestationSigner;
use crate::store::{Binding, BindingStore};
use crate::verify::{Refused, refused};

/// How long a pending key waits for its INSTALL (Matter-style fail-safe; SPEC §5.2).
pub const DEFAULT_PENDING_LIFETIME: Duration = localcert_proto::message::PENDING_LIFETIME;
/// How long the device waits for the user to approve an ATTEST (SPEC §3.3).
pub const DEFAULT_PRESENCE_TIMEOUT: Duration = localcert_proto::message::USER_PRESENCE_TIMEOUT;
/// How many ATTESTs may wait for their INSTALL at once; the oldest is dropped beyond that.
pub const DEFAULT_MAX_PENDING: usize = 4;
/// How often a pending presence answer is polled.
const PRESENCE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The wall clock, for certificate validity. Injected so tests can move it.
pub trait WallClock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn unix_time(&self) -> u64;
}

impl<T: WallClock + ?Sized> WallClock for Arc<T> {
    fn unix_time(&self) -> u64 {
        (**self).unix_time()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_time(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Which issuers the device trusts for INSTALL and renewal: a device setting, configured by
/// its maker or owner, never taken from a chain (SPEC §5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuerTrust {
    /// These issuer certificates (DER; normally the issuer's root). Empty: trust nothing, so
    /// every INSTALL is refused with UNTRUSTED_ISSUER.
    Roots(Vec<Vec<u8>>),
}

/// The device's settings.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Product name reported by GET_INFO (at most 64 bytes).
    pub product: String,
    /// The device label the device suggests to UAs.
    pub device_label: DeviceLabel,
    /// The HTTPS port reported by INSTALL.
    pub https_port: u16,
    /// How many bindings the device holds (at most [`MAX_BINDINGS`]).
    pub max_bindings: usize,
    /// How long a pending key waits for its INSTALL.
    pub pending_lifetime: Duration,
    /// How long the device waits for the user.
    pub presence_timeout: Duration,
    /// How many pending keys at once.
    pub max_pending: usize,
    /// Which issuer the device trusts.
    pub trust: IssuerTrust,
    /// Issuing intermediates (DER) the device holds beside its trusted roots. GET_INFO reports
    /// their ids so that INSTALL can omit them (SPEC §5.1, §5.3); the device completes the
    /// chain from them and serves it whole in TLS. They are candidates for a path, never
    /// anchors: a chain must still verify up to a root of `trust`.
    pub issuer_intermediates: Vec<Vec<u8>>,
}

impl DeviceConfig {
    /// Defaults for a product: label from its name, port 443, no trusted issuer yet.
    pub fn new(product: &str) -> Self {
        Self {
            product: product.to_owned(),
            device_label: DeviceLabel::from_text(product),
            https_port: 443,
            max_bindings: MAX_BINDINGS,
            pending_lifetime: DEFAULT_PENDING_LIFETIME,
            presence_timeout: DEFAULT_PRESENCE_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            trust: IssuerTrust::Roots(Vec::new()),
            issuer_intermediates: Vec::new(),
        }
    }
}

/// A connection's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

/// Something the daemon acts on (HTTPS, mDNS, renewal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An ATTEST made a key for this name; the UA may check it resolves (announce it).
    Pending {
        /// The origin.
        origin: Origin,
        /// The name.
        name: LocalName,
    },
    /// A pending key expired or was replaced without INSTALL; stop announcing the name.
    PendingDropped {
        /// The name.
        name: LocalName,
    },
    /// A binding was installed or renewed: serve it.
    Installed(Box<Binding>),
    /// A binding was removed: stop serving and announcing it.
    Removed {
        /// The origin.
        origin: Origin,
        /// The name.
        name: LocalName,
    },
}

#[derive(Debug)]
struct AwaitingUser {
    request: AttestRequest,
    presence: PendingPresence,
    deadline: Instant,
    next_keepalive: Instant,
    next_poll: Instant,
}

#[derive(Debug)]
struct Session {
    mtu: u16,
    reassembler: Reassembler,
    outbox: Outbox,
    awaiting: Option<AwaitingUser>,
}

/// The device side of the protocol, for every connection.
pub struct Device {
    config: DeviceConfig,
    signer: Box<dyn AttestationSigner>,
    keys: Arc<dyn KeyProvider>,
    presence: Box<dyn UserPresence>,
    store: Box<dyn BindingStore>,
    rng: Box<dyn SecureRandom + Send + Sync>,
    clock: Box<dyn WallClock>,
    device_tag: DeviceTag,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    pending: PendingKeys,
    events: VecDeque<Event>,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device with the system clock and RNG.
    pub fn new(
        config: DeviceConfig,
        signer: Box<dyn AttestationSigner>,
        presence: Box<dyn UserPresence>,
        store: Box<dyn BindingStore>,
    ) -> Self {
        let device_tag = DeviceTag::from_attestation_certificate(
            signer.chain().first().map_or(&[][..], Vec::as_slice),
        );
        let mut config = config;
        config.max_bindings = config.max_bindings.min(MAX_BINDINGS);
        let pending = PendingKeys::new(config.pending_lifetime, config.max_pending);
        Self {
            config,
            signer,
            keys: Arc::new(FileKeys),
            presence,
            store,
            rng: Box::new(SystemRandom::new()),
            clock: Box::new(SystemClock),
            device_tag,
            sessions: BTreeMap::new(),
            next_session: 0,
            pending,
            events: VecDeque::new(),
        }
    }

    /// Replaces the wall clock (tests).
    pub fn with_clock(mut self, clock: Box<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where TLS keys are made (default: [`FileKeys`], PKCS#8 in memory and in the store).
    pub fn with_keys(mut self, keys: Arc<dyn KeyProvider>) -> Self {
        self.keys = keys;
        self
    }

    /// The TLS key provider.
    pub fn keys(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// Replaces the RNG.
    pub fn with_rng(mut self, rng: Box<dyn SecureRandom + Send + Sync>) -> Self {
        self.rng = rng;
        self
    }

    /// The settings.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// This device's tag, the last part of its names.
    pub fn device_tag(&self) -> &DeviceTag {
        &self.device_tag
    }

    /// The installed bindings.
    pub fn bindings(&self) -> &[Binding] {
        self.store.bindings()
    }

    /// A new connection with the ATT MTU it negotiated.
    pub fn connect(&mut self, att_mtu: u16) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(
            id,
            Session {
                mtu: att_mtu,
                reassembler: Reassembler::new(),
                outbox: Outbox::default(),
                awaiting: None,
            },
        );
        id
    }

    /// The ATT MTU changed (BlueZ reports it per write).
    pub fn set_mtu(&mut self, id: SessionId, att_mtu: u16) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.mtu = att_mtu;
        }
    }

    /// The central subscribed to the status characteristic (or left it). Until it does,
    /// nothing is queued for it: answers nobody can receive are dropped.
    pub fn set_subscribed(&mut self, id: SessionId, subscribed: bool) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.outbox.set_subscribed(subscribed);
        }
    }

    /// Bytes queued for connection `id`; never over [`crate::outbox::MAX_QUEUED_BYTES`].
    pub fn queued_bytes(&self, id: SessionId) -> usize {
        self.sessions
            .get(&id)
            .map_or(0, |s| s.outbox.queued_bytes())
    }

    /// The value of the info characteristic for this connection.
    pub fn gatt_info(&self, id: SessionId) -> Vec<u8> {
        let mtu = self.sessions.get(&id).map_or(23, |s| s.mtu);
        GattInfo::for_mtu(mtu).encode()
    }

    /// The connection closed: its partial message and any request waiting for the user are
    /// dropped. Pending keys stay until they expire (the INSTALL may come on a new connection).
    pub fn disconnect(&mut self, id: SessionId) {
        self.sessions.remove(&id);
    }

    /// Whether a session exists.
    pub fn is_connected(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// Whether a session is in the middle of something: a message half received or a request
    /// waiting for the user.
    pub fn is_busy(&self, id: SessionId) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| s.awaiting.is_some() || !s.reassembler.is_idle())
    }

    /// Takes one written fragment of connection `id`.
    pub fn handle_fragment(&mut self, id: SessionId, now: Instant, fragment: &[u8]) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let out_of_order = session.reassembler.out_of_order();
        let result = session.reassembler.handle_fragment(now, fragment);
        if session.reassembler.out_of_order() > out_of_order {
            // Several ATT bearers (EATT) reorder writes; the framing puts them back (SPEC §3.2).
            tracing::debug!("fragment arrived out of order, held");
        }
        match result {
            Ok(None) => {}
            Ok(Some(frame)) => self.handle_frame(id, now, frame),
            Err(e) => {
                tracing::debug!(error = %e, "framing error");
                self.send_frame(id, &Frame::error(e.code()));
            }
        }
    }

    /// The next fragment to notify on connection `id`.
    pub fn poll_fragment(&mut self, id: SessionId) -> Option<Vec<u8>> {
        self.sessions.get_mut(&id)?.outbox.pop()
    }

    /// The next event for the daemon.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Device::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().flat_map(|s| {
            let awaiting = s
                .awaiting
                .as_ref()
                .map(|a| a.deadline.min(a.next_keepalive).min(a.next_poll));
            [s.reassembler.poll_timeout(), awaiting]
        });
        sessions.chain([self.pending.next_expiry()]).flatten().min()
    }

    /// Runs everything due at `now`: fragment timeouts, presence answers, KEEPALIVEs, user
    /// timeouts and pending-key expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            if session.reassembler.handle_timeout(now).is_err() {
                self.send_frame(id, &Frame::error(ErrorCode::Timeout));
            }
            self.drive_presence(id, now);
        }
        self.expire_pending(now);
    }

    fn expire_pending(&mut self, now: Instant) {
        let expired = self.pending.expire(now);
        self.drop_pending(expired);
    }

    /// Pending keys that will never be installed: their keys go, their names stop.
    fn drop_pending(&mut self, dropped: Vec<PendingKey>) {
        for p in dropped {
            self.destroy_key(&p.key);
            for name in p.names {
                self.events.push_back(Event::PendingDropped { name });
            }
        }
    }

    /// Deletes a key nothing uses any more (a token key; software keys leave with their file).
    fn destroy_key(&self, key: &DeviceKey) {
        if let Err(e) = self.keys.destroy(key) {
            tracing::warn!(error = %e, ?key, "cannot delete an unused key");
        }
    }

    fn send_frame(&mut self, id: SessionId, frame: &Frame) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session
            .outbox
            .push(frame, fragment_len(session.mtu))
            .is_err()
        {
            // It makes the device answer faster than it reads: a flood, not a UA.
            tracing::warn!("central answered again while an answer was queued; session dropped");
            self.sessions.remove(&id);
        }
    }

    fn send_response(&mut self, id: SessionId, response: &Response) {
        self.send_frame(id, &Frame::msg(response.encode()));
    }

    fn send_refusal(&mut self, id: SessionId, r: Refused) {
        tracing::info!(code = %r.code, reason = r.reason, "request refused");
        let mut reason = r.reason.to_owned();
        reason.truncate(MAX_ERROR_MESSAGE_LEN);
        self.send_response(id, &Response::Error(r.code, Some(reason)));
    }

    fn handle_frame(&mut self, id: SessionId, now: Instant, frame: Frame) {
        let busy = self.sessions.get(&id).is_some_and(|s| s.awaiting.is_some());
        match frame.cmd {
            Command::Ping => self.send_frame(id, &frame),
            Command::Cancel => {
                let cancelled = self
                    .sessions
                    .get_mut(&id)
                    .and_then(|s| s.awaiting.take())
                    .is_some();
                if cancelled {
                    self.send_refusal(id, refused(ErrorCode::Cancelled, "cancelled by the UA"));
                }
            }
            Command::KeepAlive | Command::Error => {
                self.send_frame(id, &Frame::error(ErrorCode::InvalidCommand));
            }
            Command::Msg if busy => self.send_frame(id, &Frame::error(ErrorCode::Busy)),
            Command::Msg => match Request::decode(&frame.data) {
                Ok(request) => self.handle_request(id, now, request),
                Err(e) => {
                    tracing::debug!(error = %e, "malformed request");
                    self.send_refusal(id, refused(e.code(), "malformed request"));
                }
            },
        }
    }

    fn handle_request(&mut self, id: SessionId, now: Instant, request: Request) {
        self.expire_pending(now);
        let result = match request {
            Request::GetInfo => Ok(self.info()),
            Request::List => Ok(Response::List(
                self.store.bindings().iter().map(Binding::summary).collect(),
            )),
            Request::Remove(r) => self.remove(&r),
            Request::Install(r) => self.install(&r),
            Request::Attest(r) => {
                self.start_attest(id, now, r);
                return;
            }
        };
        match result {
            Ok(response) => self.send_response(id, &response),
            Err(r) => self.send_refusal(id, r),
        }
    }

    fn start_attest(&mut self, id: SessionId, now: Instant, request: AttestRequest) {
        // SPEC §5.2 order: presence first, then room, then the key.
        let check = self.presence.check(&PresenceRequest {
            origin: request.origin.clone(),
            pin: request.pin.clone(),
        });
        match check {
            PresenceCheck::Approved => self.finish_attest(id, now, &request),
            PresenceCheck::Refused(r) => {
                self.send_refusal(id, refused(r.code(), "user presence check refused"))
            }
            PresenceCheck::Pending(presence) => {
                self.send_frame(id, &Frame::keep_alive(KeepAliveStatus::UserPresenceNeeded));
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.awaiting = Some(AwaitingUser {
                        request,
                        presence,
                        deadline: now + self.config.presence_timeout,
                        next_keepalive: now + KEEPALIVE_INTERVAL,
                        next_poll: now + PRESENCE_POLL_INTERVAL,
                    });
                }
            }
        }
    }

    fn drive_presence(&mut self, id: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(awaiting) = session.awaiting.as_mut() else {
            return;
        };
        match awaiting.presence.poll() {
            Some(approved) => {
                let Some(awaiting) = session.awaiting.take() else {
                    return;
                };
                if approved {
                    self.finish_attest(id, now, &awaiting.request);
                } else {
                    self.send_refusal(id, refused(ErrorCode::UserDenied, "the user refused"));
                }
            }
            None if now >= awaiting.deadline => {
                session.awaiting = None;
                self.send_refusal(
                    id,
                    refused(ErrorCode::UserTimeout, "the user did not answer"),
                );
            }
            None => {
                awaiting.next_poll = now + PRESENCE_POLL_INTERVAL;
                if now >= awaiting.next_keepalive {
                    awaiting.next_keepalive = now + KEEPALIVE_INTERVAL;
                    self.send_frame(id, &Frame::keep_alive(KeepAliveStatus::UserPresenceNeeded));
                }
            }
        }
    }

    fn finish_attest(&mut self, id: SessionId, now: Instant, request: &AttestRequest) {
        match self.attest(now, request) {
            Ok(response) => self.send_response(id, &Response::Attest(response)),
            Err(r) => self.send_refusal(id, r),
        }
    }
}

mod requests;
#[cfg(test)]
mod tests;
