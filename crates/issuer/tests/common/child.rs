//! The issuer in a child process, as in production (HTTPS, the durable SQLite store, its own
//! runtime): the crash and load tests run their own test binary again with an environment
//! variable naming the state directory, and the child serves there until it is killed.
//! It prints `ready PORT` once it listens.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use localcert_issuer::acme::{AcmeServer, Policy};
use localcert_issuer::ca::{CaFiles, IssuingCa, TlsFiles};
use localcert_issuer::serve;
use localcert_issuer::store::SqliteStore;
use localcert_issuer::validate::TrustConfig;

/// The manufacturer root (DER) the child trusts, in the state directory.
pub const MANUFACTURER_ROOT: &str = "manufacturer-root.der";

/// Serves the issuer of `dir` (CA, TLS files, issuer.sqlite, the manufacturer root) forever.
pub fn serve(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ca = IssuingCa::load(&CaFiles::in_dir(dir)).unwrap();
        let root = std::fs::read(dir.join(MANUFACTURER_ROOT)).unwrap();
        let trust = TrustConfig::new(&[root], []).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.join("issuer.sqlite")).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("https://localhost:{port}");
        let server = Arc::new(AcmeServer::new(store, ca, trust, Policy::default(), &base));
        let tls_files = TlsFiles::in_dir(dir);
        let tls = serve::tls_config(&tls_files.cert, &tls_files.key).unwrap();
        println!("ready {port}");
        std::io::stdout().flush().unwrap();
        serve::serve(
            listener,
            tls,
            server,
            Duration::from_secs(3600),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
}

/// Starts this test binary again as the child running the ignored test `test` (which calls
/// [`serve`] when `env` names a directory) on `dir`, and returns it with its port once ready.
pub fn spawn(test: &str, env: &str, dir: &Path) -> (Child, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", test, "--nocapture"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("server ended before ready").unwrap();
        if let Some(port) = line.strip_prefix("ready ") {
            break port.trim().parse().unwrap();
        }
    };
    // Keep reading: a closed pipe would kill the child at its next line of output.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}
