//! Serving: the static directory (and nothing outside it), and the API over a real HTTPS
//! socket with the backend's own certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use localcert_rp::config::Limits;
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_static_directory_and_nothing_outside_it() {
    let issuer = Issuer::start().await;
    let site = tempfile::tempdir().unwrap();
    let web = site.path().join("web");
    std::fs::create_dir_all(web.join("example")).unwrap();
    std::fs::create_dir_all(web.join("dist")).unwrap();
    std::fs::write(web.join("example/index.html"), "<title>example</title>").unwrap();
    std::fs::write(web.join("dist/index.js"), "export {}").unwrap();
    std::fs::write(web.join(".env"), "SECRET").unwrap();
    std::fs::write(site.path().join("secret.txt"), "SECRET").unwrap();
    std::os::unix::fs::symlink(site.path().join("secret.txt"), web.join("link.txt")).unwrap();
    let mut config = issuer.config(Limits::default());
    config.static_dir = Some(web.clone());
    let backend = backend(&config);

    let (status, body) = Call::get("/example/").send_raw(&backend).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"<title>example</title>".as_slice())
    );
    let (status, body) = Call::get("/dist/index.js").send_raw(&backend).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"export {}".as_slice())
    );
    let (status, _) = Call::get("/example").send_raw(&backend).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    for path in [
        "/../secret.txt",
        "/example/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/.env",
        "/link.txt",
        "/missing.html",
        "/dist/",
    ] {
        let (status, body) = Call::get(path).send_raw(&backend).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path}");
    }
    // POST outside the API is not served either.
    let call = Call {
        path: "/example/".into(),
        ..Call::post("", &json!({}))
    };
    assert_eq!(call.send_raw(&backend).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_api_over_https_with_the_backends_own_certificate() {
    let issuer = Issuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.path().join("rp.pem");
    let key_path = dir.path().join("rp.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A key file others can read is refused.
    let e = localcert_rp::serve::tls_config(&cert_path, &key_path).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tls = localcert_rp::serve::tls_config(&cert_path, &key_path).unwrap();

    let backend = backend(&issuer.config(Limits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(localcert_rp::serve::serve(
        listener,
        Some(tls),
        backend.router(),
        async {
            let _ = stopped.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let exchange = |request: String| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            tls.read_to_string(&mut answer).await.unwrap();
            answer
        }
    };
    let answer = exchange(
        "GET /localcert/config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""origin":"https://vod.example.com""#),
        "{answer}"
    );
    let answer = exchange(
        "POST /localcert/flows HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            .into(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains(r#""error":"forbidden_origin""#), "{answer}");
    let _ = stop.send(());
    server.await.unwrap();
}
