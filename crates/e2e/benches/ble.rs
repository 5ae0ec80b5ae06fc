//! BLE exchange benchmark over the in-memory link: GET_INFO + ATTEST against the real device
//! engine, per link profile. Prints simulated link time and bytes (the radio model) and the wall
//! time the engine and the UA spend per exchange (key generation, signing, framing).
//!
//! Run: `cargo bench -p localcert-e2e --bench ble`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use localcert_device::gatt::GattServer;
use localcert_device::presence::AutoApprove;
use localcert_device::{DeviceBuilder, DeviceConfig};
use localcert_proto::message::{AttestRequest, Request};
use localcert_proto::name::DeviceLabel;
use localcert_proto::origin::Origin;
use localcert_ua::{LinkProfile, SimLink, Transport};

const ROUNDS: u32 = 200;

fn server() -> std::sync::Arc<GattServer<u32>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/devices/device-1");
    let agent = DeviceBuilder::from_credential_files(
        DeviceConfig::new("Media Server 1"),
        &dir.join("attestation.key.pem"),
        &dir.join("attestation.pem"),
    )
    .unwrap()
    .presence(AutoApprove)
    .build();
    std::sync::Arc::new(GattServer::new(agent))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let attest = Request::Attest(AttestRequest {
        origin: Origin::parse("https://vod.example.com").unwrap(),
        user_handle: b"user-1".to_vec(),
        key_authorization_hash: localcert_proto::message::key_authorization_hash(
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ",
        ),
        device_label: DeviceLabel::parse("media-server-1").unwrap(),
        pin: None,
    });
    println!("GET_INFO + ATTEST over the in-memory link, {ROUNDS} rounds per profile");
    println!(
        "{:<20} {:>9} {:>9} {:>7} {:>7} {:>9} {:>12}",
        "profile", "bytes up", "bytes dn", "writes", "notifs", "sim time", "wall/round"
    );
    for profile in LinkProfile::ALL {
        let server = server();
        let mut wall = Duration::ZERO;
        let mut last = None;
        for round in 0..ROUNDS {
            let link = SimLink::new(server.connection(round), profile.clone(), Instant::now());
            let started = Instant::now();
            let mut transport = Transport::open(link).await.unwrap();
            transport.request(&Request::GetInfo, |_| {}).await.unwrap();
            transport.request(&attest, |_| {}).await.unwrap();
            wall += started.elapsed();
            last = Some(transport.link().stats());
            transport.close().await;
        }
        let s = last.unwrap();
        println!(
            "{:<20} {:>9} {:>9} {:>7} {:>7} {:>8.3}s {:>10.2}ms",
            profile.name,
            s.bytes_up,
            s.bytes_down,
            s.writes,
            s.notifications,
            s.elapsed.as_secs_f64(),
            wall.as_secs_f64() * 1000.0 / f64::from(ROUNDS)
        );
    }
}
