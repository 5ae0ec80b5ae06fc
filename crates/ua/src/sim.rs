//! An in-memory BLE link to any sans-IO peripheral ([`GattPeripheral`]: the device's session
//! driver in the same process, or a scripted one), with a simulated clock.
//!
//! It models what makes BLE slow: the ATT MTU, the link-layer payload (27 bytes, or 251 with
//! data length extension), the connection interval, how many packets each side may send in one
//! connection event (central and peripheral take turns within an event, so each direction has
//! its own budget), the PHY rate, and that a write with response takes two connection events:
//! the write in one, its response in the next, and the next write after that (the status
//! subscription, a write to its descriptor, is one such write). It counts bytes,
//! link-layer packets and round trips, computes the link bound from them
//! ([`LinkProfile::bound`]), and can drop the connection at any fragment, so tests and
//! benchmarks run the real protocol without a radio.

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
    /// Data packets per connection event, per direction (the controller's limit).
    pub packets_per_event: u32,
    /// PHY bit rate: 1 Mbit/s or 2 Mbit/s.
    pub phy_bits_per_second: u64,
    /// Whether the central writes with response (two connection events per fragment). The
    /// named profiles write without response, as a UA does when the control point offers it
    /// (SPEC §2.2).
    pub write_with_response: bool,
}

impl LinkProfile {
    /// The worst common case: MTU 23, 30 ms interval, 1M PHY, no data length extension,
    /// 4 packets per event each way.
    pub const MTU23_30MS_1M: Self = Self {
        name: "mtu23-30ms-1m",
        att_mtu: 23,
        connection_interval: Duration::from_millis(30),
        ll_payload: 27,
        packets_per_event: 4,
        phy_bits_per_second: 1_000_000,
        write_with_response: false,
    };

    /// [`LinkProfile::MTU23_30MS_1M`] with writes with response: a central whose stack or
    /// peripheral offers no write without response (for comparison).
    pub const MTU23_30MS_1M_WITH_RESPONSE: Self = Self {
        name: "mtu23-30ms-1m-wr",
        write_with_response: true,
        ..Self::MTU23_30MS_1M
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

    /// A profile by name (the named ones and the with-response variant).
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([Self::MTU23_30MS_1M_WITH_RESPONSE])
            .find(|p| p.name == name)
    }

    /// The link bound for what `stats` counted: the time the same link-layer packets take when
    /// every connection event is full and nothing waits for a response or a turnaround. The
    /// directions add up, because every request must arrive before its answer leaves.
    pub fn bound(&self, stats: &LinkStats) -> Duration {
        let per_event = u64::from(self.packets_per_event.max(1));
        let events = stats.packets_up.div_ceil(per_event) + stats.packets_down.div_ceil(per_event);
        self.connection_interval
            .saturating_mul(u32::try_from(events).unwrap_or(u32::MAX))
    }

    /// The least simulated time `turns` request/answer turns take on this link, however few
    /// bytes they carry: a peripheral answers in the connection event after the one that
    /// brought the request (its host cannot answer within the 150 µs between packets), and the
    /// central's next request, which depends on the answer, goes in the event after that. So
    /// the last answer arrives in event `2 × turns − 1` at the earliest. Unlike
    /// [`LinkProfile::bound`] it counts causality, not bytes: when it exceeds the bound, no
    /// packing of bytes brings the time down to the bound.
    pub fn turn_floor(&self, turns: u64) -> Duration {
        let events = (2 * turns).saturating_sub(1);
        self.connection_interval
            .saturating_mul(u32::try_from(events).unwrap_or(u32::MAX))
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
    /// ATT round trips: writes with response (the status subscription's among them) and reads.
    pub att_round_trips: u64,
    /// Request/answer turns: the central's sends (writes, reads) that follow something it
    /// received from the peripheral (a notification, a read's value or a write's response),
    /// and its first send, the status subscription. Sends back to back, such as the fragments
    /// of one request or a read pipelined beside a request, are one turn. See
    /// [`LinkProfile::turn_floor`].
    pub turns: u64,
    /// Link-layer data packets from the central (writes, read requests).
    pub packets_up: u64,
    /// Link-layer data packets from the peripheral (notifications, read and write responses).
    pub packets_down: u64,
    /// Simulated time on the link since it connected.
    pub elapsed: Duration,
}

/// Which side sends.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// Central to peripheral.
    Up,
    /// Peripheral to central.
    Down,
}

/// One direction's use of the connection events.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    event: u64,
    used: u32,
}

/// An in-memory link to a [`GattPeripheral`].
#[derive(Debug)]
pub struct SimLink<P> {
    peripheral: P,
    profile: LinkProfile,
    start: Instant,
    now: Instant,
    /// Per direction: the connection event in use and how many packets it has carried.
    up: Slot,
    down: Slot,
    /// The earliest time the central may write again (after a write's response).
    write_ready: Instant,
    /// Notifications in flight, with their arrival times.
    inbox: VecDeque<(Instant, Vec<u8>)>,
    stats: LinkStats,
    fragments: usize,
    drop_at: Option<usize>,
    connected: bool,
    /// Whether the central has received something since its last send (its next send then
    /// starts a turn).
    answered: bool,
}

