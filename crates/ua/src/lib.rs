//! The localcert UA harness: it plays the browser in the provisioning flow. It talks to a
//! device over BLE (btleplug, or an in-memory link with a timing model to any
//! [`localcert_proto::peripheral::GattPeripheral`]), to the issuer over
//! ACME, and verifies the provisioned endpoint like a browser would, and more.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "btleplug")]
pub mod btle;
pub mod link;
pub mod manage;
pub mod provision;
pub mod resolve;
pub mod sim;
pub mod transport;
pub mod verify;

pub use link::{BleLink, LinkError};
pub use sim::{LinkProfile, LinkStats, SimConnector, SimLink};
pub use transport::{Transport, TransportError};
