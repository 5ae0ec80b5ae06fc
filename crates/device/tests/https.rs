//! HTTPS over loopback with a rustls client: certificates by SNI, hot swap on renewal without
//! dropping open connections, and CORS only for the bound origin.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use localcert_device::https::{self, Sites};
use localcert_device::pki::SecretKey;
use localcert_device::store::Binding;
use localcert_proto::message::CorsPolicy;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rustls_pki_types::{CertificateDer, ServerName};

const ORIGIN: &str = "https://vod.example.com";

struct Ca {
    root: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&key).unwrap().der().to_vec();
    Ca {
        root,
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn binding(ca: &Ca, name: &str, origin: &str, credentials: bool, serial: u8) -> Binding {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.serial_number = Some(vec![serial].into());
    let leaf = params.signed_by(&key, &ca.issuer).unwrap();
    Binding {
        origin: Origin::parse(origin).unwrap(),
        name: LocalName::parse(name).unwrap(),
        key: SecretKey::from_pkcs8_der(key.serialize_der()),
        chain: vec![leaf.der().to_vec()],
        cors: CorsPolicy {
            methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["content-type".into(), "x-token".into()],
            expose_headers: vec!["x-served-by".into()],
            allow_credentials: credentials,
            max_age: 600,
        },
        star_url: None,
        user_handle_digest: [0; 32],
        not_after: 0,
    }
}

async fn handler(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
    response
        .headers_mut()
        .insert("x-served-by", "firmware".parse().unwrap());
    // A careless handler: the CORS layer must not let this through.
    response
        .headers_mut()
        .insert("access-control-allow-origin", "*".parse().unwrap());
    Ok(response)
}

async fn start(sites: Arc<Sites>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(https::serve(
        listener,
        sites,
        tower::service_fn(handler),
        std::future::pending(),
    ));
    addr
}

struct Client {
    sender: SendRequest<Empty<Bytes>>,
    peer_leaf: Vec<u8>,
}

async fn connect(addr: SocketAddr, name: &str, root: &[u8]) -> std::io::Result<Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(root.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    let peer_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok(Client { sender, peer_leaf })
}

async fn request(
    client: &mut Client,
    method: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap) {
    let mut builder = Request::builder().method(method).uri("/api");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    client.sender.ready().await.unwrap();
    let response = client
        .sender
        .send_request(builder.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    response.into_body().collect().await.unwrap();
    (status, headers)
}

fn vary_has_origin(h: &http::HeaderMap) -> bool {
    h.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("origin"))
    })
}

