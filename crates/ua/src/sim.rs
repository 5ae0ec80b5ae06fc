//! An in-memory BLE link to any sans-IO peripheral ([`GattPeripheral`]: the device's session
//! driver in the same process, or a scripted one), with a simulated clock.
//!
//! It models what makes BLE slow: the ATT MTU, the link-layer payload (27 bytes, or 251 with
//! data length extension), the connection interval, how many packets fit in one connection
//! event, the PHY rate, and that a write with response costs a connection event for its
//! response. It counts bytes and round trips and can drop the connection at any fragment, so
//! tests and benchmarks run the real protocol without a radio.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use localcert_proto::peripheral::GattPeripheral;

use crate::link::{BleLink, LinkError};

/// The radio parameters of a simulated link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkProfile {
    /// A short name for reports.
    pub name: &'static str,
    /// ATT MTU.
    pub att_mtu: u16,
    /// Connection interval.
    pub connection_interval: Duration,
    /// Link-layer payload per packet: 27, or up to 251 with data length extension.
    pub ll_payload: usize,
    /// Data packets per connection event, per direction.
    pub packets_per_event: u32,
    /// PHY bit rate: 1 Mbit/s or 2 Mbit/s.
    pub phy_bits_per_second: u64,
    /// Whether the central writes with response (one ATT round trip per fragment).
    pub write_with_response: bool,
}

impl LinkProfile {
    /// The worst common case: MTU 23, 30 ms interval, 1M PHY, no data length extension,
    /// writes with response.
    pub const MTU23_30MS_1M: Self = Self {
        name: "mtu23-30ms-1m",
        att_mtu: 23,
        connection_interval: Duration::from_millis(30),
        ll_payload: 27,
        packets_per_event: 4,
        phy_bits_per_second: 1_000_000,
        write_with_response: true,
    };

    /// A good modern link: MTU 247 with data length extension, 15 ms interval, 2M PHY,
    /// writes without response.
    pub const MTU247_15MS_2M: Self = Self {
        name: "mtu247-15ms-2m-dle",
        att_mtu: 247,
        connection_interval: Duration::from_millis(15),
        ll_payload: 251,
        packets_per_event: 6,
        phy_bits_per_second: 2_000_000,
        write_with_response: false,
    };

    /// Both named profiles.
    pub const ALL: [Self; 2] = [Self::MTU23_30MS_1M, Self::MTU247_15MS_2M];

    /// A profile by name.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name == name)
    }

    /// Link-layer packets for one ATT value of `len` bytes (3 bytes ATT + 4 bytes L2CAP header).
    fn packets_for(&self, len: usize) -> u32 {
        let total = len + 7;
        u32::try_from(total.div_ceil(self.ll_payload.max(1))).unwrap_or(u32::MAX)
    }

    /// Air time of one data packet, its empty acknowledgement and the two inter-frame spaces.
    fn packet_time(&self) -> Duration {
        const IFS: Duration = Duration::from_micros(150);
        // Preamble, access address, header, MIC-less payload and CRC: payload + 10 bytes.
        let bits = |payload: usize| (payload as u64 + 10) * 8;
        let air =
            |payload| Duration::from_micros(bits(payload) * 1_000_000 / self.phy_bits_per_second);
        air(self.ll_payload) + air(0) + IFS * 2
    }
}

/// What crossed the link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Fragments written by the central.
    pub writes: u64,
    /// Fragments notified by the peripheral.
    pub notifications: u64,
    /// Bytes of written values.
    pub bytes_up: u64,
    /// Bytes of notified values.
    pub bytes_down: u64,
    /// ATT round trips: writes with response and reads.
    pub att_round_trips: u64,
    /// Simulated time on the link since it connected.
    pub elapsed: Duration,
}

