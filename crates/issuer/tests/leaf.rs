//! Issued chains verified by two independent implementations: rustls-webpki and openssl.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use localcert_issuer::ca::{self, CaFiles, IssuingCa, TlsFiles};
use localcert_issuer::leaf::{self, LeafSpec};
use localcert_proto::binding::OriginBinding;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use rcgen::PublicKeyData;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

const OPENSSL: &str = "/usr/bin/openssl";

fn setup(dir: &Path, now: SystemTime) -> IssuingCa {
    let files = CaFiles::in_dir(dir);
    let report = ca::init_ca(&files, "localcert test", now).unwrap();
    assert_eq!(report.root_fingerprint.len(), 32 * 3 - 1);
    IssuingCa::load(&files).unwrap()
}

fn issue(ca: &IssuingCa, names: &[&str], now: SystemTime) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names: Vec<LocalName> = names.iter().map(|n| LocalName::parse(n).unwrap()).collect();
    let binding = OriginBinding::new(Origin::parse("https://vod.example.com").unwrap(), b"user");
    let serial = ca::random_serial_bytes().unwrap();
    leaf::issue_leaf(
        ca,
        &LeafSpec {
            names: &names,
            spki_der: &key.subject_public_key_info(),
            binding: &binding,
            not_before: now,
            not_after: now + Duration::from_secs(7 * 86_400),
            serial: &serial,
        },
    )
    .unwrap()
}

fn webpki_verify(ca: &IssuingCa, leaf: &[u8], name: &str, at: SystemTime) -> Result<(), String> {
    let root = CertificateDer::from(ca.root_der().to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
    let leaf = CertificateDer::from(leaf.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
    let intermediates = [CertificateDer::from(ca.cert_der().to_vec())];
    let time = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| e.to_string())
}

#[test]
fn leaf_verifies_with_webpki_for_its_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = setup(dir.path(), now);
    let name = "tv-vod-example-com-5n1kq3-8w2d.local";
    let leaf = issue(&ca, &[name], now);
    webpki_verify(&ca, &leaf, name, now).unwrap();
    assert!(webpki_verify(&ca, &leaf, "other-vod-example-com-5n1kq3-8w2d.local", now).is_err());
    assert!(webpki_verify(&ca, &leaf, "localhost", now).is_err());
    let later = now + Duration::from_secs(8 * 86_400);
    assert!(webpki_verify(&ca, &leaf, name, later).is_err());
}

#[test]
fn leaf_carries_validated_content() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = setup(dir.path(), now);
    let leaf = issue(&ca, &["tv-a.local", "tv-b.local"], now);
    let (rest, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert!(rest.is_empty());
    assert!(cert.raw_serial().len() * 8 >= 64);
    assert!(cert.subject().iter().next().is_none(), "empty subject");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical);
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["DNSName(tv-a.local)", "DNSName(tv-b.local)"]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth && eku.other.is_empty());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());
    let oid_der = localcert_proto::binding::ORIGIN_BINDING_OID_DER;
    let binding = cert
        .extensions()
        .iter()
        .find(|e| e.oid.as_bytes() == oid_der)
        .unwrap();
    assert!(!binding.critical);
    let decoded = OriginBinding::from_der(binding.value).unwrap();
    assert_eq!(decoded.origin.as_str(), "https://vod.example.com");
    // The profile parser every role uses reads the same claims.
    let claims = localcert_proto::profile::parse_leaf(&leaf).unwrap();
    assert_eq!(claims.binding, decoded);
    assert_eq!(claims.spki, cert.public_key().raw);
    let names: Vec<&str> = claims.names.iter().map(LocalName::as_str).collect();
    assert_eq!(names, ["tv-a.local", "tv-b.local"]);
    let ski = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.14")
        .unwrap();
    assert!(!ski.value.is_empty());
    let aki = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.35")
        .unwrap();
    assert!(
        aki.value
            .windows(ca.key_identifier().len())
            .any(|w| w == ca.key_identifier())
    );
}

#[test]
fn ca_files_and_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let files = CaFiles {
        root_key: dir.path().join("offline/root.key"),
        ..CaFiles::in_dir(dir.path())
    };
    ca::init_ca(&files, "localcert test", now).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for key in [&files.root_key, &files.intermediate_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    assert!(matches!(
        ca::init_ca(&files, "again", now),
        Err(localcert_issuer::Error::AlreadyExists(_))
    ));
    let ca = IssuingCa::load(&files).unwrap();
    for der in [ca.root_der(), ca.cert_der()] {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let nc = cert.name_constraints().unwrap().unwrap();
        assert!(nc.critical);
        let permitted = nc.value.permitted_subtrees.as_ref().unwrap();
        assert_eq!(permitted.len(), 1);
        assert_eq!(permitted[0].base.to_string(), "DNSName(.local)");
        assert_eq!(nc.value.excluded_subtrees.as_ref().unwrap().len(), 2);
    }
    let (_, inter) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    let bc = inter.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca && bc.path_len_constraint == Some(0));

    // The TLS certificate is self-signed by its own key, not by the CA.
    let tls = TlsFiles::in_dir(dir.path());
    ca::init_tls(&tls, now).unwrap();
    let pem = std::fs::read(&tls.cert).unwrap();
    let der = ca::pem_blocks(&pem, "CERTIFICATE").unwrap().remove(0);
    let (_, tls_cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(tls_cert.issuer(), tls_cert.subject());
    assert_ne!(tls_cert.issuer().as_raw(), ca.subject_der());
}

