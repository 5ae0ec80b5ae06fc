//! The reference daemon: starts from a config file, serves a binding it finds in its store over
//! HTTPS with CORS, reports it with `status`, stops on SIGTERM, and `reset --yes` empties it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use localcert_device::pki::SecretKey;
use localcert_device::store::{Binding, BindingStore, DirStore};
use localcert_proto::message::CorsPolicy;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

const BIN: &str = env!("CARGO_BIN_EXE_localcert-device");
const NAME: &str = "tv-daemon-test.local";
const ORIGIN: &str = "https://vod.example.com";

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/devices/device-1")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn daemon_serves_stored_bindings_and_reports_them() {
    let dir = std::env::temp_dir().join(format!("lc-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // A binding as an earlier INSTALL would have left it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    {
        let (mut store, _) = DirStore::open(dir.join("store")).unwrap();
        store
            .put(Binding {
                granted: 1_795_996_800,
                star_ended: None,
                origin: Origin::parse(ORIGIN).unwrap(),
                name: LocalName::parse(NAME).unwrap(),
                key: SecretKey::from_pkcs8_der(key.serialize_der()).into(),
                chain: vec![leaf.der().to_vec()],
                cors: CorsPolicy {
                    methods: vec!["GET".into()],
                    allow_headers: vec![],
                    expose_headers: vec![],
                    allow_credentials: false,
                    max_age: 60,
                },
                star_url: None,
                user_handle_digest: [0; 32],
                not_after: 4_000_000_000,
            })
            .unwrap();
    }
    std::fs::write(dir.join("issuer-root.pem"), ca.pem()).unwrap();
    let port = free_port();
    let config = dir.join("device.toml");
    std::fs::write(
        &config,
        format!(
            r#"
product = "Daemon Test TV"
store_dir = "{store}"
attestation_key = "{key}"
attestation_chain = "{chain}"
issuer_roots = "{roots}"
presence = "auto"
https_port = {port}
https_listen = "127.0.0.1"
[ble]
enabled = false
[mdns]
enabled = false
"#,
            store = dir.join("store").display(),
            key = fixtures().join("attestation.key.pem").display(),
            chain = fixtures().join("attestation.pem").display(),
            roots = dir.join("issuer-root.pem").display(),
        ),
    )
    .unwrap();

    let mut daemon = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // Wait (bounded) until it listens.
    let mut tcp = None;
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            tcp = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tcp = tcp.expect("the daemon did not start listening");
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(
            rustls_pki_types::ServerName::try_from(NAME.to_owned()).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::get("/status")
                .header("origin", ORIGIN)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);

    let status = Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(status.status.success());
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["bindings"][0]["name"], NAME);
    assert_eq!(json["bindings"][0]["origin"], ORIGIN);
    assert_eq!(json["bindings"][0]["granted_utc"], "2026-11-30T00:00:00Z");
    assert_eq!(json["bindings"][0]["star"], false);
    assert_eq!(json["bindings"][0]["star_state"], "none");
    let text = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("1 web origin may call this device"), "{text}");
    assert!(
        text.contains(&format!(
            "\n{ORIGIN}\n  name     {NAME}\n  granted  2026-11-30T00:00:00Z\n"
        )),
        "{text}"
    );

    let pid = daemon.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(daemon.wait().unwrap().success(), "clean exit on SIGTERM");

    let reset = Command::new(BIN)
        .args(["reset", "--yes", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(reset.status.success());
    let (store, _) = DirStore::open(dir.join("store")).unwrap();
    assert!(store.bindings().is_empty());

    std::fs::write(&config, "product = \"x\"\nbogus = 1\n").unwrap();
    let bad = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bogus"));
    std::fs::remove_dir_all(&dir).unwrap();
}
