//! `localcert factory …`: manufacturer root, batch intermediates and device attestation
//! credentials. The logic lives in `localcert_device::factory`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use localcert_device::factory;
use localcert_device::keys::KeyProvider;
use localcert_device::pkcs11::{TokenConfig, TokenKeys, TokenPin};

/// Factory commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create a manufacturer root (`root.pem`, `root.key.pem` mode 0600) in a new directory.
    Init {
        /// Directory for the root; created, and must not already hold a root.
        #[arg(long)]
        dir: PathBuf,
        /// The root's common name.
        #[arg(long, default_value = "localcert Manufacturer Root")]
        name: String,
    },
    /// Create a batch intermediate under the root, so a batch can be distrusted on its own.
    Batch {
        /// The directory holding `root.pem` and `root.key.pem`.
        #[arg(long)]
        dir: PathBuf,
        /// File stem: writes `<stem>.pem` and `<stem>.key.pem` beside the root.
        #[arg(long)]
        stem: String,
        /// The batch certificate's common name (defaults to the stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Create one device's attestation credential (`attestation.pem`, `attestation.key.pem`);
    /// with `--pkcs11`, the key is generated inside the token (not extractable) and only
    /// `attestation.pem` is written.
    Device {
        /// The directory holding the issuing CA's files.
        #[arg(long)]
        dir: PathBuf,
        /// The issuing CA's file stem: `root` or a batch stem.
        #[arg(long, default_value = "root")]
        issuer: String,
        /// Product name (in the certificate subject).
        #[arg(long)]
        product: String,
        /// Device serial number (in the certificate subject).
        #[arg(long)]
        serial: String,
        /// Output directory for the device's files.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// Where the attestation key is made when it goes into a token.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The PKCS#11 module (`.so`): the key is generated in the token, not in a file.
    #[arg(long, value_name = "MODULE")]
    pkcs11: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "pkcs11")]
    token_label: Option<String>,
    /// A file holding the token's user PIN (the PIN is never taken on the command line).
    #[arg(long, requires = "pkcs11", conflicts_with = "pin_env")]
    pin_file: Option<PathBuf>,
    /// An environment variable holding the token's user PIN.
    #[arg(long, requires = "pkcs11")]
    pin_env: Option<String>,
    /// The key's label in the token (the daemon's `[pkcs11] attestation_key_label`).
    #[arg(long, requires = "pkcs11", default_value = localcert_device::pkcs11::DEFAULT_ATTESTATION_LABEL)]
    key_label: String,
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Init { dir, name } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let root = factory::new_root(&name).context("creating the manufacturer root")?;
            let (cert, key) =
                factory::write_ca(&dir, "root", &root).context("writing the manufacturer root")?;
            println!("root certificate: {}", cert.display());
            println!("root key:         {} (keep it offline)", key.display());
        }
        Command::Batch { dir, stem, name } => {
            let (cert, key) = factory::ca_paths(&dir, "root");
            let root = factory::read_ca(&cert, &key).context("reading the manufacturer root")?;
            let batch = factory::new_batch(&root, name.as_deref().unwrap_or(&stem))
                .context("creating the batch intermediate")?;
            let (cert, key) =
                factory::write_ca(&dir, &stem, &batch).context("writing the batch")?;
            println!("batch certificate: {}", cert.display());
            println!("batch key:         {}", key.display());
        }
        Command::Device {
            dir,
            issuer,
            product,
            serial,
            out,
            token,
        } => {
            let (cert, key) = factory::ca_paths(&dir, &issuer);
            let ca = factory::read_ca(&cert, &key)
                .with_context(|| format!("reading the issuing CA `{issuer}`"))?;
            if let Some(module) = &token.pkcs11 {
                return device_in_token(&ca, &product, &serial, &out, module, &token);
            }
            let device = factory::new_device(&ca, &product, &serial)
                .context("creating the device credential")?;
            let (chain, key) =
                factory::write_device(&out, &device).context("writing the device credential")?;
            println!("attestation chain: {}", chain.display());
            println!("attestation key:   {}", key.display());
        }
    }
    Ok(())
}

fn device_in_token(
    ca: &factory::CaCredential,
    product: &str,
    serial: &str,
    out: &Path,
    module: &Path,
    args: &TokenArgs,
) -> anyhow::Result<()> {
    let token_label = args
        .token_label
        .as_deref()
        .context("--pkcs11 needs --token-label")?;
    let pin = match (&args.pin_file, &args.pin_env) {
        (Some(path), None) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(var)) => std::env::var(var).with_context(|| format!("${var} is not set"))?,
        _ => anyhow::bail!("--pkcs11 needs --pin-file or --pin-env"),
    };
    let pin = TokenPin::new(&pin)?;
    let token = TokenKeys::open(&TokenConfig {
        module,
        token_label,
        pin: &pin,
    })
    .context("opening the token")?;
    let (key, chain) = factory::new_device_in_token(ca, product, serial, &token, &args.key_label)
        .context("creating the attestation key in the token")?;
    let chain_path = match factory::write_device_chain(out, &chain) {
        Ok(path) => path,
        Err(e) => {
            // A key without its certificate is of no use: leave the token as it was.
            let _ = token.destroy(&key);
            return Err(e).context("writing the attestation chain");
        }
    };
    println!("attestation chain: {}", chain_path.display());
    println!(
        "attestation key:   in token `{token_label}`, label `{}` (not extractable)",
        args.key_label
    );
    Ok(())
}
