//! CA setup and loading: a name-constrained P-256 root, an issuing intermediate under it, and a
//! separate self-signed certificate for the issuer's own HTTPS endpoint on localhost.
//!
//! Both CA certificates carry critical name constraints: DNS `.local` permitted, every IPv4 and
//! IPv6 range excluded. The root key may be written to a separate path (offline media); only the
//! intermediate key is needed to issue.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest, Sha256};

use crate::error::{Error, Refusal};

/// The DNS subtree both CA certificates permit.
pub const PERMITTED_DNS: &str = ".local";
/// Lifetime of the root.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(20 * 365 * 86_400);
/// Lifetime of the issuing intermediate.
pub const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);
/// Lifetime of the generated localhost HTTPS certificate.
pub const TLS_LIFETIME: Duration = Duration::from_secs(2 * 365 * 86_400);
/// How long before the intermediate can no longer sign a full-lifetime leaf the issuer starts
/// warning about it.
pub const WARN_AHEAD: Duration = Duration::from_secs(30 * 86_400);
/// Tolerance for clocks that are a little behind.
pub const BACKDATE: Duration = Duration::from_secs(300);

/// Where the CA's files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The root certificate (PEM) that users and browsers install.
    pub root_cert: PathBuf,
    /// The root key (PKCS#8 PEM); may be on offline media.
    pub root_key: PathBuf,
    /// The issuing intermediate certificate (PEM).
    pub intermediate_cert: PathBuf,
    /// The issuing intermediate key (PKCS#8 PEM).
    pub intermediate_key: PathBuf,
}

impl CaFiles {
    /// The default layout inside a directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            root_cert: dir.join("root.pem"),
            root_key: dir.join("root.key"),
            intermediate_cert: dir.join("intermediate.pem"),
            intermediate_key: dir.join("intermediate.key"),
        }
    }
}

/// The issuer's own HTTPS certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The default layout inside a directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("tls.pem"),
            key: dir.join("tls.key"),
        }
    }
}

/// What `init` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// SHA-256 fingerprint of the root certificate, `AB:CD:…`.
    pub root_fingerprint: String,
    /// Path of the root certificate to install.
    pub root_cert: PathBuf,
    /// Path of the root key (keep offline).
    pub root_key: PathBuf,
}

/// Creates the root and the intermediate. Refuses to overwrite any existing file.
pub fn init_ca(files: &CaFiles, ca_name: &str, now: SystemTime) -> Result<InitReport, Error> {
    for path in [
        &files.root_cert,
        &files.root_key,
        &files.intermediate_cert,
        &files.intermediate_key,
    ] {
        if path.exists() {
            return Err(Error::AlreadyExists(path.clone()));
        }
    }
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let root_params = ca_params(&format!("{ca_name} Root"), 1, now, ROOT_LIFETIME)?;
    let root_cert = root_params.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root_params, &root_key);

    let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut intermediate_params = ca_params(
        &format!("{ca_name} Issuing CA"),
        0,
        now,
        INTERMEDIATE_LIFETIME,
    )?;
    intermediate_params.use_authority_key_identifier_extension = true;
    let intermediate_cert = intermediate_params.signed_by(&intermediate_key, &root_issuer)?;

    write_private_file(&files.root_key, root_key.serialize_pem().as_bytes())?;
    write_private_file(
        &files.intermediate_key,
        intermediate_key.serialize_pem().as_bytes(),
    )?;
    write_public_file(&files.intermediate_cert, intermediate_cert.pem().as_bytes())?;
    write_public_file(&files.root_cert, root_cert.pem().as_bytes())?;
    Ok(InitReport {
        root_fingerprint: sha256_fingerprint(root_cert.der()),
        root_cert: files.root_cert.clone(),
        root_key: files.root_key.clone(),
    })
}

