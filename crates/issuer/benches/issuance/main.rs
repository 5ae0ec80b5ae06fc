//! Full ACME issuances per second against the issuer as in production (its own process, HTTPS,
//! durable SQLite with `synchronous=FULL`), with N concurrent instant-acme clients, reused and
//! new accounts; then the same against a database already holding a million certificates.
//!
//! Printed per run: issuances/s, p50 and p99 latency of a whole issuance, the server's CPU ms
//! and fsyncs per issuance (`perf stat` counts the server's fsync/fdatasync calls), the
//! P-256 verifications and signatures the server did per issuance (its own counters), and the
//! crypto bound measured in the same run: cores / (verifies x verify cost + signs x sign cost),
//! with the ratio of the measured rate to it. Also the bench's own CPU per issuance (the
//! clients run on the same cores) and `machine/s`, the rate the server and the clients could
//! reach together if nothing else ran: cores / (server + client CPU per issuance); and the
//! disk's median fsync, measured next to each run, with `fsync/s`: clients / (the durable
//! commits an issuance waits for one after the other x that fsync).
//!
//! `cargo bench -p localcert-issuer --bench issuance`; environment: `BENCH_SECS` (per run,
//! default 5), `BENCH_CLIENTS` (default `1,8,32,128`), `BENCH_MILLION` (certificates in the
//! big database, default 1000000; 0 skips it), `BENCH_POOL` (relying parties for the runs with
//! new accounts, one per issuance since an EAB key binds one account; default 50000),
//! `BENCH_NEW=0` (skip the runs with new accounts), `BENCH_LEVERS_OFF` (a comma-separated list
//! of the performance levers to turn off in the server: nonces, audit, group, cache, indexes,
//! inline, submit, yield; see `server::LEVERS`), `BENCH_POSTGRES_URL` (with
//! `LOCALCERT_POSTGRES_PASSWORD` and, for TLS, `BENCH_POSTGRES_CA`): then also 2 replicas
//! sharing that PostgreSQL database, client i on replica i mod 2, reused accounts (the
//! database must be fresh: one account per EAB key).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

#[path = "../../tests/common/mod.rs"]
mod common;

mod million;
mod parties;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::Account;
use localcert_issuer::ca::{self, CaFiles, TlsFiles};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

use crate::common::issuance::{self as client, Subject};
use crate::server::{Sample, ServerProcess};

/// The bench's error type.
pub use common::issuance::BoxResult;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time this thread has used (from /proc/thread-self/schedstat, in nanoseconds): the
/// crypto costs are CPU time, not wall time, so that other work on the machine does not
/// inflate them.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// The CPU cost of one P-256 verification and one signature, measured now (ring, as the
/// server).
fn crypto_costs() -> (Duration, Duration) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let message = [0x5au8; 300];
    let rounds = 4000u32;
    let start = thread_cpu();
    let mut signature = key.sign(&rng, &message).unwrap();
    for _ in 1..rounds {
        signature = key.sign(&rng, &message).unwrap();
    }
    let sign = (thread_cpu() - start) / rounds;
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
    let start = thread_cpu();
    for _ in 0..rounds {
        public.verify(&message, signature.as_ref()).unwrap();
    }
    ((thread_cpu() - start) / rounds, sign)
}

/// fsyncs timed for [`fsync_cost`].
const FSYNC_PROBES: u64 = 31;

/// The median time of one `fdatasync` after a 4 KiB write in `dir` (the database's file
/// system), measured now: the disk is shared, so it is measured next to each run.
fn fsync_cost(dir: &Path) -> BoxResult<Duration> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path)?;
    let mut times = Vec::new();
    for i in 0..FSYNC_PROBES {
        file.write_all_at(&[0x5a; 4096], (i % 16) * 4096)?;
        let start = Instant::now();
        file.sync_data()?;
        times.push(start.elapsed());
    }
    std::fs::remove_file(&path)?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// The durable commits a client waits for one after the other in an issuance: the order, the
/// attestation, the certificate (and first the account, with a new one). Each is acknowledged
/// only once durable.
fn sequential_commits(new_accounts: bool) -> f64 {
    if new_accounts { 4.0 } else { 3.0 }
}

struct Setup {
    dir: tempfile::TempDir,
    subjects: Vec<Arc<Subject>>,
    /// Relying parties registered for the runs with new accounts, and the next one to use.
    pool: usize,
    pool_next: Arc<AtomicUsize>,
    chain_pem: String,
}

