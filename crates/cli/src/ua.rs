//! `localcert ua …`: the UA harness — scan, provision, check.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use localcert_proto::message::{CorsPolicy, Request, Response};
use localcert_proto::name::{DeviceLabel, LocalName};
use localcert_proto::origin::Origin;
use localcert_ua::btle::{self, Found};
use localcert_ua::provision::{self, Plan, ProvisionError, Resolver};
use localcert_ua::resolve::{MdnsResolver, StaticResolver};
use localcert_ua::verify::{self, Expectation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use serde_json::json;

use crate::progress::Terminal;
use crate::{Exit, ua_manage};

/// UA harness commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List nearby devices that offer the localcert service.
    Scan {
        /// Bluetooth adapter, e.g. hci1 (default: the first).
        #[arg(long)]
        adapter: Option<String>,
        /// How long to scan.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Do not connect to each device to read its product name (GET_INFO).
        #[arg(long)]
        no_connect: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Provision a device for an origin: attest, issue, install, verify.
    Provision(Box<ProvisionArgs>),
    /// List the origins a device serves (its bindings), over BLE.
    List(ua_manage::DeviceArgs),
    /// Remove ORIGIN's binding from a device over BLE: it stops serving the name and deletes
    /// the key and certificate.
    Remove {
        /// The web origin whose binding to remove, e.g. https://vod.example.com
        origin: String,
        #[command(flatten)]
        device: ua_manage::DeviceArgs,
    },
    /// Verify a provisioned device endpoint as a browser at ORIGIN would, and more.
    Check {
        /// The device URL, e.g. https://tv-vod-example-com-hp65xr-f1jk.local:8443/
        url: String,
        /// The origin the certificate must be bound to and CORS must allow.
        #[arg(long)]
        origin: String,
        /// PEM file of the issuer root that signs device certificates.
        #[arg(long)]
        issuer_root: PathBuf,
        /// Skip mDNS: NAME=ADDRESS (repeatable).
        #[arg(long)]
        resolve: Vec<String>,
        /// Expected DER SubjectPublicKeyInfo of the device key, hex (the pin from provisioning).
        #[arg(long)]
        pin_spki: Option<String>,
        /// The issuer's CRL (PEM or DER file): a revoked certificate fails the check.
        #[arg(long)]
        crl: Option<PathBuf>,
        /// Fetch the issuer's CRL from this URL (e.g. https://localhost:8443/crl).
        #[arg(long)]
        crl_url: Option<String>,
        /// PEM file of the root of the issuer's own HTTPS certificate (for --crl-url).
        #[arg(long)]
        acme_root: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ua provision` options.
#[derive(Debug, clap::Args)]
pub(crate) struct ProvisionArgs {
    /// The issuer's ACME directory URL.
    #[arg(long)]
    issuer: String,
    /// The web origin to provision for, e.g. https://vod.example.com
    #[arg(long)]
    origin: String,
    /// EAB credentials (from `localcert issuer rp add`): a TOML file of mode 0600 with
    /// `kid = "…"` and `key = "…"`. Without it, LOCALCERT_EAB_KID and LOCALCERT_EAB_KEY.
    /// Never on the command line.
    #[arg(long)]
    eab_file: Option<PathBuf>,
    /// Where the ACME account's key and URL are kept between runs (created mode 0600 at the
    /// first run). The issuer binds one account to an EAB key: without this file, a second
    /// run with the same EAB credentials is refused.
    #[arg(long)]
    account_file: Option<PathBuf>,
    /// PEM file of the issuer root that signs device certificates (to verify the endpoint).
    #[arg(long)]
    issuer_root: PathBuf,
    /// PEM file of the root of the issuer's own HTTPS certificate (default: system roots).
    #[arg(long)]
    acme_root: Option<PathBuf>,
    /// The device: Bluetooth address or advertised name. Without it, choose from a scan.
    #[arg(long)]
    device: Option<String>,
    /// Bluetooth adapter, e.g. hci1 (default: the first).
    #[arg(long)]
    adapter: Option<String>,
    /// PIN, for devices that ask for one.
    #[arg(long)]
    pin: Option<String>,
    /// Ask for a short-lived, auto-renewed (STAR) certificate.
    #[arg(long)]
    star: bool,
    /// Device label for the name (default: the device's suggestion).
    #[arg(long)]
    label: Option<String>,
    /// The user handle to bind the certificate to.
    #[arg(long, default_value = "localcert-ua")]
    user_handle: String,
    /// CORS methods to allow.
    #[arg(long, value_delimiter = ',', default_value = "GET,POST")]
    cors_methods: Vec<String>,
    /// CORS request headers to allow.
    #[arg(long, value_delimiter = ',', default_value = "content-type")]
    cors_headers: Vec<String>,
    /// Allow credentialed requests.
    #[arg(long)]
    cors_credentials: bool,
    /// Skip mDNS: NAME=ADDRESS (repeatable).
    #[arg(long)]
    resolve: Vec<String>,
    /// How long to scan when choosing a device.
    #[arg(long, default_value_t = 5)]
    scan_seconds: u64,
    /// Path the endpoint check requests.
    #[arg(long, default_value = "/")]
    path: String,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Scan {
            adapter,
            seconds,
            no_connect,
            json,
        } => scan(adapter.as_deref(), seconds, !no_connect, json).await,
        Command::Provision(args) => provision_cmd(*args).await,
        Command::List(device) => ua_manage::list(&device).await,
        Command::Remove { origin, device } => ua_manage::remove(&origin, &device).await,
        Command::Check {
            url,
            origin,
            issuer_root,
            resolve,
            pin_spki,
            crl,
            crl_url,
            acme_root,
            json,
        } => {
            let mut crls = vec![];
            if let Some(path) = crl {
                crls.push(read_crl(&path)?);
            }
            if let Some(crl_url) = crl_url {
                let roots: Vec<Vec<u8>> = acme_root
                    .as_deref()
                    .map(read_root)
                    .transpose()?
                    .into_iter()
                    .collect();
                let crl = verify::fetch(&crl_url, &roots)
                    .await
                    .map_err(|e| Exit::with(Exit::ISSUER, anyhow!(e)))?;
                crls.push(crl);
            }
            let pin = pin_spki.as_deref();
            check(&url, &origin, &issuer_root, &resolve, pin, crls, json).await
        }
    }
}

pub(crate) async fn scan_devices(
    adapter: Option<&str>,
    seconds: u64,
) -> anyhow::Result<Vec<Found>> {
    let adapter = btle::adapter(adapter)
        .await
        .map_err(|e| Exit::ble(anyhow!(e)))?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("scanning for {seconds} s"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let found = btle::scan(&adapter, Duration::from_secs(seconds)).await;
    spinner.finish_and_clear();
    found.map_err(|e| Exit::ble(anyhow!(e)))
}

/// The product name a device reports in GET_INFO; `None` if it cannot be reached in time.
async fn product(found: &Found) -> Option<String> {
    use localcert_ua::provision::Connector;
    let query = async {
        let link = found.connector().connect().await.ok()?;
        // GET_INFO goes beside the info read: a turn fewer per device scanned.
        let (transport, response) =
            localcert_ua::Transport::open_with(link, &Request::GetInfo, |_| {})
                .await
                .ok()?;
        transport.close().await;
        match response {
            Response::Info(info) => Some(info.product),
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(15), query)
        .await
        .ok()
        .flatten()
}

async fn scan(
    adapter: Option<&str>,
    seconds: u64,
    connect: bool,
    json: bool,
) -> anyhow::Result<()> {
    let found = scan_devices(adapter, seconds).await?;
    let mut products = Vec::with_capacity(found.len());
    for f in &found {
        products.push(if connect { product(f).await } else { None });
    }
    if json {
        let list: Vec<_> = found
            .iter()
            .zip(&products)
            .map(|(f, product)| json!({"address": f.address, "name": f.name, "product": product, "rssi": f.rssi}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if found.is_empty() {
        println!("no localcert devices found");
    } else {
        println!("{:<19} {:>5}  {:<24} product", "address", "rssi", "name");
        for (f, product) in found.iter().zip(&products) {
            let rssi = f.rssi.map_or_else(|| "?".into(), |r| r.to_string());
            let name = f.name.as_deref().unwrap_or("(no name)");
            let product = product
                .as_deref()
                .unwrap_or(if connect { "(no answer)" } else { "-" });
            println!("{:<19} {:>5}  {name:<24} {product}", f.address, rssi);
        }
    }
    Ok(())
}

/// The device `wanted` (Bluetooth address or advertised name) among those scanned, or the
/// user's choice when none is given.
pub(crate) fn pick<'a>(
    found: &'a [Found],
    wanted: Option<&str>,
    scan_seconds: u64,
) -> anyhow::Result<&'a Found> {
    let Some(wanted) = wanted else {
        return choose(found);
    };
    found
        .iter()
        .find(|f| f.address.eq_ignore_ascii_case(wanted) || f.name.as_deref() == Some(wanted))
        .ok_or_else(|| {
            Exit::ble(anyhow!(
                "device {wanted} not found in a {scan_seconds} s scan"
            ))
        })
}

/// The user's consent step: pick one of the scanned devices.
fn choose(found: &[Found]) -> anyhow::Result<&Found> {
    if found.is_empty() {
        return Err(Exit::ble(anyhow!("no localcert devices found")));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no --device given and no terminal to choose one on");
    }
    for (i, f) in found.iter().enumerate() {
        let rssi = f.rssi.map_or_else(|| "?".into(), |r| r.to_string());
        eprintln!(
            "  [{}] {} {} (rssi {rssi})",
            i + 1,
            f.address,
            f.name.as_deref().unwrap_or("(no name)")
        );
    }
    loop {
        eprint!("Provision which device? [1-{}, q to abort] ", found.len());
        std::io::stderr().flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 || line.trim() == "q" {
            return Err(Exit::aborted());
        }
        match line.trim().parse::<usize>() {
            Ok(n) if (1..=found.len()).contains(&n) => {
                return found.get(n - 1).context("choice out of range");
            }
            _ => eprintln!("please answer a number from 1 to {}", found.len()),
        }
    }
}

pub(crate) fn read_root(path: &Path) -> anyhow::Result<Vec<u8>> {
    let root = CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(root.as_ref().to_vec())
}

/// A CRL from a PEM (`X509 CRL`) or DER file.
fn read_crl(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match CertificateRevocationListDer::from_pem_slice(&bytes) {
        Ok(crl) => Ok(crl.as_ref().to_vec()),
        Err(_) => Ok(bytes),
    }
}

pub(crate) fn cors(methods: Vec<String>, headers: Vec<String>, credentials: bool) -> CorsPolicy {
    CorsPolicy {
        methods,
        allow_headers: headers,
        expose_headers: vec![],
        allow_credentials: credentials,
        max_age: 600,
    }
}

async fn provision_cmd(args: ProvisionArgs) -> anyhow::Result<()> {
    let origin =
        Origin::parse(&args.origin).with_context(|| format!("--origin {}", args.origin))?;
    let label = args
        .label
        .as_deref()
        .map(DeviceLabel::parse)
        .transpose()
        .context("--label")?;
    let eab = eab_credentials(args.eab_file.as_deref())?;
    let plan = Plan {
        directory_url: args.issuer.clone(),
        acme_tls_root: args.acme_root.clone(),
        issuer_root: read_root(&args.issuer_root)?,
        eab_kid: eab.kid,
        eab_key: eab.key,
        acme_account_file: args.account_file.clone(),
        origin,
        user_handle: args.user_handle.as_bytes().to_vec(),
        device_label: label,
        pin: args.pin.clone(),
        cors: cors(
            args.cors_methods.clone(),
            args.cors_headers.clone(),
            args.cors_credentials,
        ),
        star: args.star,
        max_attempts: 3,
        check_path: args.path.clone(),
    };
    let found = scan_devices(args.adapter.as_deref(), args.scan_seconds).await?;
    let device = pick(&found, args.device.as_deref(), args.scan_seconds)?;
    let mut connector = device.connector();
    let mut progress = Terminal::default();
    let result = if args.resolve.is_empty() {
        provision::provision(
            &plan,
            &mut connector,
            &MdnsResolver::default(),
            &mut progress,
        )
        .await
    } else {
        provision::provision(
            &plan,
            &mut connector,
            &static_resolver(&args.resolve)?,
            &mut progress,
        )
        .await
    };
    drop(progress);
    let (outcome, stats) = result.map_err(exit_for)?;
    summary(&outcome, stats.as_ref(), args.json)
}

/// EAB credentials from `--eab-file`, else from the environment; never from argv.
fn eab_credentials(file: Option<&Path>) -> anyhow::Result<localcert_rp::Eab> {
    use localcert_rp::config::{ENV_EAB_KEY, ENV_EAB_KID};
    if let Some(path) = file {
        return localcert_rp::config::read_eab_file(path)
            .with_context(|| format!("--eab-file {}", path.display()));
    }
    localcert_rp::config::eab_from_env(|name| std::env::var(name).ok())?.ok_or_else(|| {
        anyhow!("no EAB credentials: give --eab-file PATH (mode 0600) or set {ENV_EAB_KID} and {ENV_EAB_KEY}")
    })
}

pub(crate) fn static_resolver(entries: &[String]) -> anyhow::Result<StaticResolver> {
    let mut resolver = StaticResolver::default();
    for entry in entries {
        resolver
            .parse_entry(entry)
            .map_err(|e| anyhow!("--resolve {e}"))?;
    }
    Ok(resolver)
}

/// Maps a flow error to its exit code.
pub(crate) fn exit_for(e: ProvisionError) -> anyhow::Error {
    let code = match &e {
        ProvisionError::DeviceRefused { .. } | ProvisionError::DeviceInvalid { .. } => Exit::DEVICE,
        ProvisionError::Issuer { .. } => Exit::ISSUER,
        ProvisionError::Verify { .. } => Exit::VERIFY,
        _ => Exit::BLE,
    };
    Exit::with(code, anyhow!(e))
}

pub(crate) fn summary(
    outcome: &provision::Outcome,
    stats: Option<&localcert_ua::LinkStats>,
    json: bool,
) -> anyhow::Result<()> {
    let body = String::from_utf8_lossy(&outcome.check.body);
    let steps: Vec<_> = outcome
        .step_times
        .iter()
        .map(|(step, t)| json!({"step": format!("{step:?}"), "ms": t.as_secs_f64() * 1000.0}))
        .collect();
    if json {
        let value = json!({
            "product": outcome.product,
            "name": outcome.name.as_str(),
            "endpoint": outcome.endpoint.to_string(),
            "fingerprint": hex::encode(outcome.fingerprint),
            "not_after": outcome.not_after,
            "spki": hex::encode(&outcome.spki),
            "attempts": outcome.attempts,
            "ble": stats.map(|s| json!({
                "writes": s.writes, "notifications": s.notifications, "bytes_up": s.bytes_up,
                "bytes_down": s.bytes_down, "att_round_trips": s.att_round_trips,
                "simulated_ms": s.elapsed.as_secs_f64() * 1000.0,
            })),
            "exchanges": outcome.exchanges,
            "steps": steps,
            "response": {"status": outcome.check.status, "access_control_allow_origin": outcome.check.allow_origin,
                         "vary": outcome.check.vary, "body": body},
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("device       {}", outcome.product);
    println!("name         {}", outcome.name);
    println!(
        "endpoint     https://{}:{}/ ({})",
        outcome.name,
        outcome.endpoint.port(),
        outcome.endpoint.ip()
    );
    println!("fingerprint  {}", hex::encode(outcome.fingerprint));
    println!("not after    {} (Unix time)", outcome.not_after);
    println!(
        "BLE          {} request/response exchanges, {} attempt(s)",
        outcome.exchanges, outcome.attempts
    );
    if let Some(s) = stats {
        println!(
            "             {} B up in {} writes, {} B down in {} notifications, {} ATT round trips, {:.2} s simulated",
            s.bytes_up,
            s.writes,
            s.bytes_down,
            s.notifications,
            s.att_round_trips,
            s.elapsed.as_secs_f64()
        );
    }
    for (step, t) in &outcome.step_times {
        println!(
            "  {:>8.1} ms  {}",
            t.as_secs_f64() * 1000.0,
            step.describe()
        );
    }
    println!(
        "response     HTTP {}  Access-Control-Allow-Origin: {}  Vary: {}",
        outcome.check.status, outcome.check.allow_origin, outcome.check.vary
    );
    println!("             {}", body.trim_end());
    Ok(())
}

async fn check(
    url: &str,
    origin: &str,
    issuer_root: &Path,
    resolve: &[String],
    pin_spki: Option<&str>,
    crls: Vec<Vec<u8>>,
    json: bool,
) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("https://")
        .context("the URL must start with https://")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().context("port")?),
        None => (authority, 443),
    };
    let name = LocalName::parse(host).with_context(|| format!("{host} is not a .local name"))?;
    let expect = Expectation {
        name: name.clone(),
        origin: Origin::parse(origin).with_context(|| format!("--origin {origin}"))?,
        issuer_roots: vec![read_root(issuer_root)?],
        pinned_spki: pin_spki
            .map(hex::decode)
            .transpose()
            .context("--pin-spki is not hex")?,
        user_handle: None,
        path,
        crls,
    };
    let addresses = if resolve.is_empty() {
        MdnsResolver::default().resolve(&name).await
    } else {
        static_resolver(resolve)?.resolve(&name).await
    };
    let addresses = addresses.map_err(|e| Exit::ble(anyhow!(e)))?;
    let (_, report) = verify::check_any(&addresses, port, &expect)
        .await
        .map_err(|e| {
            // Not reaching the device is a network failure, not a failed verification.
            let code = if matches!(e, verify::CheckError::Connect(..)) {
                Exit::BLE
            } else {
                Exit::VERIFY
            };
            Exit::with(code, anyhow!(e))
        })?;
    if json {
        let value = json!({
            "ok": true, "name": name.as_str(), "fingerprint": hex::encode(report.fingerprint),
            "not_after": report.not_after, "status": report.status,
            "access_control_allow_origin": report.allow_origin, "vary": report.vary,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("✓ {name}: chain to the issuer root, name, origin binding and CORS all check out");
        println!(
            "  fingerprint {}  not after {} (Unix time)",
            hex::encode(report.fingerprint),
            report.not_after
        );
        println!(
            "  HTTP {}  Access-Control-Allow-Origin: {}  Vary: {}",
            report.status, report.allow_origin, report.vary
        );
    }
    Ok(())
}
