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
use localcert_issuer::config::POSTGRES_PASSWORD_ENV;
use localcert_issuer::nonce::NonceKey;
use localcert_issuer::serve;
use localcert_issuer::store::{PgOptions, PgStore, SqliteStore, SqliteTuning, Store};
use localcert_issuer::validate::TrustConfig;

use crate::BoxResult;

/// The environment variable that turns the bench binary into the server.
pub const SERVER_ENV: &str = "LOCALCERT_BENCH_SERVER";
/// The database the server opens.
pub const DB_ENV: &str = "LOCALCERT_BENCH_DB";
/// The manufacturer root (DER) the server trusts, in the state directory.
pub const MANUFACTURER_ROOT: &str = "manufacturer-root.der";

/// The environment variable listing the performance levers to turn off, comma-separated.
pub const LEVERS_ENV: &str = "BENCH_LEVERS_OFF";
/// The levers: each name turns one off.
pub const LEVERS: &[(&str, &str)] = &[
    (
        "nonces",
        "each consumed nonce also written durably, in a write of its own",
    ),
    (
        "audit",
        "each audit entry also written in a transaction of its own",
    ),
    (
        "group",
        "no group commit: each change commits (and fsyncs) alone",
    ),
    (
        "cache",
        "no prepared statement cache: every statement compiled again",
    ),
    ("indexes", "the secondary indexes dropped: lookups scan"),
    (
        "submit",
        "newOrder, challenge answers and finalize wait for their commit on a blocking thread, \
         not on the async workers: two more thread hops each",
    ),
    (
        "yield",
        "the database thread commits as soon as its queue is empty, without first yielding its \
         core (twice) so that more changes join the group",
    ),
    (
        "inline",
        "reads on blocking threads too, not on the async workers: two more thread hops each",
    ),
];

/// The levers turned off by [`LEVERS_ENV`]; an unknown name is an error.
pub fn levers_off() -> BoxResult<Vec<String>> {
    let list = std::env::var(LEVERS_ENV).unwrap_or_default();
    let off: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for name in &off {
        if !LEVERS.iter().any(|(lever, _)| lever == name) {
            return Err(format!("{LEVERS_ENV}: unknown lever {name:?}").into());
        }
    }
    Ok(off)
}

/// The nonce key (hex) replicas share, if any.
pub const NONCE_KEY_ENV: &str = "LOCALCERT_BENCH_NONCE_KEY";
/// The CA file for TLS to PostgreSQL, if any.
pub const POSTGRES_CA_ENV: &str = "BENCH_POSTGRES_CA";

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// PostgreSQL at `url` (password from `LOCALCERT_POSTGRES_PASSWORD`, TLS with
/// [`POSTGRES_CA_ENV`]).
pub fn open_postgres(url: &str, pool_size: usize) -> BoxResult<PgStore> {
    Ok(PgStore::connect(&PgOptions {
        url: url.to_owned(),
        password: std::env::var(POSTGRES_PASSWORD_ENV).ok(),
        pool_size,
        tls_ca_file: std::env::var_os(POSTGRES_CA_ENV).map(Into::into),
    })?)
}

/// The store: PostgreSQL for a URL, else SQLite with the levers of [`LEVERS_ENV`] turned off.
fn open_store(db: &Path) -> BoxResult<Arc<dyn Store>> {
    match db.to_str() {
        Some(url) if is_postgres(db) => Ok(Arc::new(open_postgres(url, 16)?)),
        _ => Ok(Arc::new(open_sqlite(db)?)),
    }
}

