//! `localcert issuer …`: parses, calls `localcert_issuer::operator`, prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use localcert_issuer::config::Config;
use localcert_issuer::operator::{self, InitOptions};
use localcert_proto::origin::Origin;

/// Run the private CA: set it up, register web origins, serve ACME.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create the CA (name-constrained root and issuing intermediate), the issuer's localhost
    /// HTTPS certificate, the database and, if absent, the configuration file.
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Directory for the CA, TLS files and database (relative to the configuration file).
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        /// Write the root key here instead (e.g. removable media to keep offline).
        #[arg(long)]
        root_key: Option<PathBuf>,
        /// Common-name prefix of the CA certificates.
        #[arg(long, default_value = "localcert")]
        name: String,
        /// Address `serve` listens on.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// A manufacturer root (PEM) whose devices are trusted; repeat for several.
        #[arg(long = "manufacturer-root")]
        manufacturer_roots: Vec<PathBuf>,
    },
    /// Manage relying parties (web origins) and their External Account Binding keys.
    #[command(subcommand)]
    Rp(RpCommand),
    /// Serve ACME over HTTPS (directory, EAB accounts, device-attest-01, STAR, CRL).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the audit log: every issuance, refusal (with its reason) and revocation.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        /// How many of the latest entries to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// Relying-party commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RpCommand {
    /// Register a web origin; prints its EAB key id and HMAC key once.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// The origin, e.g. https://vod.example.com
        origin: String,
    },
    /// List registered origins.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke an origin: deactivate its accounts, revoke its unexpired certificates (listed in
    /// the served CRL) and cancel its STAR orders.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The origin, e.g. https://vod.example.com
        origin: String,
    },
}

/// The configuration file option shared by every command.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArg {
    /// The issuer's configuration file.
    #[arg(
        long,
        short,
        env = "LOCALCERT_ISSUER_CONFIG",
        default_value = "issuer.toml"
    )]
    config: PathBuf,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        Config::load(&self.config).with_context(|| format!("loading {}", self.config.display()))
    }
}

fn parse_origin(origin: &str) -> anyhow::Result<Origin> {
    Origin::parse(origin).with_context(|| {
        format!("{origin:?} is not a serialized https origin (e.g. https://vod.example.com)")
    })
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match cmd {
        Command::Init {
            config,
            state_dir,
            root_key,
            name,
            listen,
            manufacturer_roots,
        } => {
            let options = InitOptions {
                state_dir,
                root_key,
                ca_name: name,
                listen,
                manufacturer_roots,
            };
            let outcome =
                operator::init(&config.config, &options, now).context("initializing the issuer")?;
            if outcome.config_written {
                println!("configuration:    {}", outcome.config_path.display());
            }
            println!("root certificate: {}", outcome.root_cert.display());
            println!("root SHA-256:     {}", outcome.root_fingerprint);
            println!(
                "root key:         {} (move it offline; serving does not need it)",
                outcome.root_key.display()
            );
            if let Some((cert, fingerprint)) = outcome.tls {
                println!(
                    "HTTPS cert:       {} (self-signed, localhost)",
                    cert.display()
                );
                println!("HTTPS SHA-256:    {fingerprint}");
            }
            println!("database:         {}", outcome.database);
            println!(
                "Install the root certificate on user agents; then `localcert issuer rp add <origin>`."
            );
        }
        Command::Rp(RpCommand::Add { config, origin }) => {
            let origin = parse_origin(&origin)?;
            let eab = operator::rp_add(&config.load()?, &origin, now)
                .with_context(|| format!("registering {origin}"))?;
            println!("origin:   {}", eab.origin);
            println!("EAB kid:  {}", eab.kid);
            println!("EAB HMAC: {}", eab.hmac_key);
            println!(
                "The HMAC key (base64url) is shown only now: hand it to the origin's operator."
            );
        }
        Command::Rp(RpCommand::List { config }) => {
            for rp in operator::rp_list(&config.load()?)? {
                println!("{}\t{}\t{}", rp.origin, rp.status.as_str(), rp.eab_kid);
            }
        }
        Command::Rp(RpCommand::Revoke { config, origin }) => {
            let origin = parse_origin(&origin)?;
            let summary = operator::rp_revoke(&config.load()?, &origin, now)?
                .with_context(|| format!("{origin} is not registered"))?;
            println!(
                "{origin} revoked: {} account(s) deactivated, {} certificate(s) revoked, {} STAR order(s) canceled",
                summary.accounts, summary.certificates, summary.star_orders
            );
        }
        Command::Audit { config, limit } => {
            for entry in operator::audit(&config.load()?, limit)? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    localcert_issuer::acme::rfc3339(entry.at),
                    entry.event,
                    entry.origin.as_deref().unwrap_or("-"),
                    entry.subject,
                    entry.detail
                );
            }
        }
        Command::Serve { config } => serve(&config.config, config.load()?).await?,
    }
    Ok(())
}

async fn serve(path: &Path, config: Config) -> anyhow::Result<()> {
    let bound = operator::Bound::bind(&config)
        .await
        .with_context(|| format!("starting the issuer from {}", path.display()))?;
    println!("ACME directory: {}", bound.directory_url());
    println!("root SHA-256:   {}", bound.root_fingerprint());
    tracing::info!(addr = ?bound.local_addr(), "serving");
    bound
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}
