//! Tests of `issuer.toml`: defaults, refusals, secrets from private files.

use super::*;

#[test]
fn defaults_and_round_trip() {
    let config = Config::new("state".into(), "/etc/localcert".into());
    let text = config.to_toml().unwrap();
    let back: Config = toml::from_str(&text).unwrap();
    assert_eq!(back.state_dir, config.state_dir);
    assert_eq!(
        config.database_path(),
        Path::new("/etc/localcert/state/issuer.sqlite")
    );
    assert_eq!(config.base_url(), "https://localhost:8443");
    assert_eq!(config.policy(), Policy::default());
}

#[test]
fn refusals() {
    let parse = |s: &str| {
        toml::from_str::<Config>(s)
            .map_err(|e| Error::Config(e.to_string()))
            .and_then(|c| c.check().map(|()| c))
    };
    assert!(parse("state_dir = \"s\"\nunknown = 1").is_err());
    assert!(parse("state_dir = \"s\"\n[tls]\ncert = \"c.pem\"").is_err());
    assert!(parse("state_dir = \"s\"\n[trust]\nrevoked_certificates = [\"zz\"]").is_err());
    assert!(parse("state_dir = \"s\"\n[policy]\nleaf_lifetime_secs = 0").is_err());
    assert!(parse("state_dir = \"s\"\n[policy]\naudit_retention_days = 0").is_err());
    let days = parse("state_dir = \"s\"\n[policy]\naudit_retention_days = 30").unwrap();
    assert_eq!(days.policy().audit_retention.as_secs(), 30 * 86_400);
    let ok = parse(&format!(
        "state_dir = \"s\"\n[trust]\nrevoked_certificates = [\"{}\"]",
        "ab".repeat(32)
    ));
    assert!(ok.is_ok());
}

#[test]
fn a_shared_nonce_key_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let parse = |s: &str| {
        toml::from_str::<Config>(s)
            .map_err(|e| Error::Config(e.to_string()))
            .and_then(|c| c.check().map(|()| c))
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = parse(
        "state_dir = \"s\"\n[store]\nkind = \"postgres\"\n\
         url = \"postgresql://localcert@127.0.0.1:5432/localcert\"\n\
         nonce_key_file = \"nonce.key\"",
    )
    .unwrap();
    config.base_dir = dir.path().to_owned();
    let file = dir.path().join("nonce.key");
    assert!(config.nonce_key().is_err(), "missing file");
    std::fs::write(&file, "k".repeat(40)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = config.nonce_key();
    assert!(
        matches!(&open, Err(Error::Config(m)) if m.contains("chmod 600")),
        "{open:?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&file, "short").unwrap();
    let short = config.nonce_key();
    assert!(
        matches!(&short, Err(Error::Config(m)) if m.contains("at least 32")),
        "{short:?}"
    );
    std::fs::write(&file, "k".repeat(40)).unwrap();
    // Two replicas reading the same file accept each other's nonces.
    let (a, b) = (
        config.nonce_key().unwrap().unwrap(),
        config.nonce_key().unwrap().unwrap(),
    );
    let now = std::time::SystemTime::now();
    let nonce = a.mint(now + std::time::Duration::from_secs(60)).unwrap();
    assert!(b.check(&nonce, now).is_some());
    assert!(
        parse("state_dir = \"s\"")
            .unwrap()
            .nonce_key()
            .unwrap()
            .is_none()
    );
}

#[test]
fn postgres_store_and_its_password() {
    use std::os::unix::fs::PermissionsExt;
    let parse = |s: &str| {
        toml::from_str::<Config>(s)
            .map_err(|e| Error::Config(e.to_string()))
            .and_then(|c| c.check().map(|()| c))
    };
    let sqlite = parse("state_dir = \"s\"\n[store]\nkind = \"sqlite\"").unwrap();
    assert_eq!(sqlite.postgres().unwrap(), None);
    assert!(parse("state_dir = \"s\"\n[store]\nkind = \"mysql\"").is_err());
    let url = "postgresql://localcert@127.0.0.1:5432/localcert";
    let with = |extra: &str| format!("state_dir = \"s\"\n[store]\nkind = \"postgres\"\n{extra}");
    assert!(parse(&with("")).is_err(), "no url");
    assert!(parse(&with(&format!("url = \"{url}\"\nhost = \"x\""))).is_err());
    assert!(parse(&with(&format!("url = \"{url}\"\npool_size = 0"))).is_err());
    assert!(parse(&with("url = \"not a url\"")).is_err());
    let in_url = parse(&with(
        "url = \"postgresql://localcert:secret@127.0.0.1/localcert\"",
    ));
    assert!(
        matches!(&in_url, Err(Error::Config(m)) if m.contains("password_file")),
        "{in_url:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.password");
    std::fs::write(&file, "s3cret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut config = parse(&with(&format!(
        "url = \"{url}\"\npassword_file = \"pg.password\""
    )))
    .unwrap();
    config.base_dir = dir.path().to_owned();
    let open = config.postgres_with(None);
    assert!(
        matches!(&open, Err(Error::Config(m)) if m.contains("chmod 600")),
        "{open:?}"
    );
    // The environment wins over the file (and spares its check).
    let options = config.postgres_with(Some("env".into())).unwrap().unwrap();
    assert_eq!(options.password.as_deref(), Some("env"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let options = config.postgres_with(None).unwrap().unwrap();
    assert_eq!(options.password.as_deref(), Some("s3cret"));
    assert_eq!(options.pool_size, 16);
    assert!(!format!("{options:?}").contains("s3cret"));
    std::fs::write(&file, "\n").unwrap();
    assert!(config.postgres_with(None).is_err(), "empty password file");
}
