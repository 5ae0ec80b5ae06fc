//! `POST {base}/star/cancel` against the real issuer: the session's user cancels the STAR
//! delegation bound to them; another user, a repeat, a bad name or another origin change
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use common::*;
use localcert_rp::config::Limits;
use serde_json::json;

/// `star_canceled` of each STAR order at the issuer, oldest first.
fn star_canceled(issuer: &Issuer) -> Vec<bool> {
    let db = rusqlite::Connection::open(issuer.dir.path().join("issuer.sqlite")).unwrap();
    let mut statement = db
        .prepare("SELECT star_canceled FROM orders WHERE star_end IS NOT NULL ORDER BY rowid")
        .unwrap();
    statement
        .query_map([], |row| row.get::<_, bool>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn the_user_cancels_their_star_delegation_and_nobody_else_can() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(Limits::default()));
    let device = SimDevice::new("device-1");

    let (status, started) = Call::post(
        "/localcert/flows",
        &json!({"info": b64(&device.info()), "star": true}),
    )
    .send(&backend)
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let flow = started["flow"].as_str().unwrap();
    let name = started["name"].as_str().unwrap().to_owned();
    let attest = device.attest(&started["attest"]);
    let (status, issued) = Call::post(
        format!("/localcert/flows/{flow}/attestation"),
        &json!({"attest": b64(&attest)}),
    )
    .send(&backend)
    .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let star_url = issued["install"]["star_url"].as_str().unwrap().to_owned();
    assert_eq!(star_canceled(&issuer), [false]);

    let cancel = || Call::post("/localcert/star/cancel", &json!({"name": name}));
    // Bob's session: the delegation is alice's, so bob has none to cancel.
    let mut as_bob = cancel();
    as_bob.bearer = Some(BOB);
    let (status, body) = as_bob.send(&backend).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    // Another origin, no session, a bad name, an unknown field: refused before the issuer.
    let mut foreign = cancel();
    foreign.origin = Some("https://evil.example");
    assert_eq!(foreign.send(&backend).await.0, StatusCode::FORBIDDEN);
    let mut anonymous = cancel();
    anonymous.bearer = None;
    assert_eq!(anonymous.send(&backend).await.0, StatusCode::UNAUTHORIZED);
    for body in [
        json!({"name": "vod.example.com"}),
        json!({"name": name, "all": true}),
    ] {
        let (status, answer) = Call::post("/localcert/star/cancel", &body)
            .send(&backend)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    assert_eq!(star_canceled(&issuer), [false], "nothing changed");

    // Alice's session cancels it.
    let (status, body) = cancel().send(&backend).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], name.as_str());
    assert_eq!(body["canceled"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["canceled"][0]["star_certificate"], star_url.as_str());
    assert_eq!(star_canceled(&issuer), [true]);
    // Nothing live is left.
    let (status, body) = cancel().send(&backend).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
