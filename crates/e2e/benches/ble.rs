//! BLE benchmark of the whole provisioning flow over the in-memory link: GET_INFO, ATTEST and
//! INSTALL against the real device engine (fixture device, its issuing intermediate held beside
//! the issuer root), with the issuer on loopback in between, per link profile.
//!
//! For each profile it prints what crossed the link (bytes both ways, writes, notifications),
//! the simulated link time, the link bound computed from the same link-layer packets (every
//! connection event full, nothing waiting for a response; `LinkProfile::bound`) and their
//! ratio, the request/answer turns and their floor (`LinkProfile::turn_floor`: the least time
//! that many causally dependent turns take, whatever their bytes) with its ratio to the bound,
//! and the wall time per provisioning (ACME on loopback included). Profiles: the two
//! named ones (writes without response, as SPEC §2.2 asks) and MTU 23 with writes with
//! response, for comparison.
//!
//! Run: `cargo bench -p localcert-e2e --bench ble`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use localcert_ua::LinkProfile;
use localcert_ua::provision::{self, Progress, Step};

const ROUNDS: u32 = 5;

struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: Step) {}
    fn done(&mut self, _: Step, _: &str) {}
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let world = common::World::start().await;
    let resolver = world.resolver_for_device();
    println!(
        "whole provisioning over the in-memory link (fixture device), {ROUNDS} rounds per profile"
    );
    println!(
        "{:<20} {:>8} {:>8} {:>6} {:>6} {:>6} {:>9} {:>9} {:>6} {:>5} {:>9} {:>11} {:>11}",
        "profile",
        "bytes up",
        "bytes dn",
        "total",
        "writes",
        "notifs",
        "sim time",
        "bound",
        "ratio",
        "turns",
        "floor",
        "floor/bound",
        "wall/round"
    );
    let profiles = LinkProfile::ALL
        .into_iter()
        .chain([LinkProfile::MTU23_30MS_1M_WITH_RESPONSE]);
    for profile in profiles {
        let mut wall = Duration::ZERO;
        let mut last = None;
        for _ in 0..ROUNDS {
            let mut connector = world.connector(profile.clone(), None);
            let started = Instant::now();
            let (_, stats) =
                provision::provision(&world.plan(), &mut connector, &resolver, &mut Quiet)
                    .await
                    .unwrap();
            wall += started.elapsed();
            last = stats;
        }
        let s = last.unwrap();
        let bound = profile.bound(&s);
        let floor = profile.turn_floor(s.turns);
        println!(
            "{:<20} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8.3}s {:>8.3}s {:>6.2} {:>5} {:>8.3}s {:>11.2} {:>9.1}ms",
            profile.name,
            s.bytes_up,
            s.bytes_down,
            s.bytes_up + s.bytes_down,
            s.writes,
            s.notifications,
            s.elapsed.as_secs_f64(),
            bound.as_secs_f64(),
            s.elapsed.as_secs_f64() / bound.as_secs_f64(),
            s.turns,
            floor.as_secs_f64(),
            floor.as_secs_f64() / bound.as_secs_f64(),
            wall.as_secs_f64() * 1000.0 / f64::from(ROUNDS)
        );
    }
    println!(
        "targets (issue 12): total <= 2000 B, ratio <= 1.5 at mtu23-30ms-1m and mtu247-15ms-2m-dle"
    );
    println!(
        "floor/bound > 1.5 means the ratio target is out of reach for that many dependent turns: \
         each answer comes an event after its request, and each next request (which needs that \
         answer: the subscription's response, then the issuer's answer in between) an event \
         after that"
    );
}
