//! `localcert rp cancel-star`, the binary: against the real issuer on loopback, with the origin's
//! account file a provisioning over the in-memory link made (the e2e world). Its outputs (text
//! and `--json`), a repeat, and each refusal: a name that is not `.local`, a name the account
//! never ordered, a name with one-off certificates only, no account file, an account file
//! others may read, the issuer down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../e2e/tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::World;
use localcert_device::star::{Fetched, StarFetch};
use serde_json::Value;

/// What one run of the binary printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `localcert rp cancel-star --config CONFIG ARGS…`, off the runtime the issuer serves on.
async fn cancel_star(config: &Path, args: &[&str]) -> Run {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_localcert"));
    command
        .args(["rp", "cancel-star", "--config"])
        .arg(config)
        .args(args)
        .env_remove("LOCALCERT_EAB_KID")
        .env_remove("LOCALCERT_EAB_KEY")
        .env("LOCALCERT_LOG", "off");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The origin's rp.toml (mode 0600) for the world's first origin, with `account_file` and the
/// issuer at `directory`.
fn rp_toml(world: &World, account_file: &Path, directory: &str) -> PathBuf {
    let path = world.dir.path().join("rp.toml");
    let text = format!(
        "origin = {origin:?}\nlisten = \"127.0.0.1:0\"\nplain_http = true\n[acme]\n\
         directory = {directory:?}\ntls_root = {root:?}\neab_kid = {kid:?}\neab_key = {key:?}\n\
         account_file = {account:?}\n",
        origin = common::ORIGIN,
        root = world.tls_root,
        kid = common::KID,
        key = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            common::HMAC
        ),
        account = account_file,
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The run was refused with exit `code` and an error line containing `says`; stdout empty.
#[track_caller]
fn refused(run: &Run, code: i32, says: &str) {
    assert_eq!(run.code, Some(code), "{}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(
        run.stderr.contains(says),
        "{} does not say {says}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_a_star_delegation_says_so_and_refuses_what_it_cannot_cancel() {
    let world = World::start().await;
    let plan = world.plan();
    let account = plan.acme_account_file.clone().unwrap();
    let config = rp_toml(&world, &account, &world.directory_url);

    // No account file yet: refused, and no account is made for it.
    let run = cancel_star(&config, &["tv.local"]).await;
    refused(&run, 1, "no ACME account file");
    assert!(!account.exists());

    // A one-off certificate for the name: nothing to cancel, said so.
    let one_off = world.provision(&plan).await.unwrap();
    let name = one_off.name.as_str();
    let run = cancel_star(&config, &[name]).await;
    let says = format!("{name} has no STAR delegation: its 1 certificate(s)");
    refused(&run, 1, &says);

    // Not a .local name; a name this origin's account never ordered.
    let run = cancel_star(&config, &["vod.example.com"]).await;
    refused(&run, 1, "\"vod.example.com\" is not a .local name");
    let unknown = world.name_for(common::ORIGIN2);
    let run = cancel_star(&config, &[unknown.as_str()]).await;
    let says = format!("this origin's account has no order for {unknown}");
    refused(&run, 1, &says);

    // A STAR delegation: cancelled, as JSON; the device's next fetch finds it ended.
    let mut star_plan = world.plan();
    star_plan.star = true;
    world.provision(&star_plan).await.unwrap();
    let star_url = world.star_url();
    let fetcher = world.star_fetcher();
    assert!(matches!(
        fetcher.fetch(&star_url).await.unwrap(),
        Fetched::Chain(_)
    ));
    let run = cancel_star(&config, &[name, "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["name"], name);
    assert_eq!(out["already_canceled"], 0);
    let canceled = out["canceled"].as_array().unwrap();
    assert_eq!(canceled.len(), 1, "{out}");
    assert_eq!(canceled[0]["star_certificate"], star_url.as_str());
    assert!(
        canceled[0]["order"]
            .as_str()
            .unwrap()
            .contains("/acme/order/")
    );
    assert_eq!(fetcher.fetch(&star_url).await.unwrap(), Fetched::Ended);

    // Run again: cancelled already, exit 0, in words and in JSON.
    let run = cancel_star(&config, &[name]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("the STAR delegation for {name} was cancelled already: nothing to do\n")
    );
    let run = cancel_star(&config, &[name, "--json"]).await;
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["canceled"], Value::Array(vec![]));
    assert_eq!(out["already_canceled"], 1);

    // Another delegation, cancelled in words: the order and the URL the device follows.
    world.provision(&star_plan).await.unwrap();
    let star_url = world.star_url();
    let run = cancel_star(&config, &[name]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("cancelled https://localhost:")
            && lines[0].ends_with(&format!(" (STAR certificate {star_url})")),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[1],
        format!("the device serves its current certificate for {name} until it expires")
    );
    assert_eq!(fetcher.fetch(&star_url).await.unwrap(), Fetched::Ended);

    // An account file others may read (it holds the account key): refused before any request.
    std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&cancel_star(&config, &[name]).await, 1, "chmod 600 it");
    std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The issuer down (nothing listens on the directory's port): exit 5, naming the issuer.
    let down = "https://localhost:1/acme/directory";
    let config = rp_toml(&world, &account, down);
    let run = cancel_star(&config, &[name]).await;
    refused(&run, 5, &format!("error: the issuer at {down}: issuer: "));
}
