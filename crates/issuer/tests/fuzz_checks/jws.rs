//! ACME JWS and external account binding parsing and verification (RFC 8555 §6.2, §7.3.4).

use localcert_issuer::jws::{Jwk, Jws, Signer, b64, eab_kid, verify_eab};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

const NEW_ACCOUNT_URL: &str = "https://ca.test/acme/new-account";
const HMAC_KEY: &[u8] = b"fuzz external account hmac key..";

fn account_key() -> (Ed25519KeyPair, Jwk) {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let x = pair.public_key().as_ref().try_into().unwrap();
    (pair, Jwk::Ed25519 { x })
}

fn hs256(protected: &str, payload: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_KEY);
    b64(ring::hmac::sign(&key, format!("{protected}.{payload}").as_bytes()).as_ref())
}

/// Whatever an outsider sends: parsing and verifying never panic.
fn raw_jws(body: &[u8]) {
    let (_, account) = account_key();
    let Ok(jws) = Jws::parse(body) else {
        return;
    };
    if let Signer::Jwk(key) = &jws.signer {
        let _ = jws.verify(key);
    }
    let _ = jws.verify(&account);
    if let Ok(payload) = jws.json() {
        if let Some(eab) = payload.get("externalAccountBinding") {
            raw_eab(eab);
        }
    }
}

fn raw_eab(eab: &Value) {
    let (_, account) = account_key();
    if let Ok(kid) = eab_kid(eab) {
        let _ = verify_eab(eab, &kid, HMAC_KEY, NEW_ACCOUNT_URL, &account);
    }
}

/// A JWS signed by the account key over fuzzer-chosen nonce, url and payload parses back to
/// them and verifies; with one signature bit flipped it does not. The same for an EAB over the
/// account key with a fuzzer-chosen kid.
fn signed(fields: &[u8]) {
    let text = String::from_utf8_lossy(fields);
    let mut parts = text.splitn(3, '\n');
    let nonce = parts.next().unwrap_or_default();
    let url = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let (pair, account) = account_key();
    let Jwk::Ed25519 { x } = &account else {
        unreachable!()
    };
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)});
    let protected = b64(
        json!({"alg": "EdDSA", "nonce": nonce, "url": url, "jwk": jwk})
            .to_string()
            .as_bytes(),
    );
    let payload_b64 = b64(payload.as_bytes());
    let signature = pair.sign(format!("{protected}.{payload_b64}").as_bytes());
    let mut body = json!({"protected": protected, "payload": payload_b64,
        "signature": b64(signature.as_ref())});
    let jws = Jws::parse(body.to_string().as_bytes()).expect("a well-formed JWS parses");
    assert_eq!((jws.nonce.as_str(), jws.url.as_str()), (nonce, url));
    assert_eq!(jws.payload, payload.as_bytes());
    assert_eq!(jws.signer, Signer::Jwk(account.clone()));
    jws.verify(&account).expect("signed by the account key");
    let mut forged = signature.as_ref().to_vec();
    let flipped = usize::from(fields.first().copied().unwrap_or(0)) % forged.len();
    forged[flipped] ^= 1;
    body["signature"] = json!(b64(&forged));
    let jws = Jws::parse(body.to_string().as_bytes()).expect("still well-formed");
    assert!(jws.verify(&account).is_err(), "a forged signature verifies");

    let kid = nonce;
    let eab_protected = b64(json!({"alg": "HS256", "kid": kid, "url": NEW_ACCOUNT_URL})
        .to_string()
        .as_bytes());
    let account_json = jwk.to_string();
    let eab_payload = b64(account_json.as_bytes());
    let mut eab = json!({"protected": eab_protected, "payload": eab_payload,
        "signature": hs256(&eab_protected, &eab_payload)});
    assert_eq!(eab_kid(&eab).as_deref().ok(), Some(kid));
    verify_eab(&eab, kid, HMAC_KEY, NEW_ACCOUNT_URL, &account).expect("a valid EAB");
    assert!(verify_eab(&eab, kid, b"another key", NEW_ACCOUNT_URL, &account).is_err());
    if url != account_json {
        eab["payload"] = json!(b64(url.as_bytes()));
        assert!(
            verify_eab(&eab, kid, HMAC_KEY, NEW_ACCOUNT_URL, &account).is_err(),
            "an EAB whose MAC does not cover its payload verifies"
        );
    }
}

/// Input: a selector byte, then by selector modulo 3: 0 a request body (flattened JWS JSON),
/// 1 an `externalAccountBinding` value (JSON), 2 a nonce, url and payload separated by
/// newlines (lossy UTF-8) for the signed round trip.
pub(crate) fn jws(data: &[u8]) {
    let [selector, rest @ ..] = data else {
        return;
    };
    match selector % 3 {
        0 => raw_jws(rest),
        1 => {
            if let Ok(eab) = serde_json::from_slice::<Value>(rest) {
                raw_eab(&eab);
            }
        }
        _ => signed(rest),
    }
}
