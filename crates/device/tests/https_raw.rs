//! Raw HTTP/1.1 over TLS against the device's HTTPS server: the answers hyper writes itself
//! (400 for a head it cannot parse, 431 for one over `MAX_HEAD_BYTES`) carry `Vary: Origin`
//! like every answer of the CORS layer, alone or after served requests on the same connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod https_world;

use std::time::Duration;

use https_world::{BIG_BODY_LEN, ORIGIN, start_one, tls_connect};
use localcert_device::https::MAX_HEAD_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GET: &str =
    "GET /api HTTP/1.1\r\nhost: tv-test.local\r\norigin: https://vod.example.com\r\n\r\n";

/// One response read off the raw stream: status, header lines (name lowercased), body.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl Raw {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn varies_on_origin_once(&self) -> bool {
        self.values("vary") == ["Origin"]
    }
}

/// Splits everything the server wrote into responses (bodies sized by content-length).
fn responses(mut bytes: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(bytes).unwrap() else {
            panic!("no end of head in {:?}", String::from_utf8_lossy(bytes));
        };
        let status = response.code.unwrap();
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                let value = std::str::from_utf8(h.value).unwrap();
                (h.name.to_ascii_lowercase(), value.to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        assert!(bytes.len() >= head_len + length, "a body cut short");
        bytes = &bytes[head_len + length..];
        out.push(Raw {
            status,
            headers,
            body_len: length,
        });
    }
    out
}

/// Sends each part in its own write (a short pause between them), then reads until the server
/// closes the connection.
async fn exchange(parts: &[&[u8]]) -> Vec<Raw> {
    let (addr, root) = start_one().await;
    let mut tls = tls_connect(addr, "tv-test.local", &root).await.unwrap();
    for part in parts {
        tls.write_all(part).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut all))
        .await
        .expect("the server closes the connection")
        .unwrap();
    responses(&all)
}

#[tokio::test]
async fn a_head_hyper_cannot_parse_is_answered_400_with_vary_origin() {
    for broken in [
        &b"GET /api HTTP/1.1\r\nbad header line\r\n\r\n"[..],
        b"G\x01T /api HTTP/1.1\r\n\r\n",
        b"GET /api HTTP/9.9\r\n\r\n",
    ] {
        let got = exchange(&[broken]).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].status, 400);
        assert!(got[0].varies_on_origin_once(), "{got:?}");
    }
}

#[tokio::test]
async fn a_head_over_the_bound_is_answered_431_with_vary_origin() {
    let head = format!(
        "GET /api HTTP/1.1\r\nhost: tv-test.local\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    let got = exchange(&[head.as_bytes()]).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].status, 431);
    assert!(got[0].varies_on_origin_once(), "{got:?}");
}

#[tokio::test]
async fn after_served_requests_on_the_same_connection_too() {
    let broken = b"GET /api HTTP/1.1\r\nbad header line\r\n\r\n";
    // In separate writes: each served answer is complete before the broken head arrives.
    let got = exchange(&[GET.as_bytes(), GET.as_bytes(), broken]).await;
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 400]);
    assert!(got.iter().all(Raw::varies_on_origin_once), "{got:?}");
    assert_eq!(got[0].values("access-control-allow-origin"), [ORIGIN]);

    // Pipelined in one write: hyper parses the broken head once the first answer is out.
    let pipelined = [GET.as_bytes(), broken].concat();
    let got = exchange(&[&pipelined]).await;
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 400]);
    assert!(got.iter().all(Raw::varies_on_origin_once), "{got:?}");
}

#[tokio::test]
async fn after_a_large_answer_read_slowly_too() {
    // 16 MiB is more than the socket buffers on loopback and far over what the IO wrapper
    // holds for a client that does not read (64 KiB), so writes wait on the client:
    // the answer goes out as the client reads, whole, and the broken head after it gets its
    // header.
    let (addr, root) = start_one().await;
    let mut tls = tls_connect(addr, "tv-test.local", &root).await.unwrap();
    let big = "GET /big HTTP/1.1\r\nhost: tv-test.local\r\n\r\n";
    tls.write_all(
        &[
            big.as_bytes(),
            b"GET /api HTTP/1.1\r\nbad header line\r\n\r\n",
        ]
        .concat(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("the server keeps writing, then closes")
            .unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&chunk[..n]);
    }
    let got = responses(&all);
    let summary: Vec<(u16, usize)> = got.iter().map(|r| (r.status, r.body_len)).collect();
    assert_eq!(summary, [(200, BIG_BODY_LEN), (400, 0)]);
    assert!(got.iter().all(Raw::varies_on_origin_once), "{got:?}");
}
