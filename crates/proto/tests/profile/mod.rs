//! `profile.json`: leaves and CSRs the certificate-profile parser accepts (with the claims it
//! must report) or refuses (with the rule broken).
//!
//! The DER is built here byte by byte, so that the refused cases can break exactly one rule
//! (a repeated or critical extension, which certificate builders will not produce). The
//! signatures are placeholders: the profile is about content; signatures and chains are the
//! callers' checks.

use localcert_proto::binding::{ORIGIN_BINDING_OID_DER, OriginBinding};
use localcert_proto::name::LocalName;
use localcert_proto::profile::{CsrClaims, LeafClaims, parse_csr, parse_leaf};
use serde_json::{Value, json};

use super::{SAMPLE_SPKI, cases, check_file, unhex};
use crate::samples::{name, origin};

const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
const OID_CHALLENGE_PASSWORD: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07];

/// 2026-11-30T00:00:00Z and 2026-12-07T00:00:00Z.
const NOT_BEFORE: (&str, u64) = ("261130000000Z", 1_795_996_800);
const NOT_AFTER: (&str, u64) = ("261207000000Z", 1_796_601_600);

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(content: &[u8]) -> Vec<u8> {
    tlv(0x06, content)
}

fn cn_name(cn: &str) -> Vec<u8> {
    let atv = seq(&[oid(OID_COMMON_NAME), tlv(0x0c, cn.as_bytes())]);
    seq(&[tlv(0x31, &atv)])
}

fn ext(id: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut parts = vec![oid(id)];
    if critical {
        parts.push(vec![0x01, 0x01, 0xff]);
    }
    parts.push(tlv(0x04, value));
    seq(&parts)
}

fn dns(n: &str) -> Vec<u8> {
    tlv(0x82, n.as_bytes())
}

fn san(names: &[Vec<u8>]) -> Vec<u8> {
    ext(OID_SUBJECT_ALT_NAME, false, &seq(names))
}

fn binding_value() -> Vec<u8> {
    OriginBinding::new(origin("https://vod.example.com"), b"user-42").to_der()
}

fn binding(critical: bool) -> Vec<u8> {
    ext(ORIGIN_BINDING_OID_DER, critical, &binding_value())
}

fn signed(tbs: Vec<u8>) -> Vec<u8> {
    let placeholder = [&[0x00][..], &seq(&[tlv(0x02, &[1]), tlv(0x02, &[1])])].concat();
    seq(&[tbs, seq(&[oid(OID_ECDSA_SHA256)]), tlv(0x03, &placeholder)])
}

/// A leaf as the issuer makes it, with `extensions` in place of its extensions.
fn leaf(extensions: &[Vec<u8>]) -> Vec<u8> {
    let validity = seq(&[
        tlv(0x17, NOT_BEFORE.0.as_bytes()),
        tlv(0x17, NOT_AFTER.0.as_bytes()),
    ]);
    signed(seq(&[
        tlv(0xa0, &tlv(0x02, &[2])),
        tlv(
            0x02,
            &[0x4c, 0x43, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07],
        ),
        seq(&[oid(OID_ECDSA_SHA256)]),
        cn_name("localcert test intermediate"),
        validity,
        seq(&[]),
        unhex(&json!(SAMPLE_SPKI)),
        tlv(0xa3, &seq(extensions)),
    ]))
}

fn standard_extensions() -> Vec<Vec<u8>> {
    vec![
        ext(OID_KEY_USAGE, true, &[0x03, 0x02, 0x07, 0x80]),
        ext(OID_EXT_KEY_USAGE, false, &seq(&[oid(OID_SERVER_AUTH)])),
        ext(OID_BASIC_CONSTRAINTS, true, &seq(&[])),
    ]
}

/// A typical leaf with `edit` applied to its extension list.
fn leaf_with(edit: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let mut extensions = standard_extensions();
    extensions.push(san(&[dns(vod_name().as_str())]));
    extensions.push(binding(false));
    edit(&mut extensions);
    leaf(&extensions)
}

fn vod_name() -> LocalName {
    name("https://vod.example.com")
}