fn write_pem(path: &Path, der: &[u8]) {
    std::fs::write(
        path,
        pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())),
    )
    .unwrap();
}

fn openssl_verify(dir: &Path, leaf: &[u8], name: &str) -> bool {
    assert!(
        Path::new(OPENSSL).exists(),
        "{OPENSSL} is required for this test (apt-get install openssl)"
    );
    write_pem(&dir.join("leaf.pem"), leaf);
    let status = Command::new(OPENSSL)
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("root.pem"))
        .arg("-untrusted")
        .arg(dir.join("intermediate.pem"))
        .args([
            "-purpose",
            "sslserver",
            "-x509_strict",
            "-verify_hostname",
            name,
        ])
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    status.status.success()
}

#[test]
#[ignore = "needs the openssl command: CI runs it with `cargo test -- --ignored openssl`"]
fn openssl_accepts_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = setup(dir.path(), now);
    let name = "tv-vod-example-com-5n1kq3-8w2d.local";
    let leaf = issue(&ca, &[name], now);
    assert!(openssl_verify(dir.path(), &leaf, name));
    assert!(!openssl_verify(dir.path(), &leaf, "tv-other.local"));
    let text = Command::new(OPENSSL)
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.path().join("leaf.pem"))
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    for expected in [
        "X509v3 Subject Alternative Name: critical",
        "DNS:tv-vod-example-com-5n1kq3-8w2d.local",
        "TLS Web Server Authentication",
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        localcert_proto::binding::ORIGIN_BINDING_OID,
        "ecdsa-with-SHA256",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

/// Leaves the intermediate signs outside its constraints (a non-`.local` name, IP SANs), each
/// with the name to verify it for, and a control leaf for a `.local` name.
#[allow(clippy::type_complexity)]
fn rogue_leaves(
    dir: &Path,
    now: SystemTime,
) -> (
    IssuingCa,
    Vec<u8>,
    Vec<(Vec<u8>, &'static str, &'static [&'static str])>,
) {
    let ca = setup(dir, now);
    let files = CaFiles::in_dir(dir);
    let key_pem = std::fs::read_to_string(&files.intermediate_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(
        &CertificateDer::from(ca.cert_der().to_vec()),
        rcgen::KeyPair::from_pem(&key_pem).unwrap(),
    )
    .unwrap();
    let rogue = |sans: &[&str]| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.signed_by(&key, &issuer).unwrap().der().to_vec()
    };
    let fine = rogue(&["tv.local"]);
    let bad: Vec<_> = [
        (&["evil.example.com"][..], "evil.example.com"),
        (&["tv.local", "192.0.2.1"][..], "tv.local"),
        (&["tv.local", "::1"][..], "tv.local"),
    ]
    .into_iter()
    .map(|(sans, name)| (rogue(sans), name, sans))
    .collect();
    (ca, fine, bad)
}

/// What the name constraints are for: a leaf the intermediate signs for a non-`.local` name or
/// an IP address is refused, even though the signature is good.
#[test]
fn constraints_reject_names_outside_local_and_ips() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (ca, fine, bad) = rogue_leaves(dir.path(), now);
    // Control: the same path with a .local name is accepted.
    webpki_verify(&ca, &fine, "tv.local", now).unwrap();
    for (leaf, name, sans) in bad {
        let err = webpki_verify(&ca, &leaf, name, now).unwrap_err();
        assert!(err.contains("NameConstraintViolation"), "{sans:?}: {err}");
    }
}

/// The same with openssl as the independent verifier.
#[test]
#[ignore = "needs the openssl command: CI runs it with `cargo test -- --ignored openssl`"]
fn openssl_rejects_names_outside_local_and_ips() {
    let dir = tempfile::tempdir().unwrap();
    let (_, fine, bad) = rogue_leaves(dir.path(), SystemTime::now());
    assert!(openssl_verify(dir.path(), &fine, "tv.local"));
    for (leaf, name, sans) in bad {
        assert!(!openssl_verify(dir.path(), &leaf, name), "{sans:?}");
    }
}

#[test]
fn leaves_never_outlive_the_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = setup(dir.path(), now);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names = [LocalName::parse("tv.local").unwrap()];
    let binding = OriginBinding::new(Origin::parse("https://vod.example.com").unwrap(), b"u");
    let serial = ca::random_serial_bytes().unwrap();
    let spki = key.subject_public_key_info();
    let spec = |not_after| LeafSpec {
        names: &names,
        spki_der: &spki,
        binding: &binding,
        not_before: now,
        not_after,
        serial: &serial,
    };
    assert!(leaf::issue_leaf(&ca, &spec(ca.not_after() + Duration::from_secs(1))).is_err());
    assert!(leaf::issue_leaf(&ca, &spec(now)).is_err());
    assert!(leaf::issue_leaf(&ca, &spec(ca.not_after())).is_ok());
}
