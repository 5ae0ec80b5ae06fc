//! JSON Web Signatures as ACME uses them (RFC 8555 §6.2, RFC 7515 flattened JSON): ES256 with
//! P-256 keys or EdDSA with Ed25519 keys (RFC 8037); the protected header carries `alg`,
//! `nonce`, `url` and exactly one of `jwk` or `kid`; and the External Account Binding
//! (RFC 8555 §7.3.4), an HS256 JWS over the account key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Refusal;

/// The JWS algorithms accepted for account keys (listed in `badSignatureAlgorithm` problems).
pub const ALGORITHMS: &[&str] = &["ES256", "EdDSA"];

/// Decodes unpadded base64url, refusing anything else.
pub fn b64_decode(what: &'static str, s: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| Refusal::Malformed(format!("{what} is not unpadded base64url")))
}

/// Encodes unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

/// A JWS signature algorithm we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 SHA-256, signature `r || s`.
    Es256,
    /// Ed25519.
    EdDsa,
}

/// An account public key as a JWK: EC P-256 or OKP Ed25519.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jwk {
    /// `{"kty": "EC", "crv": "P-256", "x", "y"}`
    P256 {
        /// x coordinate.
        x: [u8; 32],
        /// y coordinate.
        y: [u8; 32],
    },
    /// `{"kty": "OKP", "crv": "Ed25519", "x"}`
    Ed25519 {
        /// The public key.
        x: [u8; 32],
    },
}

