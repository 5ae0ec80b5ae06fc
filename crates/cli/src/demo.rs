//! `localcert demo`: the whole flow in one process, on loopback, with the in-memory BLE link.
//!
//! A manufacturer and a device credential, an issuer (SQLite) serving ACME over HTTPS, a
//! registered origin, a device agent with its HTTPS server and mDNS on loopback, and the UA
//! provisioning it; then the cross-origin request a web app would make.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use localcert_device::gatt::GattServer;
use localcert_device::mdns::{Announcer, Interfaces};
use localcert_device::presence::AutoApprove;
use localcert_device::signer::FileSigner;
use localcert_device::star::HttpsFetcher;
use localcert_device::{DeviceBuilder, DeviceConfig, Event, IssuerTrust, factory};
use localcert_issuer::config::Config;
use localcert_issuer::operator::{self, Bound, InitOptions};
use localcert_proto::origin::Origin;
use localcert_ua::LinkProfile;
use localcert_ua::provision::{self, Plan, Progress, Step};
use localcert_ua::resolve::{MdnsResolver, Scope};
use localcert_ua::sim::SimConnector;
use localcert_ua::verify::FOREIGN_ORIGIN;
use serde_json::json;

use crate::ua::{cors, exit_for, read_root};

const PRODUCT: &str = "Media Server 1";

/// `localcert demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The BLE link profile: mtu23-30ms-1m (MTU 23, 30 ms interval, 1M PHY: the worst common
    /// case) or mtu247-15ms-2m-dle.
    #[arg(long, default_value = "mtu23-30ms-1m")]
    profile: String,
    /// The web origin to provision the device for.
    #[arg(long, default_value = "https://vod.example.com")]
    origin: String,
    /// Ask for a STAR (short-lived, auto-renewed) certificate.
    #[arg(long)]
    star: bool,
    /// Keep the state here instead of a temporary directory (it must not exist yet).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The address the device's HTTPS server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    device_addr: std::net::IpAddr,
    /// The interface for mDNS (announce and resolve): `lo`, or a name such as `veth0` for a
    /// test between network namespaces. Never the LAN by default.
    #[arg(long, default_value = "lo")]
    mdns_interface: String,
    /// After the demo, keep the issuer and the device serving until interrupted, and write
    /// what a browser test needs (name, port, root, intermediate key) to this JSON file.
    #[arg(long)]
    serve: Option<PathBuf>,
}

/// Prints the flow's steps, numbered as in the design's 14 steps.
struct Narrator {
    started: Instant,
}

impl Narrator {
    fn line(&self, text: &str) {
        println!("[{:>6.2} s] {text}", self.started.elapsed().as_secs_f64());
    }
}

impl Progress for Narrator {
    fn start(&mut self, step: Step) {
        match step {
            Step::GetInfo => {
                self.line(" 1 scan: the device advertises the localcert service (in-memory link)");
                self.line(" 2 the user picks the device (demo: chosen for them)");
            }
            Step::Attest => {
                self.line(" 5 ATTEST → device: origin, user handle, ACME key authorization, label")
            }
            _ => {}
        }
    }

    fn done(&mut self, step: Step, detail: &str) {
        self.line(&format!("{}\n{:11}→ {detail}", step_title(step), ""));
    }

    fn retrying(&mut self, attempt: u32, reason: &str) {
        self.line(&format!(
            "!! attempt {attempt} failed ({reason}); starting again from GET_INFO"
        ));
    }
}

fn step_title(step: Step) -> &'static str {
    match step {
        Step::GetInfo => " 3 GET_INFO: product and attestation chain over BLE",
        Step::Order => " 4 ACME: account with External Account Binding, order, device-attest-01",
        Step::Attest => {
            " 6-9 device: presence approved, new P-256 key and CSR, transcript signed by the product secret"
        }
        Step::Mdns => "10 the name answers over mDNS",
        Step::Challenge => "11 challenge answered with the attestation; finalized with the CSR",
        Step::Download => "12 certificate chain downloaded",
        Step::Install => "13 INSTALL: chain and CORS policy on the device",
        Step::Verify => "14 HTTPS from the origin: chain, name, key pin, origin binding, CORS",
    }
}

