//! `localcert-device status`: the record a user reads of which web origins may call this
//! device — for each, when it was granted, until when its certificate runs and whether the
//! issuer renews it (STAR) — in words or as JSON.

use serde_json::{Value, json};

use crate::store::{Binding, LoadReport};

/// What a binding's STAR renewal is doing.
fn star_state(b: &Binding) -> (&'static str, String) {
    match (&b.star_url, b.star_ended) {
        (Some(url), _) => (
            "renewing",
            format!("renewed by the issuer, fetched from {url}"),
        ),
        (None, Some(at)) => (
            "ended",
            format!(
                "ended by the issuer at {}: served until it expires",
                utc(at)
            ),
        ),
        (None, None) => ("none", "no (a one-off certificate)".into()),
    }
}

/// The JSON form: one object per origin.
pub fn to_json(store_dir: &std::path::Path, bindings: &[Binding], report: &LoadReport) -> Value {
    let bindings: Vec<Value> = bindings
        .iter()
        .map(|b| {
            let (state, _) = star_state(b);
            json!({
                "origin": b.origin.as_str(),
                "name": b.name.as_str(),
                "granted": (b.granted != 0).then_some(b.granted),
                "granted_utc": (b.granted != 0).then(|| utc(b.granted)),
                "not_after": b.not_after,
                "not_after_utc": utc(b.not_after),
                "star": b.star_url.is_some(),
                "star_state": state,
                "star_url": b.star_url,
                "star_ended": b.star_ended,
                "fingerprint": hex::encode(b.fingerprint()),
            })
        })
        .collect();
    json!({
        "store": store_dir,
        "bindings": bindings,
        "leftovers_removed": report.leftovers,
        "unusable": report.unusable.iter()
            .map(|(p, r)| json!({"path": p, "reason": r}))
            .collect::<Vec<_>>(),
    })
}

/// The text form, for people; `now` (Unix seconds) for the time left.
pub fn to_text(
    store_dir: &std::path::Path,
    bindings: &[Binding],
    report: &LoadReport,
    now: u64,
) -> String {
    let mut out = format!("store: {}\n", store_dir.display());
    match bindings.len() {
        0 => out.push_str("no web origin may call this device\n"),
        1 => out.push_str("1 web origin may call this device:\n"),
        n => out.push_str(&format!("{n} web origins may call this device:\n")),
    }
    for b in bindings {
        let granted = if b.granted == 0 {
            "(not recorded)".to_owned()
        } else {
            utc(b.granted)
        };
        let left = match b.not_after.checked_sub(now) {
            Some(s) if s >= 86_400 => format!("{} d left", s / 86_400),
            Some(s) => format!("{} h {} min left", s / 3600, s % 3600 / 60),
            None => "expired: not served".into(),
        };
        out.push_str(&format!(
            "\n{}\n  name     {}\n  granted  {granted}\n  expires  {} ({left})\n  STAR     {}\n  sha256   {}\n",
            b.origin,
            b.name,
            utc(b.not_after),
            star_state(b).1,
            hex::encode(b.fingerprint()),
        ));
    }
    for p in &report.leftovers {
        out.push_str(&format!("removed half-written leftover {}\n", p.display()));
    }
    for (p, reason) in &report.unusable {
        out.push_str(&format!("unusable {}: {reason}\n", p.display()));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (days to civil date: H. Hinnant's algorithm), so the
/// daemon needs no date-formatting library.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::SecretKey;
    use localcert_proto::message::CorsPolicy;
    use localcert_proto::name::LocalName;
    use localcert_proto::origin::Origin;

    const NOW: u64 = 1_795_996_800; // 2026-11-30T00:00:00Z

    fn binding(origin: &str, star_url: Option<&str>, star_ended: Option<u64>) -> Binding {
        Binding {
            origin: Origin::parse(origin).unwrap(),
            name: LocalName::parse("tv-vod-example-com-hp65xr-f1jk.local").unwrap(),
            key: crate::keys::DeviceKey::Software(SecretKey::from_pkcs8_der(vec![])),
            chain: vec![b"leaf".to_vec()],
            cors: CorsPolicy {
                methods: vec!["GET".into()],
                allow_headers: vec![],
                expose_headers: vec![],
                allow_credentials: false,
                max_age: 0,
            },
            star_url: star_url.map(str::to_owned),
            user_handle_digest: [0; 32],
            not_after: NOW + 3 * 86_400,
            granted: NOW - 86_400,
            star_ended,
        }
    }

    #[test]
    fn each_star_state_reads_as_words_and_json() {
        let bindings = [
            binding(
                "https://a.example",
                Some("https://issuer.test/acme/star/1"),
                None,
            ),
            binding("https://b.example", None, Some(NOW - 3600)),
            binding("https://c.example", None, None),
        ];
        let dir = std::path::Path::new("/var/lib/localcert-device");
        let report = LoadReport::default();
        let text = to_text(dir, &bindings, &report, NOW);
        assert!(
            text.contains("3 web origins may call this device:"),
            "{text}"
        );
        assert!(text.contains("  granted  2026-11-29T00:00:00Z\n"), "{text}");
        assert!(
            text.contains("  expires  2026-12-03T00:00:00Z (3 d left)\n"),
            "{text}"
        );
        assert!(
            text.contains("renewed by the issuer, fetched from https://issuer.test/acme/star/1"),
            "{text}"
        );
        assert!(
            text.contains("ended by the issuer at 2026-11-29T23:00:00Z: served until it expires"),
            "{text}"
        );
        assert!(text.contains("no (a one-off certificate)"), "{text}");
        let json = to_json(dir, &bindings, &report);
        let states: Vec<&str> = json["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["star_state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["renewing", "ended", "none"]);
        assert_eq!(json["bindings"][1]["star_ended"], NOW - 3600);
        assert_eq!(
            json["bindings"][0]["star"], true,
            "as before: renewed or not"
        );
        assert_eq!(json["bindings"][0]["granted_utc"], "2026-11-29T00:00:00Z");
        let mut old = binding("https://d.example", None, None);
        old.granted = 0;
        assert!(to_text(dir, &[old.clone()], &report, NOW).contains("granted  (not recorded)"));
        assert_eq!(
            to_json(dir, &[old], &report)["bindings"][0]["granted"],
            Value::Null
        );
    }

    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_996_800), "2026-11-30T00:00:00Z");
        assert_eq!(utc(1_796_601_599), "2026-12-06T23:59:59Z");
        assert_eq!(utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