impl Jwk {
    /// Parses a JWK object; only EC P-256 and OKP Ed25519 are accepted.
    pub fn from_value(value: &Value) -> Result<Self, Refusal> {
        let field = |name| value.get(name).and_then(Value::as_str);
        let coordinate = |name: &'static str| -> Result<[u8; 32], Refusal> {
            let text = field(name).ok_or(Refusal::Malformed(format!("jwk.{name} missing")))?;
            b64_decode("jwk coordinate", text)?
                .try_into()
                .map_err(|_| Refusal::Malformed(format!("jwk.{name} is not 32 bytes")))
        };
        match (field("kty"), field("crv")) {
            (Some("EC"), Some("P-256")) => Ok(Self::P256 {
                x: coordinate("x")?,
                y: coordinate("y")?,
            }),
            (Some("OKP"), Some("Ed25519")) => Ok(Self::Ed25519 {
                x: coordinate("x")?,
            }),
            _ => Err(Refusal::BadSignatureAlgorithm(
                "account key must be an EC P-256 or OKP Ed25519 JWK".into(),
            )),
        }
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        match self {
            Self::P256 { .. } => Alg::Es256,
            Self::Ed25519 { .. } => Alg::EdDsa,
        }
    }

    /// The canonical JSON form (RFC 7638 member order), also how it is stored.
    pub fn to_json(&self) -> String {
        match self {
            Self::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        }
    }

    /// The RFC 7638 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        b64(&Sha256::digest(self.to_json().as_bytes()))
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::P256 { x, y } => {
                let point = [&[0x04][..], x, y].concat();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Self::Ed25519 { x } => UnparsedPublicKey::new(&ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// Who signed: a new key (newAccount) or an account URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The `jwk` header.
    Jwk(Jwk),
    /// The `kid` header: the account URL.
    Kid(String),
}

/// A parsed, not yet verified, ACME JWS.
#[derive(Clone, Debug)]
pub struct Jws {
    /// The `alg` header.
    pub alg: Alg,
    /// The `nonce` header.
    pub nonce: String,
    /// The `url` header.
    pub url: String,
    /// The `jwk` or `kid` header.
    pub signer: Signer,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl Jws {
    /// Parses a flattened JWS JSON body.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let (jws, nonce) = Self::decode(body)?;
        Ok(Self {
            nonce: nonce.ok_or(Refusal::BadNonce)?,
            ..jws
        })
    }

    /// Parses the inner JWS of a keyChange (RFC 8555 §7.3.5): signed by the new key, given as
    /// `jwk`, and without a nonce.
    pub fn parse_key_change(body: &[u8]) -> Result<Self, Refusal> {
        let (jws, nonce) = Self::decode(body)?;
        if nonce.is_some() {
            return Err(Refusal::Malformed(
                "the inner keyChange JWS must not carry a nonce".into(),
            ));
        }
        if !matches!(jws.signer, Signer::Jwk(_)) {
            return Err(Refusal::Malformed(
                "the inner keyChange JWS must carry the new key as jwk".into(),
            ));
        }
        Ok(jws)
    }

    /// Parses a flattened JWS; the nonce (empty in the result) is returned apart.
    fn decode(body: &[u8]) -> Result<(Self, Option<String>), Refusal> {
        let flat: Flattened = serde_json::from_slice(body)
            .map_err(|e| Refusal::Malformed(format!("request is not a flattened JWS: {e}")))?;
        let header = b64_decode("protected header", &flat.protected)?;
        let header: Value = serde_json::from_slice(&header)
            .map_err(|_| Refusal::Malformed("protected header is not JSON".into()))?;
        let text = |name: &str| header.get(name).and_then(Value::as_str);
        let alg = match text("alg") {
            Some("ES256") => Alg::Es256,
            Some("EdDSA") => Alg::EdDsa,
            Some(other) => {
                return Err(Refusal::BadSignatureAlgorithm(
                    other.chars().take(20).collect(),
                ));
            }
            None => return Err(Refusal::Malformed("protected header has no alg".into())),
        };
        // No extension we know is critical, so any `crit` must be refused (RFC 7515 §4.1.11);
        // `b64: false` (RFC 7797) would change what was signed.
        if header.get("crit").is_some() || header.get("b64").is_some() {
            return Err(Refusal::Malformed(
                "crit and b64 headers are not supported".into(),
            ));
        }
        // Present but not a string: an empty nonce, which never authenticates.
        let nonce = header
            .get("nonce")
            .map(|n| n.as_str().unwrap_or_default().to_owned());
        let url = text("url")
            .ok_or(Refusal::Malformed("protected header has no url".into()))?
            .to_owned();
        let signer = match (header.get("jwk"), text("kid")) {
            (Some(jwk), None) => Signer::Jwk(Jwk::from_value(jwk)?),
            (None, Some(kid)) => Signer::Kid(kid.to_owned()),
            _ => {
                return Err(Refusal::Malformed(
                    "protected header needs exactly one of jwk and kid".into(),
                ));
            }
        };
        let signing_input = format!("{}.{}", flat.protected, flat.payload).into_bytes();
        let jws = Self {
            alg,
            nonce: String::new(),
            url,
            signer,
            payload: b64_decode("payload", &flat.payload)?,
            signing_input,
            signature: b64_decode("signature", &flat.signature)?,
        };
        Ok((jws, nonce))
    }

    /// Verifies the signature with `key`, whose type must match `alg`.
    pub fn verify(&self, key: &Jwk) -> Result<(), Refusal> {
        if key.alg() != self.alg {
            return Err(Refusal::BadSignatureAlgorithm(
                "alg does not match the key type".into(),
            ));
        }
        if key.verify(&self.signing_input, &self.signature) {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }

    /// The payload as JSON; POST-as-GET (empty payload) is refused here.
    pub fn json(&self) -> Result<Value, Refusal> {
        serde_json::from_slice(&self.payload)
            .map_err(|_| Refusal::Malformed("payload is not JSON".into()))
    }

    /// Whether this is a POST-as-GET.
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }
}

/// The EAB key id in an `externalAccountBinding` object, before it is verified.
pub fn eab_kid(eab: &Value) -> Result<String, Refusal> {
    let flat: Flattened = serde_json::from_value(eab.clone())
        .map_err(|_| Refusal::ExternalAccountBinding("not a flattened JWS"))?;
    let header = b64_decode("EAB protected header", &flat.protected)?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|_| Refusal::ExternalAccountBinding("protected header is not JSON"))?;
    header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(Refusal::ExternalAccountBinding("no kid"))
}

