//! `localcert issuer …` (owned by the issuer work; see crates/issuer).

/// Issuer commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
