//! Every decision of `validate`, accepted and refused, without HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::{Device, Manufacturer, TlsKey};
use localcert_issuer::Refusal;
use localcert_issuer::validate::{self, AttestedDevice, ChallengeContext, Identifier, TrustConfig};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use sha2::{Digest, Sha256};

const KEY_AUTHORIZATION: &str = "token123.thumbprint456";
const USER: &[u8] = b"user-1";

fn origin() -> Origin {
    Origin::parse("https://vod.example.com").unwrap()
}

struct Fixture {
    maker: Manufacturer,
    device: Device,
    tls: TlsKey,
    origin: Origin,
    names: Vec<LocalName>,
    trust: TrustConfig,
    now: SystemTime,
}

impl Fixture {
    fn new() -> Self {
        let maker = Manufacturer::new("Acme TVs");
        let device = maker.device("0001");
        let origin = origin();
        let names = vec![device.name("tv", &origin)];
        let trust = TrustConfig::new(std::slice::from_ref(&maker.root_der), []).unwrap();
        Self {
            maker,
            device,
            tls: TlsKey::new(),
            origin,
            names,
            trust,
            now: SystemTime::now(),
        }
    }

    fn ctx(&self) -> ChallengeContext<'_> {
        ChallengeContext {
            origin: &self.origin,
            key_authorization: KEY_AUTHORIZATION,
            names: &self.names,
            expires: self.now + Duration::from_secs(300),
            already_answered: false,
        }
    }

    fn att_obj(&self) -> Vec<u8> {
        self.device.attest(
            KEY_AUTHORIZATION,
            &self.origin,
            USER,
            &self.tls.spki(),
            &self.names,
        )
    }

    fn check(&self, att_obj: &[u8]) -> Result<AttestedDevice, Refusal> {
        validate::check_attestation(att_obj, &self.ctx(), &self.trust, self.now)
    }
}

fn dns(value: &str) -> Identifier<'_> {
    Identifier { kind: "dns", value }
}

#[test]
fn identifiers_in_the_namespace_are_accepted() {
    let f = Fixture::new();
    let name = f.names[0].as_str();
    let names = validate::check_identifiers(&[dns(name)], &f.origin).unwrap();
    assert_eq!(names, f.names);
}

