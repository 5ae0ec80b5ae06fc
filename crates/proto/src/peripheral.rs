//! The device end of one BLE connection, as a sans-IO state machine: the contract between a
//! central-side link (the UA's in-memory link, a test harness) and a GATT server of the
//! localcert service (the device's session driver, a scripted test peripheral).
//!
//! As rs-matter's `GattPeripheral`, it names only what crosses the air: reads of the info
//! characteristic, writes to the control point, the subscription to and notifications of the
//! status characteristic, and the end of the connection. Time comes in as `now`; the
//! peripheral says when it next needs it ([`GattPeripheral::poll_timeout`]).

use std::time::Instant;

/// Why the peripheral refused a control-point write: the ATT error a central would see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteRefused {
    /// Another central holds the device's only session (ATT "procedure already in progress").
    Busy,
    /// The device dropped this central's session: it wrote faster than it read the answers.
    Dropped,
}

impl core::fmt::Display for WriteRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Busy => f.write_str("another central holds the session (ATT in progress)"),
            Self::Dropped => f.write_str("the device dropped the session: answers were not read"),
        }
    }
}

impl std::error::Error for WriteRefused {}

/// One connection to a localcert GATT server, seen from the air.
pub trait GattPeripheral {
    /// The value of the info characteristic for a connection with this ATT MTU.
    fn read_info(&mut self, att_mtu: u16) -> Vec<u8>;
    /// The central enabled notifications on the status characteristic; before that the
    /// peripheral queues nothing for it (what it would answer is dropped).
    fn subscribe(&mut self);
    /// A fragment written to the control point on a connection with this ATT MTU.
    fn write(&mut self, now: Instant, att_mtu: u16, value: &[u8]) -> Result<(), WriteRefused>;
    /// The next fragment to notify on the status characteristic, if any.
    fn poll_notification(&mut self) -> Option<Vec<u8>>;
    /// When the peripheral next needs [`GattPeripheral::handle_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time has reached the deadline from [`GattPeripheral::poll_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// The connection ended.
    fn disconnect(&mut self);
}
