//! The localcert device agent: a library linked into firmware, and the reference daemon.
//!
//! - [`factory`]: manufacturer root, batch intermediates, per-device attestation credentials.
//! - [`signer::AttestationSigner`], [`keys::KeyProvider`] and [`presence::UserPresence`]: the
//!   pluggable trust edges (attestation key, TLS keys, the user).
//! - [`engine::Device`]: the sans-IO protocol engine (fragments and `now` in, fragments,
//!   timeouts and events out).
//! - [`store`]: origin bindings, in memory or in a crash-safe directory.
//! - [`https`]: rustls server with certificates by SNI and a per-binding CORS layer.
//! - [`mdns`]: announcing names with mdns-sd.
//! - [`star`]: STAR certificate renewal.
//! - [`agent`]: the engine on tokio, wired to HTTPS, mDNS and renewal.
//! - [`runtime::DeviceBuilder`]: the one way to put a device together and start it.
//! - [`gatt`]: the BLE session driver every transport shares (one central at a time,
//!   takeover, MTU, writes, notifications, disconnect), and the sans-IO connection of the
//!   in-memory link.
//! - `bluez` (feature `bluez`, Linux): the bluer GATT server.
//! - `pkcs11` (feature `pkcs11`): keys generated and used inside a PKCS#11 token.
//! - [`bridge`]: the test-only stdio bridge (`localcert-device bridge`), fragments as lines.
//! - [`config`]: the reference daemon's `device.toml`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod files;
mod pending;
#[cfg(test)]
mod test_pki;
mod vary;
mod verify;

pub mod agent;
#[cfg(all(feature = "bluez", target_os = "linux"))]
pub mod bluez;
pub mod bridge;
pub mod config;
pub mod engine;
pub mod error;
pub mod factory;
pub mod gatt;
pub mod https;
pub mod keys;
pub mod mdns;
pub mod outbox;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod pki;
pub mod presence;
pub mod runtime;
pub mod signer;
pub mod star;
pub mod status;
pub mod store;

pub use engine::{Device, DeviceConfig, Event, IssuerTrust, SessionId, SystemClock, WallClock};
pub use error::{CredentialError, Error, StoreError};
pub use runtime::DeviceBuilder;
pub use verify::Refused;
