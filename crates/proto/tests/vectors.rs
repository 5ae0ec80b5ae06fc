//! Runs the test vectors in `protocol/vectors/` in both directions.
//!
//! Encode: the values built here must encode to exactly the bytes in the files. Decode: the bytes
//! in the files must decode to exactly those values, and every malformed input must fail with
//! exactly the recorded error. After a deliberate wire change, regenerate with
//! `LOCALCERT_REGEN_VECTORS=1 cargo test -p localcert-proto --test vectors` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod profile;
mod samples;

use std::path::PathBuf;
use std::time::Instant;

use localcert_proto::attestation::AttestationObject;
use localcert_proto::binding::{ORIGIN_BINDING_OID, ORIGIN_BINDING_OID_DER, OriginBinding};
use localcert_proto::csr;
use localcert_proto::error::FrameError;
use localcert_proto::frame::{Command, Fragmenter, Frame, Reassembler};
use localcert_proto::gatt::{GattInfo, fragment_len};
use localcert_proto::message::{
    Operation, Request, Response, certificate_id, key_authorization_hash,
};
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName, origin_tag};
use localcert_proto::origin::Origin;
use localcert_proto::transcript::{HashedTranscript, Transcript};
use minicbor::Encoder;
use samples::*;
use serde_json::{Value, json};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors")
}

fn regenerating() -> bool {
    std::env::var_os("LOCALCERT_REGEN_VECTORS").is_some()
}

