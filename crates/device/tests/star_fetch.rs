//! The STAR fetcher against a loopback HTTPS server: a PEM chain, then the end of the
//! delegation as an RFC 7807 problem, and a server it must not trust.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use localcert_device::star::{Fetched, HttpsFetcher, StarFetch};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn ca_and_server_cert() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["issuer.test".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.der().to_vec(), cert.der().to_vec(), key.serialize_der())
}

#[tokio::test]
async fn fetches_the_chain_then_sees_the_end() {
    let (ca, cert, key) = ca_and_server_cert();
    let chain_pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert.clone()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let server_calls = calls.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let calls = server_calls.clone();
            let pem = chain_pem.clone();
            let service = hyper::service::service_fn(move |req| {
                assert_eq!(req.uri().path(), "/star/7");
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let pem = pem.clone();
                async move {
                    let response = if n == 0 {
                        Response::new(Full::new(Bytes::from(pem)))
                    } else {
                        let mut r = Response::new(Full::new(Bytes::from_static(
                            br#"{"type":"urn:ietf:params:acme:error:autoRenewalCanceled","detail":"cancelled"}"#,
                        )));
                        *r.status_mut() = StatusCode::FORBIDDEN;
                        r
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service),
            );
        }
    });

    let url = format!("https://issuer.test:{}/star/7", addr.port());
    let fetcher = HttpsFetcher::new(&[ca]).unwrap().resolve_to(addr);
    assert_eq!(
        fetcher.fetch(&url).await.unwrap(),
        Fetched::Chain(vec![cert])
    );
    assert_eq!(fetcher.fetch(&url).await.unwrap(), Fetched::Ended);

    let (other_ca, _, _) = ca_and_server_cert();
    let untrusting = HttpsFetcher::new(&[other_ca]).unwrap().resolve_to(addr);
    assert!(untrusting.fetch(&url).await.is_err(), "server not trusted");
    assert!(
        fetcher.fetch("http://issuer.test/star/7").await.is_err(),
        "https only"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
