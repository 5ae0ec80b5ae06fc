//! `localcert rp serve`: refuses a config others can read, and serves the API once started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const CONFIG: &str = r#"
origin = "https://vod.example.com"
listen = "127.0.0.1:0"
plain_http = true
[acme]
directory = "https://localhost:1/directory"
eab_kid = "kid-vod"
eab_key_file = "eab.key"
[[users]]
token = "alice-token-0123456789"
handle = "alice"
"#;

/// Stops the server even when an assertion fails first.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(path: &std::path::Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn refuses_secrets_open_to_others_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rp.toml");
    let key = dir.path().join("eab.key");
    write(&key, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n", 0o600);
    let serve = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_localcert"));
        command
            .args(["rp", "serve", "--config"])
            .arg(&config)
            .env_remove("LOCALCERT_EAB_KID")
            .env_remove("LOCALCERT_EAB_KEY");
        command
    };
    for (config_mode, key_mode) in [(0o644, 0o600), (0o600, 0o640)] {
        write(&config, CONFIG, config_mode);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
        let output = serve().output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("chmod 600"), "{stderr}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = CONFIG.replace(
        "plain_http = true",
        "plain_http = true\nstatic_dir = \"web\"",
    );
    write(&config, &missing, 0o600);
    let output = serve().output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("web is not a directory"), "{stderr}");
    write(&config, CONFIG, 0o600);
    let mut child = Running(
        serve()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let address = first
        .trim()
        .strip_prefix("rp backend for https://vod.example.com on http://")
        .and_then(|rest| rest.strip_suffix("/localcert"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let exchange = |request: &str| {
        let mut tcp = std::net::TcpStream::connect(&address).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        answer
    };
    let config_answer =
        exchange("GET /localcert/config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let refused = exchange(
        "POST /localcert/flows HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    drop(child);
    assert!(config_answer.starts_with("HTTP/1.1 200"), "{config_answer}");
    assert!(config_answer.contains(r#""service":"52620000-f2e2-4679-934e-b35464ebab15""#));
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains(r#""error":"forbidden_origin""#),
        "{refused}"
    );
}