fn other_name() -> LocalName {
    name("https://app.test:8443")
}

fn attribute(id: &[u8], value: Vec<u8>) -> Vec<u8> {
    seq(&[oid(id), tlv(0x31, &value)])
}

fn extension_request(extensions: &[Vec<u8>]) -> Vec<u8> {
    attribute(OID_EXTENSION_REQUEST, seq(extensions))
}

fn csr(subject: Vec<u8>, attributes: &[Vec<u8>]) -> Vec<u8> {
    signed(seq(&[
        tlv(0x02, &[0]),
        subject,
        unhex(&json!(SAMPLE_SPKI)),
        tlv(0xa0, &attributes.concat()),
    ]))
}

fn typical_csr_request() -> Vec<u8> {
    extension_request(&[san(&[dns(vod_name().as_str())])])
}

fn leaf_claims_json(c: &LeafClaims) -> Value {
    json!({
        "spki": hex::encode(&c.spki),
        "names": c.names.iter().map(LocalName::as_str).collect::<Vec<_>>(),
        "origin": c.binding.origin.as_str(),
        "user_handle_digest": hex::encode(c.binding.user_handle_digest),
        "not_before": c.not_before, "not_after": c.not_after,
    })
}

fn csr_claims_json(c: &CsrClaims) -> Value {
    json!({
        "spki": hex::encode(&c.spki),
        "names": c.names.iter().map(LocalName::as_str).collect::<Vec<_>>(),
        "common_names": c.common_names.iter().map(LocalName::as_str).collect::<Vec<_>>(),
        "other_extensions": c.other_extensions.iter().map(hex::encode).collect::<Vec<_>>(),
        "other_attributes": c.other_attributes.iter().map(hex::encode).collect::<Vec<_>>(),
    })
}

/// What the typical leaf claims, written out from the builder's inputs (not from the parser).
fn expected_leaf(names: &[LocalName]) -> Value {
    let binding = OriginBinding::new(origin("https://vod.example.com"), b"user-42");
    json!({
        "spki": SAMPLE_SPKI,
        "names": names.iter().map(LocalName::as_str).collect::<Vec<_>>(),
        "origin": "https://vod.example.com",
        "user_handle_digest": hex::encode(binding.user_handle_digest),
        "not_before": NOT_BEFORE.1, "not_after": NOT_AFTER.1,
    })
}

fn expected_csr(
    names: &[&LocalName],
    cns: &[&LocalName],
    exts: &[&[u8]],
    attrs: &[&[u8]],
) -> Value {
    json!({
        "spki": SAMPLE_SPKI,
        "names": names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        "common_names": cns.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        "other_extensions": exts.iter().map(hex::encode).collect::<Vec<_>>(),
        "other_attributes": attrs.iter().map(hex::encode).collect::<Vec<_>>(),
    })
}

