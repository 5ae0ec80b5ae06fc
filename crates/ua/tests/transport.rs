//! The central-side transport over the in-memory link, against a small scripted peripheral.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use localcert_proto::ErrorCode;
use localcert_proto::frame::{Command, Frame, KEEPALIVE_INTERVAL, KeepAliveStatus, Reassembler};
use localcert_proto::gatt::{GattInfo, fragment_len};
use localcert_proto::message::{InstallRequest, Request, Response};
use localcert_proto::peripheral::{GattPeripheral, WriteRefused};
use localcert_ua::{BleLink, LinkError, LinkProfile, SimLink, Transport, TransportError};

/// Answers every request with an error response after `delay`, sending keep-alives meanwhile;
/// or never, or with garbage.
#[derive(Default)]
struct Scripted {
    mtu: u16,
    reassembler: Reassembler,
    out: VecDeque<Vec<u8>>,
    answer_at: Option<Instant>,
    next_keep_alive: Option<Instant>,
    delay: Duration,
    silent: bool,
    garbage: bool,
    frames_seen: Vec<Command>,
    disconnected: bool,
}

impl Scripted {
    fn queue(&mut self, frame: Frame) {
        let frags: Vec<_> = frame.fragments(fragment_len(self.mtu)).unwrap().collect();
        self.out.extend(frags);
    }
}

impl GattPeripheral for Scripted {
    fn read_info(&mut self, att_mtu: u16) -> Vec<u8> {
        self.mtu = att_mtu;
        GattInfo::for_mtu(att_mtu).encode()
    }

    fn subscribe(&mut self) {}

    fn write(&mut self, now: Instant, _att_mtu: u16, value: &[u8]) -> Result<(), WriteRefused> {
        if let Ok(Some(frame)) = self.reassembler.handle_fragment(now, value) {
            self.frames_seen.push(frame.cmd);
            if frame.cmd != Command::Msg || self.silent {
                return Ok(());
            }
            if self.garbage {
                // A continuation far beyond the reorder window of a frame never started.
                self.out.push_back(vec![0x40, 0x05]);
                return Ok(());
            }
            self.answer_at = Some(now + self.delay);
            self.next_keep_alive = Some(now + KEEPALIVE_INTERVAL);
            self.handle_timeout(now);
        }
        Ok(())
    }

    fn poll_notification(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.answer_at
            .map(|a| a.min(self.next_keep_alive.unwrap_or(a)))
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(answer_at) = self.answer_at else {
            return;
        };
        if now >= answer_at {
            self.answer_at = None;
            self.next_keep_alive = None;
            self.queue(Frame::msg(
                Response::Error(ErrorCode::NotFound, Some("scripted".into())).encode(),
            ));
        } else if self.next_keep_alive.is_some_and(|k| now >= k) {
            self.queue(Frame::keep_alive(KeepAliveStatus::UserPresenceNeeded));
            self.next_keep_alive = Some(now + KEEPALIVE_INTERVAL);
        }
    }

    fn disconnect(&mut self) {
        self.disconnected = true;
    }
}

fn big_install() -> Request {
    Request::Install(InstallRequest {
        chain: vec![vec![0x30; 900], vec![0x31; 600]],
        cors: localcert_proto::message::CorsPolicy {
            methods: vec!["GET".into()],
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: 60,
        },
        star_url: None,
    })
}

async fn run(
    profile: LinkProfile,
    peripheral: Scripted,
    request: &Request,
) -> (Result<Response, TransportError>, SimLink<Scripted>, u32) {
    let link = SimLink::new(peripheral, profile, Instant::now());
    let mut transport = Transport::open(link).await.unwrap();
    let mut keep_alives = 0;
    let result = transport.request(request, |_| keep_alives += 1).await;
    (result, transport.into_link(), keep_alives)
}

