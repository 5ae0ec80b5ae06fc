//! `localcert factory …`: manufacturer root, batch intermediates and device attestation
//! credentials. The logic lives in `localcert_device::factory`.

use std::path::PathBuf;

use anyhow::Context;
use localcert_device::factory;

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
    /// Create one device's attestation credential (`attestation.pem`, `attestation.key.pem`).
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
    },
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
        } => {
            let (cert, key) = factory::ca_paths(&dir, &issuer);
            let ca = factory::read_ca(&cert, &key)
                .with_context(|| format!("reading the issuing CA `{issuer}`"))?;
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
