//! Soak of the device's HTTPS server (`https::serve`, what the daemon runs) on loopback, as an
//! outsider on the LAN would load it: 1,000 TLS connection attempts, then slowloris clients.
//! The connection cap holds (seen from outside: exactly `MAX_CONNECTIONS` attempts are served
//! while they stay open, every other one is closed at once), and legitimate requests are
//! served again once the idle connections are closed, or once the server's timeouts evict them.
//!
//! Ignored by default (about 30 s); run with
//! `cargo test -p localcert-device --test https_soak -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod https_world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use https_world::{start_one, tls_connect};
use localcert_device::https::MAX_CONNECTIONS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const ATTEMPTS: usize = 1000;
const AT_ONCE: usize = 100;
/// Longer than the server's handshake and header timeouts (10 s each), with room for a loaded
/// machine: a slowloris client still open after this was not evicted.
const EVICTION_DEADLINE: Duration = Duration::from_secs(40);
const GET: &[u8] = b"GET /api HTTP/1.1\r\nhost: tv-test.local\r\n\r\n";

/// One legitimate request on a new connection; the open connection if it was served.
async fn attempt(addr: SocketAddr, root: Arc<Vec<u8>>) -> Option<TlsStream<TcpStream>> {
    let run = async {
        let mut tls = tls_connect(addr, "tv-test.local", &root).await.ok()?;
        tls.write_all(GET).await.ok()?;
        let mut head = [0u8; 12];
        tls.read_exact(&mut head).await.ok()?;
        assert_eq!(&head, b"HTTP/1.1 200", "a served request is answered");
        Some(tls)
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("an attempt is served or refused, not left hanging")
}

/// Tries legitimate requests until one is served.
async fn served_again(addr: SocketAddr, root: &Arc<Vec<u8>>, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if attempt(addr, root.clone()).await.is_some() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no legitimate request served within {within:?}");
}

/// Reads until the server closes the connection; whether it did within the deadline.
async fn closed_by_server(mut stream: impl AsyncReadExt + Unpin, deadline: Instant) -> bool {
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends a header byte every 500 ms (the server's header timeout is for the whole head, not
/// per byte); whether the server closed the connection before the deadline.
async fn trickle_until_closed(tls: TlsStream<TcpStream>, deadline: Instant) -> bool {
    let (mut read, mut write) = tokio::io::split(tls);
    let writer = async move {
        while Instant::now() < deadline {
            if write.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        std::future::pending::<()>().await;
    };
    let mut buf = [0u8; 256];
    let reader = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::select! {
        () = writer => false,
        () = reader => true,
        () = tokio::time::sleep(left) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak, about 30 s: run by .ci/run with --ignored"]
async fn a_thousand_tls_attempts_the_cap_holds_and_service_resumes() {
    let (addr, root) = start_one().await;
    let root = Arc::new(root);
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..ATTEMPTS / AT_ONCE {
        let wave: Vec<_> = (0..AT_ONCE)
            .map(|_| tokio::spawn(attempt(addr, root.clone())))
            .collect();
        for task in wave {
            match task.await.unwrap() {
                Some(open) => held.push(open),
                None => refused += 1,
            }
        }
    }
    println!(
        "{ATTEMPTS} TLS attempts in {:?}: {} served and held open, {refused} refused",
        started.elapsed(),
        held.len()
    );
    assert_eq!(held.len(), MAX_CONNECTIONS, "served while all stay open");
    assert_eq!(refused, ATTEMPTS - MAX_CONNECTIONS);

    // The held connections still work (keep-alive), and closing them frees the slots.
    for tls in held.iter_mut().take(4) {
        tls.write_all(GET).await.unwrap();
    }
    drop(held);
    let resumed = served_again(addr, &root, Duration::from_secs(10)).await;
    println!("served again {resumed:?} after the held connections closed");
    let mut again = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        again.push(attempt(addr, root.clone()).await.expect("a free slot"));
    }
    assert!(attempt(addr, root.clone()).await.is_none(), "still capped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak, about 25 s: run by .ci/run with --ignored"]
async fn slowloris_clients_hold_slots_only_until_the_timeouts() {
    let (addr, root) = start_one().await;
    let root = Arc::new(root);
    // Half never start TLS; half finish it and trickle a request head, a byte at a time.
    let mut silent = Vec::new();
    for _ in 0..MAX_CONNECTIONS / 2 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut tricklers = Vec::new();
    for _ in 0..MAX_CONNECTIONS / 2 {
        let mut tls = tls_connect(addr, "tv-test.local", &root).await.unwrap();
        tls.write_all(b"GET /api HTTP/1.1\r\n").await.unwrap();
        tricklers.push(tls);
    }
    let started = Instant::now();
    assert!(
        attempt(addr, root.clone()).await.is_none(),
        "the slowloris clients hold every slot"
    );
    let deadline = Instant::now() + EVICTION_DEADLINE;
    let trickling: Vec<_> = tricklers
        .into_iter()
        .map(|tls| tokio::spawn(trickle_until_closed(tls, deadline)))
        .collect();
    let deadline = Instant::now() + EVICTION_DEADLINE;
    let mut evicted = 0;
    for tcp in silent {
        if closed_by_server(tcp, deadline).await {
            evicted += 1;
        }
    }
    let mut evicted_tricklers = 0;
    for task in trickling {
        evicted_tricklers += usize::from(task.await.unwrap());
    }
    println!(
        "slowloris: {evicted} silent and {evicted_tricklers} trickling clients closed by the server after {:?}",
        started.elapsed()
    );
    assert_eq!(evicted, MAX_CONNECTIONS / 2, "handshake timeout");
    assert_eq!(evicted_tricklers, MAX_CONNECTIONS / 2, "header timeout");
    served_again(addr, &root, Duration::from_secs(10)).await;
}