/// Writes (regenerating) or compares (normally) one vector file, and returns the file's content
/// for the decode direction.
fn check_file(file: &str, expected: Value) -> Value {
    let path = vectors_dir().join(file);
    if regenerating() {
        let text = serde_json::to_string_pretty(&expected).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let on_disk: Value = serde_json::from_str(&text).unwrap();
    assert!(
        on_disk == expected,
        "{file}: the code no longer produces the vectors (see module docs)"
    );
    on_disk
}

fn cases(v: &Value) -> &Vec<Value> {
    v["cases"].as_array().expect("cases")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn diag(bytes: &[u8]) -> String {
    minicbor::display(bytes).to_string()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn framing() {
    let mut expected = vec![];
    for mtu in [23u16, 185, 247, 517] {
        let fl = fragment_len(mtu);
        for len in [0, 1, fl - 3, fl - 2, 300, 2500] {
            let data = payload(len);
            let frags: Vec<String> = Fragmenter::new(Command::Msg, &data, fl)
                .unwrap()
                .map(hex::encode)
                .collect();
            expected.push(json!({
                "mtu": mtu, "fragment_len": fl, "command": "MSG",
                "data": hex::encode(&data), "arrival": arrival(frags.len()), "fragments": frags,
            }));
        }
    }
    for (name, frame) in [
        ("CANCEL", Frame::cancel()),
        (
            "KEEPALIVE",
            Frame::keep_alive(localcert_proto::frame::KeepAliveStatus::UserPresenceNeeded),
        ),
        (
            "ERROR",
            Frame::error(localcert_proto::ErrorCode::InvalidSequence),
        ),
    ] {
        let frags: Vec<String> = frame.fragments(18).unwrap().map(hex::encode).collect();
        expected.push(json!({
            "mtu": 23, "fragment_len": 18, "command": name,
            "data": hex::encode(&frame.data), "arrival": arrival(frags.len()), "fragments": frags,
        }));
    }
    let file = check_file(
        "framing.json",
        json!({
            "description": "Fragments of one frame at each ATT MTU. Every fragment is one characteristic value. A receiver must give the frame back from them in order, and in the order of `arrival` (indices into `fragments`, pairs swapped: reordering within a frame, SPEC §3.2).",
            "cases": expected,
        }),
    );
    for case in cases(&file) {
        let frags: Vec<Vec<u8>> = case["fragments"]
            .as_array()
            .unwrap()
            .iter()
            .map(unhex)
            .collect();
        let arrived: Vec<Vec<u8>> = case["arrival"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| frags[i.as_u64().unwrap() as usize].clone())
            .collect();
        for order in [&frags, &arrived] {
            let frame = reassemble(order).0.unwrap().unwrap();
            assert_eq!(frame.data, unhex(&case["data"]));
        }
        assert!(
            frags
                .iter()
                .all(|f| f.len() <= case["fragment_len"].as_u64().unwrap() as usize)
        );
    }
}

/// The order of arrival the framing vectors show: each pair of fragments swapped.
fn arrival(count: usize) -> Vec<usize> {
    (0..count)
        .map(|i| {
            if i % 2 == 0 {
                (i + 1).min(count - 1)
            } else {
                i - 1
            }
        })
        .collect()
}

#[test]
fn messages() {
    let mut expected = vec![];
    for (name, request) in requests() {
        let bytes = request.encode();
        let body = bytes.get(1..).unwrap_or_default();
        expected.push(json!({
            "name": name, "kind": "request", "operation": request.operation() as u8,
            "hex": hex::encode(&bytes), "diag": if body.is_empty() { String::new() } else { diag(body) },
        }));
    }
    for (name, op, response) in responses() {
        let bytes = response.encode();
        let body = bytes.get(1..).unwrap_or_default();
        expected.push(json!({
            "name": name, "kind": "response", "operation": op as u8,
            "hex": hex::encode(&bytes), "diag": if body.is_empty() { String::new() } else { diag(body) },
        }));
    }
    let file = check_file(
        "messages.json",
        json!({
            "description": "MSG payloads: operation or status byte, then the CBOR map (shown in diagnostic notation).",
            "cases": expected,
        }),
    );
    let mut reqs = requests().into_iter();
    let mut resps = responses().into_iter();
    for case in cases(&file) {
        let bytes = unhex(&case["hex"]);
        if case["kind"] == "request" {
            let (_, value) = reqs.next().unwrap();
            assert_eq!(Request::decode(&bytes), Ok(value), "{}", case["name"]);
        } else {
            let (_, op, value) = resps.next().unwrap();
            assert_eq!(Response::decode(op, &bytes), Ok(value), "{}", case["name"]);
        }
    }
}

fn sample_transcripts() -> Vec<(Vec<LocalName>, &'static [u8])> {
    vec![
        (vec![name("https://vod.example.com")], b"user-42"),
        (
            vec![
                name("https://vod.example.com"),
                LocalName::parse("tv.local").unwrap(),
            ],
            &[0u8; 64],
        ),
    ]
}

#[test]
fn transcripts() {
    let spki = hex::decode(SAMPLE_SPKI).unwrap();
    let vod = origin("https://vod.example.com");
    let ka = KEY_AUTHORIZATION;
    let mut expected = vec![];
    for (names, user_handle) in sample_transcripts() {
        let bytes = Transcript {
            key_authorization: ka,
            origin: &vod,
            user_handle,
            csr_spki: &spki,
            names: &names,
        }
        .to_bytes();
        expected.push(json!({
            "key_authorization": ka,
            "key_authorization_hash": hex::encode(key_authorization_hash(ka)), "origin": vod.as_str(), "user_handle": hex::encode(user_handle),
            "csr_spki": SAMPLE_SPKI, "names": names.iter().map(LocalName::as_str).collect::<Vec<_>>(),
            "hex": hex::encode(&bytes), "diag": diag(&bytes),
        }));
    }
    let file = check_file(
        "transcripts.json",
        json!({
            "description": "The bytes the attestation key signs (ES256) for the given inputs.",
            "cases": expected,
        }),
    );
    // Decode direction: rebuild each transcript from the file's own inputs.
    for case in cases(&file) {
        let names: Vec<LocalName> = case["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| LocalName::parse(n.as_str().unwrap()).unwrap())
            .collect();
        let bytes = Transcript {
            key_authorization: case["key_authorization"].as_str().unwrap(),
            origin: &origin(case["origin"].as_str().unwrap()),
            user_handle: &unhex(&case["user_handle"]),
            csr_spki: &unhex(&case["csr_spki"]),
            names: &names,
        }
        .to_bytes();
        assert_eq!(bytes, unhex(&case["hex"]));
        // A device signs the same bytes from the hash ATTEST carries.
        let hash: [u8; 32] = unhex(&case["key_authorization_hash"]).try_into().unwrap();
        let hashed = HashedTranscript {
            key_authorization_hash: &hash,
            origin: &origin(case["origin"].as_str().unwrap()),
            user_handle: &unhex(&case["user_handle"]),
            csr_spki: &unhex(&case["csr_spki"]),
            names: &names,
        }
        .to_bytes();
        assert_eq!(hashed, bytes);
    }
}

const NAME_ORIGINS: &[&str] = &[
    "https://vod.example.com",
    "https://app.test:8443",
    "https://xn--bcher-kva.example",
    "https://localhost",
    "https://a-very-long-subdomain-for-streaming.eu-west-1.media.example-corporation.com:65535",
];
const LABEL_TEXTS: &[&str] = &[
    "Media Server 1",
    "TV",
    "  Living Room -- Speaker!  ",
    "日本",
    "x",
];

#[test]
fn names() {
    let mut expected = vec![];
    for o in NAME_ORIGINS {
        for text in LABEL_TEXTS {
            let label = DeviceLabel::from_text(text);
            let n = LocalName::derive(&label, &origin(o), &device_tag());
            expected.push(json!({
                "origin": o, "label_text": text, "device_label": label.as_str(),
                "device_certificate": hex::encode(DEVICE_CERT), "device_tag": device_tag().as_str(),
                "origin_tag": origin_tag(&origin(o)), "name": n.as_str(),
            }));
        }
    }
    let file = check_file(
        "names.json",
        json!({
            "description": "Device label from free text, origin tag, device tag (from the attestation certificate DER) and the resulting name.",
            "cases": expected,
        }),
    );
    for case in cases(&file) {
        let o = origin(case["origin"].as_str().unwrap());
        let tag = DeviceTag::from_attestation_certificate(&unhex(&case["device_certificate"]));
        let n = LocalName::parse(case["name"].as_str().unwrap()).unwrap();
        let label = n.check_device(&o, &tag).unwrap();
        assert_eq!(label.as_str(), case["device_label"]);
        assert!(n.label().len() <= 63);
    }
}

#[test]
fn extension_and_attestation_and_info() {
    let vod = origin("https://vod.example.com");
    let binding = OriginBinding::new(vod.clone(), b"user-42");
    let att = AttestationObject {
        sig: vec![0x30, 0x44, 0x02, 0x20, 0x01],
        x5c: vec![DEVICE_CERT.to_vec()],
        spki: hex::decode(SAMPLE_SPKI).unwrap(),
        user_handle: b"user-42".to_vec(),
    };
    let answer = attest_response();
    let csr_name = name("https://vod.example.com");
    let infos: Vec<GattInfo> = [23u16, 185, 247, 517]
        .iter()
        .map(|&m| GattInfo::for_mtu(m))
        .collect();
    let file = check_file(
        "objects.json",
        json!({
            "description": "The origin-binding extension value (DER), an attestation object and the info characteristic values.",
            "origin_binding": {
                "oid": ORIGIN_BINDING_OID, "oid_der_content": hex::encode(ORIGIN_BINDING_OID_DER),
                "origin": vod.as_str(), "user_handle": hex::encode(b"user-42"),
                "user_handle_digest": hex::encode(binding.user_handle_digest), "der": hex::encode(binding.to_der()),
            },
            "attestation_object": { "hex": hex::encode(att.encode()), "diag": diag(&att.encode()) },
            "certificate_id": { "der": hex::encode(DEVICE_CERT), "id": hex::encode(certificate_id(DEVICE_CERT)) },
            "attest_parts": {
                "response": hex::encode(Response::Attest(answer.clone()).encode()),
                "names": [csr_name.as_str()],
                "spki": hex::encode(answer.spki()),
                "request_info": hex::encode(csr::request_info(&answer.public_key, std::slice::from_ref(&csr_name))),
                "csr": hex::encode(answer.csr(std::slice::from_ref(&csr_name))),
                "signature_der": hex::encode(answer.der_signature()),
            },
            "info": infos.iter().map(|i| json!({"hex": hex::encode(i.encode()), "diag": diag(&i.encode())})).collect::<Vec<_>>(),
        }),
    );
    assert_eq!(
        OriginBinding::from_der(&unhex(&file["origin_binding"]["der"])),
        Ok(binding)
    );
    assert_eq!(
        AttestationObject::decode(&unhex(&file["attestation_object"]["hex"])),
        Ok(att)
    );
    assert_eq!(
        certificate_id(&unhex(&file["certificate_id"]["der"])).to_vec(),
        unhex(&file["certificate_id"]["id"])
    );
    let parts = &file["attest_parts"];
    let Ok(Response::Attest(decoded)) =
        Response::decode(Operation::Attest, &unhex(&parts["response"]))
    else {
        panic!("attest_parts.response");
    };
    let names = vec![LocalName::parse(parts["names"][0].as_str().unwrap()).unwrap()];
    assert_eq!(decoded.spki(), unhex(&parts["spki"]));
    assert_eq!(decoded.csr(&names), unhex(&parts["csr"]));
    assert_eq!(decoded.der_signature(), unhex(&parts["signature_der"]));
    assert_eq!(
        csr::raw_signature(&unhex(&parts["signature_der"])),
        Some(decoded.signature)
    );
    for (case, info) in file["info"].as_array().unwrap().iter().zip(infos) {
        assert_eq!(GattInfo::decode(&unhex(&case["hex"])), Ok(info));
    }
}

// ---- malformed inputs ----

fn cbor(
    f: impl FnOnce(
        &mut Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>>,
) -> Vec<u8> {
    let mut out = vec![];
    f(&mut Encoder::new(&mut out)).unwrap();
    out
}

fn op(byte: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![byte];
    out.extend(body);
    out
}

/// An ATTEST body with `edit` applied to the sample's (key, encoded value) pairs.
fn attest_with(edit: impl FnOnce(&mut Vec<(u64, Vec<u8>)>)) -> Vec<u8> {
    let r = attest_request();
    let mut fields: Vec<(u64, Vec<u8>)> = vec![
        (1, cbor_text(r.origin.as_str())),
        (2, cbor_bytes(&r.user_handle)),
        (3, cbor_bytes(&r.key_authorization_hash)),
        (4, cbor_text(r.device_label.as_str())),
    ];
    edit(&mut fields);
    let mut out = cbor(|e| e.map(fields.len() as u64).map(drop));
    for (k, v) in fields {
        out.extend(cbor(|e| e.u64(k).map(drop)));
        out.extend(v);
    }
    op(0x02, out)
}

fn set(fields: &mut [(u64, Vec<u8>)], key: u64, value: Vec<u8>) {
    fields.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value;
}

/// An ATTEST body whose field `key` holds `value` (encoded) instead of the sample's.
fn attest_setting(key: u64, value: Vec<u8>) -> Vec<u8> {
    attest_with(|f| set(f, key, value))
}

fn cbor_text(text: &str) -> Vec<u8> {
    cbor(|e| e.str(text).map(drop))
}

fn cbor_bytes(bytes: &[u8]) -> Vec<u8> {
    cbor(|e| e.bytes(bytes).map(drop))
}

/// Feeds `fragments` in order to a new reassembler: none but the last completes anything.
/// Returns what the last one gives, and the reassembler after it.
fn reassemble(fragments: &[Vec<u8>]) -> (Result<Option<Frame>, FrameError>, Reassembler) {
    let mut r = Reassembler::new();
    let (last, init) = fragments.split_last().unwrap();
    for f in init {
        assert_eq!(r.handle_fragment(Instant::now(), f), Ok(None));
    }
    (r.handle_fragment(Instant::now(), last), r)
}

/// An AttestResponse map with field `key` set to `value`.
fn attest_response_with(key: u8, value: &[u8]) -> Vec<u8> {
    let good = attest_response();
    cbor(|e| {
        e.map(3)?;
        let fields: [&[u8]; 3] = [&good.public_key, &good.csr_signature, &good.signature];
        for (k, v) in (1u8..).zip(fields) {
            e.u8(k)?.bytes(if k == key { value } else { v })?;
        }
        Ok(())
    })
}

/// An InfoResponse map with one known issuer id of the given bytes.
fn info_with_known(id: &[u8]) -> Vec<u8> {
    info_map("media-server-1", id)
}

/// An InfoResponse map with the given device label.
fn info_with_label(label: &str) -> Vec<u8> {
    info_map(label, &[0; 8])
}

fn info_map(label: &str, id: &[u8]) -> Vec<u8> {
    cbor(|e| {
        e.map(8)?.u8(1)?.u8(2)?.u8(2)?.str("Media Server 1")?;
        e.u8(3)?.str(label)?.u8(4)?.array(1)?.bytes(DEVICE_CERT)?;
        e.u8(5)?.u8(0)?.u8(6)?.u8(0)?.u8(7)?.u8(4)?;
        e.u8(8)?.array(1)?.bytes(id).map(drop)
    })
}

fn install_with_cors(cors: Vec<u8>) -> Vec<u8> {
    let mut body = cbor(|e| e.map(2)?.u8(1)?.array(1)?.bytes(&[0x30]).map(drop));
    body.extend(cbor(|e| e.u8(2).map(drop)));
    body.extend(cors);
    op(0x03, body)
}

fn cors_map(methods: &[&str], headers: &[&str], max_age: u64) -> Vec<u8> {
    cbor(|e| {
        e.map(5)?.u8(1)?.array(methods.len() as u64)?;
        for m in methods {
            e.str(m)?;
        }
        e.u8(2)?.array(headers.len() as u64)?;
        for h in headers {
            e.str(h)?;
        }
        e.u8(3)?.array(0)?.u8(4)?.bool(false)?.u8(5)?.u64(max_age)?;
        Ok(())
    })
}

fn att_obj(
    f: impl FnOnce(
        &mut Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>>,
) -> Vec<u8> {
    cbor(f)
}

fn stmt(
    e: &mut Encoder<&mut Vec<u8>>,
    alg: i64,
    sig_len: usize,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    e.map(5)?
        .str("alg")?
        .i64(alg)?
        .str("sig")?
        .bytes(&vec![1; sig_len])?;
    e.str("x5c")?
        .array(1)?
        .bytes(DEVICE_CERT)?
        .str("spki")?
        .bytes(&[1, 2])?
        .str("userHandle")?
        .bytes(b"u")?;
    Ok(())
}

fn camel_to_snake(s: &str) -> String {
    let head = s.split(['(', ' ', '{']).next().unwrap_or(s);
    let mut out = String::new();
    for (i, c) in head.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// (name, target, input, error kind). For frames the input is a list of fragments, and the
/// error is the one the last fragment produces.
fn malformed() -> Vec<(&'static str, &'static str, Value)> {
    let h = |b: Vec<u8>| Value::String(hex::encode(b));
    let frags = |list: Vec<Vec<u8>>| {
        Value::Array(
            list.into_iter()
                .map(|b| Value::String(hex::encode(b)))
                .collect(),
        )
    };
    let long_handle = vec![7u8; 65];
    vec![
        ("request_empty", "request", h(vec![])),
        ("request_unknown_operation", "request", h(vec![0x09])),
        ("get_info_trailing_byte", "request", h(vec![0x01, 0x00])),
        (
            "attest_body_is_array",
            "request",
            h(op(0x02, cbor(|e| e.array(0).map(drop)))),
        ),
        (
            "attest_missing_key_authorization_hash",
            "request",
            h(attest_with(|f| f.retain(|(k, _)| *k != 3))),
        ),
        (
            "attest_unknown_key",
            "request",
            h(attest_with(|f| f.push((9, cbor(|e| e.u8(0).map(drop)))))),
        ),
        (
            "attest_keys_out_of_order",
            "request",
            h(attest_with(|f| f.swap(0, 1))),
        ),
        (
            "attest_duplicate_key",
            "request",
            h(attest_with(|f| f.insert(1, (1, f[0].1.clone())))),
        ),
        (
            "attest_user_handle_too_long",
            "request",
            h(attest_setting(2, cbor_bytes(&long_handle))),
        ),
        (
            "attest_user_handle_empty",
            "request",
            h(attest_setting(2, cbor_bytes(&[]))),
        ),
        (
            "attest_origin_http",
            "request",
            h(attest_setting(1, cbor_text("http://vod.example.com"))),
        ),
        (
            "attest_origin_with_path",
            "request",
            h(attest_setting(1, cbor_text("https://vod.example.com/x"))),
        ),
        (
            "attest_origin_as_bytes",
            "request",
            h(attest_setting(1, cbor_bytes(b"https://a.test"))),
        ),
        (
            "attest_key_authorization_hash_short",
            "request",
            h(attest_setting(3, cbor_bytes(&[0; 31]))),
        ),
        (
            "attest_key_authorization_as_text",
            "request",
            h(attest_setting(3, cbor_text("abc.def"))),
        ),
        (
            "attest_label_too_long",
            "request",
            h(attest_setting(4, cbor_text(&"a".repeat(21)))),
        ),
        (
            "remove_origin_ip",
            "request",
            h(op(
                0x05,
                cbor(|e| e.map(1)?.u8(1)?.str("https://10.0.0.1").map(drop)),
            )),
        ),
        (
            "attest_label_upper_case",
            "request",
            h(attest_setting(4, cbor_text("TV"))),
        ),
        (
            "attest_origin_invalid_utf8",
            "request",
            h(attest_setting(1, vec![0x62, 0xc3, 0x28])),
        ),
        (
            "attest_origin_indefinite_text",
            "request",
            h(attest_setting(1, vec![0x7f, 0x61, 0x61, 0xff])),
        ),
        (
            "attest_indefinite_map",
            "request",
            h(op(0x02, vec![0xbf, 0xff])),
        ),
        (
            "attest_truncated",
            "request",
            h({
                let mut b = attest_with(|_| {});
                b.pop();
                b
            }),
        ),
        (
            "attest_trailing_byte",
            "request",
            h({
                let mut b = attest_with(|_| {});
                b.push(0);
                b
            }),
        ),
        (
            "attest_non_minimal_key",
            "request",
            h({
                let b = attest_with(|_| {});
                // Re-encode key 1 (0x01) as 0x18 0x01: valid CBOR, not deterministic.
                let mut out = b[..2].to_vec();
                out.extend([0x18, 0x01]);
                out.extend(&b[3..]);
                out
            }),
        ),
        ("attest_map_too_large", "request", h(op(0x02, vec![0xb1]))),
        (
            "install_chain_empty",
            "request",
            h(op(0x03, cbor(|e| e.map(1)?.u8(1)?.array(0).map(drop)))),
        ),
        (
            "install_chain_too_long",
            "request",
            h(op(
                0x03,
                cbor(|e| {
                    e.map(1)?.u8(1)?.array(4)?;
                    (0..4).try_for_each(|_| e.bytes(&[0x30]).map(drop))
                }),
            )),
        ),
        (
            "install_certificate_too_long",
            "request",
            h(op(
                0x03,
                cbor(|e| e.map(1)?.u8(1)?.array(1)?.bytes(&[0; 2049]).map(drop)),
            )),
        ),
        (
            "install_cors_wildcard_method",
            "request",
            h(install_with_cors(cors_map(&["*"], &[], 600))),
        ),
        (
            "install_cors_upper_case_header",
            "request",
            h(install_with_cors(cors_map(
                &["GET"],
                &["Content-Type"],
                600,
            ))),
        ),
        (
            "install_cors_no_methods",
            "request",
            h(install_with_cors(cors_map(&[], &[], 600))),
        ),
        (
            "install_cors_max_age_too_long",
            "request",
            h(install_with_cors(cors_map(&["GET"], &[], 86_401))),
        ),
        (
            "install_missing_cors",
            "request",
            h(op(
                0x03,
                cbor(|e| e.map(1)?.u8(1)?.array(1)?.bytes(&[0x30]).map(drop)),
            )),
        ),
        (
            "install_star_url_not_https",
            "request",
            h({
                let mut b = install_with_cors(cors_map(&["GET"], &[], 600));
                b[1] = 0xa3;
                b.extend(cbor(|e| e.u8(3)?.str("http://issuer.test/star").map(drop)));
                b
            }),
        ),
        ("response_unknown_status", "response:install", h(vec![0x42])),
        ("response_empty", "response:install", h(vec![])),
        (
            "install_response_port_zero",
            "response:install",
            h(op(0, cbor(|e| e.map(1)?.u8(1)?.u8(0).map(drop)))),
        ),
        (
            "install_response_rev1_name",
            "response:install",
            h(op(
                0,
                cbor(|e| e.map(2)?.u8(1)?.str("tv.local")?.u8(2)?.u16(443).map(drop)),
            )),
        ),
        (
            "info_response_known_issuer_short",
            "response:info",
            h(op(0, info_with_known(&[0; 7]))),
        ),
        (
            "info_response_label_invalid",
            "response:info",
            h(op(0, info_with_label("Media Server"))),
        ),
        (
            "attest_response_signature_der",
            "response:attest",
            h(op(0, attest_response_with(3, &[0x30; 70]))),
        ),
        (
            "attest_response_key_compressed",
            "response:attest",
            h(op(0, attest_response_with(1, &[0x02; 33]))),
        ),
        (
            "attest_response_key_not_uncompressed",
            "response:attest",
            h(op(0, attest_response_with(1, &[0x02; 65]))),
        ),
        (
            "list_response_too_many_bindings",
            "response:list",
            h(op(0, cbor(|e| e.map(1)?.u8(1)?.array(17).map(drop)))),
        ),
        (
            "error_response_message_too_long",
            "response:install",
            h(op(
                0x17,
                cbor(|e| e.map(1)?.u8(1)?.str(&"x".repeat(129)).map(drop)),
            )),
        ),
        (
            "attestation_wrong_fmt",
            "attestation",
            h(att_obj(|e| {
                e.map(2)?.str("fmt")?.str("packed")?.str("attStmt")?;
                stmt(e, -7, 70)
            })),
        ),
        (
            "attestation_wrong_alg",
            "attestation",
            h(att_obj(|e| {
                e.map(2)?.str("fmt")?.str("localcert-v1")?.str("attStmt")?;
                stmt(e, -8, 70)
            })),
        ),
        (
            "attestation_signature_too_long",
            "attestation",
            h(att_obj(|e| {
                e.map(2)?.str("fmt")?.str("localcert-v1")?.str("attStmt")?;
                stmt(e, -7, 73)
            })),
        ),
        (
            "attestation_keys_out_of_order",
            "attestation",
            h(att_obj(|e| {
                e.map(2)?.str("attStmt")?;
                stmt(e, -7, 70)?;
                e.str("fmt")?.str("localcert-v1").map(drop)
            })),
        ),
        (
            "attestation_extra_key",
            "attestation",
            h(att_obj(|e| e.map(3).map(drop))),
        ),
        (
            "attestation_missing_statement",
            "attestation",
            h(att_obj(|e| {
                e.map(1)?.str("fmt")?.str("localcert-v1").map(drop)
            })),
        ),
        ("attestation_not_a_map", "attestation", h(vec![0x80])),
        (
            "info_fragment_too_small",
            "info",
            h(cbor(|e| {
                e.map(3)?
                    .u8(1)?
                    .u8(1)?
                    .u8(2)?
                    .u8(10)?
                    .u8(3)?
                    .u16(8192)
                    .map(drop)
            })),
        ),
        (
            "extension_truncated",
            "extension",
            h({
                let mut d = OriginBinding::new(origin("https://a.test"), b"u").to_der();
                d.pop();
                d
            }),
        ),
        (
            "extension_origin_not_https",
            "extension",
            h(vec![
                0x30, 0x0a, 0x16, 0x06, b'h', b't', b't', b'p', b':', b'x', 0x04, 0x00,
            ]),
        ),
        (
            "extension_short_digest",
            "extension",
            h({
                let mut d = vec![0x30, 0x31, 0x16, 0x0e];
                d.extend(b"https://a.test");
                d.extend([0x04, 0x1f]);
                d.extend([0; 31]);
                d
            }),
        ),
        ("frame_empty", "frames", frags(vec![vec![]])),
        ("frame_too_long", "frames", frags(vec![vec![0x83; 513]])),
        (
            "frame_unknown_command",
            "frames",
            frags(vec![vec![0x90, 0, 0]]),
        ),
        (
            "frame_truncated_header",
            "frames",
            frags(vec![vec![0x83, 0]]),
        ),
        (
            "frame_message_too_long",
            "frames",
            frags(vec![vec![0x83, 0x20, 0x01]]),
        ),
        (
            "frame_initial_overrun",
            "frames",
            frags(vec![vec![0x83, 0, 1, 1, 2]]),
        ),
        (
            "frame_continuation_overrun",
            "frames",
            frags(vec![vec![0x83, 0, 3, 1], vec![0, 2, 3, 4]]),
        ),
        (
            "frame_unexpected_continuation",
            "frames",
            frags(vec![vec![0x0e, 1], vec![0x0f, 1]]),
        ),
        (
            "frame_sequence_gap",
            "frames",
            frags(vec![vec![0x83, 0, 64, 1], vec![0, 2], vec![0x11, 3]]),
        ),
        (
            "frame_duplicate_continuation",
            "frames",
            frags(vec![vec![0x83, 0, 9, 1], vec![1, 2], vec![1, 3]]),
        ),
        (
            "frame_interrupted",
            "frames",
            frags(vec![vec![0x83, 0, 9, 1], vec![0x83, 0, 1, 1]]),
        ),
        (
            "origin_http",
            "origin",
            Value::String("http://vod.example.com".into()),
        ),
        (
            "origin_upper_case",
            "origin",
            Value::String("https://VOD.example.com".into()),
        ),
        (
            "origin_default_port",
            "origin",
            Value::String("https://vod.example.com:443".into()),
        ),
        (
            "origin_ip",
            "origin",
            Value::String("https://192.168.1.2".into()),
        ),
        (
            "origin_unicode_host",
            "origin",
            Value::String("https://bücher.example".into()),
        ),
        (
            "label_double_hyphen",
            "label",
            Value::String("tv--1".into()),
        ),
        ("label_too_long", "label", Value::String("a".repeat(21))),
        (
            "name_two_labels",
            "name",
            Value::String("tv.home.local".into()),
        ),
        (
            "name_not_local",
            "name",
            Value::String("tv.example.com".into()),
        ),
    ]
}

/// The error `target` gives for `input`, as a stable name.
fn error_for(target: &str, input: &Value) -> String {
    let bytes = || unhex(input);
    let text = || input.as_str().unwrap().to_owned();
    match target {
        "request" => Request::decode(&bytes()).unwrap_err().kind().to_owned(),
        "response:install" => Response::decode(Operation::Install, &bytes())
            .unwrap_err()
            .kind()
            .to_owned(),
        "response:info" => Response::decode(Operation::GetInfo, &bytes())
            .unwrap_err()
            .kind()
            .to_owned(),
        "response:attest" => Response::decode(Operation::Attest, &bytes())
            .unwrap_err()
            .kind()
            .to_owned(),
        "response:list" => Response::decode(Operation::List, &bytes())
            .unwrap_err()
            .kind()
            .to_owned(),
        "attestation" => AttestationObject::decode(&bytes())
            .unwrap_err()
            .kind()
            .to_owned(),
        "info" => GattInfo::decode(&bytes()).unwrap_err().kind().to_owned(),
        "extension" => OriginBinding::from_der(&bytes())
            .unwrap_err()
            .kind()
            .to_owned(),
        "frames" => {
            let frags: Vec<Vec<u8>> = input.as_array().unwrap().iter().map(unhex).collect();
            let (result, r) = reassemble(&frags);
            let err = result.unwrap_err();
            assert!(r.is_idle(), "an error leaves no partial message");
            err.kind().to_owned()
        }
        "origin" => camel_to_snake(&format!("{:?}", Origin::parse(&text()).unwrap_err())),
        "label" => camel_to_snake(&format!("{:?}", DeviceLabel::parse(&text()).unwrap_err())),
        "name" => camel_to_snake(&format!("{:?}", LocalName::parse(&text()).unwrap_err())),
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn malformed_inputs() {
    let expected: Vec<Value> = malformed()
        .into_iter()
        .map(|(name, target, input)| {
            let error = error_for(target, &input);
            json!({"name": name, "target": target, "input": input, "error": error})
        })
        .collect();
    let file = check_file(
        "malformed.json",
        json!({
            "description": "Inputs every implementation must refuse, with the error each must produce. \
                Targets: request/response (MSG payloads), attestation (attObj), info (info characteristic), \
                extension (origin-binding DER), frames (fragments in order; the last one fails), \
                origin, label, name (strings).",
            "cases": expected,
        }),
    );
    let mut seen = std::collections::HashSet::new();
    for case in cases(&file) {
        assert!(
            seen.insert(case["name"].as_str().unwrap().to_owned()),
            "duplicate {}",
            case["name"]
        );
        let target = case["target"].as_str().unwrap();
        assert_eq!(
            error_for(target, &case["input"]),
            case["error"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}
