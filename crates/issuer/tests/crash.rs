//! The issuer process killed with SIGKILL at random points under load, 100 times: every
//! certificate a client received is in the database, and no order was issued twice.
//!
//! Ignored by a plain `cargo test` (about a minute in release mode); run with
//! `cargo test --release -p localcert-issuer --test crash -- --ignored`. The issuer runs in a
//! child process: this test binary again, told by `CRASH_SERVER_DIR` to serve instead of test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::Manufacturer;
use common::issuance::{HMAC, Subject, issue, new_account};
use localcert_issuer::ca::{self, CaFiles, TlsFiles};
use localcert_issuer::store::{RelyingParty, RelyingPartyStatus, SqliteStore, Store};
use localcert_proto::origin::Origin;
use ring::rand::{SecureRandom, SystemRandom};

const KID: &str = "kid-crash";
const ROUNDS: usize = 100;
const CLIENTS: usize = 8;
const SERVER_ENV: &str = "CRASH_SERVER_DIR";

/// The child: serves until killed.
#[test]
#[ignore = "run by the crash test in a child process"]
fn crash_server_child() {
    let Ok(dir) = std::env::var(SERVER_ENV) else {
        return;
    };
    common::child::serve(Path::new(&dir));
}

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % n
}

#[test]
#[ignore = "about a minute in release mode: cargo test --release --test crash -- --ignored"]
fn kill_9_under_load_loses_no_acknowledged_issuance() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    ca::init_ca(&CaFiles::in_dir(dir.path()), "crash", now).unwrap();
    let tls_files = TlsFiles::in_dir(dir.path());
    ca::init_tls(&tls_files, now).unwrap();
    // An EAB key binds one account, and every client makes a new account each round: one
    // relying party per client and round.
    let party = |round: usize, client: usize| {
        (
            Origin::parse(&format!("https://r{round}c{client}.example.com")).unwrap(),
            format!("{KID}-{round}-{client}"),
        )
    };
    {
        let store = SqliteStore::open(&dir.path().join("issuer.sqlite")).unwrap();
        for round in 0..ROUNDS {
            for client in 0..CLIENTS {
                let (origin, kid) = party(round, client);
                store
                    .add_relying_party(&RelyingParty {
                        origin,
                        eab_kid: kid,
                        eab_hmac_key: HMAC.to_vec(),
                        status: RelyingPartyStatus::Active,
                        created: now,
                    })
                    .unwrap();
            }
        }
    }
    let maker = Manufacturer::new("Crash TVs");
    std::fs::write(
        dir.path().join(common::child::MANUFACTURER_ROOT),
        &maker.root_der,
    )
    .unwrap();
    let devices: Vec<_> = (0..CLIENTS)
        .map(|i| Arc::new(maker.device(&format!("{i:04}"))))
        .collect();
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..ROUNDS {
        let (mut child, port) = common::child::spawn("crash_server_child", SERVER_ENV, dir.path());
        let directory = format!("https://localhost:{port}/acme/directory");
        let kill_after = Duration::from_millis(100 + random_below(900));
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for (i, device) in devices.iter().enumerate() {
                let (origin, kid) = party(round, i);
                let (device, received) = (device.clone(), received.clone());
                let (directory, root) = (directory.clone(), tls_files.cert.clone());
                tasks.push(tokio::spawn(async move {
                    // Until the server dies: each certificate received is recorded with its order.
                    let Ok(account) = new_account(&root, &directory, &kid).await else {
                        return;
                    };
                    let subject = Subject::new((*device).clone(), &origin, &kid, "tv");
                    while let Ok((order_url, chain)) = issue(&account, &subject).await {
                        received.lock().unwrap().push((order_url, chain));
                    }
                }));
            }
            tokio::time::sleep(kill_after).await;
            child.kill().unwrap();
            for task in tasks {
                let _ = task.await;
            }
        });
        child.wait().unwrap();
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} certificates received so far",
            received.lock().unwrap().len()
        );
    }

    // Every certificate a client received is in the database, under the order it came from,
    // and no order has more than one certificate.
    let store = SqliteStore::open(&dir.path().join("issuer.sqlite")).unwrap();
    let received = received.lock().unwrap();
    assert!(
        received.len() >= ROUNDS,
        "too few issuances to mean anything: {}",
        received.len()
    );
    let mut orders = std::collections::HashSet::new();
    for (order_url, chain) in received.iter() {
        let leaf = ca::pem_blocks(chain.as_bytes(), "CERTIFICATE")
            .unwrap()
            .remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let serial = hex::encode(parsed.raw_serial());
        let record = store
            .certificate_by_serial(&serial)
            .unwrap()
            .unwrap_or_else(|| panic!("certificate {serial} was handed out but not recorded"));
        assert_eq!(record.chain_pem, *chain);
        let order_id = order_url.rsplit('/').next().unwrap();
        assert_eq!(record.order_id, order_id);
        assert!(
            orders.insert(order_id.to_owned()),
            "order {order_id} issued twice"
        );
        let order = store.order(order_id).unwrap().unwrap();
        assert_eq!(order.certificate_id.as_deref(), Some(record.id.as_str()));
    }
    let db = rusqlite::Connection::open(dir.path().join("issuer.sqlite")).unwrap();
    let twice: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT order_id FROM certificates
                 GROUP BY order_id HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "orders with two certificates in the database");
    let issued = store
        .audit_log(usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "issued")
        .count();
    assert!(
        issued >= received.len(),
        "{issued} issued, {} received",
        received.len()
    );
    eprintln!(
        "{} certificates received in {ROUNDS} crashes, all recorded once; {issued} recorded",
        received.len()
    );
}