/// The SQLite store with the levers of [`LEVERS_ENV`] turned off.
fn open_sqlite(db: &Path) -> BoxResult<SqliteStore> {
    let off = levers_off()?;
    let is_off = |name: &str| off.iter().any(|o| o == name);
    let defaults = SqliteTuning::default();
    let store = SqliteStore::open_with(
        db,
        SqliteTuning {
            max_group: if is_off("group") {
                1
            } else {
                defaults.max_group
            },
            statement_cache: if is_off("cache") {
                0
            } else {
                defaults.statement_cache
            },
            audit_apart: is_off("audit"),
            durable_nonces: is_off("nonces"),
            on_async_workers: !is_off("inline"),
            submit_without_waiting: !is_off("submit"),
            group_yields: if is_off("yield") {
                0
            } else {
                defaults.group_yields
            },
        },
    )?;
    if is_off("indexes") {
        let conn = rusqlite::Connection::open(db)?;
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for name in names {
            conn.execute_batch(&format!("DROP INDEX {name}"))?;
        }
    }
    Ok(store)
}

/// Runs the server until stdin closes.
pub fn run(dir: &Path, db: &Path) -> BoxResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ca = IssuingCa::load(&CaFiles::in_dir(dir))?;
        let root = std::fs::read(dir.join(MANUFACTURER_ROOT))?;
        let trust = TrustConfig::new(&[root], [])?;
        let store = open_store(db)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let base = format!("https://localhost:{port}");
        let mut server = AcmeServer::new(store, ca, trust, Policy::default(), &base);
        if let Ok(key) = std::env::var(NONCE_KEY_ENV) {
            server = server.with_nonce_key(NonceKey::from_bytes(key.as_bytes()));
        }
        let server = Arc::new(server);
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
    perf: bool,
    dir: PathBuf,
}

/// What the server has done so far: CPU, fsyncs, and its own counters.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// User + system CPU time, milliseconds.
    pub cpu_ms: f64,
    /// The server's counters.
    pub counters: Counters,
}

fn perf_available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Counts the server's fsync and fdatasync calls over one run with `perf stat` on the syscall
/// tracepoints: counted in the kernel, without stopping the server (strace's ptrace stops
/// slowed it several times over). It attaches to the threads alive at its start, which
/// include SQLite's database thread, the only one that syncs.
pub struct FsyncCount {
    perf: Child,
    output: PathBuf,
}

impl FsyncCount {
    /// Starts counting, if `perf` is installed and may trace.
    pub fn start(pid: u32, output: PathBuf) -> Option<Self> {
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e"])
            .arg("syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync")
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&output)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf needs a moment to attach before the run starts.
        std::thread::sleep(Duration::from_millis(300));
        Some(Self { perf, output })
    }

    /// Stops counting; the number of calls.
    pub fn stop(mut self) -> Option<u64> {
        let pid = self.perf.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().ok()?;
        self.perf.wait().ok()?;
        let text = std::fs::read_to_string(&self.output).ok()?;
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("syscalls:sys_enter_"))
            .filter_map(|l| l.split(',').next()?.trim().parse().ok())
            .collect();
        (counts.len() == 2).then(|| counts.iter().sum())
    }
}

impl ServerProcess {
    /// Starts the server on `db` (a SQLite file or a PostgreSQL URL), minting nonces with
    /// `nonce_key` if given (replicas share it).
    pub fn start(dir: &Path, db: &Path, nonce_key: Option<&str>) -> BoxResult<Self> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(&exe);
        if let Some(key) = nonce_key {
            command.env(NONCE_KEY_ENV, key);
        }
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
            // PostgreSQL's fsyncs are its own processes': not counted.
            perf: perf_available() && !is_postgres(db),
            dir: dir.to_owned(),
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
            counters: Counters {
                requests,
                signatures_verified,
                certificates_signed,
            },
        })
    }

    /// Starts counting its fsyncs (None without perf).
    pub fn count_fsyncs(&self, run: &str) -> Option<FsyncCount> {
        if !self.perf {
            return None;
        }
        FsyncCount::start(self.pid, self.dir.join(format!("{run}.perf")))
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
pub fn cpu_ms(pid: u32) -> BoxResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(") ").ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks * 1000.0 / clock_ticks_per_second())
}
