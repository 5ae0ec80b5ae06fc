//! Property tests: fragmentation round trips at every MTU, totality of every decoder on
//! arbitrary bytes, and name derivation without collisions.
//!
//! Cases per property come from `PROPTEST_CASES` (CI sets 10000; the default is 256).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod samples;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use localcert_proto::attestation::AttestationObject;
use localcert_proto::binding::OriginBinding;
use localcert_proto::frame::{Command, Fragmenter, MAX_MESSAGE_LEN, REORDER_WINDOW, Reassembler};
use localcert_proto::gatt::{GattInfo, MAX_VALUE_LEN, fragment_len};
use localcert_proto::message::*;
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName, origin_tag};
use localcert_proto::origin::Origin;
use proptest::prelude::*;
use samples::*;

fn host() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?";
    (prop::collection::vec(label, 0..4), "[a-z]{2,10}").prop_map(|(mut labels, tld)| {
        labels.push(tld);
        labels.join(".")
    })
}

fn arb_origin() -> impl Strategy<Value = Origin> {
    (host(), prop::option::of(1u16..=65535)).prop_filter_map("default port", |(host, port)| {
        let s = match port {
            Some(443) => return None,
            Some(p) => format!("https://{host}:{p}"),
            None => format!("https://{host}"),
        };
        Origin::parse(&s).ok()
    })
}

fn arb_label() -> impl Strategy<Value = DeviceLabel> {
    ".{0,40}".prop_map(|text| DeviceLabel::from_text(&text))
}

fn arb_cors() -> impl Strategy<Value = CorsPolicy> {
    let method =
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]).prop_map(String::from);
    let header = "[a-z][a-z0-9-]{0,30}";
    (
        prop::collection::vec(method, 1..=4),
        prop::collection::vec(header, 0..=4),
        prop::collection::vec(header, 0..=4),
        any::<bool>(),
        0..=MAX_CORS_MAX_AGE,
    )
        .prop_map(
            |(methods, allow_headers, expose_headers, allow_credentials, max_age)| CorsPolicy {
                methods,
                allow_headers,
                expose_headers,
                allow_credentials,
                max_age,
            },
        )
}

fn bytes(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), min..=max)
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::GetInfo),
        Just(Request::List),
        arb_origin().prop_map(|origin| Request::Remove(RemoveRequest { origin })),
        (
            arb_origin(),
            bytes(1, MAX_USER_HANDLE_LEN),
            any::<[u8; 32]>(),
            arb_label(),
            prop::option::of("[0-9]{4,8}")
        )
            .prop_map(
                |(origin, user_handle, key_authorization_hash, device_label, pin)| {
                    Request::Attest(AttestRequest {
                        origin,
                        user_handle,
                        key_authorization_hash,
                        device_label,
                        pin,
                    })
                }
            ),
        (
            prop::collection::vec(bytes(1, 900), 1..=MAX_CHAIN_LEN),
            arb_cors(),
            prop::option::of("https://[a-z.]{1,40}/star/[a-z0-9]{1,20}")
        )
            .prop_map(|(chain, cors, star_url)| Request::Install(InstallRequest {
                chain,
                cors,
                star_url
            })),
    ]
}

/// Fragments `data` at `mtu` and reassembles it, with `now` advancing by `gap` per fragment.
fn round_trip(data: &[u8], mtu: u16, gap: Duration) -> Vec<u8> {
    let mut r = Reassembler::new();
    let mut now = Instant::now();
    let mut out = None;
    for fragment in Fragmenter::new(Command::Msg, data, fragment_len(mtu)).unwrap() {
        assert!(fragment.len() <= fragment_len(mtu));
        assert!(out.is_none(), "a frame completed before its last fragment");
        out = r.handle_fragment(now, &fragment).unwrap();
        now += gap;
    }
    out.expect("the last fragment completes the frame").data
}

