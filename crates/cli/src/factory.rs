//! `localcert factory …` (owned by the device work; see crates/device).

/// Factory commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
