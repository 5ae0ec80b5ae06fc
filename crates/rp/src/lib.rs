//! The localcert RP backend: the web origin's own server in the provisioning flow. It holds
//! the origin's ACME account (EAB), decides the user from its own session, orders the device's
//! certificate, answers `device-attest-01` with the attestation the page relays, finalizes with
//! the device's CSR and hands back what the page installs. The flow is a library
//! ([`flow::Flow`]) that `localcert ua provision` drives in process, and a JSON HTTP API
//! ([`api::Backend`]) that the browser package drives.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod api;
pub mod auth;
pub mod check;
pub mod config;
pub mod error;
pub mod flow;
pub mod serve;
pub mod star;
pub mod statics;
pub mod table;

pub use account::{AcmeAccount, AcmeSettings, Eab};
pub use api::Backend;
pub use auth::{TokenAuth, UserAuth};
pub use config::Config;
pub use error::FlowError;
pub use flow::{AttestFields, Flow, FlowParams, Installed, Stage};