fn setup(max_clients: usize, pool: usize) -> BoxResult<Setup> {
    let dir = tempfile::tempdir()?;
    let now = SystemTime::now();
    ca::init_ca(&CaFiles::in_dir(dir.path()), "bench", now)?;
    ca::init_tls(&TlsFiles::in_dir(dir.path()), now)?;
    parties::register(&dir.path().join("fresh.sqlite"), max_clients, pool)?;
    let maker = common::Manufacturer::new("Bench TVs");
    std::fs::write(dir.path().join(server::MANUFACTURER_ROOT), &maker.root_der)?;
    let subjects = (0..max_clients)
        .map(|i| {
            Arc::new(Subject::new(
                maker.device(&format!("{i:04}")),
                &parties::party(false, i).origin,
                &parties::party(false, i).kid,
                "tv",
            ))
        })
        .collect();
    Ok(Setup {
        dir,
        subjects,
        pool,
        pool_next: Arc::default(),
        chain_pem: String::new(),
    })
}

/// One measured run.
struct Run {
    clients: usize,
    new_accounts: bool,
    issued: usize,
    errors: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu_ms: f64,
    /// The bench process's own CPU (the clients: JWS, TLS, HTTP, attestations) per issuance.
    client_cpu_ms: f64,
    fsyncs: Option<f64>,
    verifies: f64,
    signs: f64,
}

/// What all `servers` did so far, added up.
fn sample_all(servers: &mut [ServerProcess]) -> BoxResult<Sample> {
    let mut total = Sample {
        cpu_ms: 0.0,
        counters: Default::default(),
    };
    for server in servers.iter_mut() {
        let s = server.sample()?;
        total.cpu_ms += s.cpu_ms;
        total.counters.requests += s.counters.requests;
        total.counters.signatures_verified += s.counters.signatures_verified;
        total.counters.certificates_signed += s.counters.certificates_signed;
    }
    Ok(total)
}

/// The directory URL of the replica client `i` talks to (client-side round robin).
fn directory_of(servers: &[ServerProcess], i: usize) -> String {
    let port = servers[i % servers.len()].port;
    format!("https://localhost:{port}/acme/directory")
}

