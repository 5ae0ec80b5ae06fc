//! The commands: concurrent issuance, the database check, a nonce across replicas, STAR
//! renewals, the CRL of every replica.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use instant_acme::RevocationRequest;
use localcert_issuer::acme::rfc3339;
use rustls_pki_types::CertificateDer;
use serde_json::json;

use crate::Setup;
use crate::checks;
use crate::common::client::Client;
use crate::flow::{self, Acked};
use crate::transport::Stats;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `--clients N` tasks, each doing `--each M` full issuances one after the other.
pub(crate) async fn issue(setup: &Setup) -> Result<String, String> {
    let (clients, each) = (setup.number("clients")?, setup.number("each")?);
    let tag = setup.arg("tag")?.to_owned();
    let acked_path = setup.arg("acked")?.to_owned();
    let (account, _) = setup.account().await?;
    let setup_device = Arc::new(flow::FixtureDevice::load(&std::path::PathBuf::from(
        setup.arg("device")?,
    ))?);
    // Keep the load on for at least this long, so that what a scenario does meanwhile (kill a
    // replica, restart the database) happens under load.
    let min_time = match setup.args.get("min-seconds") {
        Some(s) => Duration::from_secs(s.parse().map_err(|e| format!("--min-seconds: {e}"))?),
        None => Duration::ZERO,
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (account, device, origin, tag) = (
            account.clone(),
            setup_device.clone(),
            setup.origin.clone(),
            tag.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut n = 0;
            while n < each || started.elapsed() < min_time {
                n += 1;
                let begun = Instant::now();
                let label = format!("{tag}c{client}n{n}");
                let outcome = flow::issue(&account, &device, &origin, &label).await;
                done.push((outcome, begun.elapsed()));
            }
            done
        }));
    }
    let mut acked: Vec<Acked> = Vec::new();
    let mut failures = Vec::new();
    let mut latencies = Vec::new();
    for task in tasks {
        for (outcome, latency) in task.await.map_err(|e| e.to_string())? {
            match outcome {
                Ok(a) => {
                    acked.push(a);
                    latencies.push(latency);
                }
                Err(e) => failures.push(e),
            }
        }
    }
    let elapsed = started.elapsed();
    let lines: Vec<String> = acked.iter().map(Acked::line).collect();
    std::fs::write(&acked_path, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
    latencies.sort();
    let attempted = acked.len() + failures.len();
    let report = format!(
        "{} of {} issuances acknowledged in {:.1} s ({:.1}/s, p50 {} ms, p99 {} ms)",
        acked.len(),
        attempted,
        elapsed.as_secs_f64(),
        acked.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_millis(),
        percentile(&latencies, 0.99).as_millis(),
    );
    let stats = &setup.rr.stats;
    let unavailable = Stats::get(&stats.unavailable);
    if !failures.is_empty() {
        failures.truncate(5);
        return Err(format!("{report}; failures: {}", failures.join(" | ")));
    }
    if Stats::get(&stats.bad_unavailable) > 0 || Stats::get(&stats.server_errors) > 0 {
        return Err(format!("{report}; a 5xx other than 503 with Retry-After"));
    }
    if setup.args.contains_key("expect-unavailable") && unavailable == 0 {
        return Err(format!(
            "{report}; the database was never seen away (no 503)"
        ));
    }
    if setup.args.contains_key("expect-connection-errors")
        && Stats::get(&stats.connection_errors) == 0
    {
        return Err(format!("{report}; no replica was ever seen gone"));
    }
    Ok(report)
}

/// Every acknowledged issuance in the `--acked` files is stored exactly once.
pub(crate) async fn check(setup: &Setup) -> Result<String, String> {
    let mut acked = Vec::new();
    for path in setup.arg("acked")?.split(',') {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        acked.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| Acked::parse(l).ok_or_else(|| format!("{path}: bad line {l:?}"))),
        );
    }
    let acked = acked.into_iter().collect::<Result<Vec<_>, _>>()?;
    checks::issuances(&acked).await
}

