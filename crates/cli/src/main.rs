//! `localcert`: one command for the demo and for each role.

// Doc comments here are the `--help` text: URLs stay bare so people can copy them.
#![allow(rustdoc::bare_urls)]

use std::fmt;

use clap::Parser;

mod demo;
mod factory;
mod issuer;
mod progress;
mod rp;
mod ua;
mod ua_manage;

/// localcert: TLS certificates for .local devices, bootstrapped over Bluetooth LE.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the private CA: set it up, register web origins, serve ACME.
    #[command(subcommand)]
    Issuer(issuer::Command),
    /// Manufacturer tools: a manufacturer root and per-device attestation credentials.
    #[command(subcommand)]
    Factory(factory::Command),
    /// Play the browser: scan for devices, provision one, check its endpoint.
    #[command(subcommand)]
    Ua(ua::Command),
    /// The web origin's backend: holds its ACME account, serves the browser package's API.
    #[command(subcommand)]
    Rp(rp::Command),
    /// The whole flow in one process: manufacturer, issuer, device, UA, on loopback with an
    /// in-memory BLE link. Needs no Bluetooth hardware and no network.
    Demo(demo::DemoArgs),
}

/// An error with its own exit code, so scripts can tell failures apart.
#[derive(Debug)]
pub(crate) struct Exit {
    code: u8,
    error: anyhow::Error,
}

impl Exit {
    /// The user aborted (the device chooser).
    pub(crate) const ABORTED: u8 = 3;
    /// The device refused, or answered something unacceptable.
    pub(crate) const DEVICE: u8 = 4;
    /// The issuer refused or failed.
    pub(crate) const ISSUER: u8 = 5;
    /// The endpoint failed verification.
    pub(crate) const VERIFY: u8 = 6;
    /// Bluetooth, mDNS or the network failed (the device could not be reached).
    pub(crate) const BLE: u8 = 7;

    pub(crate) fn with(code: u8, error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Self { code, error })
    }

    pub(crate) fn ble(error: anyhow::Error) -> anyhow::Error {
        Self::with(Self::BLE, error)
    }

    pub(crate) fn aborted() -> anyhow::Error {
        Self::with(Self::ABORTED, anyhow::anyhow!("aborted by the user"))
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

/// Logs go to stderr; `LOCALCERT_LOG` (e.g. `debug`) overrides the default, which is `info`
/// for long-running services and `warn` for commands whose output people read.
fn init_logging(command: &Command) {
    let default = match command {
        Command::Issuer(_) => "warn,localcert_issuer=info",
        Command::Rp(_) => "warn,localcert_rp=info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOCALCERT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let result = match cli.command {
        Command::Issuer(cmd) => issuer::run(cmd).await,
        Command::Factory(cmd) => factory::run(cmd).await,
        Command::Ua(cmd) => ua::run(cmd).await,
        Command::Rp(cmd) => rp::run(cmd).await,
        Command::Demo(args) => demo::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e.downcast_ref::<Exit>().map_or(1, |exit| exit.code);
            std::process::ExitCode::from(code)
        }
    }
}
