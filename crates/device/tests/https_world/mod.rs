//! The device's HTTPS server on loopback for the tests (`https.rs`, `https_raw.rs`,
//! `https_soak.rs`): a test CA, bindings, a careless handler, the server, a rustls client.

// Each test crate that includes this uses part of it; they allow unwrap/expect/panic.
#![allow(dead_code, unreachable_pub)]

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

pub const ORIGIN: &str = "https://vod.example.com";

pub struct Ca {
    pub root: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&key).unwrap().der().to_vec();
    Ca {
        root,
        issuer: rcgen::Issuer::new(params, key),
    }
}

pub fn binding(ca: &Ca, name: &str, origin: &str, credentials: bool, serial: u8) -> Binding {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.serial_number = Some(vec![serial].into());
    let leaf = params.signed_by(&key, &ca.issuer).unwrap();
    Binding {
        granted: 0,
        star_ended: None,
        origin: Origin::parse(origin).unwrap(),
        name: LocalName::parse(name).unwrap(),
        key: SecretKey::from_pkcs8_der(key.serialize_der()).into(),
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

/// The size of the body served at `/big`.
pub const BIG_BODY_LEN: usize = 16 * 1024 * 1024;

/// "hello", or at `/big` [`BIG_BODY_LEN`] bytes of `a`.
pub async fn handler(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if request.uri().path() == "/big" {
        Bytes::from(vec![b'a'; BIG_BODY_LEN])
    } else {
        Bytes::from_static(b"hello")
    };
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert("x-served-by", "firmware".parse().unwrap());
    // A careless handler: the CORS layer must not let this through.
    response
        .headers_mut()
        .insert("access-control-allow-origin", "*".parse().unwrap());
    Ok(response)
}

pub async fn start(sites: Arc<Sites>) -> SocketAddr {
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

pub struct Client {
    pub sender: SendRequest<Empty<Bytes>>,
    pub peer_leaf: Vec<u8>,
}

pub async fn connect(addr: SocketAddr, name: &str, root: &[u8]) -> std::io::Result<Client> {
    let tls = tls_connect(addr, name, root).await?;
    let peer_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok(Client { sender, peer_leaf })
}

pub async fn request(
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

pub fn vary_has_origin(h: &http::HeaderMap) -> bool {
    h.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("origin"))
    })
}

/// A TLS connection to the server, asking for `name` by SNI, trusting `root`.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    root: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
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
    connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

/// A server with one binding, `tv-test.local` for [`ORIGIN`]; its address and the CA root.
pub async fn start_one() -> (SocketAddr, Vec<u8>) {
    let ca = ca();
    let sites = Sites::new();
    sites
        .apply(&binding(&ca, "tv-test.local", ORIGIN, false, 1))
        .unwrap();
    (start(sites).await, ca.root)
}
