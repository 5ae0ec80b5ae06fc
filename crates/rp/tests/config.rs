//! rp.toml and EAB files: secrets readable by their owner only, the environment overrides,
//! every wrong value refused with a specific message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use localcert_rp::config::{self, Config, ConfigError};

const MINIMAL: &str = r#"
origin = "https://vod.example.com"
listen = "127.0.0.1:8443"
plain_http = true

[acme]
directory = "https://localhost:14000/directory"
eab_kid = "kid-vod"
eab_key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc"

[[users]]
token = "alice-token-0123456789"
handle = "alice"
"#;

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/localcert"), no_env)
}

#[test]
fn a_minimal_file_takes_the_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.origin.as_str(), "https://vod.example.com");
    assert_eq!(config.base_path, "/localcert");
    assert_eq!(config.tls, None);
    assert_eq!(config.acme.eab.kid, "kid-vod");
    assert_eq!(config.acme.eab.key, vec![7; 32]);
    assert_eq!(config.limits, config::Limits::default());
    assert_eq!(config.cors, config::default_cors());
    assert_eq!(config.users[0].handle, b"alice");
    // The key never shows in Debug output.
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("BwcH") && !shown.contains("alice-token"),
        "{shown}"
    );
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let text = MINIMAL.replace(
        "plain_http = true",
        "static_dir = \"web\"\n[tls]\ncert = \"rp.pem\"\nkey = \"/abs/rp.key\"",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.static_dir.unwrap(), Path::new("/etc/localcert/web"));
    let (cert, key) = config.tls.unwrap();
    assert_eq!(cert, Path::new("/etc/localcert/rp.pem"));
    assert_eq!(key, Path::new("/abs/rp.key"));
}

#[test]
fn the_account_file_is_beside_the_config_unless_set() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(
        config.acme.account_file.unwrap(),
        Path::new("/etc/localcert/rp-account.json")
    );
    let text = MINIMAL.replace(
        "eab_kid = \"kid-vod\"",
        "eab_kid = \"kid-vod\"\naccount_file = \"/var/lib/localcert/account.json\"",
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.acme.account_file.unwrap(),
        Path::new("/var/lib/localcert/account.json")
    );
}

#[test]
fn files_open_to_group_or_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o640, 0o604, 0o644] {
        let path = write(dir.path(), "rp.toml", MINIMAL, mode);
        let e = Config::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Mode { .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
    let path = write(dir.path(), "rp.toml", MINIMAL, 0o600);
    Config::load(&path).unwrap();

    // An EAB key file and an EAB file are held to the same rule.
    let text = MINIMAL.replace(
        "eab_key = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\"",
        "eab_key_file = \"eab.key\"",
    );
    let path = write(dir.path(), "rp.toml", &text, 0o600);
    write(
        dir.path(),
        "eab.key",
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n",
        0o644,
    );
    assert!(matches!(Config::load(&path), Err(ConfigError::Mode { .. })));
    write(
        dir.path(),
        "eab.key",
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n",
        0o600,
    );
    assert_eq!(Config::load(&path).unwrap().acme.eab.key, vec![7; 32]);

    let eab = "kid = \"kid-vod\"\nkey = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\"\n";
    let file = write(dir.path(), "eab.toml", eab, 0o644);
    assert!(matches!(
        config::read_eab_file(&file),
        Err(ConfigError::Mode { .. })
    ));
    let file = write(dir.path(), "eab.toml", eab, 0o600);
    let read = config::read_eab_file(&file).unwrap();
    assert_eq!((read.kid.as_str(), read.key), ("kid-vod", vec![7; 32]));
}

#[test]
fn the_environment_overrides_the_eab_credentials() {
    let env = |name: &str| match name {
        "LOCALCERT_EAB_KID" => Some("kid-env".to_owned()),
        "LOCALCERT_EAB_KEY" => Some("CQkJCQ".to_owned()),
        _ => None,
    };
    let config = Config::parse(MINIMAL, Path::new("."), env).unwrap();
    assert_eq!(config.acme.eab.kid, "kid-env");
    assert_eq!(config.acme.eab.key, vec![9; 4]);
    // Only one of the two is a mistake, not a silent mix.
    let half = |name: &str| (name == "LOCALCERT_EAB_KID").then(|| "kid-env".to_owned());
    let e = Config::parse(MINIMAL, Path::new("."), half).unwrap_err();
    assert!(e.to_string().contains("set both"), "{e}");
    // Without the file's credentials, the environment is enough.
    let bare = MINIMAL.replace("eab_kid = \"kid-vod\"\n", "").replace(
        "eab_key = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\"\n",
        "",
    );
    assert_eq!(
        Config::parse(&bare, Path::new("."), env)
            .unwrap()
            .acme
            .eab
            .kid,
        "kid-env"
    );
    assert!(
        parse(&bare)
            .unwrap_err()
            .to_string()
            .contains("eab_kid is missing")
    );
}

#[test]
fn wrong_values_are_refused_with_what_is_wrong() {
    let cases = [
        (
            MINIMAL.replace("https://vod.example.com", "vod.example.com"),
            "origin",
        ),
        (
            MINIMAL.replace("plain_http = true", ""),
            "[tls] cert and key are required",
        ),
        (
            MINIMAL.replace(
                "plain_http = true",
                "plain_http = true\nbase_path = \"/a/../b\"",
            ),
            "base_path",
        ),
        (
            MINIMAL.replace(
                "plain_http = true",
                "plain_http = true\nbase_path = \"api/\"",
            ),
            "base_path",
        ),
        (MINIMAL.replace("BwcHBwcH", "!!!"), "not base64url"),
        (
            MINIMAL.replace("alice-token-0123456789", "short"),
            "at least 16",
        ),
        (
            MINIMAL.replace("handle = \"alice\"", "handle = \"\""),
            "1 to 64 bytes",
        ),
        (
            MINIMAL.replace("plain_http = true", "plain_http = true\nsurprise = 1"),
            "unknown field",
        ),
        (format!("{MINIMAL}\n[limits]\nmax_flows = 0\n"), "positive"),
    ];
    for (text, wanted) in cases {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(wanted), "{e:?} lacks {wanted:?}");
    }
}
