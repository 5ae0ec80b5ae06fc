//! The localcert wire protocol, as `protocol/SPEC.md` defines it: GATT constants, framing,
//! CBOR messages, `.local` names, the attestation transcript and object, and the origin-binding
//! certificate extension, and the one parser of the certificate profile.
//!
//! This crate does no I/O, reads no clock and draws no randomness: callers pass bytes and `now`
//! in (sans-IO, as quinn-proto). Every decoder is strict and total: any byte sequence yields a
//! value or a typed error, never a panic.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cbor;

pub mod attestation;
pub mod binding;
pub mod csr;
pub mod error;
pub mod frame;
pub mod gatt;
pub mod message;
pub mod name;
pub mod origin;
pub mod peripheral;
pub mod profile;
mod reassembly;
pub mod transcript;

pub use error::{DecodeError, Error, ErrorCode, FrameError, NameError, OriginError};
