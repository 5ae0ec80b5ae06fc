//! localcert issuer: a name-constrained private CA for `.local` names with an ACME server
//! (External Account Binding, `device-attest-01`, STAR auto-renewal) and a SQLite or
//! PostgreSQL store.
//!
//! - [`ca`]: CA setup (root and issuing intermediate, both name-constrained) and loading, the
//!   separate localhost HTTPS certificate, CRLs.
//! - [`leaf`]: leaf certificates built from validated data only, with the origin-binding
//!   extension.
//! - [`validate`]: the decisions, as pure functions over a request, the stored order, the trust
//!   configuration and `now`.
//! - [`jws`]: ACME JWS (ES256, EdDSA) and External Account Binding verification.
//! - [`nonce`]: HMAC-authenticated nonces and the in-memory replay window.
//! - [`store`]: the [`store::Store`] trait and its SQLite and PostgreSQL implementations, with the
//!   audit log.
//! - [`acme`]: the ACME server as a function from request to response; [`serve`] is its HTTPS
//!   transport (axum, hyper, rustls).
//! - [`config`] and [`operator`]: the TOML configuration and what `localcert issuer …` does.
//! - `loopback` (feature `test-support`): the whole issuer on a loopback port, for other
//!   crates' tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
pub mod ca;
pub mod config;
pub mod error;
pub mod jws;
pub mod leaf;
#[cfg(feature = "test-support")]
pub mod loopback;
pub mod nonce;
pub mod operator;
pub mod serve;
pub mod store;
pub mod untrusted;
pub mod validate;

pub use error::{Error, ProblemType, Refusal};
