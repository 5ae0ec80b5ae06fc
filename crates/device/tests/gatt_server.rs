//! The BLE session driver every transport shares: one central at a time, idle takeover, the
//! ATT MTU of each write, subscriptions, disconnects, and the info characteristic's cap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use localcert_device::gatt::{GattServer, IDLE_TAKEOVER, Written};
use localcert_device::presence::AutoApprove;
use localcert_device::{DeviceBuilder, DeviceConfig};
use localcert_proto::frame::{Command, Frame, Reassembler};
use localcert_proto::gatt::{GattInfo, fragment_len};
use localcert_proto::message::{AttestRequest, Request, Response};
use localcert_proto::name::DeviceLabel;
use localcert_proto::origin::Origin;
use localcert_proto::peripheral::{GattPeripheral, WriteRefused};

fn server() -> Arc<GattServer<u32>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/devices/device-1");
    let agent = DeviceBuilder::from_credential_files(
        DeviceConfig::new("Media Server 1"),
        &dir.join("attestation.key.pem"),
        &dir.join("attestation.pem"),
    )
    .unwrap()
    .presence(AutoApprove)
    .build();
    let server = Arc::new(GattServer::new(agent));
    // A central has subscribed to the status characteristic (BlueZ: the service's notifier).
    server.set_notifying(true);
    server
}

fn fragments(request: &Request, att_mtu: u16) -> Vec<Vec<u8>> {
    Frame::msg(request.encode())
        .fragments(fragment_len(att_mtu))
        .unwrap()
        .collect()
}

fn attest() -> Request {
    Request::Attest(AttestRequest {
        origin: Origin::parse("https://vod.example.com").unwrap(),
        user_handle: b"user-1".to_vec(),
        key_authorization_hash: [7; 32],
        device_label: DeviceLabel::parse("media-server-1").unwrap(),
        pin: None,
    })
}

/// Writes `request` as `central` and reads the response `central` is notified, checking
/// every fragment fits the MTU.
fn exchange(
    server: &GattServer<u32>,
    central: u32,
    now: Instant,
    att_mtu: u16,
    request: &Request,
) -> Result<Response, WriteRefused> {
    for fragment in fragments(request, att_mtu) {
        server.write(central, now, att_mtu, &fragment)?;
    }
    let mut reassembler = Reassembler::new();
    while let Some(fragment) = server.poll_notification(central) {
        assert!(
            fragment.len() <= fragment_len(att_mtu),
            "{}",
            fragment.len()
        );
        if let Some(frame) = reassembler.handle_fragment(now, &fragment).unwrap() {
            assert_eq!(frame.cmd, Command::Msg);
            return Ok(Response::decode(request.operation(), &frame.data).unwrap());
        }
    }
    panic!("no response for central {central}")
}

#[test]
fn info_follows_the_mtu_under_the_servers_cap() {
    let server = server();
    let info = |s: &GattServer<u32>, mtu| GattInfo::decode(&s.info(mtu)).unwrap();
    assert_eq!(info(&server, 23).max_fragment_len, 18);
    assert_eq!(info(&server, 247).max_fragment_len, 242);
    assert_eq!(info(&server, 517).max_fragment_len, 512);
    let capped = GattServer::<u32>::new(server.agent().clone()).with_max_fragment_len(510);
    assert_eq!(info(&capped, 517).max_fragment_len, 510);
    assert_eq!(info(&capped, 23).max_fragment_len, 18);
}

#[test]
fn the_mtu_of_each_write_sizes_the_notifications() {
    let server = server();
    let now = Instant::now();
    let at23 = exchange(&server, 1, now, 23, &Request::GetInfo).unwrap();
    // The same session, now at a larger MTU: the check in `exchange` would catch 242-byte
    // fragments at MTU 23 and vice versa.
    let at247 = exchange(&server, 1, now, 247, &Request::GetInfo).unwrap();
    assert_eq!(at23, at247);
}

#[test]
fn a_second_central_is_refused_while_the_first_is_active_and_changes_nothing() {
    let server = server();
    let now = Instant::now();
    let [first] = fragments(&Request::GetInfo, 23).try_into().unwrap();
    assert_eq!(server.write(1, now, 23, &first), Ok(Written::Started));
    let just_before = now + IDLE_TAKEOVER - Duration::from_millis(1);
    assert_eq!(
        server.write(2, just_before, 23, &first),
        Err(WriteRefused::Busy)
    );
    // The refused central gets nothing; the first one's response is intact.
    assert_eq!(server.poll_notification(2), None);
    let mut reassembler = Reassembler::new();
    let mut frame = None;
    while let Some(f) = server.poll_notification(1) {
        frame = reassembler.handle_fragment(now, &f).unwrap();
    }
    let frame = frame.unwrap();
    assert!(matches!(
        Response::decode(Request::GetInfo.operation(), &frame.data).unwrap(),
        Response::Info(_)
    ));
    assert_eq!(
        server.write(1, just_before, 23, &first),
        Ok(Written::Continued)
    );
}

