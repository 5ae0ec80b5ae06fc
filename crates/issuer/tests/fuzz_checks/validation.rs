//! `device-attest-01` attestation and finalize CSR validation (`validate::check_attestation`,
//! `validate::check_csr`), on raw bytes and on mutations of a valid object.
//!
//! Input: a mode byte, then the bytes (raw modes) or edits of 4 bytes each (kind, offset high,
//! offset low, value) applied to a valid attestation object or CSR made by a real device key.
//! Properties: nothing panics; the untouched valid object is accepted; an accepted attestation
//! attests the device's own TLS key and user handle; an accepted CSR carries the very
//! CertificationRequestInfo the TLS key signed (a mutation can only ever change its encoding
//! around the signed bytes).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use localcert_issuer::validate::{self, ChallengeContext, TrustConfig};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use x509_parser::prelude::FromDer;

use super::common::{Device, Manufacturer, TlsKey};

const KEY_AUTHORIZATION: &str = "token-fuzz.thumbprint-fuzz";
const USER: &[u8] = b"user-fuzz";
/// The most edits applied to one valid object.
const MAX_EDITS: usize = 64;

struct Fixture {
    _maker: Manufacturer,
    device: Device,
    tls: TlsKey,
    origin: Origin,
    names: Vec<LocalName>,
    trust: TrustConfig,
    att_obj: Vec<u8>,
    csr: Vec<u8>,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let maker = Manufacturer::new("Fuzz TVs");
        let device = maker.device("0001");
        let origin = Origin::parse("https://vod.example.com").unwrap();
        let names = vec![device.name("tv", &origin)];
        let trust = TrustConfig::new(std::slice::from_ref(&maker.root_der), []).unwrap();
        let tls = TlsKey::new();
        let att_obj = device.attest(KEY_AUTHORIZATION, &origin, USER, &tls.spki(), &names);
        let csr = tls.csr(&[names[0].as_str()]);
        Fixture {
            _maker: maker,
            device,
            tls,
            origin,
            names,
            trust,
            att_obj,
            csr,
            now: SystemTime::now(),
        }
    })
}

/// Applies edits (xor, insert, remove one byte) to `valid`.
pub(crate) fn edited(valid: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for edit in edits.chunks_exact(4).take(MAX_EDITS) {
        let offset = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        match edit[0] % 3 {
            0 if !bytes.is_empty() => {
                let at = offset % bytes.len();
                bytes[at] ^= edit[3];
            }
            1 => {
                let at = offset % (bytes.len() + 1);
                bytes.insert(at, edit[3]);
            }
            2 if !bytes.is_empty() => {
                let at = offset % bytes.len();
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

pub(crate) fn validation(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 4 {
        0 => attestation(rest),
        1 => attestation(&edited(&f.att_obj, rest)),
        2 => csr(rest),
        _ => csr(&edited(&f.csr, rest)),
    }
}

fn attestation(att_obj: &[u8]) {
    let f = fixture();
    let ctx = ChallengeContext {
        origin: &f.origin,
        key_authorization: KEY_AUTHORIZATION,
        names: &f.names,
        expires: f.now + Duration::from_secs(300),
        already_answered: false,
    };
    let result = validate::check_attestation(att_obj, &ctx, &f.trust, f.now);
    if att_obj == f.att_obj {
        assert!(
            result.is_ok(),
            "the valid attestation is refused: {result:?}"
        );
    }
    if let Ok(device) = result {
        assert_eq!(device.spki, f.tls.spki(), "accepted for another TLS key");
        assert_eq!(device.user_handle, USER, "accepted for another user");
        assert_eq!(
            device.device_tag,
            f.device.tag(),
            "accepted for another device"
        );
    }
}

fn csr(der: &[u8]) {
    let f = fixture();
    let result = validate::check_csr(der, &f.names, &f.tls.spki());
    if der == f.csr {
        assert!(result.is_ok(), "the valid CSR is refused: {result:?}");
    }
    if result.is_ok() {
        let signed = |der: &[u8]| {
            let (_, csr) =
                x509_parser::certification_request::X509CertificationRequest::from_der(der)
                    .expect("an accepted CSR parses");
            csr.certification_request_info.raw.to_vec()
        };
        assert_eq!(
            signed(der),
            signed(&f.csr),
            "accepted a CSR the key never signed"
        );
    }
}