/// `(name, DER, {"claims": …} or {"error": rule})` for leaves.
fn leaf_cases() -> Vec<(&'static str, Vec<u8>, Value)> {
    let vod = vod_name();
    let ok = |names: &[LocalName]| json!({ "claims": expected_leaf(names) });
    let refused = |rule: &str| json!({ "error": rule });
    let typical = leaf_with(|_| {});
    let mut trailing = typical.clone();
    trailing.push(0);
    let mut bad_digest = binding_value();
    // The digest's OCTET STRING is the value's tail: shorten it by one byte.
    bad_digest.truncate(bad_digest.len() - 1);
    bad_digest[1] -= 1;
    let last = bad_digest.len() - 32;
    bad_digest[last] = 31;
    let http_origin = {
        let value = binding_value();
        let text = "https://vod.example.com".as_bytes();
        let at = value.windows(text.len()).position(|w| w == text).unwrap();
        let mut v = value.clone();
        v[at + 4] = b'_';
        v
    };
    let mut binding_trailing = binding_value();
    binding_trailing.push(0);
    let set_binding = |value: Vec<u8>| {
        leaf_with(move |e| {
            e.pop();
            e.push(ext(ORIGIN_BINDING_OID_DER, false, &value));
        })
    };
    vec![
        ("typical", typical.clone(), ok(std::slice::from_ref(&vod))),
        (
            "two_names",
            leaf_with(|e| e[3] = san(&[dns(vod.as_str()), dns(other_name().as_str())])),
            ok(&[vod.clone(), other_name()]),
        ),
        (
            "binding_first",
            leaf_with(|e| e.rotate_right(1)),
            ok(std::slice::from_ref(&vod)),
        ),
        (
            "not_der",
            vec![0x30, 0x03, 0x02, 0x01],
            refused("malformed"),
        ),
        ("trailing_bytes", trailing, refused("trailing_bytes")),
        (
            "san_missing",
            leaf_with(|e| {
                e.remove(3);
            }),
            refused("subject_alt_name_missing"),
        ),
        (
            "san_repeated",
            leaf_with(|e| e.push(san(&[dns(vod.as_str())]))),
            refused("subject_alt_name_repeated"),
        ),
        (
            "san_empty",
            leaf_with(|e| e[3] = san(&[])),
            refused("subject_alt_name_malformed"),
        ),
        (
            "san_ip_address",
            leaf_with(|e| e[3] = san(&[dns(vod.as_str()), tlv(0x87, &[192, 168, 1, 2])])),
            refused("non_dns_name"),
        ),
        (
            "san_public_name",
            leaf_with(|e| e[3] = san(&[dns("vod.example.com")])),
            refused("not_local_name"),
        ),
        (
            "binding_missing",
            leaf_with(|e| {
                e.pop();
            }),
            refused("origin_binding_missing"),
        ),
        (
            "binding_repeated",
            leaf_with(|e| e.push(binding(false))),
            refused("origin_binding_repeated"),
        ),
        (
            "binding_critical",
            leaf_with(|e| {
                e.pop();
                e.push(binding(true));
            }),
            refused("origin_binding_critical"),
        ),
        (
            "binding_repeated_once_critical",
            leaf_with(|e| e.push(binding(true))),
            refused("origin_binding_repeated"),
        ),
        (
            "binding_digest_31_bytes",
            set_binding(bad_digest),
            refused("origin_binding_malformed"),
        ),
        (
            "binding_origin_not_an_origin",
            set_binding(http_origin),
            refused("origin_binding_malformed"),
        ),
        (
            "binding_trailing_bytes",
            set_binding(binding_trailing),
            refused("origin_binding_malformed"),
        ),
    ]
}

/// `(name, DER, {"claims": …} or {"error": rule})` for CSRs.
fn csr_cases() -> Vec<(&'static str, Vec<u8>, Value)> {
    let vod = vod_name();
    let refused = |rule: &str| json!({ "error": rule });
    let claims = |v: Value| json!({ "claims": v });
    let mut trailing = csr(cn_name(vod.as_str()), &[typical_csr_request()]);
    trailing.push(0);
    vec![
        (
            "typical",
            csr(cn_name(vod.as_str()), &[typical_csr_request()]),
            claims(expected_csr(&[&vod], &[&vod], &[], &[])),
        ),
        (
            "empty_subject",
            csr(seq(&[]), &[typical_csr_request()]),
            claims(expected_csr(&[&vod], &[], &[], &[])),
        ),
        (
            "common_name_only",
            csr(cn_name(vod.as_str()), &[]),
            claims(expected_csr(&[], &[&vod], &[], &[])),
        ),
        (
            "asks_for_extensions",
            csr(
                seq(&[]),
                &[extension_request(&[
                    san(&[dns(vod.as_str())]),
                    ext(OID_BASIC_CONSTRAINTS, true, &seq(&[tlv(0x01, &[0xff])])),
                    binding(false),
                ])],
            ),
            claims(expected_csr(
                &[&vod],
                &[],
                &[OID_BASIC_CONSTRAINTS, ORIGIN_BINDING_OID_DER],
                &[],
            )),
        ),
        (
            "challenge_password",
            csr(
                seq(&[]),
                &[
                    typical_csr_request(),
                    attribute(OID_CHALLENGE_PASSWORD, tlv(0x0c, b"secret")),
                ],
            ),
            claims(expected_csr(&[&vod], &[], &[], &[OID_CHALLENGE_PASSWORD])),
        ),
        (
            "not_der",
            vec![0x30, 0x03, 0x02, 0x01],
            refused("malformed"),
        ),
        ("trailing_bytes", trailing, refused("trailing_bytes")),
        (
            "san_repeated",
            csr(
                seq(&[]),
                &[extension_request(&[
                    san(&[dns(vod.as_str())]),
                    san(&[dns(vod.as_str())]),
                ])],
            ),
            refused("subject_alt_name_repeated"),
        ),
        (
            "san_ip_address",
            csr(
                seq(&[]),
                &[extension_request(&[san(&[tlv(0x87, &[10, 0, 0, 1])])])],
            ),
            refused("non_dns_name"),
        ),
        (
            "san_public_name",
            csr(
                seq(&[]),
                &[extension_request(&[san(&[dns("vod.example.com")])])],
            ),
            refused("not_local_name"),
        ),
        (
            "common_name_public",
            csr(cn_name("vod.example.com"), &[typical_csr_request()]),
            refused("not_local_name"),
        ),
        (
            "extension_request_repeated",
            csr(seq(&[]), &[typical_csr_request(), typical_csr_request()]),
            refused("extension_request_repeated"),
        ),
    ]
}