impl<P: GattPeripheral> SimLink<P> {
    /// Connects to `peripheral` with `profile` and subscribes to its status notifications,
    /// as a central does before its first request; the simulated clock starts at `start`.
    pub fn new(mut peripheral: P, profile: LinkProfile, start: Instant) -> Self {
        peripheral.subscribe();
        let mut link = Self {
            peripheral,
            profile,
            start,
            now: start,
            up: Slot::default(),
            down: Slot::default(),
            write_ready: start,
            inbox: VecDeque::new(),
            stats: LinkStats::default(),
            fragments: 0,
            drop_at: None,
            connected: true,
            answered: true,
        };
        link.write_status_cccd();
        link
    }

    /// The subscription's cost: a write with response of 2 bytes to the status
    /// characteristic's client configuration descriptor, in the first event, and its response
    /// in the next. Both reference UAs wait for it before their first request, so it is a turn
    /// of its own.
    fn write_status_cccd(&mut self) {
        self.central_sends();
        let first = self.event_at(Direction::Up, self.now);
        let (_, event) = self.transmit(Direction::Up, first, self.profile.packets_for(2));
        let (answered, _) = self.transmit(Direction::Down, event + 1, 1);
        self.now = answered;
        self.write_ready = answered;
        self.stats.att_round_trips += 1;
        self.answered = true;
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

    /// The first connection event a packet queued at `at` can go in: the event under way if
    /// this side is still sending in it back to back (its controller chains queued packets)
    /// and has room, else the next event that starts at or after `at`.
    fn event_at(&self, direction: Direction, at: Instant) -> u64 {
        let interval = self.profile.connection_interval.as_nanos().max(1);
        let since = at.saturating_duration_since(self.start).as_nanos();
        let current = u64::try_from(since / interval).unwrap_or(u64::MAX);
        let slot = match direction {
            Direction::Up => self.up,
            Direction::Down => self.down,
        };
        let chained = slot.event == current
            && slot.used < self.profile.packets_per_event
            && at <= self.event_start(current) + self.profile.packet_time() * slot.used;
        if chained {
            current
        } else {
            u64::try_from(since.div_ceil(interval)).unwrap_or(u64::MAX)
        }
    }

    /// Schedules `packets` link-layer packets in one direction, in connection event
    /// `first_event` or later; returns when the last one has crossed and in which event.
    fn transmit(&mut self, direction: Direction, first_event: u64, packets: u32) -> (Instant, u64) {
        let per_event = self.profile.packets_per_event.max(1);
        let slot = match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        };
        if first_event > slot.event {
            *slot = Slot {
                event: first_event,
                used: 0,
            };
        }
        for _ in 0..packets {
            if slot.used == per_event {
                slot.event += 1;
                slot.used = 0;
            }
            slot.used += 1;
        }
        let (event, used) = (slot.event, slot.used);
        match direction {
            Direction::Up => self.stats.packets_up += u64::from(packets),
            Direction::Down => self.stats.packets_down += u64::from(packets),
        }
        // Within an event the two sides alternate: the n-th packet of either side ends after
        // n exchanges.
        (
            self.event_start(event) + self.profile.packet_time() * used,
            event,
        )
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

    /// Counts a turn when the central sends after having received.
    fn central_sends(&mut self) {
        if self.answered {
            self.stats.turns += 1;
            self.answered = false;
        }
    }

    /// Moves what the peripheral wants to notify into the inbox.
    fn collect_notifications(&mut self) -> Result<(), LinkError> {
        while let Some(value) = self.peripheral.poll_notification() {
            self.crossing()?;
            let first = self.event_at(Direction::Down, self.now);
            let (arrival, _) = self.transmit(
                Direction::Down,
                first,
                self.profile.packets_for(value.len()),
            );
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
        self.central_sends();
        // A read is a request in one event and a response in the next.
        let first = self.event_at(Direction::Up, self.now);
        let (_, event) = self.transmit(Direction::Up, first, 1);
        let value = self.peripheral.read_info(self.profile.att_mtu);
        let (arrived, _) = self.transmit(
            Direction::Down,
            event + 1,
            self.profile.packets_for(value.len()),
        );
        self.now = arrived;
        self.stats.att_round_trips += 1;
        self.answered = true;
        Ok(value)
    }

    async fn write(&mut self, fragment: &[u8]) -> Result<(), LinkError> {
        self.crossing()?;
        self.central_sends();
        let first = self.event_at(Direction::Up, self.now.max(self.write_ready));
        let (arrived, event) = self.transmit(
            Direction::Up,
            first,
            self.profile.packets_for(fragment.len()),
        );
        self.stats.writes += 1;
        self.stats.bytes_up += fragment.len() as u64;
        self.peripheral
            .write(arrived, self.profile.att_mtu, fragment)
            .map_err(|refused| LinkError::Backend(format!("write refused: {refused}")))?;
        if self.profile.write_with_response {
            // The write response comes back in the next connection event, and the next write
            // goes in the event after: two events per write.
            let (answered, answered_in) = self.transmit(Direction::Down, event + 1, 1);
            self.write_ready = self.event_start(answered_in + 1).max(answered);
            self.stats.att_round_trips += 1;
            self.now = answered;
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
                self.answered = true;
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
