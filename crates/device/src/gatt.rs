//! The device side of BLE, one session driver for every transport: the BlueZ backend, the
//! in-memory link ([`Connection`], a [`GattPeripheral`]) and the stdio bridge feed it the
//! reads, writes and disconnects of centrals, and notify what it yields.
//!
//! One central at a time: BlueZ sends a characteristic's notifications to every subscriber,
//! so sessions of two centrals could not be kept apart. A write from another central while
//! one is active is refused ([`WriteRefused::Busy`], ATT "in progress"); a central that has
//! been idle for [`IDLE_TAKEOVER`] (no write, nothing waiting for the user) loses its session
//! to the next one, so an idle or hostile central cannot block provisioning. When the central
//! disconnects, its session (and any half-sent message or request waiting for the user) is
//! dropped; pending keys stay until they expire, as the INSTALL may come later. The ATT MTU
//! reported with each write sizes the fragments.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use localcert_proto::gatt::{GattInfo, MAX_VALUE_LEN};
use localcert_proto::peripheral::{GattPeripheral, WriteRefused};

use crate::agent::Agent;
use crate::engine::SessionId;

/// How long a central may stay idle before another central can take over the session.
pub const IDLE_TAKEOVER: Duration = Duration::from_secs(30);

/// What a write did to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written<C> {
    /// The central's session went on.
    Continued,
    /// The write started the central's session.
    Started,
    /// The write started the central's session after taking it from an idle central.
    TookOver(C),
}

struct Active<C> {
    central: C,
    id: SessionId,
    last_write: Instant,
}

/// The GATT server of one device: the session of the central it serves, over the agent's
/// engine. `C` identifies a central (a Bluetooth address, a connection number).
pub struct GattServer<C> {
    agent: Arc<Agent>,
    max_fragment_len: u64,
    active: Mutex<Option<Active<C>>>,
    /// Whether a central is subscribed to the status characteristic. BlueZ notifies once for
    /// every subscriber, so this belongs to the service; the session of the central being
    /// served follows it.
    notifying: AtomicBool,
}

impl<C> core::fmt::Debug for GattServer<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GattServer")
            .field("max_fragment_len", &self.max_fragment_len)
            .finish_non_exhaustive()
    }
}

impl<C: Copy + Eq + core::fmt::Display> GattServer<C> {
    /// A server for `agent`'s engine.
    pub fn new(agent: Arc<Agent>) -> Self {
        Self {
            agent,
            max_fragment_len: MAX_VALUE_LEN as u64,
            active: Mutex::new(None),
            notifying: AtomicBool::new(false),
        }
    }

    /// Caps the fragment size the info characteristic announces (a stack that refuses long
    /// writes); UAs honour it (SPEC §2.1).
    pub fn with_max_fragment_len(mut self, len: u64) -> Self {
        self.max_fragment_len = len;
        self
    }

    /// The agent behind the server.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    fn lock(&self) -> MutexGuard<'_, Option<Active<C>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notifications on the status characteristic started or stopped. Without them the
    /// engine queues nothing for the session (anyone in range may write without reading).
    pub fn set_notifying(&self, notifying: bool) {
        self.notifying.store(notifying, Ordering::SeqCst);
        if let Some(id) = self.lock().as_ref().map(|a| a.id) {
            self.agent.with_device(|d| d.set_subscribed(id, notifying));
        }
    }

    /// The value of the info characteristic for a connection with this ATT MTU.
    pub fn info(&self, att_mtu: u16) -> Vec<u8> {
        let mut info = GattInfo::for_mtu(att_mtu);
        info.max_fragment_len = info.max_fragment_len.min(self.max_fragment_len);
        info.encode()
    }

    /// A control-point write of `central` on a connection with this ATT MTU. The engine's
    /// events are acted on before it returns (a binding is served before the UA can read the
    /// INSTALL response), and the agent is told that fragments may be waiting.
    pub fn write(
        &self,
        central: C,
        now: Instant,
        att_mtu: u16,
        value: &[u8],
    ) -> Result<Written<C>, WriteRefused> {
        let written = {
            let mut active = self.lock();
            let mut written = Written::Continued;
            if let Some(current) = active.as_ref().filter(|a| a.central != central) {
                let idle = now.saturating_duration_since(current.last_write) >= IDLE_TAKEOVER;
                let busy = self.agent.with_device(|d| d.is_busy(current.id));
                if !idle || busy {
                    return Err(WriteRefused::Busy);
                }
                tracing::info!(idle = %current.central, new = %central, "idle BLE session taken over");
                self.agent.with_device(|d| d.disconnect(current.id));
                written = Written::TookOver(current.central);
                *active = None;
            }
            let session = active.get_or_insert_with(|| {
                if written == Written::Continued {
                    written = Written::Started;
                }
                tracing::info!(%central, mtu = att_mtu, "BLE session started");
                let notifying = self.notifying.load(Ordering::SeqCst);
                let id = self.agent.with_device(|d| {
                    let id = d.connect(att_mtu);
                    d.set_subscribed(id, notifying);
                    id
                });
                Active {
                    central,
                    id,
                    last_write: now,
                }
            });
            session.last_write = now;
            let id = session.id;
            let dropped = self.agent.with_device(|d| {
                d.set_mtu(id, att_mtu);
                d.handle_fragment(id, now, value);
                !d.is_connected(id)
            });
            if dropped {
                // The engine dropped a flooding central: the session is free for the next one.
                tracing::warn!(%central, "BLE session dropped: the central does not read its answers");
                *active = None;
                drop(active);
                self.agent.pump();
                return Err(WriteRefused::Dropped);
            }
            written
        };
        self.agent.pump();
        self.agent.kick();
        Ok(written)
    }

