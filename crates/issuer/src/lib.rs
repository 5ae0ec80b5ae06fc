//! localcert issuer: a name-constrained private CA for `.local` names with an ACME server
//! (External Account Binding, `device-attest-01`, STAR auto-renewal) and a SQLite store.
//!
//! The pieces, each usable on its own: [`ca`] sets the CA up and loads it, [`leaf`] builds
//! certificates from validated data only, [`validate`] decides (pure functions over a request,
//! the stored order, the trust configuration and `now`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acme;
pub mod ca;
pub mod config;
pub mod error;
pub mod jws;
pub mod leaf;
pub mod operator;
pub mod serve;
pub mod store;
pub mod validate;

pub use error::{Error, ProblemType, Refusal};
