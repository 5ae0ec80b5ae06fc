//! `localcert rp serve`: the web origin's backend (the browser package's counterpart).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use localcert_proto::name::LocalName;
use localcert_rp::{AcmeAccount, Backend, Config, TokenAuth};

use crate::Exit;

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
    /// Cancel the STAR delegations for NAME at the issuer (RFC 8739 §2.3), with the origin's
    /// ACME account from rp.toml: the device's next renewal fetch finds the delegation ended
    /// and it serves its certificate until it expires. Every user's delegation for the name.
    CancelStar {
        /// The configuration file of the origin's backend (its account file is used).
        #[arg(long)]
        config: PathBuf,
        /// The device's `.local` name, as `localcert ua list` shows it.
        name: String,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve { config } => serve(&config).await,
        Command::CancelStar { config, name, json } => cancel_star(&config, &name, json).await,
    }
}

async fn cancel_star(path: &std::path::Path, name: &str, json: bool) -> anyhow::Result<()> {
    let name = LocalName::parse(name).with_context(|| format!("{name} is not a .local name"))?;
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    let account = AcmeAccount::new(config.acme.clone());
    let issuer = |e: localcert_rp::FlowError| Exit::with(Exit::ISSUER, anyhow!(e));
    let key = account.key().await.map_err(issuer)?;
    let canceled = localcert_rp::star::cancel_star(account.settings(), key, &name, None)
        .await
        .map_err(issuer)?;
    if json {
        let canceled: Vec<_> = canceled
            .iter()
            .map(|c| serde_json::json!({"order": c.order, "star_certificate": c.star_certificate}))
            .collect();
        let out = serde_json::json!({"name": name.as_str(), "canceled": canceled});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if canceled.is_empty() {
        println!("no live STAR delegation for {name}: nothing cancelled");
    } else {
        for c in &canceled {
            println!(
                "cancelled {} (STAR certificate {})",
                c.order,
                c.star_certificate.as_deref().unwrap_or("not issued")
            );
        }
        println!("the device serves its current certificate for {name} until it expires");
    }
    Ok(())
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