fn outcome<T>(
    parsed: Result<T, localcert_proto::profile::ProfileError>,
    json: fn(&T) -> Value,
) -> Value {
    match parsed {
        Ok(claims) => json!({ "claims": json(&claims) }),
        Err(e) => json!({ "error": e.kind() }),
    }
}

#[test]
fn profile() {
    let section = |cases: Vec<(&str, Vec<u8>, Value)>| {
        cases
            .into_iter()
            .map(|(name, der, expect)| {
                let mut case = json!({"name": name, "der": hex::encode(der)});
                case.as_object_mut()
                    .unwrap()
                    .extend(expect.as_object().unwrap().clone());
                case
            })
            .collect::<Vec<_>>()
    };
    let file = check_file(
        "profile.json",
        json!({
            "description": "The certificate profile (SPEC §5.2, §5.3, §8.4): leaves and CSRs with \
                the claims a parser must report, or the rule they break. Signatures are \
                placeholders: signatures and chains are checked separately.",
            "leaves": { "cases": section(leaf_cases()) },
            "csrs": { "cases": section(csr_cases()) },
        }),
    );
    let without_name = |case: &Value| {
        let mut v = case.clone();
        let o = v.as_object_mut().unwrap();
        o.remove("name");
        o.remove("der");
        v
    };
    for case in cases(&file["leaves"]) {
        let got = outcome(parse_leaf(&unhex(&case["der"])), leaf_claims_json);
        assert_eq!(got, without_name(case), "leaf {}", case["name"]);
    }
    for case in cases(&file["csrs"]) {
        let got = outcome(parse_csr(&unhex(&case["der"])), csr_claims_json);
        assert_eq!(got, without_name(case), "csr {}", case["name"]);
    }
}

#[test]
fn requested_names_of_a_csr() {
    let vod = vod_name();
    let claims = |subject, names: &[Vec<u8>]| {
        parse_csr(&csr(subject, &[extension_request(&[san(names)])])).unwrap()
    };
    let typical = claims(cn_name(vod.as_str()), &[dns(vod.as_str())]);
    assert!(typical.asks_exactly_for(std::slice::from_ref(&vod)));
    assert!(!typical.asks_exactly_for(&[vod.clone(), other_name()]));
    assert!(!typical.asks_exactly_for(&[]));
    // A common name that the subjectAltName does not list is a further name.
    let extra_cn = claims(cn_name(other_name().as_str()), &[dns(vod.as_str())]);
    assert!(!extra_cn.asks_exactly_for(std::slice::from_ref(&vod)));
    assert!(extra_cn.asks_exactly_for(&[vod.clone(), other_name()]));
    // A name twice is not the name once.
    let twice = claims(seq(&[]), &[dns(vod.as_str()), dns(vod.as_str())]);
    assert!(!twice.asks_exactly_for(std::slice::from_ref(&vod)));
}
