//! The issuer in a child process, as in production (HTTPS, the durable SQLite store, its own
//! runtime): the crash and load tests run their own test binary again with an environment
//! variable naming the state directory, and the child serves there until it is killed.
//! It prints `ready PORT` once it listens.

use std::io::Write;
use std::path::Path;
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