/// A raw ACME client with the account's key, for requests that must go to one replica.
fn raw_client(credentials: &serde_json::Value, with_kid: bool) -> Result<Client, String> {
    let key = credentials["key_pkcs8"]
        .as_str()
        .ok_or("credentials without key_pkcs8")?;
    let key = URL_SAFE_NO_PAD.decode(key).map_err(|e| e.to_string())?;
    let mut client = Client::from_pkcs8(&key);
    if with_kid {
        client.kid = credentials["id"].as_str().map(str::to_owned);
    }
    Ok(client)
}

async fn nonce_from(setup: &Setup, replica: usize) -> Result<String, String> {
    let answer = setup
        .rr
        .raw(replica, "HEAD", "/acme/new-nonce", None, Vec::new())
        .await?;
    answer
        .header("replay-nonce")
        .map(str::to_owned)
        .ok_or_else(|| format!("replica {replica}: no nonce (status {})", answer.status))
}

/// newAccount with onlyReturnExisting (changes nothing), signed with `nonce`, on `replica`.
async fn lookup_account(
    setup: &Setup,
    client: &Client,
    nonce: &str,
    replica: usize,
) -> Result<crate::transport::Answer, String> {
    let url = format!("{}/acme/new-account", setup.service);
    let body = client.jws(
        &url,
        nonce,
        json!({"onlyReturnExisting": true}).to_string().as_bytes(),
    );
    setup
        .rr
        .raw(
            replica,
            "POST",
            "/acme/new-account",
            Some("application/jose+json"),
            body,
        )
        .await
}

/// A nonce made by one replica is accepted by every other, and only once in all.
pub(crate) async fn nonce(setup: &Setup) -> Result<String, String> {
    let (_, credentials) = setup.account().await?;
    let client = raw_client(&credentials, false)?;
    let n = setup.rr.replicas();
    if n < 2 {
        return Err("needs two replicas or more".into());
    }
    let mut seen = Vec::new();
    for from in 0..n {
        let to = (from + 1) % n;
        let nonce = nonce_from(setup, from).await?;
        let first = lookup_account(setup, &client, &nonce, to).await?;
        if first.status != 200 {
            return Err(format!(
                "nonce from replica {from} refused by replica {to}: {} {}",
                first.status,
                String::from_utf8_lossy(&first.body)
            ));
        }
        // Replayed on every replica, including the one that made it: refused everywhere.
        for again in 0..n {
            let replay = lookup_account(setup, &client, &nonce, again).await?;
            if replay.status != 400
                || replay.json()["type"] != "urn:ietf:params:acme:error:badNonce"
            {
                return Err(format!(
                    "nonce from replica {from}, spent on {to}, replayed on {again}: {} {}",
                    replay.status,
                    String::from_utf8_lossy(&replay.body)
                ));
            }
        }
        seen.push(format!("{from}->{to}"));
    }
    Ok(format!(
        "nonces made by one replica accepted once by another ({}), replays refused badNonce on \
         all {n}",
        seen.join(", ")
    ))
}