#[tokio::test]
async fn cors_answers_only_the_bound_origin() {
    let ca = ca();
    let sites = Sites::new();
    let tv = binding(&ca, "tv-test.local", ORIGIN, true, 1);
    sites.apply(&tv).unwrap();
    let addr = start(sites).await;
    let mut c = connect(addr, "tv-test.local", &ca.root).await.unwrap();

    let (status, h) = request(&mut c, "GET", &[("origin", ORIGIN)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "x-served-by");
    assert_eq!(h["x-served-by"], "firmware");
    assert_eq!(
        h.get_all("access-control-allow-origin").iter().count(),
        1,
        "no `*` left"
    );
    assert!(vary_has_origin(&h));

    for other in [
        "https://evil.example.com",
        "https://vod.example.com:8443",
        "null",
    ] {
        let (status, h) = request(&mut c, "GET", &[("origin", other)]).await;
        assert_eq!(status, StatusCode::OK, "the handler still runs");
        assert!(h.get("access-control-allow-origin").is_none(), "{other}");
        assert!(h.get("access-control-allow-credentials").is_none());
        assert!(vary_has_origin(&h));
    }
    let (_, h) = request(&mut c, "GET", &[]).await;
    assert!(h.get("access-control-allow-origin").is_none());

    let preflight = [
        ("origin", ORIGIN),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-token"),
    ];
    let (status, h) = request(&mut c, "OPTIONS", &preflight).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-token");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(vary_has_origin(&h));

    let (status, h) = request(
        &mut c,
        "OPTIONS",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")));
}

#[tokio::test]
async fn two_origin_fields_get_no_cors_whatever_their_order() {
    let ca = ca();
    let sites = Sites::new();
    sites
        .apply(&binding(&ca, "tv-test.local", ORIGIN, true, 1))
        .unwrap();
    let addr = start(sites).await;
    let mut c = connect(addr, "tv-test.local", &ca.root).await.unwrap();
    let evil = "https://evil.example.com";
    for pair in [[ORIGIN, evil], [evil, ORIGIN], [ORIGIN, ORIGIN]] {
        let headers = [("origin", pair[0]), ("origin", pair[1])];
        let (status, h) = request(&mut c, "GET", &headers).await;
        assert_eq!(status, StatusCode::OK, "the handler still runs");
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{pair:?}: {h:?}"
        );
        assert!(vary_has_origin(&h));
        let preflight = [
            ("origin", pair[0]),
            ("origin", pair[1]),
            ("access-control-request-method", "PUT"),
        ];
        let (status, h) = request(&mut c, "OPTIONS", &preflight).await;
        assert_ne!(status, StatusCode::NO_CONTENT, "{pair:?}");
        assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")));
    }
}

#[tokio::test]
async fn credentials_only_when_the_policy_allows_and_sni_picks_the_binding() {
    let ca = ca();
    let sites = Sites::new();
    sites
        .apply(&binding(&ca, "tv-a.local", ORIGIN, true, 1))
        .unwrap();
    sites
        .apply(&binding(
            &ca,
            "tv-b.local",
            "https://app.example.com",
            false,
            2,
        ))
        .unwrap();
    let addr = start(sites).await;

    let mut b = connect(addr, "tv-b.local", &ca.root).await.unwrap();
    let (_, h) = request(&mut b, "GET", &[("origin", "https://app.example.com")]).await;
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(h.get("access-control-allow-credentials").is_none());
    // tv-a's origin gets nothing on tv-b's name.
    let (_, h) = request(&mut b, "GET", &[("origin", ORIGIN)]).await;
    assert!(h.get("access-control-allow-origin").is_none());

    assert!(
        connect(addr, "unknown.local", &ca.root).await.is_err(),
        "no certificate for it"
    );
}

#[tokio::test]
async fn renewal_swaps_the_certificate_without_dropping_open_connections() {
    let ca = ca();
    let sites = Sites::new();
    let old = binding(&ca, "tv-test.local", ORIGIN, false, 1);
    sites.apply(&old).unwrap();
    let addr = start(sites.clone()).await;

    let mut open = connect(addr, "tv-test.local", &ca.root).await.unwrap();
    assert_eq!(open.peer_leaf, old.chain[0]);
    request(&mut open, "GET", &[]).await;

    let renewed = binding(&ca, "tv-test.local", ORIGIN, false, 2);
    sites.apply(&renewed).unwrap();
    let (status, _) = request(&mut open, "GET", &[("origin", ORIGIN)]).await;
    assert_eq!(status, StatusCode::OK, "the open connection keeps working");
    let fresh = connect(addr, "tv-test.local", &ca.root).await.unwrap();
    assert_eq!(fresh.peer_leaf, renewed.chain[0]);

    sites.remove(&renewed.name);
    assert!(connect(addr, "tv-test.local", &ca.root).await.is_err());
    let (status, _) = request(&mut open, "GET", &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "removal does not cut open connections"
    );
}

#[tokio::test]
async fn connections_are_bounded_and_slots_come_back() {
    let ca = ca();
    let sites = Sites::new();
    sites
        .apply(&binding(&ca, "tv-test.local", ORIGIN, false, 1))
        .unwrap();
    let addr = start(sites).await;
    let mut idle = Vec::new();
    for _ in 0..https::MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert!(
        connect(addr, "tv-test.local", &ca.root).await.is_err(),
        "one connection over the limit is closed"
    );
    drop(idle);
    // The slots come back as the server sees the idle connections close.
    let mut ok = false;
    for _ in 0..200 {
        if connect(addr, "tv-test.local", &ca.root).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(ok, "connections are accepted again");
}