/// Creates a self-signed certificate for `localhost`, `127.0.0.1` and `::1` with its own key.
///
/// The constrained root cannot sign it (its constraints permit `.local` only) and must not: a
/// compromise of the HTTPS key then never touches the CA.
pub fn init_tls(files: &TlsFiles, now: SystemTime) -> Result<String, Error> {
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(Error::AlreadyExists(path.clone()));
        }
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localcert issuer (localhost)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, now, TLS_LIFETIME);
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    write_private_file(&files.key, key.serialize_pem().as_bytes())?;
    write_public_file(&files.cert, cert.pem().as_bytes())?;
    Ok(sha256_fingerprint(cert.der()))
}

fn ca_params(
    common_name: &str,
    path_len: u8,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(local_only_constraints());
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, now, lifetime);
    Ok(params)
}

/// DNS `.local` permitted; all of IPv4 and IPv6 excluded (without the exclusion an IP-only
/// certificate would slip past a DNS-only constraint).
fn local_only_constraints() -> NameConstraints {
    NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(PERMITTED_DNS.to_owned())],
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    }
}

fn set_validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    let start = now.checked_sub(BACKDATE).unwrap_or(now);
    params.not_before = time::OffsetDateTime::from(start);
    params.not_after = time::OffsetDateTime::from(now + lifetime);
}

/// A positive serial of 127 random bits.
pub fn random_serial_bytes() -> Result<[u8; 16], Error> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| Error::Certificate("random number generator failed".into()))?;
    // Positive and of full length, so its DER encoding is always 16 bytes.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn random_serial() -> Result<SerialNumber, Error> {
    Ok(SerialNumber::from_slice(&random_serial_bytes()?))
}

/// The SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes a new file readable by the owner only (0600). Never overwrites.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_new_file(path, bytes, 0o600)
}

fn write_public_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_new_file(path, bytes, 0o644)
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let io = |context, source| Error::Io {
        context,
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("creating", e))?;
    file.write_all(bytes).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Io {
        context: "reading",
        path: path.to_owned(),
        source,
    })
}

/// Parses every PEM block with the given tag, in order.
pub fn pem_blocks(text: &[u8], tag: &str) -> Result<Vec<Vec<u8>>, Error> {
    let blocks =
        pem::parse_many(text).map_err(|e| Error::Certificate(format!("invalid PEM: {e}")))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == tag)
        .map(pem::Pem::into_contents)
        .collect())
}

fn single_pem(path: &Path, tag: &str) -> Result<Vec<u8>, Error> {
    let mut blocks = pem_blocks(&read_file(path)?, tag)?;
    match (blocks.pop(), blocks.is_empty()) {
        (Some(block), true) => Ok(block),
        _ => Err(Error::Certificate(format!(
            "{} must hold exactly one {tag}",
            path.display()
        ))),
    }
}

