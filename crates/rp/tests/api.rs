//! The HTTP API against the real issuer: the whole flow, and every refusal of the contract,
//! each checked to change nothing (no flow, no order at the issuer, the flow still usable).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use common::*;
use localcert_rp::config::Limits;
use serde_json::{Value, json};

fn limits() -> Limits {
    Limits::default()
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("(no error code)")
}

#[tokio::test]
async fn whole_flow_then_replays_are_refused() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(limits()));
    let device = SimDevice::new("device-1");

    let (status, config) = Call::get("/localcert/config").send(&backend).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["origin"], ORIGIN);
    assert_eq!(config["service"], "52620000-f2e2-4679-934e-b35464ebab15");

    let (flow, started) = start(&backend, &device).await;
    let name = device.name(ORIGIN, &device.label);
    assert_eq!(started["name"], name.as_str());
    assert_eq!(started["attest"]["origin"], ORIGIN);
    assert_eq!(unb64(&started["attest"]["user_handle"]), b"alice");
    assert_eq!(started["attest"]["device_label"], "tv");

    let attest = device.attest(&started["attest"]);
    let path = format!("/localcert/flows/{flow}/attestation");
    let (status, issued) = Call::post(&path, &json!({"attest": b64(&attest)}))
        .send(&backend)
        .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["name"], name.as_str());
    let chain = issued["install"]["chain"].as_array().unwrap();
    assert!(chain.len() >= 2, "leaf and intermediate");
    let leaf = unb64(&chain[0]);
    assert_eq!(issued["fingerprint"], hex::encode(sha256(&leaf)));
    assert_eq!(issued["install"]["cors"]["methods"], json!(["GET", "POST"]));
    assert_eq!(issued["install"]["star_url"], Value::Null);
    // The leaf is for the name, under the issuer's root.
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        format!("{:?}", san.general_names),
        format!("[DNSName({:?})]", name.as_str())
    );

    let install = device.install(&issued, 8443);
    let done_path = format!("/localcert/flows/{flow}/installed");
    let (status, done) = Call::post(&done_path, &json!({"install": b64(&install)}))
        .send(&backend)
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["name"], name.as_str());
    assert_eq!(done["url"], format!("https://{name}:8443/"));
    assert_eq!(done["fingerprint"], issued["fingerprint"]);

    // A replay of any step of the completed flow is refused.
    let orders = issuer.orders();
    for (path, body) in [
        (&done_path, json!({"install": b64(&install)})),
        (&path, json!({"attest": b64(&attest)})),
    ] {
        let (status, body) = Call::post(path.as_str(), &body).send(&backend).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(error(&body), "flow_state");
        assert_eq!(body["detail"], "the flow is complete");
    }
    assert_eq!(issuer.orders(), orders);
}

#[tokio::test]
async fn another_origin_is_refused_before_anything_else() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(limits()));
    let device = SimDevice::new("device-1");
    let body = json!({"info": b64(&device.info())});
    for origin in [Some("https://evil.example"), Some(ORIGIN2), None] {
        // Even without a session and with a malformed body, the origin is what is refused.
        for call in [
            Call {
                origin,
                ..Call::post("/localcert/flows", &body)
            },
            Call {
                origin,
                bearer: None,
                body: b"{".to_vec(),
                ..Call::post("/localcert/flows", &body)
            },
        ] {
            let (status, answer) = call.send(&backend).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
            assert_eq!(error(&answer), "forbidden_origin");
        }
    }
    assert_eq!(backend.flows(), 0);
    assert!(issuer.orders().is_empty());

    // On a flow's step too, and the flow goes on afterwards.
    let (flow, started) = start(&backend, &device).await;
    let path = format!("/localcert/flows/{flow}/attestation");
    let attest = json!({"attest": b64(&device.attest(&started["attest"]))});
    let orders = issuer.orders();
    let call = Call {
        origin: Some("https://evil.example"),
        ..Call::post(&path, &attest)
    };
    let (status, answer) = call.send(&backend).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "forbidden_origin")
    );
    assert_eq!(issuer.orders(), orders);
    let (status, answer) = Call::post(&path, &attest).send(&backend).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(Limits {
        max_body_bytes: 4096,
        ..limits()
    }));
    let device = SimDevice::new("device-1");
    let mut big = json!({"info": b64(&device.info())});
    big["label"] = Value::String("x".repeat(4096));
    let (status, answer) = Call::post("/localcert/flows", &big).send(&backend).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(error(&answer), "body_too_large");
    assert_eq!(answer["detail"], "the body is over the limit of 4096 bytes");
    assert_eq!(backend.flows(), 0);
    assert!(issuer.orders().is_empty());
}

