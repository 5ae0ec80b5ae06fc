//! `localcert-device`: the reference device agent daemon.
//!
//! `run --config device.toml` serves BLE provisioning (with the `bluez` feature), HTTPS for the
//! installed bindings, mDNS and STAR renewal; `status` lists the bindings; `reset` forgets them;
//! `bridge` (test-only) is `run` with one BLE connection spoken as lines over stdio.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::Full;
use localcert_device::agent::Agent;
use localcert_device::bridge;
use localcert_device::config::DaemonConfig;
use localcert_device::gatt::GattServer;
use localcert_device::https;
use localcert_device::status;
use localcert_device::store::BindingStore;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// localcert device agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the agent: BLE provisioning, HTTPS, mDNS, STAR renewal.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/localcert-device/device.toml")]
        config: PathBuf,
    },
    /// Test-only: `run` without a radio, one BLE connection at a time spoken as lines over
    /// stdin/stdout (`ready PORT`, `info HEX`; `subscribe`, `write HEX`, `disconnect`;
    /// `notify HEX`); logs go to stderr, end of input stops it.
    Bridge {
        /// The configuration file.
        #[arg(long, default_value = "/etc/localcert-device/device.toml")]
        config: PathBuf,
        /// The ATT MTU of the simulated connection.
        #[arg(long, default_value_t = bridge::DEFAULT_MTU,
              value_parser = clap::value_parser!(u16).range(23..=517))]
        mtu: u16,
    },
    /// Show the installed bindings and anything odd in the store.
    Status {
        /// The configuration file.
        #[arg(long, default_value = "/etc/localcert-device/device.toml")]
        config: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove every binding.
    Reset {
        /// The configuration file.
        #[arg(long, default_value = "/etc/localcert-device/device.toml")]
        config: PathBuf,
        /// Do it (without this flag, only say what would be removed).
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> std::process::ExitCode {
    // `Targets` reads the same `info,localcert_device::engine=debug` directives as EnvFilter
    // without a regex engine (the binary's size matters on a device).
    let filter = std::env::var("LOCALCERT_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Bridge { config, mtu } => bridge(&config, mtu),
        Command::Status { config, json } => status(&config, json),
        Command::Reset { config, yes } => reset(&config, yes),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<DaemonConfig> {
    DaemonConfig::load(path).with_context(|| format!("loading {}", path.display()))
}

fn status(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    let (store, report) = config.open_store().context("opening the store")?;
    if json {
        let out = status::to_json(store.dir(), store.bindings(), &report);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        print!(
            "{}",
            status::to_text(store.dir(), store.bindings(), &report, now)
        );
    }
    Ok(())
}

fn reset(path: &Path, yes: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    let (mut store, _) = config.open_store().context("opening the store")?;
    if !yes {
        println!(
            "would remove {} binding(s) from {}; run again with --yes",
            store.bindings().len(),
            store.dir().display()
        );
        return Ok(());
    }
    store.reset().context("resetting the store")?;
    println!("store reset");
    Ok(())
}

/// The reference firmware handler: a small JSON status page.
async fn handler(
    product: Arc<str>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = serde_json::json!({
        "product": &*product,
        "path": request.uri().path(),
        "status": "ok",
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// One thread: bluer runs every incoming GATT write as its own task, and on several worker
/// threads two writes can reach the engine out of order (seen in the BlueZ VM suite as
/// sequence gaps). On one thread tasks run in the order BlueZ delivered the writes.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    runtime()?.block_on(run_async(config))
}

fn bridge(path: &Path, mtu: u16) -> anyhow::Result<()> {
    let config = load(path)?;
    let runtime = runtime()?;
    let result = runtime.block_on(bridge_async(config, mtu));
    // A read of stdin may still be blocked on its thread when the bridge stops on an error.
    runtime.shutdown_background();
    result
}

/// The agent with its stored bindings served, its timer loop running and its HTTPS listener
/// bound: what `run` and `bridge` share.
struct Started {
    agent: Arc<Agent>,
    agent_task: tokio::task::JoinHandle<()>,
    listener: tokio::net::TcpListener,
    product: Arc<str>,
}

async fn start(config: &DaemonConfig) -> anyhow::Result<Started> {
    let (builder, report) = config.builder().context("setting up the agent")?;
    for p in &report.leftovers {
        tracing::warn!(path = %p.display(), "removed a half-written leftover");
    }
    for (p, reason) in &report.unusable {
        tracing::warn!(path = %p.display(), %reason, "unusable file in the store");
    }
    let agent = builder.build();
    let agent_task = tokio::spawn(agent.clone().run());
    let addr = std::net::SocketAddr::new(config.https_listen, config.https_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(%addr, names = ?agent.sites().names(), "HTTPS listening");
    Ok(Started {
        agent,
        agent_task,
        listener,
        product: Arc::from(config.product.as_str()),
    })
}

/// Serves the agent's sites on the listener until `shutdown` resolves.
async fn serve_https(
    started: Started,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Started {
        agent,
        agent_task,
        listener,
        product,
    } = started;
    let service = tower::service_fn(move |request| handler(product.clone(), request));
    let served = https::serve(listener, agent.sites().clone(), service, shutdown)
        .await
        .context("serving HTTPS");
    agent_task.abort();
    served
}

async fn run_async(config: DaemonConfig) -> anyhow::Result<()> {
    let started = start(&config).await?;
    let _ble = start_ble(&started.agent, &config).await?;
    serve_https(started, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn bridge_async(config: DaemonConfig, mtu: u16) -> anyhow::Result<()> {
    let started = start(&config).await?;
    let server = Arc::new(GattServer::new(started.agent.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let https = tokio::spawn(serve_https(started, async {
        let _ = stopped.await;
    }));
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let bridged = bridge::run(server, mtu, config.https_port, stdin, tokio::io::stdout()).await;
    let _ = stop.send(());
    https.await.context("the HTTPS task")??;
    bridged.context("bridge")?;
    tracing::info!("bridge stopped: end of input");
    Ok(())
}

#[cfg(all(feature = "bluez", target_os = "linux"))]
async fn start_ble(
    agent: &Arc<Agent>,
    config: &DaemonConfig,
) -> anyhow::Result<Option<localcert_device::bluez::BleHandle>> {
    if !config.ble.enabled {
        return Ok(None);
    }
    let options = localcert_device::bluez::BleOptions {
        adapter: config.ble.adapter.clone(),
        local_name: config.ble.local_name.clone(),
    };
    let handle = localcert_device::bluez::start(agent.clone(), &options)
        .await
        .context("starting BLE")?;
    Ok(Some(handle))
}

#[cfg(not(all(feature = "bluez", target_os = "linux")))]
async fn start_ble(_: &Arc<Agent>, config: &DaemonConfig) -> anyhow::Result<Option<()>> {
    if config.ble.enabled {
        tracing::warn!("built without the `bluez` feature: BLE provisioning is off");
    }
    Ok(None)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
