//! Attacker text never reaches a log line, an audit row or a problem document unbounded
//! (issue 13): a hostile request's field names, values and path are quoted by serde and by the
//! router, and every one of those quotes passes `untrusted::bounded`. And the audit log does
//! not grow forever: entries past the policy's retention are pruned.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::client::body;
use common::harness::Harness;
use localcert_issuer::acme::Response;
use localcert_issuer::store::{AuditEntry, Store};
use localcert_issuer::untrusted::MAX_UNTRUSTED_BYTES;
use serde_json::json;

/// A log sink for tracing's fmt layer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `request` with the issuer's logs captured; the response and the log text.
fn logged(request: impl FnOnce() -> Response) -> (Response, String) {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let response = tracing::subscriber::with_default(subscriber, request);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (response, text)
}

/// What the attacker sends: 60 KiB with a forged log line and a terminal escape in it.
fn hostile() -> String {
    format!(
        "{}\nINFO forged line\u{1b}[2J{}",
        "A".repeat(100),
        "B".repeat(60 * 1024)
    )
}

/// The response's detail, the last audit row and the log are all bounded and on one line.
fn assert_bounded(h: &Harness, response: &Response, log: &str) {
    let detail = body(response)["detail"].as_str().unwrap().to_owned();
    assert!(detail.len() <= MAX_UNTRUSTED_BYTES, "{}", detail.len());
    assert!(!detail.contains('\n') && !detail.contains('\u{1b}'));
    let audit = h.last_audit();
    assert_eq!(audit.event, "refused");
    for field in [&audit.subject, &audit.detail] {
        assert!(field.len() <= MAX_UNTRUSTED_BYTES, "{}", field.len());
        assert!(!field.contains('\n') && !field.contains('\u{1b}'));
    }
    assert!(!log.is_empty(), "the refusal was not logged");
    // The forged line stays inside the refusal's line, escaped; no terminal escape gets out.
    assert!(!log.lines().any(|l| l.starts_with("INFO forged")), "{log}");
    assert!(log.contains("\\nINFO forged line") && !log.contains('\u{1b}'));
    for line in log.lines() {
        assert!(line.len() < 4 * MAX_UNTRUSTED_BYTES, "{}", line.len());
    }
}

#[test]
fn an_unauthenticated_body_is_quoted_bounded() {
    let h = Harness::new();
    // serde quotes the unknown field's name in its message.
    let request = json!({"protected": "e30", "payload": "", "signature": "", hostile(): 1});
    let (response, log) = logged(|| {
        h.server.handle(
            "POST",
            "/acme/new-account",
            Some("application/jose+json"),
            request.to_string().as_bytes(),
            h.now,
        )
    });
    assert_eq!(response.status, 400);
    assert!(body(&response)["detail"].as_str().unwrap().contains("AAAA"));
    assert_bounded(&h, &response, &log);
    // The whole audit table holds the bound, not the request.
    let stored: usize = h
        .store
        .audit_log(10)
        .unwrap()
        .iter()
        .map(|e| e.subject.len() + e.detail.len())
        .sum();
    assert!(stored < 4 * MAX_UNTRUSTED_BYTES, "{stored}");
}

#[test]
fn a_signed_payload_is_quoted_bounded() {
    let h = Harness::new();
    let client = h.account();
    // serde quotes the value of the wrong type.
    let (response, log) = logged(|| {
        h.post(
            &client,
            "/acme/new-order",
            Some(&json!({"identifiers": hostile()})),
        )
    });
    assert_eq!(response.status, 400);
    assert_bounded(&h, &response, &log);
}

#[test]
fn a_hostile_path_is_quoted_bounded() {
    let h = Harness::new();
    let path = format!("/acme/{}", hostile());
    let (response, log) = logged(|| h.server.handle("GET", &path, None, b"", h.now));
    assert_eq!(response.status, 404);
    assert_bounded(&h, &response, &log);
    let (response, log) = logged(|| h.server.too_large(&path, h.now));
    assert_eq!(response.status, 413);
    let audit = h.last_audit();
    assert!(audit.subject.len() <= MAX_UNTRUSTED_BYTES);
    assert!(!log.lines().any(|l| l.starts_with("INFO forged")), "{log}");
}

#[test]
fn the_audit_log_is_pruned_past_its_retention() {
    let h = Harness::new();
    let retention = h.server.policy().audit_retention;
    let day = std::time::Duration::from_secs(86_400);
    let entry = |at, subject: &str| AuditEntry {
        at,
        event: "refused".into(),
        origin: None,
        subject: subject.into(),
        detail: String::new(),
    };
    for i in 0..3 {
        h.store
            .audit(&entry(h.now - retention - day * (i + 1), "old"))
            .unwrap();
    }
    h.store
        .audit(&entry(h.now - retention + day, "recent"))
        .unwrap();
    assert_eq!(h.server.prune_audit(h.now).unwrap(), 3);
    let log = h.store.audit_log(100).unwrap();
    assert!(log.iter().all(|e| e.subject != "old"), "{log:?}");
    assert!(log.iter().any(|e| e.subject == "recent"));
    // The pruning is itself on record; a second pass finds nothing and records nothing.
    assert_eq!(log.last().unwrap().event, "audit-pruned");
    assert_eq!(h.server.prune_audit(h.now).unwrap(), 0);
    assert_eq!(h.store.audit_log(100).unwrap().len(), log.len());
}