/// Verifies an `externalAccountBinding` (RFC 8555 §7.3.4): HS256 with `hmac_key`, the key id
/// `kid`, the newAccount `url`, no nonce, and the account key as payload.
pub fn verify_eab(
    eab: &Value,
    kid: &str,
    hmac_key: &[u8],
    url: &str,
    account_key: &Jwk,
) -> Result<(), Refusal> {
    let flat: Flattened = serde_json::from_value(eab.clone())
        .map_err(|_| Refusal::ExternalAccountBinding("not a flattened JWS"))?;
    let header = b64_decode("EAB protected header", &flat.protected)?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|_| Refusal::ExternalAccountBinding("protected header is not JSON"))?;
    let text = |name: &str| header.get(name).and_then(Value::as_str);
    if text("alg") != Some("HS256") {
        return Err(Refusal::ExternalAccountBinding("alg must be HS256"));
    }
    if text("kid") != Some(kid) {
        return Err(Refusal::ExternalAccountBinding("kid mismatch"));
    }
    if text("url") != Some(url) {
        return Err(Refusal::ExternalAccountBinding(
            "url must be the newAccount URL",
        ));
    }
    if header.get("nonce").is_some() {
        return Err(Refusal::ExternalAccountBinding("must not carry a nonce"));
    }
    let payload = b64_decode("EAB payload", &flat.payload)?;
    let payload: Value = serde_json::from_slice(&payload)
        .map_err(|_| Refusal::ExternalAccountBinding("payload is not a JWK"))?;
    if Jwk::from_value(&payload).ok().as_ref() != Some(account_key) {
        return Err(Refusal::ExternalAccountBinding(
            "payload is not the account key",
        ));
    }
    let signature = b64_decode("EAB signature", &flat.signature)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hmac_key);
    let signing_input = format!("{}.{}", flat.protected, flat.payload);
    ring::hmac::verify(&key, signing_input.as_bytes(), &signature)
        .map_err(|_| Refusal::ExternalAccountBinding("invalid MAC"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    struct Client {
        key: EcdsaKeyPair,
    }

    impl Client {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Self { key }
        }

        fn jwk(&self) -> Value {
            let point = self.key.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256",
                "x": b64(&point[1..33]), "y": b64(&point[33..])})
        }

        fn sign(&self, header: Value, payload: &[u8]) -> Vec<u8> {
            let protected = b64(header.to_string().as_bytes());
            let payload = b64(payload);
            let input = format!("{protected}.{payload}");
            let sig = self
                .key
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap();
            serde_json::json!({"protected": protected, "payload": payload,
                "signature": b64(sig.as_ref())})
            .to_string()
            .into_bytes()
        }
    }

    #[test]
    fn es256_round_trip_and_tamper() {
        let client = Client::new();
        let header = serde_json::json!({"alg": "ES256", "nonce": "n", "url": "https://x/a",
            "jwk": client.jwk()});
        let body = client.sign(header, b"{}");
        let jws = Jws::parse(&body).unwrap();
        let Signer::Jwk(jwk) = &jws.signer else {
            panic!()
        };
        jws.verify(jwk).unwrap();
        assert_eq!((jws.nonce.as_str(), jws.url.as_str()), ("n", "https://x/a"));
        // Another key does not verify it.
        let other = Jwk::from_value(&Client::new().jwk()).unwrap();
        assert_eq!(jws.verify(&other), Err(Refusal::BadSignature));
        // A changed payload does not verify.
        let mut value: Value = serde_json::from_slice(&body).unwrap();
        value["payload"] = Value::String(b64(b"{\"a\":1}"));
        let tampered = Jws::parse(value.to_string().as_bytes()).unwrap();
        assert_eq!(tampered.verify(jwk), Err(Refusal::BadSignature));
    }

    #[test]
    fn eddsa_round_trip_and_alg_key_mismatch() {
        use ring::signature::Ed25519KeyPair;
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": b64(key.public_key().as_ref())});
        let sign = |alg: &str| {
            let header = serde_json::json!({"alg": alg, "nonce": "n", "url": "u", "jwk": jwk});
            let protected = b64(header.to_string().as_bytes());
            let payload = b64(b"{}");
            let sig = key.sign(format!("{protected}.{payload}").as_bytes());
            let body = serde_json::json!({"protected": protected, "payload": payload,
                "signature": b64(sig.as_ref())});
            Jws::parse(body.to_string().as_bytes()).unwrap()
        };
        let jws = sign("EdDSA");
        let Signer::Jwk(public) = &jws.signer else {
            panic!()
        };
        assert_eq!(public.alg(), Alg::EdDsa);
        jws.verify(public).unwrap();
        assert!(
            public
                .to_json()
                .starts_with(r#"{"crv":"Ed25519","kty":"OKP""#)
        );
        // The same Ed25519 key claimed as ES256.
        assert!(matches!(
            sign("ES256").verify(public),
            Err(Refusal::BadSignatureAlgorithm(_))
        ));
    }

    #[test]
    fn malformed_jws_is_refused() {
        let client = Client::new();
        let sign = |h: Value| Jws::parse(&client.sign(h, b"")).map(|_| ());
        assert!(matches!(
            sign(serde_json::json!({"alg": "HS256", "nonce": "n", "url": "u", "kid": "k"})),
            Err(Refusal::BadSignatureAlgorithm(_))
        ));
        assert!(matches!(
            sign(serde_json::json!({"alg": "none", "nonce": "n", "url": "u", "kid": "k"})),
            Err(Refusal::BadSignatureAlgorithm(_))
        ));
        assert_eq!(
            sign(serde_json::json!({"alg": "ES256", "url": "u", "kid": "k"})),
            Err(Refusal::BadNonce)
        );
        assert!(matches!(
            sign(
                serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u", "kid": "k",
                "jwk": client.jwk()})
            ),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            sign(serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u",
                "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}})),
            Err(Refusal::BadSignatureAlgorithm(_))
        ));
        assert!(matches!(
            sign(
                serde_json::json!({"alg": "ES256", "nonce": "n", "url": "u", "kid": "k",
                "crit": ["exp"], "exp": 1})
            ),
            Err(Refusal::Malformed(_))
        ));
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"protected\":\"!!\",\"payload\":\"\",\"signature\":\"\"}",
            b"{\"protected\":\"e30\",\"payload\":\"\",\"signature\":\"\",\"header\":{}}",
            b"{\"protected\":\"bm90IGpzb24\",\"payload\":\"\",\"signature\":\"\"}",
        ] {
            assert!(matches!(Jws::parse(body), Err(Refusal::Malformed(_))));
        }
    }

    #[test]
    fn eab_verifies_only_with_the_right_key_url_and_payload() {
        let client = Client::new();
        let account_key = Jwk::from_value(&client.jwk()).unwrap();
        let hmac = [9u8; 32];
        let make = |kid: &str, url: &str, key: &[u8], payload: &Value| {
            let protected = b64(serde_json::json!({"alg": "HS256", "kid": kid, "url": url})
                .to_string()
                .as_bytes());
            let payload = b64(payload.to_string().as_bytes());
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
            let tag = ring::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
            serde_json::json!({"protected": protected, "payload": payload,
                "signature": b64(tag.as_ref())})
        };
        let url = "https://localhost/acme/new-account";
        let good = make("kid-1", url, &hmac, &client.jwk());
        assert_eq!(eab_kid(&good).unwrap(), "kid-1");
        verify_eab(&good, "kid-1", &hmac, url, &account_key).unwrap();
        let check = |eab: &Value| verify_eab(eab, "kid-1", &hmac, url, &account_key);
        assert_eq!(
            check(&make("kid-1", url, &[8; 32], &client.jwk())),
            Err(Refusal::ExternalAccountBinding("invalid MAC"))
        );
        assert_eq!(
            check(&make(
                "kid-1",
                "https://other/new-account",
                &hmac,
                &client.jwk()
            )),
            Err(Refusal::ExternalAccountBinding(
                "url must be the newAccount URL"
            ))
        );
        assert_eq!(
            check(&make("kid-2", url, &hmac, &client.jwk())),
            Err(Refusal::ExternalAccountBinding("kid mismatch"))
        );
        assert_eq!(
            check(&make("kid-1", url, &hmac, &Client::new().jwk())),
            Err(Refusal::ExternalAccountBinding(
                "payload is not the account key"
            ))
        );
    }
}
