//! The browser's flow without a browser: the RP backend's HTTP API on a loopback socket, the
//! real device engine over the in-memory link, and the real issuer. The test plays the page:
//! it relays the device's answers (the exact message bytes) to the backend and the backend's
//! fields to the device, then checks the device's endpoint as a browser at the origin would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ORIGIN, World};
use localcert_proto::message::{AttestRequest, CorsPolicy, InstallRequest, Request, Response};
use localcert_proto::name::{DeviceLabel, LocalName};
use localcert_proto::origin::Origin;
use localcert_rp::config::{Config, Limits, UserToken};
use localcert_rp::{AcmeSettings, Backend, Eab, TokenAuth};
use localcert_ua::provision::Connector;
use localcert_ua::verify::{self, Expectation};
use localcert_ua::{LinkProfile, Transport};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "alice-session-0123456789";

async fn backend(world: &World) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = Config {
        origin: Origin::parse(ORIGIN).unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        base_path: "/localcert".into(),
        static_dir: None,
        acme: AcmeSettings {
            directory_url: world.directory_url.clone(),
            tls_root: Some(world.tls_root.clone()),
            eab: Eab {
                kid: common::KID.into(),
                key: common::HMAC.to_vec(),
            },
            account_file: Some(world.dir.path().join("account-1.json")),
        },
        limits: Limits::default(),
        cors: localcert_rp::config::default_cors(),
        users: vec![UserToken {
            token: TOKEN.into(),
            handle: b"alice".to_vec(),
        }],
    };
    let backend = Backend::new(&config, Arc::new(TokenAuth::new(&config.users)));
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(localcert_rp::serve::serve(
        listener,
        None,
        backend.router(),
        async {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

/// One POST as the page's `fetch()` sends it: same-origin, with the session cookie.
async fn post(backend: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(backend).await.unwrap();
    let head = format!(
        "POST /localcert{path} HTTP/1.1\r\nHost: {backend}\r\nOrigin: {ORIGIN}\r\n\
         Cookie: localcert_session={TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(value: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(value.as_str().unwrap()).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn provision_through_the_backend(star: bool) {
    let world = World::start().await;
    let (backend, _stop) = backend(&world).await;
    let link = world
        .connector(LinkProfile::MTU247_15MS_2M, None)
        .connect()
        .await
        .unwrap();
    let mut device = Transport::open(link).await.unwrap();
    // What crossed BLE: the device's answers re-encoded (the encoding is deterministic).
    let mut ask = async |request: Request| {
        let response = device.request(&request, |_| {}).await.unwrap();
        assert!(!matches!(response, Response::Error(..)), "{response:?}");
        (response.encode(), response)
    };

    let (info, _) = ask(Request::GetInfo).await;
    let (status, flow) = post(
        backend,
        "/flows",
        &json!({"info": b64(&info), "star": star}),
    )
    .await;
    assert_eq!(status, 201, "{flow}");
    let id = flow["flow"].as_str().unwrap();
    let name = LocalName::parse(flow["name"].as_str().unwrap()).unwrap();
    assert_eq!(name, world.name_for(ORIGIN));
    let fields = &flow["attest"];

    let (attest, _) = ask(Request::Attest(AttestRequest {
        origin: Origin::parse(fields["origin"].as_str().unwrap()).unwrap(),
        user_handle: unb64(&fields["user_handle"]),
        key_authorization_hash: unb64(&fields["key_authorization_hash"]).try_into().unwrap(),
        device_label: DeviceLabel::parse(fields["device_label"].as_str().unwrap()).unwrap(),
        pin: None,
    }))
    .await;
    let (status, issued) = post(
        backend,
        &format!("/flows/{id}/attestation"),
        &json!({"attest": b64(&attest)}),
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let install = &issued["install"];
    assert_eq!(install["star_url"].is_string(), star, "{install}");
    let cors = &install["cors"];
    let (installed, response) = ask(Request::Install(InstallRequest {
        chain: install["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(unb64)
            .collect(),
        cors: CorsPolicy {
            methods: strings(&cors["methods"]),
            allow_headers: strings(&cors["allow_headers"]),
            expose_headers: strings(&cors["expose_headers"]),
            allow_credentials: cors["allow_credentials"].as_bool().unwrap(),
            max_age: cors["max_age"].as_u64().unwrap(),
        },
        star_url: install["star_url"].as_str().map(str::to_owned),
    }))
    .await;
    device.close().await;
    let Response::Install(response) = response else {
        panic!("{response:?}")
    };
    let (status, done) = post(
        backend,
        &format!("/flows/{id}/installed"),
        &json!({"install": b64(&installed)}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["name"], name.as_str());
    assert_eq!(done["url"], format!("https://{name}:{}/", world.https_port));
    assert_eq!(done["fingerprint"], issued["fingerprint"]);
    assert_eq!(response.https_port, world.https_port);
    // The device holds the issuing intermediate: the page sends the leaf alone.
    assert_eq!(install["chain"].as_array().unwrap().len(), 1, "{install}");

    // The page's final fetch(): the device answers for the origin, bound to alice.
    let expect = Expectation {
        name: name.clone(),
        origin: Origin::parse(ORIGIN).unwrap(),
        issuer_roots: vec![world.issuer_root.clone()],
        pinned_spki: None,
        user_handle: Some(b"alice".to_vec()),
        path: "/".into(),
        crls: vec![],
    };
    let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let (_, check) = verify::check_any(&localhost, world.https_port, &expect)
        .await
        .unwrap();
    assert_eq!(check.allow_origin, ORIGIN);
    assert_eq!(check.body, common::BODY.as_bytes());

    // The completed flow takes no replay.
    let (status, replay) = post(
        backend,
        &format!("/flows/{id}/installed"),
        &json!({"install": b64(&installed)}),
    )
    .await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (409, Some("flow_state"))
    );
}

#[tokio::test]
async fn a_device_provisioned_through_the_rp_backend_api() {
    provision_through_the_backend(false).await;
}

#[tokio::test]
async fn a_star_device_provisioned_through_the_rp_backend_api() {
    provision_through_the_backend(true).await;
}