/// The intermediate's key and certificate, ready to sign leaves and CRLs.
pub struct IssuingCa {
    key: EcdsaKeyPair,
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    root_der: Vec<u8>,
    subject_der: Vec<u8>,
    key_identifier: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("IssuingCa")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl IssuingCa {
    /// Loads the intermediate (certificate and key) and the root certificate. The root key is
    /// not needed.
    pub fn load(files: &CaFiles) -> Result<Self, Error> {
        let cert_der = single_pem(&files.intermediate_cert, "CERTIFICATE")?;
        let root_der = single_pem(&files.root_cert, "CERTIFICATE")?;
        let key_der = single_pem(&files.intermediate_key, "PRIVATE KEY")?;
        Self::from_der(cert_der, root_der, &key_der)
    }

    /// Builds from DER: intermediate certificate, root certificate, PKCS#8 intermediate key.
    pub fn from_der(cert_der: Vec<u8>, root_der: Vec<u8>, key_pkcs8: &[u8]) -> Result<Self, Error> {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            key_pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| Error::Certificate("intermediate key is not a P-256 PKCS#8 key".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| Error::Certificate("intermediate certificate does not parse".into()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
            return Err(Error::Certificate(
                "intermediate key does not match the intermediate certificate".into(),
            ));
        }
        let subject_der = cert.subject().as_raw().to_vec();
        let not_before = SystemTime::from(cert.validity().not_before.to_datetime());
        let not_after = SystemTime::from(cert.validity().not_after.to_datetime());
        let key_identifier = cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(id.0.to_vec())
                }
                _ => None,
            })
            .ok_or_else(|| {
                Error::Certificate("intermediate certificate has no subject key identifier".into())
            })?;
        Ok(Self {
            key,
            key_pkcs8: key_pkcs8.to_vec(),
            cert_der,
            root_der,
            subject_der,
            key_identifier,
            not_before,
            not_after,
        })
    }

    /// Whether the intermediate may sign, at `now`, a leaf valid until `leaf_end`: it must be
    /// valid now and outlive the leaf. Otherwise the refusal names its validity, for the
    /// operator to renew it (no client can fix this).
    pub fn check_signing(&self, now: SystemTime, leaf_end: SystemTime) -> Result<(), Refusal> {
        if now < self.not_before || now > self.not_after || leaf_end > self.not_after {
            return Err(Refusal::IssuerNotValid {
                not_before: rfc3339(self.not_before),
                not_after: rfc3339(self.not_after),
                leaf_end: rfc3339(leaf_end),
            });
        }
        Ok(())
    }

    /// A warning for the operator at startup if, at `now`, the intermediate cannot sign a leaf
    /// of `leaf_lifetime` (and so every finalize would be refused), or soon will not.
    pub fn signing_warning(&self, now: SystemTime, leaf_lifetime: Duration) -> Option<String> {
        let (from, until) = (rfc3339(self.not_before), rfc3339(self.not_after));
        if now < self.not_before || now > self.not_after {
            return Some(format!(
                "the issuing intermediate is not valid now (valid from {from} to {until}): \
                 every finalize will be refused until it is renewed"
            ));
        }
        let last = self.not_after.checked_sub(leaf_lifetime)?;
        (now + WARN_AHEAD > last).then(|| {
            format!(
                "the issuing intermediate expires at {until}: from {} on, a leaf of the \
                 policy's lifetime would outlive it and finalize will be refused; renew it",
                rfc3339(last)
            )
        })
    }

    /// Signs `message` with the intermediate key: a DER ECDSA P-256/SHA-256 signature.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.key
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Certificate("signing failed".into()))
    }

    /// A CRL signed by the intermediate listing `revoked` (serial bytes, revocation time,
    /// RFC 5280 reason code), valid from `now` to `next_update`.
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, SystemTime, u8)],
        now: SystemTime,
        next_update: SystemTime,
    ) -> Result<Vec<u8>, Error> {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
        };
        let key = KeyPair::try_from(self.key_pkcs8.as_slice())?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), key)?;
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at, reason)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: time::OffsetDateTime::from(*at),
                reason_code: Some(match reason {
                    1 => RevocationReason::KeyCompromise,
                    3 => RevocationReason::AffiliationChanged,
                    4 => RevocationReason::Superseded,
                    5 => RevocationReason::CessationOfOperation,
                    9 => RevocationReason::PrivilegeWithdrawn,
                    _ => RevocationReason::Unspecified,
                }),
                invalidity_date: None,
            })
            .collect();
        // Seconds since the epoch: increases with every CRL issued a second or more apart.
        let crl_number = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_be_bytes();
        let params = CertificateRevocationListParams {
            this_update: time::OffsetDateTime::from(now),
            next_update: time::OffsetDateTime::from(next_update),
            crl_number: SerialNumber::from_slice(&crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_identifier.clone()),
        };
        Ok(params.signed_by(&issuer)?.der().to_vec())
    }

    /// The intermediate certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The intermediate's subject Name, DER (the issuer of every leaf).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// When the intermediate expires: no leaf may outlive it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When the intermediate becomes valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The intermediate's subject key identifier (the AKI of every leaf).
    pub fn key_identifier(&self) -> &[u8] {
        &self.key_identifier
    }

    /// The root's SHA-256 fingerprint.
    pub fn root_fingerprint(&self) -> String {
        sha256_fingerprint(&self.root_der)
    }
}

/// Formats a time as RFC 3339 (UTC), in whole seconds as stored and as in certificates.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
