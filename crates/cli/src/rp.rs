//! `localcert rp serve`: the web origin's backend (the browser package's counterpart).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use localcert_rp::{Backend, Config, TokenAuth};

/// RP backend commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Serve the RP backend: the JSON API for the browser package and a static directory.
    /// EAB credentials come from rp.toml (mode 0600) or LOCALCERT_EAB_KID/LOCALCERT_EAB_KEY.
    Serve {
        /// The configuration file (mode 0600: it holds the EAB key and user tokens).
        #[arg(long)]
        config: PathBuf,
    },
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve { config } => serve(&config).await,
    }
}

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    let tls = config
        .tls
        .as_ref()
        .map(|(cert, key)| localcert_rp::serve::tls_config(cert, key))
        .transpose()
        .context("the backend's TLS certificate")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(dir) = &config.static_dir {
        anyhow::ensure!(
            dir.is_dir(),
            "static_dir {} is not a directory",
            dir.display()
        );
    }
    let backend = Backend::new(&config, Arc::new(TokenAuth::new(&config.users)));
    // The issuer may come up later: a failure here is reported, and tried again per flow.
    let warm = backend.clone();
    tokio::spawn(async move {
        match warm.account_ready().await {
            Ok(()) => tracing::info!("ACME account ready"),
            Err(e) => tracing::warn!("ACME account not ready yet: {e}"),
        }
    });
    // Scripts wait for this line (and read the port from it when listen has port 0).
    println!(
        "rp backend for {} on {scheme}://{address}{}",
        config.origin, config.base_path
    );
    tracing::info!(origin = %config.origin, %address, "RP backend listening");
    localcert_rp::serve::serve(listener, tls, backend.router(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