fn state_dir(args: &DemoArgs) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &args.state_dir {
        Some(dir) => {
            std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok((dir.clone(), None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("localcert-demo-")
                .tempdir()?;
            Ok((temp.path().to_owned(), Some(temp)))
        }
    }
}

/// The manufacturer's root, written where the issuer's config can name it, and the device's
/// product secret.
fn manufacture(dir: &Path) -> anyhow::Result<(PathBuf, FileSigner)> {
    let root = factory::new_root("localcert demo manufacturer")?;
    std::fs::create_dir_all(dir.join("manufacturer"))?;
    let (root_pem, _) = factory::write_ca(&dir.join("manufacturer"), "root", &root)?;
    let device = factory::new_device(&root, PRODUCT, "0001")?;
    Ok((root_pem, FileSigner::new(&device.key, device.chain)?))
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let wall = Instant::now();
    let profile = LinkProfile::by_name(&args.profile).with_context(|| {
        let mut names: Vec<_> = LinkProfile::ALL.iter().map(|p| p.name).collect();
        names.push(LinkProfile::MTU23_30MS_1M_WITH_RESPONSE.name);
        format!("--profile must be one of {names:?}")
    })?;
    let origin =
        Origin::parse(&args.origin).with_context(|| format!("--origin {}", args.origin))?;
    let (dir, _temp) = state_dir(&args)?;
    let say = Narrator { started: wall };
    println!(
        "localcert demo: one process, loopback only; BLE is the in-memory link with profile {}",
        profile.name
    );
    println!(
        "  (ATT MTU {}, {} ms connection interval, {} Mbit/s PHY, writes {})",
        profile.att_mtu,
        profile.connection_interval.as_millis(),
        profile.phy_bits_per_second / 1_000_000,
        if profile.write_with_response {
            "with response"
        } else {
            "without response"
        }
    );
    println!("  state in {}", dir.display());

    // Manufacturer and issuer.
    let (manufacturer_root, signer) = manufacture(&dir)?;
    let config_path = dir.join("issuer/issuer.toml");
    let init = operator::init(
        &config_path,
        &InitOptions {
            state_dir: dir.join("issuer"),
            root_key: None,
            ca_name: "localcert demo".into(),
            listen: Some("127.0.0.1:0".parse()?),
            manufacturer_roots: vec![manufacturer_root],
        },
        SystemTime::now(),
    )?;
    let config = Config::load(&config_path)?;
    let eab = operator::rp_add(&config, &origin, SystemTime::now())?;
    let issuer = Bound::bind(&config).await?;
    let issuer_addr = issuer.local_addr().context("the issuer's address")?;
    let directory_url = issuer.directory_url();
    let (stop_issuer, issuer_stopped) = tokio::sync::oneshot::channel::<()>();
    let issuer_task = tokio::spawn(issuer.run(async {
        let _ = issuer_stopped.await;
    }));
    say.line(&format!(
        "setup: issuer serving {directory_url} (root SHA-256 {})",
        init.root_fingerprint
    ));
    say.line(&format!(
        "setup: origin {origin} registered (EAB key id {})",
        eab.kid
    ));

    // The device: engine, HTTPS server and mDNS responder, all on loopback.
    let https = tokio::net::TcpListener::bind((args.device_addr, 0)).await?;
    let https_port = https.local_addr()?.port();
    let issuer_root = read_root(&init.root_cert)?;
    let mut device_config = DeviceConfig::new(PRODUCT);
    device_config.https_port = https_port;
    device_config.trust = IssuerTrust::Roots(vec![issuer_root.clone()]);
    // Configured beside the root, the issuing intermediate need not cross BLE (SPEC §5.3).
    device_config.issuer_intermediates = vec![read_root(&config.ca_files().intermediate_cert)?];
    let (interfaces, scope) = match args.mdns_interface.as_str() {
        "lo" => (Interfaces::LoopbackOnly, Scope::Loopback),
        name => (
            Interfaces::Named(vec![name.to_owned()]),
            Scope::Interface(name.to_owned()),
        ),
    };
    // The agent serves, announces and renews; the demo only narrates what it does.
    let fetcher = HttpsFetcher::new(&[read_root(&config.tls_files().cert)?])?;
    let fetcher = fetcher.resolve_to(issuer_addr);
    let agent = DeviceBuilder::new(device_config, Box::new(signer))
        .presence(AutoApprove)
        .announcer(Announcer::new(https_port, &interfaces)?)
        .fetcher(Arc::new(fetcher))
        .build();
    let handler = tower::service_fn(
        move |request: hyper::Request<hyper::body::Incoming>| async move {
            let body = json!({"device": PRODUCT, "path": request.uri().path(), "message": "hello from the device"});
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                body.to_string(),
            ))))
        },
    );
    let (stop_device, device_stopped) = tokio::sync::oneshot::channel::<()>();
    let device_task = tokio::spawn(localcert_device::https::serve(
        https,
        agent.sites().clone(),
        handler,
        async {
            let _ = device_stopped.await;
        },
    ));
    say.line(&format!(
        "setup: device \"{PRODUCT}\" serving HTTPS on {}:{https_port}, mDNS on {}",
        args.device_addr, args.mdns_interface
    ));

    agent.observe(move |event| {
        let line = |t: &str| println!("[{:>6.2} s] {t}", wall.elapsed().as_secs_f64());
        match event {
            Event::Pending { name, .. } => {
                line(&format!(" 8 device: {name} announced over mDNS (pending)"))
            }
            Event::Installed(binding) => line(&format!(
                "   device: serving {} for {}",
                binding.name, binding.origin
            )),
            _ => {}
        }
    });
    // The device's BLE session driver; each in-memory connection is a new central.
    let gatt = Arc::new(GattServer::new(agent));
    let mut centrals = 0u32;
    let mut connector = SimConnector::new(
        move || {
            centrals += 1;
            gatt.connection(centrals)
        },
        profile.clone(),
    );
    let plan = Plan {
        directory_url: directory_url.clone(),
        acme_tls_root: Some(config.tls_files().cert),
        issuer_root,
        eab_kid: eab.kid.clone(),
        eab_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&eab.hmac_key)?,
        acme_account_file: None,
        origin: origin.clone(),
        user_handle: b"demo-user".to_vec(),
        device_label: None,
        pin: None,
        cors: cors(
            vec!["GET".into(), "POST".into()],
            vec!["content-type".into()],
            false,
        ),
        star: args.star,
        max_attempts: 3,
        check_path: "/api/hello".into(),
    };
    let resolver = MdnsResolver {
        timeout: Duration::from_secs(5),
        scope,
    };
    let mut narrator = Narrator { started: wall };
    let (outcome, stats) = provision::provision(&plan, &mut connector, &resolver, &mut narrator)
        .await
        .map_err(exit_for)?;

    println!();
    println!("The web app's cross-origin request:");
    println!(
        "  GET https://{}:{}/api/hello   Origin: {origin}",
        outcome.name,
        outcome.endpoint.port()
    );
    println!("  → HTTP {}", outcome.check.status);
    println!(
        "    access-control-allow-origin: {}",
        outcome.check.allow_origin
    );
    println!("    vary: {}", outcome.check.vary);
    println!("    body: {}", String::from_utf8_lossy(&outcome.check.body));
    println!(
        "  The same request from {FOREIGN_ORIGIN}: no access-control-allow-origin, so the browser refuses it."
    );
    println!();
    println!("Summary");
    println!("  name          {}", outcome.name);
    println!("  fingerprint   {}", hex::encode(outcome.fingerprint));
    println!(
        "  expires       {} (in {:.1} h)",
        expiry(outcome.not_after),
        hours_left(outcome.not_after)
    );
    if let Some(s) = &stats {
        println!(
            "  BLE           {} B up in {} writes, {} B down in {} notifications, {} ATT round trips, {} request/response exchanges",
            s.bytes_up,
            s.writes,
            s.bytes_down,
            s.notifications,
            s.att_round_trips,
            outcome.exchanges
        );
        let bound = profile.bound(s);
        println!(
            "  BLE time      {:.2} s simulated ({}); link bound {:.2} s for the same packets, ratio {:.2}",
            s.elapsed.as_secs_f64(),
            args.profile,
            bound.as_secs_f64(),
            s.elapsed.as_secs_f64() / bound.as_secs_f64().max(f64::EPSILON)
        );
    }
    println!("  wall time     {:.2} s", wall.elapsed().as_secs_f64());

    if let Some(path) = &args.serve {
        let description = json!({
            "origin": origin.as_str(),
            "name": outcome.name.as_str(),
            "https_port": outcome.endpoint.port(),
            "issuer_root": init.root_cert,
            "intermediate_cert": config.ca_files().intermediate_cert,
            "intermediate_key": config.ca_files().intermediate_key,
            "directory_url": directory_url,
            "config": config_path,
            "fingerprint": hex::encode(outcome.fingerprint),
        });
        std::fs::write(path, serde_json::to_string_pretty(&description)?)?;
        println!();
        println!(
            "Serving until interrupted (Ctrl-C); description in {}",
            path.display()
        );
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop_issuer.send(());
    let _ = stop_device.send(());
    issuer_task.await.map_err(|e| anyhow!(e))??;
    device_task.await.map_err(|e| anyhow!(e))??;
    Ok(())
}

fn expiry(not_after: i64) -> String {
    let seconds = u64::try_from(not_after).unwrap_or(0);
    localcert_issuer::acme::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

fn hours_left(not_after: i64) -> f64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (not_after - i64::try_from(now).unwrap_or(0)) as f64 / 3600.0
}
