//! `localcert-device bridge`: the daemon's engine over the stdio line protocol (the web
//! package's `npm test` drives it the same way), through the BLE session driver, with its
//! HTTPS server up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use localcert_proto::frame::{Command as FrameCommand, Frame, Reassembler};
use localcert_proto::gatt::{GattInfo, fragment_len};
use localcert_proto::message::{Request, Response};

const BIN: &str = env!("CARGO_BIN_EXE_localcert-device");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A device.toml in a fresh directory, with HTTPS on a free loopback port.
fn config(tag: &str) -> (tempfile::TempDir, PathBuf, u16) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("lc-bridge-{tag}-"))
        .tempdir()
        .unwrap();
    let device = fixtures().join("devices/device-1");
    let port = free_port();
    let path = dir.path().join("device.toml");
    std::fs::write(
        &path,
        format!(
            r#"
product = "Bridge Test TV"
store_dir = "{store}"
attestation_key = "{key}"
attestation_chain = "{chain}"
issuer_roots = "{roots}"
presence = "auto"
https_port = {port}
https_listen = "127.0.0.1"
[ble]
enabled = false
[mdns]
enabled = false
"#,
            store = dir.path().join("store").display(),
            key = device.join("attestation.key.pem").display(),
            chain = device.join("attestation.pem").display(),
            roots = fixtures().join("manufacturer/root.pem").display(),
        ),
    )
    .unwrap();
    (dir, path, port)
}

struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Bridge {
    fn spawn(config: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["bridge", "--config"])
            .arg(config)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the bridge closed its output");
        line.trim_end().to_owned()
    }

    /// The value of the next line, which must start with `word `.
    fn expect(&mut self, word: &str) -> String {
        let line = self.line();
        let Some(value) = line.strip_prefix(&format!("{word} ")) else {
            panic!("expected {word}, got {line:?}")
        };
        value.to_owned()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Writes `request` in fragments of `len` and reads notifications up to its response.
    fn request(&mut self, request: &Request, len: usize) -> Response {
        for fragment in Frame::msg(request.encode()).fragments(len).unwrap() {
            self.send(&format!("write {}", hex::encode(fragment)));
        }
        let mut reassembler = Reassembler::new();
        loop {
            let fragment = hex::decode(self.expect("notify")).unwrap();
            assert!(
                fragment.len() <= len,
                "a notification of {}",
                fragment.len()
            );
            if let Some(frame) = reassembler
                .handle_fragment(std::time::Instant::now(), &fragment)
                .unwrap()
            {
                assert_eq!(frame.cmd, FrameCommand::Msg);
                return Response::decode(request.operation(), &frame.data).unwrap();
            }
        }
    }

    /// Closes stdin and returns the exit status and what went to stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let output = self.child.wait_with_output().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        assert_eq!(rest, "", "nothing after the last response");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

#[test]
fn get_info_over_the_line_protocol_with_https_up() {
    let (_dir, config, port) = config("info");
    let mut bridge = Bridge::spawn(&config, &[]);
    assert_eq!(bridge.expect("ready"), port.to_string());
    // HTTPS is listening when the bridge says ready.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let info = GattInfo::decode(&hex::decode(bridge.expect("info")).unwrap()).unwrap();
    assert_eq!(info, GattInfo::for_mtu(185), "the default MTU is 185");
    let len = usize::try_from(info.max_fragment_len).unwrap();
    bridge.send("subscribe");
    let Response::Info(device) = bridge.request(&Request::GetInfo, len) else {
        panic!("not an info response")
    };
    assert_eq!(device.product, "Bridge Test TV");
    // A new session after a disconnect answers again.
    bridge.send("disconnect");
    bridge.send("subscribe");
    assert!(matches!(
        bridge.request(&Request::GetInfo, len),
        Response::Info(_)
    ));
    let (status, stderr) = bridge.finish();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn the_mtu_sizes_info_and_notifications_and_nothing_is_queued_before_the_subscription() {
    let (_dir, config, _) = config("mtu23");
    let mut bridge = Bridge::spawn(&config, &["--mtu", "23"]);
    bridge.expect("ready");
    let info = GattInfo::decode(&hex::decode(bridge.expect("info")).unwrap()).unwrap();
    assert_eq!(info.max_fragment_len, 18);
    let fragments: Vec<_> = Frame::msg(Request::GetInfo.encode())
        .fragments(fragment_len(23))
        .unwrap()
        .collect();
    for fragment in &fragments {
        bridge.send(&format!("write {}", hex::encode(fragment)));
    }
    // Without a subscriber the answer is dropped, not kept (anyone in range may write without
    // reading). Once subscribed, the same request is answered in fragments of at most 18 bytes.
    bridge.send("subscribe");
    for fragment in &fragments {
        bridge.send(&format!("write {}", hex::encode(fragment)));
    }
    let mut reassembler = Reassembler::new();
    let frame = loop {
        let fragment = hex::decode(bridge.expect("notify")).unwrap();
        assert!(fragment.len() <= 18);
        if let Some(frame) = reassembler
            .handle_fragment(std::time::Instant::now(), &fragment)
            .unwrap()
        {
            break frame;
        }
    };
    assert!(matches!(
        Response::decode(Request::GetInfo.operation(), &frame.data).unwrap(),
        Response::Info(_)
    ));
    let (status, stderr) = bridge.finish();
    assert!(status.success(), "{status}: {stderr}");
}

/// Every malformed line stops the bridge with a non-zero exit and an error naming the line.
#[test]
fn malformed_lines_stop_the_bridge_with_a_clear_error() {
    let cases = [
        ("hello", "input line 2: unknown command \"hello\""),
        ("write", "input line 2: write: missing the hex value"),
        ("write 0g", "input line 2: write: not hex"),
        ("subscribe now", "input line 2: subscribe takes no argument"),
        // ATT MTU 185 leaves 182 bytes for a write's value.
        (
            &format!("write {}", "00".repeat(183)),
            "input line 2: write: 183 bytes do not fit ATT MTU 185 (at most 182)",
        ),
        (
            &format!("write {}", "00".repeat(600)),
            "input line 2: longer than 1030 bytes",
        ),
    ];
    for (line, expected) in cases {
        let (_dir, config, _) = config("bad");
        let mut bridge = Bridge::spawn(&config, &[]);
        bridge.expect("ready");
        bridge.expect("info");
        bridge.send("subscribe");
        bridge.send(line);
        let (status, stderr) = bridge.finish();
        assert!(!status.success(), "{line:?} was accepted");
        assert!(stderr.contains(expected), "{line:?}: {stderr}");
    }
}

#[test]
fn an_mtu_out_of_range_is_refused() {
    let (_dir, config, _) = config("mtu");
    for mtu in ["22", "518"] {
        let output = Command::new(BIN)
            .args(["bridge", "--mtu", mtu, "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "--mtu {mtu}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("23..=517"), "--mtu {mtu}: {stderr}");
    }
}
