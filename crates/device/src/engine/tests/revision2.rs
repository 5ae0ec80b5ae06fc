//! Revision 2 answers: issuer certificates the device holds (GET_INFO key 8, INSTALL without
//! them), and the INVALID_ORIGIN / INVALID_LABEL codes for bad Origin and Label fields.

use localcert_proto::message::{InfoResponse, certificate_id};

use super::*;

/// A harness whose device holds the test issuer's intermediate beside the root.
fn holding_intermediate() -> Harness {
    harness_with(Box::new(AutoApprove), |c, ca| {
        c.issuer_intermediates = vec![ca.intermediate.clone()]
    })
}

fn info(h: &mut Harness) -> InfoResponse {
    match h.call(&Request::GetInfo) {
        Response::Info(info) => info,
        other => panic!("no info: {other:?}"),
    }
}

#[test]
fn get_info_reports_the_ids_of_held_intermediates() {
    let mut h = harness();
    assert!(info(&mut h).known_issuers.is_empty());
    let mut h = holding_intermediate();
    assert_eq!(
        info(&mut h).known_issuers,
        vec![certificate_id(&h.ca.intermediate)]
    );
}

#[test]
fn install_without_a_held_intermediate_serves_the_whole_chain() {
    let mut h = holding_intermediate();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    h.events();
    assert!(matches!(
        h.install(vec![chain[0].clone()]),
        Response::Install(_)
    ));
    // TLS serves leaf + intermediate, as the issuer sent them.
    assert_eq!(h.dev.bindings()[0].chain, chain);
    assert!(matches!(&h.events()[..], [Event::Installed(b)] if b.chain == chain));
}

#[test]
fn install_with_the_whole_chain_still_works_when_the_intermediate_is_held() {
    let mut h = holding_intermediate();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    assert!(matches!(h.install(chain.clone()), Response::Install(_)));
    assert_eq!(h.dev.bindings()[0].chain, chain);
}

#[test]
fn install_of_a_leaf_alone_is_untrusted_when_the_intermediate_is_not_held() {
    let mut h = harness();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    assert_refused(
        h.install(vec![chain[0].clone()]),
        ErrorCode::UntrustedIssuer,
    );
    assert!(h.dev.bindings().is_empty());
    // The pending key is still there: the whole chain installs.
    assert!(matches!(h.install(chain), Response::Install(_)));
}

#[test]
fn a_held_intermediate_is_never_an_anchor() {
    // A device that holds the intermediate but trusts no root refuses everything.
    let mut h = harness_with(Box::new(AutoApprove), |c, ca| {
        c.trust = IssuerTrust::Roots(vec![]);
        c.issuer_intermediates = vec![ca.intermediate.clone()];
    });
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    assert_refused(
        h.install(vec![chain[0].clone()]),
        ErrorCode::UntrustedIssuer,
    );
}

/// An ATTEST body with field `key` replaced by the text `value`.
fn attest_with_text(key: u64, value: &str) -> Vec<u8> {
    let mut request = attest_request("https://vod.example.com");
    match key {
        1 => {
            // Encode by hand: an invalid origin cannot be an `Origin`.
            request.origin = origin("https://a.test");
            let good = Request::Attest(request).encode();
            let needle = b"https://a.test";
            let at = good
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            let mut out = good[..at - 1].to_vec();
            out.push(0x60 + u8::try_from(value.len()).unwrap());
            out.extend(value.as_bytes());
            out.extend(&good[at + needle.len()..]);
            out
        }
        _ => {
            request.device_label = DeviceLabel::parse("tv").unwrap();
            let good = Request::Attest(request).encode();
            let at = good.windows(3).position(|w| w == b"\x62tv").unwrap();
            let mut out = good[..at].to_vec();
            out.push(0x60 + u8::try_from(value.len()).unwrap());
            out.extend(value.as_bytes());
            out.extend(&good[at + 3..]);
            out
        }
    }
}

#[test]
fn a_bad_origin_or_label_gets_its_own_code_and_leaves_no_key() {
    let mut h = harness();
    for (payload, code) in [
        (
            attest_with_text(1, "http://a.test"),
            ErrorCode::InvalidOrigin,
        ),
        (
            attest_with_text(1, "https://10.0.0.1"),
            ErrorCode::InvalidOrigin,
        ),
        (attest_with_text(4, "TV"), ErrorCode::InvalidLabel),
        (attest_with_text(4, "tv--1"), ErrorCode::InvalidLabel),
        (
            {
                let mut b = vec![0x05, 0xa1, 0x01, 0x6d];
                b.extend(b"https://a.b/c");
                b
            },
            ErrorCode::InvalidOrigin,
        ),
    ] {
        for f in Frame::msg(payload).fragments(242).unwrap() {
            h.send_raw(&f);
        }
        let frames = h.frames();
        assert_eq!(frames.len(), 1);
        assert_refused(
            Response::decode(Operation::Attest, &frames[0].data).unwrap(),
            code,
        );
    }
    assert!(h.events().is_empty(), "no pending key, no event");
    // The encoder's control: the good request with the same edits is accepted.
    for f in Frame::msg(attest_with_text(4, "tv"))
        .fragments(242)
        .unwrap()
    {
        h.send_raw(&f);
    }
    assert!(matches!(h.response(Operation::Attest), Response::Attest(_)));
}