#[tokio::test]
async fn an_attestation_for_another_name_or_order_is_refused_and_changes_nothing() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(limits()));
    let device = SimDevice::new("device-1");
    let (flow_a, started_a) = start(&backend, &device).await;
    let (_flow_b, started_b) = start(&backend, &device).await;
    let path = format!("/localcert/flows/{flow_a}/attestation");
    let orders = issuer.orders();
    assert_eq!(orders.len(), 2);

    // A CSR for another name (the same device, another label).
    let other = device.name(
        ORIGIN,
        &localcert_proto::name::DeviceLabel::parse("kitchen").unwrap(),
    );
    let wrong_name = device.attest_for(&started_a["attest"], Some(other.as_str()));
    // The device's answer to flow B's challenge, relayed to flow A.
    let other_order = device.attest_for(&started_b["attest"], None);
    // A device of another origin's flow: the same key authorization signed for ORIGIN2.
    let mut other_origin_fields = started_a["attest"].clone();
    other_origin_fields["origin"] = json!(ORIGIN2);
    let flow_name = started_a["name"].as_str();
    let other_origin = device.attest_for(&other_origin_fields, flow_name);
    // Another user's handle in the attestation.
    let mut bob_fields = started_a["attest"].clone();
    bob_fields["user_handle"] = json!(b64(b"bob"));
    let other_user = device.attest_for(&bob_fields, None);
    for (attest, detail) in [
        (wrong_name, "the CSR signature does not verify"),
        (other_order, "the attestation signature does not cover"),
        (other_origin, "the attestation signature does not cover"),
        // The UA builds the attestation object with its own user handle: the device's
        // signature over another one does not verify.
        (other_user, "the attestation signature does not cover"),
    ] {
        let message = localcert_proto::message::Response::Attest(attest).encode();
        let (status, answer) = Call::post(&path, &json!({"attest": b64(&message)}))
            .send(&backend)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(error(&answer), "device_invalid");
        let text = answer["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{text}");
        assert_eq!(issuer.orders(), orders, "the issuer saw nothing");
    }

    // The flow still takes the right answer.
    let attest = device.attest(&started_a["attest"]);
    let (status, answer) = Call::post(&path, &json!({"attest": b64(&attest)}))
        .send(&backend)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A device that refused INSTALL does not complete the flow; its right answer then does.
    let done_path = format!("/localcert/flows/{flow_a}/installed");
    let refusal =
        localcert_proto::message::Response::Error(localcert_proto::ErrorCode::ChainMismatch, None)
            .encode();
    let (status, refused) = Call::post(&done_path, &json!({"install": b64(&refusal)}))
        .send(&backend)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["detail"],
        "install: the device refused: CHAIN_MISMATCH"
    );
    let install = device.install(&answer, 8443);
    let (status, done) = Call::post(&done_path, &json!({"install": b64(&install)}))
        .send(&backend)
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
}