#[tokio::test]
async fn request_round_trip_on_both_profiles_and_the_slow_one_is_slower() {
    let mut elapsed = vec![];
    let profiles = LinkProfile::ALL
        .into_iter()
        .chain([LinkProfile::MTU23_30MS_1M_WITH_RESPONSE]);
    for profile in profiles {
        let (result, link, _) = run(profile.clone(), Scripted::default(), &big_install()).await;
        assert_eq!(
            result.unwrap(),
            Response::Error(ErrorCode::NotFound, Some("scripted".into()))
        );
        let stats = link.stats();
        let request_len = big_install().encode().len() as u64;
        let per_fragment = fragment_len(profile.att_mtu) as u64;
        assert!(stats.bytes_up > request_len, "headers add bytes");
        assert_eq!(
            stats.writes,
            1 + (request_len - (per_fragment - 3)).div_ceil(per_fragment - 1)
        );
        assert!(stats.notifications >= 1);
        elapsed.push(stats.elapsed);
    }
    // 1.5 kB at MTU 23 is ~90 writes: with response at 2 events each (30 ms apart) over 5 s;
    // without response 4 per event, under a second. At MTU 247 it is 7 writes.
    assert!(elapsed[2] > Duration::from_secs(5), "{elapsed:?}");
    assert!(elapsed[0] < Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed[1] < Duration::from_millis(200), "{elapsed:?}");
}

#[tokio::test]
async fn keep_alives_extend_the_wait() {
    let peripheral = Scripted {
        delay: Duration::from_secs(12),
        ..Default::default()
    };
    let (result, link, keep_alives) =
        run(LinkProfile::MTU247_15MS_2M, peripheral, &Request::List).await;
    assert!(
        matches!(result, Ok(Response::Error(ErrorCode::NotFound, _))),
        "{result:?}"
    );
    assert!(keep_alives >= 10, "{keep_alives}");
    assert!(link.stats().elapsed >= Duration::from_secs(12));
}

#[tokio::test]
async fn silence_times_out_and_cancels() {
    let peripheral = Scripted {
        silent: true,
        ..Default::default()
    };
    let (result, link, _) = run(LinkProfile::MTU23_30MS_1M, peripheral, &Request::GetInfo).await;
    assert!(
        matches!(result, Err(TransportError::Timeout(_))),
        "{result:?}"
    );
    let peripheral = link.into_peripheral();
    assert_eq!(peripheral.frames_seen, vec![Command::Msg, Command::Cancel]);
}

#[tokio::test]
async fn garbage_notifications_are_a_framing_error() {
    let peripheral = Scripted {
        garbage: true,
        ..Default::default()
    };
    let (result, _, _) = run(LinkProfile::MTU23_30MS_1M, peripheral, &Request::GetInfo).await;
    assert!(
        matches!(result, Err(TransportError::Framing(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_drop_at_any_fragment_is_reported_and_reaches_the_peripheral() {
    let fragments = {
        let (_, link, _) = run(
            LinkProfile::MTU23_30MS_1M,
            Scripted::default(),
            &big_install(),
        )
        .await;
        let stats = link.stats();
        (stats.writes + stats.notifications) as usize
    };
    for n in 0..fragments {
        let link = SimLink::new(
            Scripted::default(),
            LinkProfile::MTU23_30MS_1M,
            Instant::now(),
        )
        .drop_at_fragment(n);
        let mut transport = Transport::open(link).await.unwrap();
        let result = transport.request(&big_install(), |_| {}).await;
        assert!(
            matches!(result, Err(TransportError::Link(LinkError::Disconnected))),
            "fragment {n}: {result:?}"
        );
        let mut link = transport.into_link();
        assert!(matches!(
            link.write(&[0x83, 0, 0]).await,
            Err(LinkError::Disconnected)
        ));
        assert!(link.into_peripheral().disconnected, "fragment {n}");
    }
}

/// A first request of one 18-byte fragment goes beside the info read, a turn fewer; a longer
/// one waits for the read, which settles the fragment size. (The status subscription before
/// them is a turn of its own.)
#[tokio::test]
async fn the_first_request_rides_beside_the_info_read_when_it_is_one_fragment() {
    for (request, turns) in [(Request::GetInfo, 2), (big_install(), 3)] {
        let link = SimLink::new(
            Scripted::default(),
            LinkProfile::MTU247_15MS_2M,
            Instant::now(),
        );
        let (transport, answer) = Transport::open_with(link, &request, |_| {}).await.unwrap();
        assert_eq!(
            answer,
            Response::Error(ErrorCode::NotFound, Some("scripted".into()))
        );
        let stats = transport.link().stats();
        assert_eq!(stats.turns, turns, "{request:?}");
        assert_eq!(
            stats.att_round_trips, 2,
            "the subscription and one info read"
        );
    }
}
