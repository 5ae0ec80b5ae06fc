//! `localcert ua list` and `localcert ua remove ORIGIN`: a device's bindings over BLE.

use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use localcert_proto::ErrorCode;
use localcert_proto::message::BindingSummary;
use localcert_proto::origin::Origin;
use localcert_ua::manage::{self, ManageError, Removed};
use serde_json::{Value, json};

use crate::Exit;
use crate::ua::{pick, scan_devices};

/// Which device, and how to find it.
#[derive(Debug, clap::Args)]
pub(crate) struct DeviceArgs {
    /// The device: Bluetooth address or advertised name. Without it, choose from a scan.
    #[arg(long)]
    device: Option<String>,
    /// Bluetooth adapter, e.g. hci1 (default: the first).
    #[arg(long)]
    adapter: Option<String>,
    /// How long to scan for the device.
    #[arg(long, default_value_t = 5)]
    scan_seconds: u64,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// A failed request's exit code: the device's refusal is the device's, the rest is BLE.
fn exit_for(e: ManageError) -> anyhow::Error {
    let code = match &e {
        ManageError::Refused { .. } | ManageError::Unexpected => Exit::DEVICE,
        _ => Exit::BLE,
    };
    Exit::with(code, anyhow!(e))
}

pub(crate) async fn list(args: &DeviceArgs) -> anyhow::Result<()> {
    let found = scan_devices(args.adapter.as_deref(), args.scan_seconds).await?;
    let device = pick(&found, args.device.as_deref(), args.scan_seconds)?;
    let bindings = manage::list(&mut device.connector())
        .await
        .map_err(exit_for)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list_json(&bindings))?);
    } else {
        print!("{}", list_table(&bindings, SystemTime::now()));
    }
    Ok(())
}

pub(crate) async fn remove(origin: &str, args: &DeviceArgs) -> anyhow::Result<()> {
    let origin = Origin::parse(origin).with_context(|| format!("origin {origin}"))?;
    let found = scan_devices(args.adapter.as_deref(), args.scan_seconds).await?;
    let device = pick(&found, args.device.as_deref(), args.scan_seconds)?;
    let removed = manage::remove(&mut device.connector(), &origin).await;
    if let Err(ManageError::Refused {
        code: ErrorCode::NotFound,
        ..
    }) = &removed
    {
        return Err(Exit::with(
            Exit::DEVICE,
            anyhow!("the device has no binding for {origin}: nothing removed"),
        ));
    }
    let removed = removed.map_err(exit_for)?;
    let name = &removed.name;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&remove_json(&origin, &removed))?
        );
    } else {
        println!("removed {origin}: the device no longer serves {name}");
        if removed.star {
            println!(
                "its STAR delegation goes on at the issuer until the origin cancels it: \
                 `localcert rp cancel-star --config rp.toml {name}`"
            );
        }
    }
    Ok(())
}

fn utc(unix: u64) -> String {
    localcert_issuer::acme::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
}

fn list_json(bindings: &[BindingSummary]) -> Value {
    let bindings: Vec<Value> = bindings
        .iter()
        .map(|b| {
            json!({
                "origin": b.origin.as_str(),
                "name": b.name.as_str(),
                "fingerprint": hex::encode(b.fingerprint),
                "not_after": b.not_after,
                "not_after_utc": utc(b.not_after),
                "star": b.star,
            })
        })
        .collect();
    json!({ "bindings": bindings })
}

fn remove_json(origin: &Origin, removed: &Removed) -> Value {
    json!({ "removed": {
        "origin": origin.as_str(), "name": removed.name.as_str(), "star": removed.star,
    } })
}

/// The table people read: one line per origin, the expiry with how long is left.
fn list_table(bindings: &[BindingSummary], now: SystemTime) -> String {
    if bindings.is_empty() {
        return "the device serves no origin\n".into();
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let width = bindings
        .iter()
        .map(|b| b.origin.as_str().len())
        .max()
        .unwrap_or(0)
        .max("origin".len());
    let mut out = format!(
        "{:<width$}  {:<20}  {:<11}  {:<4}  name\n",
        "origin", "expires (UTC)", "left", "STAR"
    );
    for b in bindings {
        let left = match b.not_after.checked_sub(now) {
            Some(s) if s >= 86_400 => format!("{} d", s / 86_400),
            Some(s) => format!("{} h {} min", s / 3600, s % 3600 / 60),
            None => "expired".into(),
        };
        let star = if b.star { "yes" } else { "no" };
        out.push_str(&format!(
            "{:<width$}  {:<20}  {left:<11}  {star:<4}  {}\n",
            b.origin.as_str(),
            utc(b.not_after),
            b.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use localcert_proto::name::LocalName;

    fn summary(origin: &str, not_after: u64, star: bool) -> BindingSummary {
        BindingSummary {
            origin: Origin::parse(origin).unwrap(),
            name: LocalName::parse("tv-vod-example-com-hp65xr-f1jk.local").unwrap(),
            fingerprint: [0xab; 32],
            not_after,
            star,
        }
    }

    const NOW: u64 = 1_795_996_800; // 2026-11-30T00:00:00Z

    #[test]
    fn table_and_json() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
        assert_eq!(list_table(&[], now), "the device serves no origin\n");
        let bindings = [
            summary("https://vod.example.com", NOW + 7 * 86_400, false),
            summary("https://app.test:8443", NOW + 2 * 3600 + 300, true),
            summary("https://old.example", NOW - 1, false),
        ];
        let table = list_table(&bindings, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("origin "), "{table}");
        assert!(
            lines[1].contains("2026-12-07T00:00:00Z") && lines[1].contains("7 d"),
            "{table}"
        );
        assert!(
            lines[2].contains("2 h 5 min") && lines[2].contains(" yes "),
            "{table}"
        );
        assert!(lines[3].contains("expired"), "{table}");
        let json = list_json(&bindings[..1]);
        assert_eq!(
            json,
            json!({"bindings": [{
                "origin": "https://vod.example.com",
                "name": "tv-vod-example-com-hp65xr-f1jk.local",
                "fingerprint": "ab".repeat(32),
                "not_after": NOW + 7 * 86_400,
                "not_after_utc": "2026-12-07T00:00:00Z",
                "star": false,
            }]})
        );
    }
}
