//! End-to-end behaviour across the roles: a second origin on the same device, STAR renewal while
//! a client keeps its connection, cancel, and a cloned device from a revoked batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::World;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use localcert_device::star::{Fetched, StarFetch};
use localcert_issuer::store::Store;
use localcert_proto::origin::Origin;
use localcert_ua::provision::{Outcome, ProvisionError, Step};
use localcert_ua::verify::{self, CheckError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn a_second_origin_gets_its_own_name_certificate_and_cors() {
    let world = World::start().await;
    let first = world.provision(&world.plan()).await.unwrap();
    let second = world.provision(&world.plan2()).await.unwrap();
    assert_ne!(first.name, second.name);
    assert_ne!(first.fingerprint, second.fingerprint);
    assert_ne!(first.spki, second.spki, "a key per binding");
    assert_eq!(second.check.allow_origin, common::ORIGIN2);
    assert_eq!(world.agent.with_device(|d| d.bindings().len()), 2);

    // Both names are served side by side, each only for its own origin.
    verify::check(first.endpoint, &world.expectation(&first, common::ORIGIN))
        .await
        .unwrap();
    verify::check(
        second.endpoint,
        &world.expectation(&second, common::ORIGIN2),
    )
    .await
    .unwrap();
    let crossed = verify::check(second.endpoint, &world.expectation(&second, common::ORIGIN)).await;
    assert!(
        matches!(
            crossed,
            Err(CheckError::Certificate(
                "certificate is bound to another origin"
            ))
        ),
        "{crossed:?}"
    );
}

/// An HTTP/1.1 connection to the device that stays open, and the leaf it was opened with.
async fn open_connection(
    world: &World,
    outcome: &Outcome,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(world.issuer_root.clone()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(outcome.endpoint)
        .await
        .unwrap();
    let name = ServerName::try_from(outcome.name.as_str().to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, leaf)
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> (u16, Vec<u8>) {
    sender.ready().await.unwrap();
    let request = hyper::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

#[tokio::test]
async fn star_renewal_swaps_the_certificate_under_an_open_connection_and_cancel_stops_it() {
    let world = World::start().await;
    let mut plan = world.plan();
    plan.star = true;
    let outcome = world.provision(&plan).await.unwrap();
    let origin = Origin::parse(common::ORIGIN).unwrap();
    let star_url = world.star_url();

    let (mut kept, first_leaf) = open_connection(&world, &outcome).await;
    assert_eq!(
        <[u8; 32]>::from(Sha256::digest(&first_leaf)),
        outcome.fingerprint
    );
    assert_eq!(get(&mut kept, outcome.name.as_str()).await.0, 200);

    // The issuer publishes the next certificate (as its renewal loop does at half-life) and the
    // device fetches it from the STAR URL and swaps it in, as its renewal loop does.
    let renewed = world
        .server
        .renew_due_ahead(SystemTime::now(), Duration::from_secs(2 * 86_400))
        .unwrap();
    assert_eq!(renewed, 1);
    let fetcher = world.star_fetcher();
    let Fetched::Chain(chain) = fetcher.fetch(&star_url).await.unwrap() else {
        panic!("not ended yet")
    };
    assert_ne!(chain[0], first_leaf, "a new certificate");
    world
        .agent
        .with_device(|d| d.renew(&origin, chain.clone()))
        .unwrap();
    world.agent.pump();

    // The open connection goes on working; new connections get the new certificate.
    let (status, body) = get(&mut kept, outcome.name.as_str()).await;
    assert_eq!((status, body.as_slice()), (200, common::BODY.as_bytes()));
    let (_, second_leaf) = open_connection(&world, &outcome).await;
    assert_eq!(second_leaf, chain[0]);
    let report = verify::check(
        outcome.endpoint,
        &world.expectation(&outcome, common::ORIGIN),
    )
    .await
    .unwrap();
    assert_eq!(
        report.fingerprint,
        <[u8; 32]>::from(Sha256::digest(&chain[0]))
    );

    // Cancel: the STAR URL answers that the delegation ended; the device stops renewing and
    // keeps serving what it has until it expires.
    let order_id = star_url.rsplit('/').next().unwrap();
    world.store.cancel_order(order_id).unwrap();
    assert_eq!(fetcher.fetch(&star_url).await.unwrap(), Fetched::Ended);
    world.agent.with_device(|d| d.end_renewal(&origin)).unwrap();
    assert_eq!(
        world
            .agent
            .with_device(|d| d.bindings()[0].star_url.clone()),
        None
    );
    verify::check(
        outcome.endpoint,
        &world.expectation(&outcome, common::ORIGIN),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_cloned_device_from_a_revoked_batch_is_refused() {
    let batch =
        CertificateDer::from_pem_file(common::fixtures().join("manufacturer/batch-001.pem"))
            .unwrap();
    let world = World::start_with_revoked(vec![Sha256::digest(batch.as_ref()).into()]).await;
    let error = world.provision(&world.plan()).await.unwrap_err();
    let ProvisionError::Issuer { step, reason } = &error else {
        panic!("{error}")
    };
    assert_eq!(*step, Step::Challenge, "{error}");
    assert!(
        reason.contains("revoked") && reason.contains("badAttestationStatement"),
        "{reason}"
    );
    assert!(world.agent.with_device(|d| d.bindings().is_empty()));
}