#[tokio::test]
async fn a_request_without_a_user_session_is_refused() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(limits()));
    let device = SimDevice::new("device-1");
    let body = json!({"info": b64(&device.info())});
    for (bearer, cookie) in [
        (None, None),
        (Some("not-a-known-token-at-all"), None),
        (
            None,
            Some("localcert_session=wrong-token-0123456789".to_owned()),
        ),
        (None, Some(format!("other_cookie={ALICE}"))),
    ] {
        let call = Call {
            bearer,
            cookie,
            ..Call::post("/localcert/flows", &body)
        };
        let (status, answer) = call.send(&backend).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(error(&answer), "unauthenticated");
    }
    assert_eq!(backend.flows(), 0);
    assert!(issuer.orders().is_empty());

    // The session cookie works as well as the bearer token.
    let call = Call {
        bearer: None,
        cookie: Some(format!("theme=dark; localcert_session={BOB}")),
        ..Call::post("/localcert/flows", &body)
    };
    let (status, started) = call.send(&backend).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(unb64(&started["attest"]["user_handle"]), b"bob");

    // Another user's flow is unknown to alice, and her attempt changes nothing.
    let flow = started["flow"].as_str().unwrap();
    let attest = device.attest(&started["attest"]);
    let path = format!("/localcert/flows/{flow}/attestation");
    let (status, answer) = Call::post(&path, &json!({"attest": b64(&attest)}))
        .send(&backend)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::NOT_FOUND, "unknown_flow")
    );
    let call = Call {
        bearer: Some(BOB),
        ..Call::post(&path, &json!({"attest": b64(&attest)}))
    };
    let (status, answer) = call.send(&backend).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn more_flows_per_user_per_minute_than_configured_are_refused() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(Limits {
        flows_per_user_per_minute: 2,
        ..limits()
    }));
    let device = SimDevice::new("device-1");
    start(&backend, &device).await;
    start(&backend, &device).await;
    let orders = issuer.orders();
    let body = json!({"info": b64(&device.info())});
    let (status, answer) = Call::post("/localcert/flows", &body).send(&backend).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(error(&answer), "rate_limited");
    assert_eq!(answer["detail"], "more than 2 flows per user per minute");
    assert_eq!(backend.flows(), 2);
    assert_eq!(issuer.orders(), orders);
    // Another user has their own quota.
    let call = Call {
        bearer: Some(BOB),
        ..Call::post("/localcert/flows", &body)
    };
    assert_eq!(call.send(&backend).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_input_and_unknown_flows_are_refused() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(limits()));
    let device = SimDevice::new("device-1");
    let info = b64(&device.info());
    let garbage = b64(&[0x00, 0xa1, 0x01]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{".to_vec(), "JSON"),
        (b"[]".to_vec(), "JSON"),
        (br#"{"info": 5}"#.to_vec(), "JSON"),
        (
            serde_json::to_vec(&json!({"info": info, "extra": 1})).unwrap(),
            "unknown field",
        ),
        (
            serde_json::to_vec(&json!({"info": "a+b/"})).unwrap(),
            "not base64url",
        ),
        (
            serde_json::to_vec(&json!({"info": format!("{info}==")})).unwrap(),
            "not base64url",
        ),
        (
            serde_json::to_vec(&json!({"info": garbage})).unwrap(),
            "info:",
        ),
        (serde_json::to_vec(&json!({"info": ""})).unwrap(), "info:"),
        (
            serde_json::to_vec(&json!({"info": info, "label": "Not A Label!"})).unwrap(),
            "label",
        ),
    ];
    for (body, detail) in cases {
        let call = Call {
            body,
            ..Call::post("/localcert/flows", &Value::Null)
        };
        let (status, answer) = call.send(&backend).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(error(&answer), "bad_request");
        let text = answer["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{text} lacks {detail}");
    }
    // The device's refusal is relayed as the device's answer.
    let refused = localcert_proto::message::Response::Error(
        localcert_proto::ErrorCode::ALL[1],
        Some("busy".into()),
    )
    .encode();
    let (status, answer) = Call::post("/localcert/flows", &json!({"info": b64(&refused)}))
        .send(&backend)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "device_invalid")
    );
    assert_eq!(backend.flows(), 0);
    assert!(issuer.orders().is_empty());

    // A device of another protocol revision gets no order, and costs no flow of the user's
    // quota (more refusals than flows_per_user_per_minute, then a flow starts).
    let mut other_revision = device.info_response();
    other_revision.revision = 1;
    let other_revision = localcert_proto::message::Response::Info(other_revision).encode();
    for _ in 0..=limits().flows_per_user_per_minute {
        let (status, answer) =
            Call::post("/localcert/flows", &json!({"info": b64(&other_revision)}))
                .send(&backend)
                .await;
        assert_eq!(
            (status, error(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "device_invalid")
        );
        assert!(
            answer["detail"].as_str().unwrap().contains("revision 1"),
            "{answer}"
        );
    }
    assert_eq!(backend.flows(), 0);
    assert!(issuer.orders().is_empty());

    // Steps: unknown flow, a message of the wrong kind, out of order.
    let (flow, started) = start(&backend, &device).await;
    let attest = b64(&device.attest(&started["attest"]));
    let (status, answer) = Call::post(
        "/localcert/flows/AAAAAAAAAAAAAAAAAAAAAA/attestation",
        &json!({"attest": attest}),
    )
    .send(&backend)
    .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::NOT_FOUND, "unknown_flow")
    );
    let path = format!("/localcert/flows/{flow}/attestation");
    let (status, answer) = Call::post(&path, &json!({"attest": info}))
        .send(&backend)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{answer}"
    );
    let install = device.install(
        &json!({"install": {"chain": [b64(b"x")]}, "name": started["name"]}),
        8443,
    );
    let installed = format!("/localcert/flows/{flow}/installed");
    let (status, answer) = Call::post(&installed, &json!({"install": b64(&install)}))
        .send(&backend)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::CONFLICT, "flow_state"),
        "{answer}"
    );
    let (status, answer) = Call::get(&path).send(&backend).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{answer}");
    let (status, answer) = Call::get("/localcert/nothing").send(&backend).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // None of that changed the flow.
    let (status, answer) = Call::post(&path, &json!({"attest": attest}))
        .send(&backend)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn two_steps_at_once_on_one_flow_answer_the_issuer_once() {
    let issuer = Issuer::start().await;
    let backend = backend(&issuer.config(limits()));
    let device = SimDevice::new("device-1");
    let (flow, started) = start(&backend, &device).await;
    let path = format!("/localcert/flows/{flow}/attestation");
    let body = json!({"attest": b64(&device.attest(&started["attest"]))});
    let (a, b) = tokio::join!(
        Call::post(&path, &body).send(&backend),
        Call::post(&path, &body).send(&backend)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let refused = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(error(refused), "flow_state");
    assert_eq!(issuer.orders().len(), 1);
}

#[tokio::test]
async fn an_issuer_that_is_away_is_a_502_and_leaves_no_flow() {
    let issuer = Issuer::start().await;
    let mut config = issuer.config(Limits {
        flows_per_user_per_minute: 1,
        max_flows: 1,
        ..limits()
    });
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    config.acme.directory_url = format!("https://localhost:{port}/directory");
    let backend = backend(&config);
    let device = SimDevice::new("device-1");
    let body = json!({"info": b64(&device.info())});
    let (status, answer) = Call::post("/localcert/flows", &body).send(&backend).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(error(&answer), "issuer");
    assert_eq!(backend.flows(), 0);
    // The failed start gave its place back (max_flows = 1), but counted against the rate.
    let (status, answer) = Call::post("/localcert/flows", &body).send(&backend).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(answer["detail"], "more than 1 flows per user per minute");
    let call = Call {
        bearer: Some(BOB),
        ..Call::post("/localcert/flows", &body)
    };
    let (status, answer) = call.send(&backend).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_GATEWAY, "issuer"),
        "{answer}"
    );
}