#[test]
fn an_idle_central_loses_its_session_to_the_next() {
    let server = server();
    let now = Instant::now();
    exchange(&server, 1, now, 23, &Request::GetInfo).unwrap();
    let later = now + IDLE_TAKEOVER;
    let [first] = fragments(&Request::GetInfo, 23).try_into().unwrap();
    assert_eq!(server.write(2, later, 23, &first), Ok(Written::TookOver(1)));
    assert_eq!(server.poll_notification(1), None);
    assert!(server.poll_notification(2).is_some());
    // The first central is now the one refused.
    assert_eq!(server.write(1, later, 23, &first), Err(WriteRefused::Busy));
}

#[test]
fn a_central_in_the_middle_of_a_message_is_not_taken_over() {
    let server = server();
    let now = Instant::now();
    let attest = fragments(&attest(), 23);
    assert!(attest.len() > 2);
    server.write(1, now, 23, &attest[0]).unwrap();
    let later = now + IDLE_TAKEOVER * 2;
    // Half a message is in the engine: its reassembly timeout, not a takeover, ends it.
    let [get_info] = fragments(&Request::GetInfo, 23).try_into().unwrap();
    assert_eq!(
        server.write(2, later - IDLE_TAKEOVER / 2, 23, &get_info),
        Err(WriteRefused::Busy)
    );
    // ...which times out and frees the session (a framing error is queued for central 1).
    server.handle_timeout(later);
    assert_eq!(
        server.write(2, later, 23, &get_info),
        Ok(Written::TookOver(1))
    );
}

#[test]
fn a_disconnect_ends_the_session_and_only_its_own() {
    let server = server();
    let now = Instant::now();
    exchange(&server, 1, now, 23, &Request::GetInfo).unwrap();
    assert!(!server.disconnect(2), "not central 2's session");
    let [first] = fragments(&Request::GetInfo, 23).try_into().unwrap();
    assert_eq!(server.write(2, now, 23, &first), Err(WriteRefused::Busy));
    assert!(server.disconnect(1));
    assert_eq!(server.write(2, now, 23, &first), Ok(Written::Started));
    assert!(server.end_session());
    assert!(!server.end_session());
}

#[test]
fn a_connection_notifies_only_once_subscribed_and_dropping_it_disconnects() {
    let server = server();
    let now = Instant::now();
    server.set_notifying(false);
    let mut connection = server.connection(7);
    for fragment in fragments(&Request::GetInfo, 23) {
        connection.write(now, 23, &fragment).unwrap();
    }
    assert_eq!(connection.poll_notification(), None, "not subscribed yet");
    connection.subscribe();
    assert_eq!(
        connection.poll_notification(),
        None,
        "nothing was kept for later"
    );
    for fragment in fragments(&Request::GetInfo, 23) {
        connection.write(now, 23, &fragment).unwrap();
    }
    assert!(connection.poll_notification().is_some());
    let [first] = fragments(&Request::GetInfo, 23).try_into().unwrap();
    assert_eq!(server.write(8, now, 23, &first), Err(WriteRefused::Busy));
    drop(connection);
    assert_eq!(server.write(8, now, 23, &first), Ok(Written::Started));
}

fn ping(len: usize) -> Vec<u8> {
    let frame = Frame {
        cmd: Command::Ping,
        data: vec![0x5a; len],
    };
    let [fragment] = frame
        .fragments(512)
        .unwrap()
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    fragment
}

#[test]
fn without_a_subscriber_a_flood_queues_nothing() {
    let server = server();
    server.set_notifying(false);
    let now = Instant::now();
    let mut garbage = vec![0xff, 0xff];
    for i in 0..200_000u32 {
        // PINGs to echo and fragments that each earn an ERROR frame.
        let value = if i % 2 == 0 {
            ping(500)
        } else {
            garbage.clone()
        };
        assert!(server.write(1, now, 517, &value).is_ok());
        garbage[1] = garbage[1].wrapping_add(1);
    }
    assert_eq!(server.queued_bytes(), 0);
    assert_eq!(server.poll_notification(1), None);
}

