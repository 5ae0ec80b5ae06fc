//! Load (issue 13): 256 concurrent ACME clients (instant-acme, each with its own relying party
//! and account) doing full issuances back to back for 60 s against the issuer in its own
//! process on loopback. It must end with 0 errors, the server's memory bounded (its resident
//! size sampled every 5 s: the last third of the run may not grow it by more than
//! `RSS_GROWTH_BOUND`, nor may it pass `RSS_BOUND`), and the audit log growing by exactly 3 rows
//! per issuance (order created, attested, issued: no refusal, no error row), window by window.
//!
//! Ignored by a plain `cargo test`; run in release mode:
//! `cargo test --release -p localcert-issuer --test load -- --ignored --nocapture`
//! (`LOAD_SECS` and `LOAD_CLIENTS` override 60 and 256).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::Manufacturer;
use common::issuance::{HMAC, Subject, issue, new_account};
use localcert_issuer::ca::{self, CaFiles, TlsFiles};
use localcert_issuer::store::{RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use localcert_proto::origin::Origin;

const SERVER_ENV: &str = "LOAD_SERVER_DIR";
/// The most the server's resident size may grow over the last third of the run.
const RSS_GROWTH_BOUND: u64 = 32 << 20;
/// The most the server's resident size may reach.
const RSS_BOUND: u64 = 512 << 20;
/// Audit rows per issuance: order-created, attested, issued.
const AUDIT_ROWS_PER_ISSUANCE: u64 = 3;

/// The child: serves until killed.
#[test]
#[ignore = "run by the load test in a child process"]
fn load_server_child() {
    if let Ok(dir) = std::env::var(SERVER_ENV) {
        common::child::serve(Path::new(&dir));
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// (audit rows, certificates) in the database now.
fn counts(db: &rusqlite::Connection) -> (u64, u64) {
    db.query_row(
        "SELECT (SELECT count(*) FROM audit), (SELECT count(*) FROM certificates)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
#[ignore = "60 s of load, in release mode: cargo test --release --test load -- --ignored"]
fn concurrent_clients_for_a_minute_leave_no_error_bounded_memory_and_constant_audit_growth() {
    let secs = env_or("LOAD_SECS", 60);
    let clients = env_or("LOAD_CLIENTS", 256) as usize;
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    ca::init_ca(&CaFiles::in_dir(dir.path()), "load", now).unwrap();
    let tls_files = TlsFiles::in_dir(dir.path());
    ca::init_tls(&tls_files, now).unwrap();
    let maker = Manufacturer::new("Load TVs");
    std::fs::write(
        dir.path().join(common::child::MANUFACTURER_ROOT),
        &maker.root_der,
    )
    .unwrap();
    let db_path = dir.path().join("issuer.sqlite");
    let mut subjects = Vec::new();
    {
        let store = SqliteStore::open(&db_path).unwrap();
        for i in 0..clients {
            let origin = Origin::parse(&format!("https://c{i}.load.example")).unwrap();
            let kid = format!("kid-load-{i}");
            store
                .add_relying_party(&RelyingParty {
                    origin: origin.clone(),
                    eab_kid: kid.clone(),
                    eab_hmac_key: HMAC.to_vec(),
                    status: RelyingPartyStatus::Active,
                    created: now,
                })
                .unwrap();
            let device = maker.device(&format!("{i:04}"));
            subjects.push(Arc::new(Subject::new(device, &origin, &kid, "tv")));
        }
    }
    let (mut child, port) = common::child::spawn("load_server_child", SERVER_ENV, dir.path());
    let pid = child.id();
    let directory = format!("https://localhost:{port}/acme/directory");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let errors = Arc::new(AtomicUsize::new(0));
    let (audit_start, samples, issued) = runtime.block_on(async {
        // Accounts first (their audit rows are not issuances).
        let mut accounts = Vec::new();
        for subject in &subjects {
            accounts.push(
                new_account(&tls_files.cert, &directory, &subject.kid)
                    .await
                    .unwrap(),
            );
        }
        let (audit_start, _) = counts(&db);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for (subject, account) in subjects.iter().cloned().zip(accounts) {
            let errors = errors.clone();
            tasks.push(tokio::spawn(async move {
                let mut issued = 0u64;
                while Instant::now() < deadline {
                    match issue(&account, &subject).await {
                        Ok(_) => issued += 1,
                        Err(error) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("issuance failed: {error}");
                            }
                        }
                    }
                }
                issued
            }));
        }
        // Every 5 s: (seconds, RSS, audit rows, certificates).
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (audit, certificates) = counts(&db);
            samples.push((start.elapsed().as_secs(), rss(pid), audit, certificates));
        }
        let mut issued = 0;
        for task in tasks {
            issued += task.await.unwrap();
        }
        (audit_start, samples, issued)
    });
    let (audit_end, certs_end) = counts(&db);
    let rss_end = rss(pid);
    child.kill().unwrap();
    child.wait().unwrap();

    let rate = issued as f64 / secs as f64;
    eprintln!(
        "{clients} clients, {secs} s: {issued} issuances ({rate:.0}/s), {} errors",
        errors.load(Ordering::Relaxed)
    );
    eprintln!("  s   RSS MiB  audit rows  certificates  rows/issuance in the window");
    let mut previous: Option<(u64, u64)> = None;
    for &(t, rss, audit, certificates) in &samples {
        let ratio = previous.map_or(String::new(), |(a, c)| {
            format!(
                "{:.3}",
                (audit - a) as f64 / (certificates - c).max(1) as f64
            )
        });
        eprintln!(
            "{t:>3} {:>9.1} {audit:>11} {certificates:>13}  {ratio}",
            rss as f64 / 1048576.0
        );
        previous = Some((audit, certificates));
    }
    eprintln!(
        "end {:>9.1} {audit_end:>11} {certs_end:>13}",
        rss_end as f64 / 1048576.0
    );

    assert_eq!(errors.load(Ordering::Relaxed), 0, "failed issuances");
    assert_eq!(
        certs_end, issued,
        "certificates in the database vs received"
    );
    // Every issuance added exactly its 3 rows; nothing else was written (no refusal, no error).
    assert_eq!(audit_end - audit_start, AUDIT_ROWS_PER_ISSUANCE * issued);
    // Window by window, the same growth, give or take the issuances in flight at a sample.
    let slack = 2 * clients as u64;
    for pair in samples.windows(2) {
        let (audit, certificates) = (pair[1].2 - pair[0].2, pair[1].3 - pair[0].3);
        assert!(
            audit.abs_diff(AUDIT_ROWS_PER_ISSUANCE * certificates) <= slack,
            "window ending at {} s: {audit} rows for {certificates} issuances",
            pair[1].0
        );
    }
    // Memory: bounded, and flat over the last third.
    let third = samples.len() * 2 / 3;
    let settled = samples[third.saturating_sub(1)].1;
    let peak = samples.iter().map(|s| s.1).max().unwrap().max(rss_end);
    assert!(peak <= RSS_BOUND, "RSS peaked at {} MiB", peak >> 20);
    assert!(
        rss_end.saturating_sub(settled) <= RSS_GROWTH_BOUND,
        "RSS grew from {} to {} MiB over the last third",
        settled >> 20,
        rss_end >> 20
    );
}