#[test]
fn identifier_refusals() {
    let f = Fixture::new();
    let o = &f.origin;
    let good = f.names[0].as_str();
    let other_origin = f
        .device
        .name("tv", &Origin::parse("https://evil.example").unwrap());
    let check = |ids: &[Identifier<'_>]| validate::check_identifiers(ids, o).unwrap_err();

    assert_eq!(check(&[]), Refusal::Identifiers("no identifiers"));
    assert_eq!(
        check(&[dns(good); 5]),
        Refusal::Identifiers("too many identifiers")
    );
    assert_eq!(
        check(&[dns(good), dns(good)]),
        Refusal::Identifiers("duplicate identifier")
    );
    assert!(matches!(
        check(&[Identifier {
            kind: "ip",
            value: "192.0.2.1"
        }]),
        Refusal::UnsupportedIdentifier(_)
    ));
    for ip in ["192.0.2.1", "::1", "[fe80::1]", "10.0.0.1"] {
        assert!(
            matches!(check(&[dns(ip)]), Refusal::IpIdentifier(_)),
            "{ip}"
        );
    }
    assert!(matches!(
        check(&[dns("*.local")]),
        Refusal::WildcardIdentifier(_)
    ));
    for bad in ["tv.example.com", "tv.local.", "a.b.local", "TV.local", ""] {
        assert!(
            matches!(check(&[dns(bad)]), Refusal::NotLocalName(_)),
            "{bad}"
        );
    }
    assert!(matches!(
        check(&[dns(other_origin.as_str())]),
        Refusal::OutsideNamespace { .. }
    ));
    assert!(matches!(
        check(&[dns("tv.local")]),
        Refusal::OutsideNamespace { .. }
    ));
    // Attacker text in messages stays short.
    let long = "a".repeat(5000);
    let Refusal::NotLocalName(shown) = check(&[dns(&long)]) else {
        panic!()
    };
    assert!(shown.len() < 100);
}

#[test]
fn valid_attestation_is_accepted() {
    let f = Fixture::new();
    let attested = f.check(&f.att_obj()).unwrap();
    assert_eq!(attested.spki, f.tls.spki());
    assert_eq!(attested.user_handle, USER);
    assert_eq!(attested.device_tag, f.device.tag());
}

#[test]
fn used_or_expired_challenges_are_refused() {
    let f = Fixture::new();
    let att = f.att_obj();
    let used = ChallengeContext {
        already_answered: true,
        ..f.ctx()
    };
    assert_eq!(
        validate::check_attestation(&att, &used, &f.trust, f.now),
        Err(Refusal::ChallengeUsed)
    );
    let later = f.now + Duration::from_secs(300);
    assert_eq!(
        validate::check_attestation(&att, &f.ctx(), &f.trust, later),
        Err(Refusal::ChallengeExpired)
    );
}

#[test]
fn malformed_or_truncated_attestation_is_refused() {
    let f = Fixture::new();
    let att = f.att_obj();
    for bad in [
        &att[..att.len() - 1],
        &att[..10],
        b"not cbor at all".as_slice(),
        &[],
    ] {
        assert!(matches!(
            f.check(bad),
            Err(Refusal::AttestationMalformed(_))
        ));
    }
    // Valid CBOR, but the device certificate is garbage.
    let mut obj = localcert_proto::attestation::AttestationObject::decode(&att).unwrap();
    obj.x5c[0] = vec![0x30, 0x03, 0x02, 0x01, 0x01];
    assert_eq!(
        f.check(&obj.encode()),
        Err(Refusal::AttestationCertificateMalformed)
    );
}

#[test]
fn forged_signatures_are_refused() {
    let f = Fixture::new();
    let att = f.att_obj();
    let mut obj = localcert_proto::attestation::AttestationObject::decode(&att).unwrap();
    // A signature over another key authorization (another account or challenge).
    let other = f
        .device
        .attest("other.thumb", &f.origin, USER, &f.tls.spki(), &f.names);
    assert_eq!(f.check(&other), Err(Refusal::AttestationSignature));
    // Another origin in the transcript.
    let evil = Origin::parse("https://evil.example").unwrap();
    let other = f
        .device
        .attest(KEY_AUTHORIZATION, &evil, USER, &f.tls.spki(), &f.names);
    assert_eq!(f.check(&other), Err(Refusal::AttestationSignature));
    // The user handle or SPKI swapped after signing.
    let mut swapped = obj.clone();
    swapped.user_handle = b"user-2".to_vec();
    assert_eq!(
        f.check(&swapped.encode()),
        Err(Refusal::AttestationSignature)
    );
    let mut swapped = obj.clone();
    swapped.spki = TlsKey::new().spki();
    assert_eq!(
        f.check(&swapped.encode()),
        Err(Refusal::AttestationSignature)
    );
    // Signed by another device's key but presenting this device's chain.
    let impostor = f.maker.device("0002");
    obj.sig = impostor.sign(b"anything");
    assert_eq!(f.check(&obj.encode()), Err(Refusal::AttestationSignature));
}

#[test]
fn unknown_manufacturer_is_refused() {
    let f = Fixture::new();
    let stranger = Manufacturer::new("Unknown Inc");
    let device = stranger.device("0001");
    let names = vec![device.name("tv", &f.origin)];
    let att = device.attest(KEY_AUTHORIZATION, &f.origin, USER, &f.tls.spki(), &names);
    let ctx = ChallengeContext {
        names: &names,
        ..f.ctx()
    };
    assert_eq!(
        validate::check_attestation(&att, &ctx, &f.trust, f.now),
        Err(Refusal::AttestationUntrusted)
    );
}

#[test]
fn expired_device_certificate_is_refused() {
    let f = Fixture::new();
    let now_unix = f
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let device = f.maker.device_valid("0003", Some(now_unix - 3600));
    let names = vec![device.name("tv", &f.origin)];
    let att = device.attest(KEY_AUTHORIZATION, &f.origin, USER, &f.tls.spki(), &names);
    let ctx = ChallengeContext {
        names: &names,
        ..f.ctx()
    };
    assert_eq!(
        validate::check_attestation(&att, &ctx, &f.trust, f.now),
        Err(Refusal::AttestationExpired)
    );
}

#[test]
fn revoked_device_or_batch_is_refused() {
    let f = Fixture::new();
    for revoked in [&f.device.chain[0], &f.maker.batch_der] {
        let digest: [u8; 32] = Sha256::digest(revoked).into();
        let trust = TrustConfig::new(std::slice::from_ref(&f.maker.root_der), [digest]).unwrap();
        assert_eq!(
            validate::check_attestation(&f.att_obj(), &f.ctx(), &trust, f.now),
            Err(Refusal::AttestationRevoked(hex::encode(digest)))
        );
    }
}

#[test]
fn names_of_another_device_are_refused() {
    let f = Fixture::new();
    // The order names device 0002, but device 0001 answers.
    let other = f.maker.device("0002");
    let names = vec![other.name("tv", &f.origin)];
    let att = f
        .device
        .attest(KEY_AUTHORIZATION, &f.origin, USER, &f.tls.spki(), &names);
    let ctx = ChallengeContext {
        names: &names,
        ..f.ctx()
    };
    assert_eq!(
        validate::check_attestation(&att, &ctx, &f.trust, f.now),
        Err(Refusal::WrongDevice(names[0].to_string()))
    );
}

#[test]
fn attested_key_must_be_canonical_p256() {
    let f = Fixture::new();
    let attest = |spki: &[u8]| {
        f.device
            .attest(KEY_AUTHORIZATION, &f.origin, USER, spki, &f.names)
    };
    assert_eq!(f.check(&attest(&[0x30, 0x00])), Err(Refusal::AttestedKey));
    // The same key with a BER long-form length: same key, not the one DER encoding.
    let spki = f.tls.spki();
    assert_eq!(validate::p256_spki_der(&spki[26..]), spki);
    let mut ber = vec![0x30, 0x81, 0x59];
    ber.extend_from_slice(&spki[2..]);
    assert_eq!(f.check(&attest(&ber)), Err(Refusal::AttestedKey));
    // An Ed25519 key.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_spki = rcgen::PublicKeyData::subject_public_key_info(&ed);
    assert_eq!(f.check(&attest(&ed_spki)), Err(Refusal::AttestedKey));
}

#[test]
fn matching_csr_is_accepted() {
    let f = Fixture::new();
    let csr = f.tls.csr(&[f.names[0].as_str()]);
    validate::check_csr(&csr, &f.names, &f.tls.spki()).unwrap();
}

#[test]
fn csr_refusals() {
    let f = Fixture::new();
    let name = f.names[0].as_str();
    let spki = f.tls.spki();
    let check = |csr: &[u8]| validate::check_csr(csr, &f.names, &spki).unwrap_err();

    assert_eq!(check(b"garbage"), Refusal::CsrInvalid("does not parse"));
    let mut tampered = f.tls.csr(&[name]);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(check(&tampered), Refusal::CsrInvalid("invalid signature"));
    let mut trailing = f.tls.csr(&[name]);
    trailing.push(0);
    assert_eq!(check(&trailing), Refusal::CsrInvalid("trailing bytes"));
    // A CSR for another key than the attested one.
    assert_eq!(check(&TlsKey::new().csr(&[name])), Refusal::CsrKeyMismatch);
    // Names that differ from the order's.
    assert_eq!(
        check(&f.tls.csr(&[name, "extra.local"])),
        Refusal::CsrNamesMismatch
    );
    assert_eq!(
        check(&f.tls.csr(&["other.local"])),
        Refusal::CsrNamesMismatch
    );
    assert_eq!(check(&f.tls.csr(&[])), Refusal::CsrNamesMismatch);
    // IP SANs.
    assert_eq!(check(&f.tls.csr_with_ip(name)), Refusal::CsrNonDnsName);
    // A common name outside the order.
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sneaky.local");
    let csr = params.serialize_request(&f.tls.0).unwrap().der().to_vec();
    assert_eq!(check(&csr), Refusal::CsrNamesMismatch);
    // The right name and key, and an extension request besides (the profile reports it; the
    // issuer never copies it, and refuses the CSR).
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        ));
    let csr = params.serialize_request(&f.tls.0).unwrap().der().to_vec();
    assert_eq!(
        check(&csr),
        Refusal::CsrInvalid("asks for extensions or attributes besides subjectAltName")
    );
    // The same CSR without the extension passes.
    params.custom_extensions.clear();
    let csr = params.serialize_request(&f.tls.0).unwrap().der().to_vec();
    validate::check_csr(&csr, &f.names, &spki).unwrap();
}
