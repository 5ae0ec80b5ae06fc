//! `localcert`: one command for the demo and for each role.

use clap::Parser;

mod factory;
mod issuer;

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
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOCALCERT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Issuer(cmd) => issuer::run(cmd).await,
        Command::Factory(cmd) => factory::run(cmd).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