/// `--orders K` STAR orders with a `--lifetime` short enough that every replica's renewal loop
/// finds them due at each tick; after `--watch` seconds, each certificate was replaced once.
pub(crate) async fn star(setup: &Setup) -> Result<String, String> {
    let (orders, lifetime, watch) = (
        setup.number("orders")?,
        setup.number("lifetime")?,
        setup.number("watch")?,
    );
    let min_renewals = setup.number("min-renewals")?;
    let (account, credentials) = setup.account().await?;
    let client = raw_client(&credentials, true)?;
    let mut ids = Vec::new();
    for i in 0..orders {
        let name = setup.device.name(&format!("star{i}"), &setup.origin)?;
        let end = SystemTime::now() + Duration::from_secs(3600);
        let request = json!({
            "identifiers": [{"type": "dns", "value": name.as_str()}],
            "auto-renewal": {"end-date": rfc3339(end), "lifetime": lifetime},
        });
        let replica = i % setup.rr.replicas();
        let nonce = nonce_from(setup, replica).await?;
        let url = format!("{}/acme/new-order", setup.service);
        let body = client.jws(&url, &nonce, request.to_string().as_bytes());
        let created = setup
            .rr
            .raw(
                replica,
                "POST",
                "/acme/new-order",
                Some("application/jose+json"),
                body,
            )
            .await?;
        let location = created
            .header("location")
            .ok_or_else(|| {
                format!(
                    "STAR newOrder: {} {}",
                    created.status,
                    String::from_utf8_lossy(&created.body)
                )
            })?
            .to_owned();
        let order = account.order(location).await.map_err(|e| e.to_string())?;
        let acked = flow::complete(order, &setup.device, &setup.origin, &[name]).await?;
        ids.push(acked.order_id);
    }
    tokio::time::sleep(Duration::from_secs(watch as u64)).await;
    // Stop the renewals before counting, so that the count is final.
    for id in &ids {
        let nonce = nonce_from(setup, 0).await?;
        let url = format!("{}/acme/order/{id}", setup.service);
        let body = client.jws(
            &url,
            &nonce,
            json!({"status": "canceled"}).to_string().as_bytes(),
        );
        let canceled = setup
            .rr
            .raw(
                0,
                "POST",
                &format!("/acme/order/{id}"),
                Some("application/jose+json"),
                body,
            )
            .await?;
        if canceled.status != 200 {
            return Err(format!(
                "cancel {id}: {} {}",
                canceled.status,
                String::from_utf8_lossy(&canceled.body)
            ));
        }
    }
    // A renewal that had read the order before the cancel may still commit; let it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    checks::star_renewals(&ids, min_renewals).await
}

fn crl_entries(der: &[u8]) -> Result<BTreeSet<(String, i64, Option<String>)>, String> {
    let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| format!("CRL: {e}"))?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| {
            (
                hex::encode(r.raw_serial())
                    .trim_start_matches("00")
                    .to_owned(),
                r.revocation_date.timestamp(),
                r.reason_code().map(|(_, reason)| reason.0.to_string()),
            )
        })
        .collect())
}

/// `--revoke R` new certificates revoked through the round robin; every replica's CRL then
/// lists the same revocations, which are the database's.
pub(crate) async fn crl(setup: &Setup) -> Result<String, String> {
    let revoke = setup.number("revoke")?;
    let (account, _) = setup.account().await?;
    let mut serials = BTreeSet::new();
    for i in 0..revoke {
        let acked = flow::issue(&account, &setup.device, &setup.origin, &format!("crl{i}")).await?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&acked.leaf_der).map_err(|e| e.to_string())?;
        serials.insert(
            hex::encode(cert.raw_serial())
                .trim_start_matches("00")
                .to_owned(),
        );
        account
            .revoke(&RevocationRequest {
                certificate: &CertificateDer::from(acked.leaf_der.clone()),
                reason: None,
            })
            .await
            .map_err(|e| format!("revoke: {e}"))?;
    }
    let mut lists = Vec::new();
    for replica in 0..setup.rr.replicas() {
        let answer = setup
            .rr
            .raw(replica, "GET", "/crl", None, Vec::new())
            .await?;
        if answer.status != 200 {
            return Err(format!("replica {replica}: CRL {}", answer.status));
        }
        lists.push(crl_entries(&answer.body)?);
    }
    if lists.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("the replicas' CRLs differ: {lists:?}"));
    }
    let listed: BTreeSet<String> = lists[0].iter().map(|(s, _, _)| s.clone()).collect();
    if !serials.is_subset(&listed) {
        return Err(format!("revoked {serials:?}, CRL lists {listed:?}"));
    }
    let stored: BTreeSet<String> = checks::revoked_serials()
        .await?
        .into_iter()
        .map(|s| s.trim_start_matches("00").to_owned())
        .collect();
    if stored != listed {
        return Err(format!("database has {stored:?}, CRL lists {listed:?}"));
    }
    Ok(format!(
        "{} replicas serve the same CRL: {} revoked certificates ({} revoked now), as in the database",
        lists.len(),
        listed.len(),
        serials.len()
    ))
}
