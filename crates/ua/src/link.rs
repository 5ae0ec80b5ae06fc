//! The BLE link as the UA sees it: a connected GATT client of the localcert service.
//!
//! Two implementations: [`crate::sim::SimLink`], in memory with a BLE timing model, and the
//! btleplug backend (feature `btleplug`). The transport drives either through this trait.

use std::future::Future;
use std::time::{Duration, Instant};

/// A link failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The connection ended.
    #[error("the BLE connection was lost")]
    Disconnected,
    /// The backend failed (adapter, D-Bus, GATT).
    #[error("BLE: {0}")]
    Backend(String),
}

/// A connected GATT client of the localcert service.
pub trait BleLink: Send {
    /// The negotiated ATT MTU (23 when the backend cannot tell).
    fn att_mtu(&self) -> u16;

    /// The link's clock: real time for radio backends, simulated time for the in-memory link.
    fn now(&self) -> Instant;

    /// Reads the info characteristic.
    fn read_info(&mut self) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;

    /// Writes one fragment to the control point.
    fn write(&mut self, fragment: &[u8]) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// The next status notification, or `None` when `timeout` passes without one.
    fn notification(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, LinkError>> + Send;

    /// Ends the connection.
    fn disconnect(&mut self) -> impl Future<Output = ()> + Send;

    /// What crossed the link, for links that count (the in-memory one does).
    fn stats(&self) -> Option<crate::sim::LinkStats> {
        None
    }
}
