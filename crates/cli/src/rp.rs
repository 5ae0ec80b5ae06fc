//! `localcert rp serve`: the web origin's backend (the browser package's counterpart).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use localcert_proto::name::LocalName;
use localcert_rp::star::Canceled;
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
    /// Exit 0 also when it was cancelled already; 1 for a name the account never ordered or
    /// one with one-off certificates only; 5 when the issuer refuses or cannot be reached.
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
    let name = LocalName::parse(name).with_context(|| format!("{name:?} is not a .local name"))?;
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    // The delegation belongs to the account that ordered it: never make a new one here (the
    // issuer would bind it to the EAB key, and it would hold no order anyway).
    if let Some(file) = config.acme.account_file.as_deref() {
        if !file.exists() {
            bail!(
                "{}: no ACME account file, so this origin's backend has ordered nothing yet and has no STAR delegation to cancel",
                file.display()
            );
        }
        // It holds the account key: one others may read is refused here, before any request.
        localcert_rp::config::read_private(file)?;
    }
    let directory = config.acme.directory_url.clone();
    let issuer = |e: localcert_rp::FlowError| {
        Exit::with(
            Exit::ISSUER,
            anyhow!(e).context(format!("the issuer at {directory}")),
        )
    };
    let account = AcmeAccount::new(config.acme.clone());
    let key = account.key().await.map_err(issuer)?;
    let report = localcert_rp::star::cancel_star(account.settings(), key, &name, None)
        .await
        .map_err(issuer)?;
    if report.canceled.is_empty() && report.already_ended == 0 {
        bail!(match report.one_off {
            0 => format!(
                "this origin's account has no order for {name}: check the name (`localcert ua list` shows the device's names)"
            ),
            n => format!(
                "{name} has no STAR delegation: its {n} certificate(s) from this origin are one-off and expire on their own (`localcert ua remove` removes the binding)"
            ),
        });
    }
    if json {
        let canceled: Vec<_> = report.canceled.iter().map(Canceled::to_json).collect();
        let out = serde_json::json!({
            "name": name.as_str(),
            "canceled": canceled,
            "already_canceled": report.already_ended,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if report.canceled.is_empty() {
        println!("the STAR delegation for {name} was cancelled already: nothing to do");
    } else {
        for c in &report.canceled {
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