proptest! {
    #[test]
    fn any_message_survives_any_fragmentation(request in arb_request(), mtu in 0u16..=600, gap_ms in 0u64..4000) {
        let bytes = request.encode();
        prop_assert!(bytes.len() <= MAX_MESSAGE_LEN);
        let back = round_trip(&bytes, mtu, Duration::from_millis(gap_ms));
        prop_assert_eq!(Request::decode(&back), Ok(request));
    }

    #[test]
    fn any_payload_survives_any_mtu(data in bytes(0, MAX_MESSAGE_LEN), mtu in 23u16..=517) {
        prop_assert_eq!(round_trip(&data, mtu, Duration::ZERO), data);
    }

    #[test]
    fn any_payload_survives_reordering_within_the_window(
        data in bytes(0, MAX_MESSAGE_LEN), mtu in 23u16..=517, block in 1usize..=REORDER_WINDOW
    ) {
        let fragments: Vec<Vec<u8>> =
            Fragmenter::new(Command::Msg, &data, fragment_len(mtu)).unwrap().collect();
        let mut order: Vec<usize> = (0..fragments.len()).collect();
        for chunk in order.chunks_mut(block) {
            chunk.reverse();
        }
        let mut r = Reassembler::new();
        let now = Instant::now();
        let mut out = None;
        for i in order {
            prop_assert!(out.is_none(), "a frame completed before its last fragment");
            out = r.handle_fragment(now, &fragments[i]).unwrap();
        }
        prop_assert_eq!(out.map(|f| f.data), Some(data));
    }

    #[test]
    fn arbitrary_fragments_never_panic_the_reassembler(
        fragments in prop::collection::vec((bytes(0, MAX_VALUE_LEN + 2), 0u64..7000), 0..40)
    ) {
        let mut r = Reassembler::new();
        let mut now = Instant::now();
        for (fragment, gap_ms) in fragments {
            now += Duration::from_millis(gap_ms);
            let _ = r.handle_timeout(now);
            if let Ok(Some(frame)) = r.handle_fragment(now, &fragment) {
                prop_assert!(frame.data.len() <= MAX_MESSAGE_LEN);
                prop_assert!(r.is_idle());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(data in bytes(0, 600)) {
        let _ = Request::decode(&data);
        for op in [Operation::GetInfo, Operation::Attest, Operation::Install, Operation::List, Operation::Remove] {
            let _ = Response::decode(op, &data);
        }
        let _ = AttestationObject::decode(&data);
        let _ = GattInfo::decode(&data);
        let _ = OriginBinding::from_der(&data);
    }

    #[test]
    fn mutated_messages_never_panic_and_never_decode_to_something_else(
        request in arb_request(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
    ) {
        let mut bytes = request.encode();
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        // Whatever decodes must re-encode to exactly these bytes: the decoders are canonical.
        if let Ok(decoded) = Request::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_name_and_origin_parsers(s in "\\PC{0,80}", raw in ".{0,300}") {
        for text in [&s, &raw] {
            if let Ok(o) = Origin::parse(text) {
                prop_assert_eq!(o.as_str(), text.as_str());
            }
            if let Ok(n) = LocalName::parse(text) {
                prop_assert!(n.label().len() <= 63);
            }
            let _ = DeviceLabel::parse(text);
            let label = DeviceLabel::from_text(text);
            prop_assert_eq!(DeviceLabel::parse(label.as_str()), Ok(label.clone()));
        }
    }

    #[test]
    fn derived_names_are_valid_and_round_trip(origin in arb_origin(), label in arb_label(), cert in bytes(1, 64)) {
        let tag = DeviceTag::from_attestation_certificate(&cert);
        let name = LocalName::derive(&label, &origin, &tag);
        prop_assert!(name.label().len() <= 63);
        prop_assert_eq!(LocalName::parse(name.as_str()), Ok(name.clone()));
        prop_assert_eq!(name.check_device(&origin, &tag), Ok(label));
    }

    #[test]
    fn distinct_origins_get_distinct_tags(a in arb_origin(), b in arb_origin()) {
        prop_assume!(a != b);
        prop_assert_ne!(origin_tag(&a), origin_tag(&b));
    }
}

/// A large generated set: 50,000 origins, many sharing a slug (same host, other ports; hosts
/// that differ only in dots and hyphens), and no two share a name.
#[test]
fn no_name_collisions_in_a_large_set() {
    let tag = device_tag();
    let label = label();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut count = 0;
    for i in 0..12_500u32 {
        for s in [
            format!("https://host{i}.example.com"),
            format!("https://host{i}-example.com"),
            format!("https://host{i}.example.com:{}", 1024 + i % 60_000),
            format!("https://h.{i}.example"),
        ] {
            let origin = Origin::parse(&s).unwrap();
            let name = LocalName::derive(&label, &origin, &tag).as_str().to_owned();
            if let Some(other) = seen.insert(name.clone(), s.clone()) {
                panic!("{s} and {other} both map to {name}");
            }
            count += 1;
        }
    }
    assert_eq!(count, 50_000);
}