    /// Bytes queued for the session being served (bounded by
    /// [`crate::outbox::MAX_QUEUED_BYTES`]).
    pub fn queued_bytes(&self) -> usize {
        let id = self.lock().as_ref().map(|a| a.id);
        id.map_or(0, |id| self.agent.with_device(|d| d.queued_bytes(id)))
    }

    /// The next fragment to notify to `central`, if it holds the session.
    pub fn poll_notification(&self, central: C) -> Option<Vec<u8>> {
        let active = self.lock();
        let id = active.as_ref().filter(|a| a.central == central)?.id;
        self.agent.with_device(|d| d.poll_fragment(id))
    }

    /// The session's central and the fragments it has to notify (for a stack that notifies
    /// every subscriber alike).
    pub fn take_notifications(&self) -> Option<(C, Vec<Vec<u8>>)> {
        let active = self.lock();
        let Active { central, id, .. } = active.as_ref()?;
        let fragments = self
            .agent
            .with_device(|d| std::iter::from_fn(|| d.poll_fragment(*id)).collect());
        Some((*central, fragments))
    }

    /// `central` disconnected: its session ends. Returns whether it held one.
    pub fn disconnect(&self, central: C) -> bool {
        self.end(Some(central))
    }

    /// Ends the session, whoever holds it (every central unsubscribed).
    pub fn end_session(&self) -> bool {
        self.end(None)
    }

    fn end(&self, central: Option<C>) -> bool {
        let ended = {
            let mut active = self.lock();
            match active.take() {
                Some(a) if central.is_none_or(|c| c == a.central) => {
                    self.agent.with_device(|d| d.disconnect(a.id));
                    tracing::info!(central = %a.central, "BLE session ended");
                    true
                }
                other => {
                    *active = other;
                    false
                }
            }
        };
        if ended {
            self.agent.pump();
        }
        ended
    }

    /// When the engine next needs [`GattServer::handle_timeout`] (for a transport that runs
    /// its own clock; a real-time one leaves this to [`Agent::run`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.agent.with_device(|d| d.poll_timeout())
    }

    /// Runs the engine's timers at `now` and acts on its events.
    pub fn handle_timeout(&self, now: Instant) {
        self.agent.with_device(|d| d.handle_timeout(now));
        self.agent.pump();
    }

    /// The device end of a new connection of `central`, for a link that drives it
    /// fragment by fragment (the in-memory link, the stdio bridge).
    pub fn connection(self: &Arc<Self>, central: C) -> Connection<C> {
        Connection {
            server: self.clone(),
            central,
            subscribed: false,
        }
    }
}

/// One central's connection to a [`GattServer`], as a sans-IO [`GattPeripheral`]. Dropping
/// it is a disconnect.
pub struct Connection<C: Copy + Eq + core::fmt::Display> {
    server: Arc<GattServer<C>>,
    central: C,
    subscribed: bool,
}

impl<C: Copy + Eq + core::fmt::Display + core::fmt::Debug> core::fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("central", &self.central)
            .field("subscribed", &self.subscribed)
            .finish_non_exhaustive()
    }
}

impl<C: Copy + Eq + core::fmt::Display> Connection<C> {
    /// The central.
    pub fn central(&self) -> C {
        self.central
    }
}

impl<C: Copy + Eq + core::fmt::Display> GattPeripheral for Connection<C> {
    fn read_info(&mut self, att_mtu: u16) -> Vec<u8> {
        self.server.info(att_mtu)
    }

    fn subscribe(&mut self) {
        self.subscribed = true;
        self.server.set_notifying(true);
    }

    fn write(&mut self, now: Instant, att_mtu: u16, value: &[u8]) -> Result<(), WriteRefused> {
        // The service notifies whoever is subscribed: a subscribed central that starts a
        // session after another one left (and so stopped the notifications) turns them on.
        if self.subscribed && !self.server.notifying.load(Ordering::SeqCst) {
            self.server.set_notifying(true);
        }
        self.server
            .write(self.central, now, att_mtu, value)
            .map(drop)
    }

    fn poll_notification(&mut self) -> Option<Vec<u8>> {
        if !self.subscribed {
            return None;
        }
        self.server.poll_notification(self.central)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
    }

    fn disconnect(&mut self) {
        self.subscribed = false;
        if self.server.disconnect(self.central) {
            self.server.set_notifying(false);
        }
    }
}

impl<C: Copy + Eq + core::fmt::Display> Drop for Connection<C> {
    fn drop(&mut self) {
        self.server.disconnect(self.central);
    }
}