async fn run(
    servers: &mut [ServerProcess],
    setup: &Setup,
    accounts: &[Account],
    clients: usize,
    new_accounts: bool,
    secs: u64,
) -> BoxResult<(Run, Option<String>)> {
    let tls_root = TlsFiles::in_dir(setup.dir.path()).cert;
    // Reused accounts were made before the clock started; new ones each take a fresh party.
    let accounts: Vec<Option<Account>> = (0..clients)
        .map(|i| (!new_accounts).then(|| accounts[i].clone()))
        .collect();
    let fsync_counts: Vec<_> = servers
        .iter()
        .map(|s| s.count_fsyncs(&format!("{}-{clients}-{new_accounts}", s.pid)))
        .collect();
    let before: Sample = sample_all(servers)?;
    let client_before = server::cpu_ms(std::process::id())?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, (subject, account)) in setup.subjects.iter().cloned().zip(accounts).enumerate() {
        let (tls_root, directory) = (tls_root.clone(), directory_of(servers, i));
        let (pool, pool_next) = (setup.pool, setup.pool_next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut last_chain = None;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let outcome = async {
                    match &account {
                        Some(account) => client::issue(account, &subject).await.map(|r| r.1),
                        None => {
                            let n = pool_next.fetch_add(1, Ordering::Relaxed);
                            if n >= pool {
                                return Err("BENCH_POOL exhausted".into());
                            }
                            let party = parties::party(true, n);
                            let fresh = Subject::new(
                                subject.device.clone(),
                                &party.origin,
                                &party.kid,
                                "tv",
                            );
                            let account =
                                client::new_account(&tls_root, &directory, &party.kid).await?;
                            client::issue(&account, &fresh).await.map(|r| r.1)
                        }
                    }
                }
                .await;
                match outcome {
                    Ok(chain) => {
                        latencies.push(t0.elapsed());
                        last_chain = Some(chain);
                    }
                    Err(error) => errors.push(error.to_string()),
                }
            }
            (latencies, errors, last_chain)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let mut chain = None;
    for task in tasks {
        let (l, e, c) = task.await?;
        latencies.extend(l);
        errors.extend(e);
        chain = chain.or(c);
    }
    let elapsed = start.elapsed();
    let client_after = server::cpu_ms(std::process::id())?;
    let after = sample_all(servers)?;
    let fsyncs = fsync_counts
        .into_iter()
        .map(|c| c.and_then(server::FsyncCount::stop))
        .sum::<Option<u64>>();
    if let Some(first) = errors.first() {
        eprintln!("  {} failed issuance(s), first: {first}", errors.len());
    }
    latencies.sort();
    let issued = latencies.len();
    let per = |x: f64| x / issued.max(1) as f64;
    let pick = |q: f64| {
        latencies
            .get(((issued as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Ok((
        Run {
            clients,
            new_accounts,
            issued,
            errors: errors.len(),
            rate: issued as f64 / elapsed.as_secs_f64(),
            p50: pick(0.50),
            p99: pick(0.99),
            cpu_ms: per(after.cpu_ms - before.cpu_ms),
            client_cpu_ms: per(client_after - client_before),
            fsyncs: fsyncs.map(|f| per(f as f64)),
            verifies: per(
                (after.counters.signatures_verified - before.counters.signatures_verified) as f64,
            ),
            signs: per(
                (after.counters.certificates_signed - before.counters.certificates_signed) as f64,
            ),
        },
        chain,
    ))
}

fn print_header() {
    println!(
        "{:>7} {:>8} {:>8} {:>6} {:>11} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>6} {:>10} {:>9} {:>7} {:>8} {:>6} {:>9} {:>8} {:>8}",
        "clients",
        "accounts",
        "issued",
        "errors",
        "issuances/s",
        "p50 ms",
        "p99 ms",
        "cpu ms/i",
        "client ms",
        "fsyncs/i",
        "verif/i",
        "sign/i",
        "crypto/cpu",
        "verify us",
        "sign us",
        "bound/s",
        "ratio",
        "machine/s",
        "fsync ms",
        "fsync/s"
    );
}

fn print_run(r: &Run, (verify, sign, fsync): (Duration, Duration, Duration), cores: f64) -> f64 {
    let crypto = r.verifies * verify.as_secs_f64() + r.signs * sign.as_secs_f64();
    let bound = if crypto > 0.0 { cores / crypto } else { 0.0 };
    println!(
        "{:>7} {:>8} {:>8} {:>6} {:>11.1} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>9} {:>7.2} {:>6.2} {:>10.3} {:>9.1} {:>7.1} {:>8.0} {:>6.3} {:>9.0} {:>8.2} {:>8.0}",
        r.clients,
        if r.new_accounts { "new" } else { "reused" },
        r.issued,
        r.errors,
        r.rate,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.cpu_ms,
        r.client_cpu_ms,
        r.fsyncs
            .map_or_else(|| "n/a".to_owned(), |f| format!("{f:.2}")),
        r.verifies,
        r.signs,
        crypto * 1e3 / r.cpu_ms,
        verify.as_secs_f64() * 1e6,
        sign.as_secs_f64() * 1e6,
        bound,
        if bound > 0.0 { r.rate / bound } else { 0.0 },
        cores * 1e3 / (r.cpu_ms + r.client_cpu_ms),
        fsync.as_secs_f64() * 1e3,
        r.clients as f64 / (sequential_commits(r.new_accounts) * fsync.as_secs_f64()),
    );
    r.rate
}

/// Runs `runs` against `replicas` server processes on `db` (replicas share a nonce key).
async fn series(
    setup: &mut Setup,
    db: &Path,
    label: &str,
    runs: &[(usize, bool)],
    (secs, cores, replicas): (u64, f64, usize),
) -> BoxResult<Vec<f64>> {
    let nonce_key = (replicas > 1).then(|| {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut key).unwrap();
        hex::encode(key)
    });
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(ServerProcess::start(
            setup.dir.path(),
            db,
            nonce_key.as_deref(),
        )?);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let pids: Vec<String> = servers
        .iter()
        .map(|s| format!("pid {} on port {}", s.pid, s.port))
        .collect();
    println!(
        "\n{label}: server {}; load average {}",
        pids.join(", "),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    print_header();
    // One account per client's party, made once: its EAB key binds it.
    let tls_root = TlsFiles::in_dir(setup.dir.path()).cert;
    let mut accounts = Vec::new();
    let reused = runs.iter().filter(|r| !r.1).map(|r| r.0).max().unwrap_or(0);
    for (i, subject) in setup.subjects[..reused].iter().enumerate() {
        let directory = directory_of(&servers, i);
        accounts.push(client::new_account(&tls_root, &directory, &subject.kid).await?);
    }
    let mut rates = Vec::new();
    for &(clients, new_accounts) in runs {
        // The crypto costs are measured again next to each run: the machine's load changes.
        let (verify, sign) = crypto_costs();
        let fsync = fsync_cost(setup.dir.path())?;
        let (r, chain) = run(&mut servers, setup, &accounts, clients, new_accounts, secs).await?;
        rates.push(print_run(&r, (verify, sign, fsync), cores));
        if setup.chain_pem.is_empty() {
            setup.chain_pem = chain.unwrap_or_default();
        }
    }
    for server in servers {
        server.stop()?;
    }
    Ok(rates)
}

fn main() -> BoxResult<()> {
    if let Ok(dir) = std::env::var(server::SERVER_ENV) {
        let db = PathBuf::from(std::env::var(server::DB_ENV)?);
        return server::run(Path::new(&dir), &db);
    }
    let secs: u64 = env_or("BENCH_SECS", 5);
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8,32,128".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let million: u64 = env_or("BENCH_MILLION", 1_000_000);
    let pool: usize = env_or("BENCH_POOL", 50_000);
    let max_clients = clients.iter().copied().max().unwrap_or(1);
    let with_new = env_or("BENCH_NEW", 1) != 0;
    let off = server::levers_off()?;
    for (lever, what) in server::LEVERS {
        if off.iter().any(|o| o == lever) {
            println!("lever OFF: {lever} ({what})");
        }
    }
    let mut setup = setup(max_clients, if with_new { pool } else { 0 })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "{cores} cores; bound/s = cores / (verif/i x verify + sign/i x sign), the CPU cost of \
         each measured with ring just before each run; ratio = issuances/s / bound/s; \
         crypto/cpu = that crypto CPU / the server's CPU per issuance; client ms = the bench's \
         own CPU per issuance (its clients share the cores); machine/s = cores / (cpu ms/i + \
         client ms): the rate if the machine ran nothing else; fsync ms = the median \
         fdatasync of 4 KiB on the database's disk just before each run; fsync/s = clients / \
         (3 durable commits an issuance waits for one after the other, 4 with a new account, \
         x fsync ms): the rate if each client waited for nothing but one fsync per commit"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut runs: Vec<(usize, bool)> = clients.iter().map(|&c| (c, false)).collect();
        if with_new {
            runs.extend(clients.iter().map(|&c| (c, true)));
        }
        let fresh_db = setup.dir.path().join("fresh.sqlite");
        let fresh = series(&mut setup, &fresh_db, "fresh", &runs, (secs, cores, 1)).await?;
        if let Ok(url) = std::env::var("BENCH_POSTGRES_URL") {
            let store = server::open_postgres(&url, 2)?;
            parties::register_in(&store, setup.subjects.len())?;
            drop(store);
            let reused: Vec<(usize, bool)> = clients.iter().map(|&c| (c, false)).collect();
            let label = "2 replicas + PostgreSQL (reused accounts; its fsyncs not counted)";
            let db = PathBuf::from(&url);
            series(&mut setup, &db, label, &reused, (secs, cores, 2)).await?;
        }
        if million == 0 {
            return Ok(());
        }
        let big_db = setup.dir.path().join("million.sqlite");
        let start = Instant::now();
        million::generate(&big_db, setup.subjects.len(), million, &setup.chain_pem)?;
        let size = std::fs::metadata(&big_db)?.len();
        println!(
            "\ngenerated {million} issued certificates in {:.1} s ({} MB)",
            start.elapsed().as_secs_f64(),
            size / 1_000_000
        );
        let big_runs: Vec<(usize, bool)> = clients
            .iter()
            .filter(|&&c| c == 8 || c == 128)
            .map(|&c| (c, false))
            .collect();
        let big = series(&mut setup, &big_db, "million", &big_runs, (secs, cores, 1)).await?;
        for ((clients, _), rate) in big_runs.iter().zip(&big) {
            if let Some(i) = runs.iter().position(|r| *r == (*clients, false)) {
                println!(
                    "{clients} clients: million-certificate database at {:.2} of fresh",
                    rate / fresh[i]
                );
            }
        }
        Ok(())
    })
}
