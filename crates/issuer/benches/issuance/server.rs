//! The issuer under test, in its own process as in production: HTTPS (rustls, hyper, axum),
//! the durable SQLite store (WAL, `synchronous=FULL`), its own tokio runtime. The bench binary
//! runs this when `LOCALCERT_BENCH_SERVER` names the state directory.
//!
//! Protocol with the parent: stdout `ready PORT PID`; stdin `counters` -> stdout
//! `counters REQUESTS VERIFIED SIGNED`; stdin EOF stops the server.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use localcert_issuer::acme::{AcmeServer, Counters, Policy};
use localcert_issuer::ca::{CaFiles, IssuingCa, TlsFiles};
use localcert_issuer::serve;
use localcert_issuer::store::SqliteStore;
use localcert_issuer::validate::TrustConfig;

use crate::BoxResult;

/// The environment variable that turns the bench binary into the server.
pub const SERVER_ENV: &str = "LOCALCERT_BENCH_SERVER";
/// The database the server opens.
pub const DB_ENV: &str = "LOCALCERT_BENCH_DB";
/// The manufacturer root (DER) the server trusts, in the state directory.
pub const MANUFACTURER_ROOT: &str = "manufacturer-root.der";

/// Runs the server until stdin closes.
pub fn run(dir: &Path, db: &Path) -> BoxResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ca = IssuingCa::load(&CaFiles::in_dir(dir))?;
        let root = std::fs::read(dir.join(MANUFACTURER_ROOT))?;
        let trust = TrustConfig::new(&[root], [])?;
        let store = Arc::new(SqliteStore::open(db)?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let base = format!("https://localhost:{port}");
        let server = Arc::new(AcmeServer::new(store, ca, trust, Policy::default(), &base));
        let tls_files = TlsFiles::in_dir(dir);
        let tls = serve::tls_config(&tls_files.cert, &tls_files.key)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watched = server.clone();
        println!("ready {port} {}", std::process::id());
        std::io::stdout().flush()?;
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "counters" {
                    let c = watched.counters();
                    println!(
                        "counters {} {} {}",
                        c.requests, c.signatures_verified, c.certificates_signed
                    );
                    let _ = std::io::stdout().flush();
                }
            }
            let _ = stop.send(());
        });
        serve::serve(listener, tls, server, Duration::from_secs(3600), async {
            let _ = stopped.await;
        })
        .await?;
        Ok(())
    })
}

/// The server process, seen from the bench.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: std::io::BufReader<ChildStdout>,
    /// The server's pid (not strace's).
    pub pid: u32,
    /// Its HTTPS port.
    pub port: u16,
    fsync_log: Option<PathBuf>,
}

/// What the server has done so far: CPU, fsyncs, and its own counters.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// User + system CPU time, milliseconds.
    pub cpu_ms: f64,
    /// fsync + fdatasync calls, if strace counts them.
    pub fsyncs: Option<u64>,
    /// The server's counters.
    pub counters: Counters,
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl ServerProcess {
    /// Starts the server on `db`, under `strace` (fsync and fdatasync only, filtered in the
    /// kernel with seccomp-bpf) when it is installed, so that every fsync is counted.
    pub fn start(dir: &Path, db: &Path, log_name: &str) -> BoxResult<Self> {
        let exe = std::env::current_exe()?;
        let fsync_log = strace_available().then(|| dir.join(log_name));
        let mut command = match &fsync_log {
            Some(log) => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "--seccomp-bpf", "-e", "signal=none"])
                    .args(["-e", "trace=fsync,fdatasync", "-o"])
                    .arg(log)
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = command
            .env(SERVER_ENV, dir)
            .env(DB_ENV, db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        if words.next() != Some("ready") {
            return Err(format!("server did not start: {line:?}").into());
        }
        let port = words.next().ok_or("no port")?.parse()?;
        let pid = words.next().ok_or("no pid")?.parse()?;
        Ok(Self {
            child,
            stdin,
            stdout,
            pid,
            port,
            fsync_log,
        })
    }

    /// CPU, fsyncs and counters now.
    pub fn sample(&mut self) -> BoxResult<Sample> {
        let stdin = self.stdin.as_mut().ok_or("server stopped")?;
        writeln!(stdin, "counters")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let numbers: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let [requests, signatures_verified, certificates_signed] = numbers[..] else {
            return Err(format!("bad counters line {line:?}").into());
        };
        Ok(Sample {
            cpu_ms: cpu_ms(self.pid)?,
            fsyncs: self.fsyncs()?,
            counters: Counters {
                requests,
                signatures_verified,
                certificates_signed,
            },
        })
    }

    fn fsyncs(&self) -> BoxResult<Option<u64>> {
        let Some(log) = &self.fsync_log else {
            return Ok(None);
        };
        // strace writes a line per call as it starts ("unfinished" when another thread's line
        // interleaves; the "resumed" line is not counted again).
        let text = std::fs::read_to_string(log)?;
        Ok(Some(
            text.lines()
                .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
                .count() as u64,
        ))
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) -> BoxResult<()> {
        drop(self.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU of a process, from /proc/PID/stat, in milliseconds.
fn cpu_ms(pid: u32) -> BoxResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(") ").ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks * 1000.0 / clock_ticks_per_second())
}