#[test]
fn a_central_that_does_not_read_its_answers_is_dropped() {
    let server = server();
    let now = Instant::now();
    assert_eq!(server.write(1, now, 517, &ping(500)), Ok(Written::Started));
    let queued = server.queued_bytes();
    assert!(
        (500..=510).contains(&queued),
        "one PING echo, exactly sized: {queued}"
    );
    // A second answer while the first is unread: a flood.
    assert_eq!(
        server.write(1, now, 517, &ping(500)),
        Err(WriteRefused::Dropped)
    );
    assert_eq!(server.queued_bytes(), 0);
    // The session is free at once for another central; no idle wait.
    assert_eq!(
        server.write(2, now, 23, &fragments(&Request::GetInfo, 23)[0]),
        Ok(Written::Started)
    );
    assert!(server.queued_bytes() <= localcert_device::outbox::MAX_QUEUED_BYTES);
}

/// The process's resident set size, from /proc (Linux).
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// The most the process may grow over the flood, after its warm-up: the engine keeps nothing
/// per write or per central that came and went.
const FLOOD_RSS_GROWTH: usize = 2 * 1024 * 1024;

#[test]
#[ignore = "soak, about 5 s (debug build): run by .ci/run with --ignored"]
fn soak_a_million_writes_from_flooding_centrals_keep_memory_bounded() {
    const WRITES: u32 = 1_000_000;
    let server = server();
    let mut now = Instant::now();
    let started = Instant::now();
    // What flooders send: PINGs to echo, stray continuations that each earn an ERROR, the
    // start of a largest frame that never ends (the reassembler holds it), CANCELs.
    let values = [
        ping(500),
        vec![0x05, 0xff],
        [&[0x83u8, 0x20, 0x00][..], &[0xaa; 509]].concat(),
        vec![0xbe, 0x00, 0x00],
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut central = 0u32;
    let mut link = server.connection(central);
    link.subscribe();
    let (mut dropped, mut busy, mut max_queued, mut warm_rss) = (0u32, 0u32, 0usize, 0usize);
    for i in 0..WRITES {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let value = &values[(rng % 4) as usize];
        match link.write(now, 517, value) {
            Ok(()) => {}
            Err(WriteRefused::Dropped) => dropped += 1,
            Err(WriteRefused::Busy) => busy += 1,
            Err(other) => panic!("write {i}: {other:?}"),
        }
        let queued = server.queued_bytes();
        assert!(
            queued <= localcert_device::outbox::MAX_QUEUED_BYTES,
            "write {i}: {queued}"
        );
        max_queued = max_queued.max(queued);
        // Now and then: time passes (reassembly timeouts), the central reads what it was sent,
        // or leaves and a new one comes, subscribed or not.
        match rng >> 56 {
            0..=3 => {
                now += Duration::from_secs(6);
                link.handle_timeout(now);
            }
            4..=9 => while link.poll_notification().is_some() {},
            // A second central in range writes too: refused while the session is not idle.
            13..=20 => match server.write(u32::MAX - 1, now, 23, &values[1]) {
                Ok(_) | Err(WriteRefused::Dropped) => {}
                Err(WriteRefused::Busy) => busy += 1,
                Err(other) => panic!("bystander: {other:?}"),
            },
            10..=12 => {
                central += 1;
                link = server.connection(central);
                if rng & 1 == 0 {
                    link.subscribe();
                }
            }
            _ => {}
        }
        if i == WRITES / 10 {
            warm_rss = rss_bytes();
        }
    }
    drop(link);
    let end_rss = rss_bytes();
    println!(
        "{WRITES} BLE writes from {} centrals in {:?}: {dropped} dropped as floods, {busy} refused busy, \
         at most {max_queued} bytes queued (bound {}), RSS {} KiB after warm-up, {} KiB at the end (bound +{} KiB)",
        central + 1,
        started.elapsed(),
        localcert_device::outbox::MAX_QUEUED_BYTES,
        warm_rss / 1024,
        end_rss / 1024,
        FLOOD_RSS_GROWTH / 1024
    );
    assert!(dropped > 0, "the flood was seen as one");
    assert!(
        end_rss <= warm_rss + FLOOD_RSS_GROWTH,
        "RSS grew from {warm_rss} to {end_rss}"
    );
    // After the flood a well-behaved central is served.
    let response = exchange(
        &server,
        u32::MAX,
        now + IDLE_TAKEOVER,
        247,
        &Request::GetInfo,
    )
    .unwrap();
    assert!(matches!(response, Response::Info(_)), "{response:?}");
}
