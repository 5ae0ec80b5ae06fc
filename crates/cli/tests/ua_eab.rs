//! `localcert ua provision` takes EAB credentials from a file of mode 0600 or the environment,
//! never from its command line; every wrong way is refused before any Bluetooth or ACME work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/manufacturer/root.pem")
}

/// `ua provision` with `extra` arguments and `env`; returns (exit code, stderr).
fn provision(extra: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_localcert"));
    command
        .args([
            "ua",
            "provision",
            "--issuer",
            "https://localhost:1/directory",
        ])
        .args(["--origin", "https://vod.example.com", "--issuer-root"])
        .arg(root())
        .args(["--device", "00:00:00:00:00:00", "--scan-seconds", "1"])
        .args(extra)
        .env_remove("LOCALCERT_EAB_KID")
        .env_remove("LOCALCERT_EAB_KEY")
        .envs(env.iter().copied());
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

fn eab_file(dir: &Path, text: &str, mode: u32) -> String {
    let path = dir.join("eab.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn secrets_on_the_command_line_are_not_accepted() {
    for flag in ["--eab-key", "--eab-kid"] {
        let (code, stderr) = provision(&[flag, KEY], &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("unexpected argument '{flag}'")),
            "{stderr}"
        );
    }
}

#[test]
fn missing_or_half_credentials_are_refused() {
    let (code, stderr) = provision(&[], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no EAB credentials: give --eab-file"),
        "{stderr}"
    );
    let (code, stderr) = provision(&[], &[("LOCALCERT_EAB_KID", "kid-vod")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("set both LOCALCERT_EAB_KID and LOCALCERT_EAB_KEY"),
        "{stderr}"
    );
}

#[test]
fn an_eab_file_open_to_others_or_malformed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!("kid = \"kid-vod\"\nkey = \"{KEY}\"\n");
    let cases = [
        (good.as_str(), 0o644, "chmod 600"),
        (good.as_str(), 0o640, "chmod 600"),
        ("kid = \"kid-vod\"\nkey = \"***\"\n", 0o600, "not base64url"),
        ("kid = \"kid-vod\"\n", 0o600, "missing field `key`"),
        ("kid-vod\n", 0o600, "eab.toml"),
    ];
    for (text, mode, wanted) in cases {
        let path = eab_file(dir.path(), text, mode);
        let (code, stderr) = provision(&["--eab-file", &path], &[]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(wanted), "{stderr:?} lacks {wanted:?}");
    }
}

/// Good credentials get the command past EAB to Bluetooth, which finds no such device here
/// (exit 7: Bluetooth failed, whether or not the machine has an adapter).
#[test]
fn good_credentials_from_a_file_or_the_environment_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = eab_file(
        dir.path(),
        &format!("kid = \"kid-vod\"\nkey = \"{KEY}\"\n"),
        0o600,
    );
    let (code, stderr) = provision(&["--eab-file", &path], &[]);
    assert_eq!(code, 7, "{stderr}");
    assert!(!stderr.contains("EAB"), "{stderr}");
    let env = [("LOCALCERT_EAB_KID", "kid-vod"), ("LOCALCERT_EAB_KEY", KEY)];
    let (code, stderr) = provision(&[], &env);
    assert_eq!(code, 7, "{stderr}");
    assert!(!stderr.contains("EAB"), "{stderr}");
}
