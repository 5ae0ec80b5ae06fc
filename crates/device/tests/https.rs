//! HTTPS over loopback with a rustls client: certificates by SNI, hot swap on renewal without
//! dropping open connections, and CORS only for the bound origin.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod https_world;

use http::StatusCode;
use https_world::{ORIGIN, binding, ca, connect, request, start, vary_has_origin};
use localcert_device::https::{self, Sites};

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