/// An in-memory link to a [`GattPeripheral`].
#[derive(Debug)]
pub struct SimLink<P> {
    peripheral: P,
    profile: LinkProfile,
    start: Instant,
    now: Instant,
    /// The connection event in use and how many packets it has carried.
    event: u64,
    used: u32,
    /// The earliest time the central may write again (after a write's response).
    write_ready: Instant,
    /// Notifications in flight, with their arrival times.
    inbox: VecDeque<(Instant, Vec<u8>)>,
    stats: LinkStats,
    fragments: usize,
    drop_at: Option<usize>,
    connected: bool,
}

impl<P: GattPeripheral> SimLink<P> {
    /// Connects to `peripheral` with `profile` and subscribes to its status notifications,
    /// as a central does before its first request; the simulated clock starts at `start`.
    pub fn new(mut peripheral: P, profile: LinkProfile, start: Instant) -> Self {
        peripheral.subscribe();
        Self {
            peripheral,
            profile,
            start,
            now: start,
            event: 0,
            used: 0,
            write_ready: start,
            inbox: VecDeque::new(),
            stats: LinkStats::default(),
            fragments: 0,
            drop_at: None,
            connected: true,
        }
    }

    /// Drops the connection when the `n`th fragment (counting both directions from 0) would
    /// cross the link; that fragment is lost.
    pub fn drop_at_fragment(mut self, n: usize) -> Self {
        self.drop_at = Some(n);
        self
    }

    /// What crossed the link so far.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            elapsed: self.now - self.start,
            ..self.stats.clone()
        }
    }

    /// The profile.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// Gives the peripheral back (for example to reconnect it on a new link).
    pub fn into_peripheral(self) -> P {
        self.peripheral
    }

    /// The peripheral.
    pub fn peripheral_mut(&mut self) -> &mut P {
        &mut self.peripheral
    }

    fn event_start(&self, event: u64) -> Instant {
        let offset = self
            .profile
            .connection_interval
            .saturating_mul(u32::try_from(event).unwrap_or(u32::MAX));
        self.start + offset
    }

    /// Schedules `packets` link-layer packets no earlier than `not_before`; returns when the
    /// last one has crossed.
    fn transmit(&mut self, not_before: Instant, packets: u32) -> Instant {
        let interval = self.profile.connection_interval.as_nanos().max(1);
        let since = not_before.saturating_duration_since(self.start).as_nanos();
        let first_event = u64::try_from(since.div_ceil(interval)).unwrap_or(u64::MAX);
        if first_event > self.event {
            self.event = first_event;
            self.used = 0;
        }
        for _ in 0..packets {
            if self.used == self.profile.packets_per_event {
                self.event += 1;
                self.used = 0;
            }
            self.used += 1;
        }
        self.event_start(self.event) + self.profile.packet_time() * self.used
    }

    /// Counts a fragment and tells whether the link drops it (and the connection).
    fn crossing(&mut self) -> Result<(), LinkError> {
        if !self.connected {
            return Err(LinkError::Disconnected);
        }
        let n = self.fragments;
        self.fragments += 1;
        if self.drop_at == Some(n) {
            self.connected = false;
            self.inbox.clear();
            self.peripheral.disconnect();
            return Err(LinkError::Disconnected);
        }
        Ok(())
    }

    /// Moves what the peripheral wants to notify into the inbox.
    fn collect_notifications(&mut self) -> Result<(), LinkError> {
        while let Some(value) = self.peripheral.poll_notification() {
            self.crossing()?;
            let arrival = self.transmit(self.now, self.profile.packets_for(value.len()));
            self.stats.notifications += 1;
            self.stats.bytes_down += value.len() as u64;
            self.inbox.push_back((arrival, value));
        }
        Ok(())
    }
}

impl<P: GattPeripheral + Send> BleLink for SimLink<P> {
    fn att_mtu(&self) -> u16 {
        self.profile.att_mtu
    }

    fn now(&self) -> Instant {
        self.now
    }

