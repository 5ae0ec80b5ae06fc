//! Load and checks against issuer replicas sharing one PostgreSQL database, for
//! tests/postgres/run.sh. ACME clients are instant-acme over a client-side round robin; devices
//! attest with a fixture device key; the checks read the database directly.
//!
//! ```text
//! replicas COMMAND --replicas localhost:P1,localhost:P2 --service https://localhost:P0 \
//!     --tls-cert state/tls.pem --device fixtures/devices/device-1 --origin https://… [options]
//!   account --credentials FILE              EAB from LOCALCERT_EAB_KID / LOCALCERT_EAB_KEY
//!   issue --clients N --each M --tag T --acked FILE [--min-seconds S]
//!         [--expect-unavailable] [--expect-connection-errors]
//!   check --acked FILE[,FILE…]              every acknowledged issuance stored exactly once
//!   nonce                                   a nonce from one replica is spent on another, once
//!   star --orders K --lifetime SECS --watch SECS --min-renewals N
//!   crl --revoke R                          every replica serves the same revocations
//! ```
//! Each command prints what it saw and exits 0 only if its check held.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../../tests/common/mod.rs"]
mod common;

mod checks;
mod flow;
mod scenarios;
mod transport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use localcert_proto::origin::Origin;

use crate::flow::FixtureDevice;
use crate::transport::RoundRobin;

/// What every command gets.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) rr: RoundRobin,
    pub(crate) service: String,
    pub(crate) device: FixtureDevice,
    pub(crate) origin: Origin,
    pub(crate) args: HashMap<String, String>,
}

impl Setup {
    pub(crate) fn arg(&self, name: &str) -> Result<&str, String> {
        self.args
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }

    pub(crate) fn number(&self, name: &str) -> Result<usize, String> {
        self.arg(name)?
            .parse()
            .map_err(|e| format!("--{name}: {e}"))
    }

    pub(crate) fn directory_url(&self) -> String {
        format!("{}/acme/directory", self.service)
    }

    /// The account the `account` command created (one per EAB key).
    pub(crate) async fn account(&self) -> Result<(Account, serde_json::Value), String> {
        let path = PathBuf::from(self.arg("credentials")?);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let credentials: AccountCredentials =
            serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let account = Account::builder_with_http(Box::new(self.rr.clone()))
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("account: {e}"))?;
        Ok((
            account,
            serde_json::from_str(&text).map_err(|e| e.to_string())?,
        ))
    }
}

fn parse_args(args: &[String]) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let name = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {arg}"))?;
        let value = match name {
            "expect-unavailable" | "expect-connection-errors" => "yes".to_owned(),
            _ => iter
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?
                .clone(),
        };
        map.insert(name.to_owned(), value);
    }
    Ok(map)
}

async fn create_account(setup: &Setup) -> Result<String, String> {
    let kid = std::env::var("LOCALCERT_EAB_KID").map_err(|_| "LOCALCERT_EAB_KID is not set")?;
    let key = std::env::var("LOCALCERT_EAB_KEY").map_err(|_| "LOCALCERT_EAB_KEY is not set")?;
    let key = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &key)
        .map_err(|e| format!("LOCALCERT_EAB_KEY: {e}"))?;
    let (account, credentials) = Account::builder_with_http(Box::new(setup.rr.clone()))
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            setup.directory_url(),
            Some(&ExternalAccountKey::new(kid, &key)),
        )
        .await
        .map_err(|e| format!("newAccount: {e}"))?;
    let path = PathBuf::from(setup.arg("credentials")?);
    let text = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
    localcert_issuer::ca::write_private_file(&path, text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(format!("account {} created", account.id()))
}

async fn run(command: &str, setup: &Setup) -> Result<String, String> {
    match command {
        "account" => create_account(setup).await,
        "issue" => scenarios::issue(setup).await,
        "check" => scenarios::check(setup).await,
        "nonce" => scenarios::nonce(setup).await,
        "star" => scenarios::star(setup).await,
        "crl" => scenarios::crl(setup).await,
        other => Err(format!("unknown command {other}")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("usage: replicas COMMAND --option value … (see the source's header)");
        return ExitCode::from(2);
    };
    let setup = parse_args(rest).and_then(|args| {
        let arg = |name: &str| {
            args.get(name)
                .cloned()
                .ok_or_else(|| format!("--{name} is required"))
        };
        let replicas = arg("replicas")?.split(',').map(str::to_owned).collect();
        let rr = RoundRobin::new(replicas, &PathBuf::from(arg("tls-cert")?))?;
        let device = FixtureDevice::load(&PathBuf::from(arg("device")?))?;
        let origin = Origin::parse(&arg("origin")?).map_err(|e| format!("--origin: {e}"))?;
        let service = arg("service")?;
        Ok(Setup {
            rr,
            service,
            device,
            origin,
            args,
        })
    });
    let setup = match setup {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("replicas {command}: {e}");
            return ExitCode::from(2);
        }
    };
    match run(command, &setup).await {
        Ok(report) => {
            println!("{command}: {report}");
            println!("{command}: {}", setup.rr.stats.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{command}: FAILED: {e}");
            println!("{command}: {}", setup.rr.stats.summary());
            ExitCode::FAILURE
        }
    }
}