    async fn read_info(&mut self) -> Result<Vec<u8>, LinkError> {
        if !self.connected {
            return Err(LinkError::Disconnected);
        }
        // A read is a request in one event and a response in the next.
        let sent = self.transmit(self.now, 1);
        let value = self.peripheral.read_info(self.profile.att_mtu);
        self.now = self.transmit(
            sent + self.profile.connection_interval,
            self.profile.packets_for(value.len()),
        );
        self.stats.att_round_trips += 1;
        Ok(value)
    }

    async fn write(&mut self, fragment: &[u8]) -> Result<(), LinkError> {
        self.crossing()?;
        let not_before = self.now.max(self.write_ready);
        let arrived = self.transmit(not_before, self.profile.packets_for(fragment.len()));
        self.stats.writes += 1;
        self.stats.bytes_up += fragment.len() as u64;
        self.peripheral
            .write(arrived, self.profile.att_mtu, fragment)
            .map_err(|refused| LinkError::Backend(format!("write refused: {refused}")))?;
        if self.profile.write_with_response {
            // The write response comes back in the next connection event.
            self.write_ready = self.transmit(arrived + self.profile.connection_interval, 1);
            self.stats.att_round_trips += 1;
            self.now = self.write_ready;
        } else {
            self.now = arrived;
        }
        self.collect_notifications()
    }

    async fn notification(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, LinkError> {
        let deadline = self.now + timeout;
        // A peripheral whose timeout never moves would spin here; it gets a bounded number of
        // turns, far more than the keep-alives of the longest wait.
        for _ in 0..100_000 {
            self.collect_notifications()?;
            if let Some((arrival, value)) = self.inbox.pop_front() {
                if arrival > deadline {
                    self.inbox.push_front((arrival, value));
                    self.now = deadline;
                    return Ok(None);
                }
                self.now = self.now.max(arrival);
                return Ok(Some(value));
            }
            if !self.connected {
                return Err(LinkError::Disconnected);
            }
            match self.peripheral.poll_timeout() {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    self.peripheral.handle_timeout(self.now);
                }
                _ => {
                    self.now = deadline;
                    return Ok(None);
                }
            }
        }
        Err(LinkError::Backend(
            "the simulated peripheral makes no progress".into(),
        ))
    }

    fn stats(&self) -> Option<LinkStats> {
        Some(SimLink::stats(self))
    }

    async fn disconnect(&mut self) {
        if self.connected {
            self.connected = false;
            self.inbox.clear();
            self.peripheral.disconnect();
        }
    }
}

/// Connects a UA to peripherals over in-memory links, a fresh link per connection, as a
/// [`crate::provision::Connector`]. `connect` makes the device end of each new connection (for
/// a real device engine: `localcert_device::gatt::GattServer::connection`).
pub struct SimConnector<F> {
    connect: F,
    profile: LinkProfile,
    drop_first_at: Option<usize>,
    connections: usize,
}

impl<F> std::fmt::Debug for SimConnector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConnector")
            .field("profile", &self.profile.name)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl<F> SimConnector<F> {
    /// Links to the peripherals `connect` makes, with `profile`.
    pub fn new(connect: F, profile: LinkProfile) -> Self {
        Self {
            connect,
            profile,
            drop_first_at: None,
            connections: 0,
        }
    }

    /// The first connection drops at fragment `n` (see [`SimLink::drop_at_fragment`]).
    pub fn drop_first_at(mut self, n: usize) -> Self {
        self.drop_first_at = Some(n);
        self
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.connections
    }
}

impl<F, P> crate::provision::Connector for SimConnector<F>
where
    F: FnMut() -> P + Send,
    P: GattPeripheral + Send,
{
    type Link = SimLink<P>;

    async fn connect(&mut self) -> Result<Self::Link, LinkError> {
        // Each connection's simulated clock starts now: link time is per connection.
        let link = SimLink::new((self.connect)(), self.profile.clone(), Instant::now());
        self.connections += 1;
        Ok(match self.drop_first_at.take() {
            Some(n) => link.drop_at_fragment(n),
            None => link,
        })
    }
}
