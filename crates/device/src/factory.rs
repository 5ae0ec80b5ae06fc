//! Factory: a manufacturer root, optional batch intermediates (so a leaked batch can be
//! revoked on its own), and one attestation credential (P-256 key + chain) per device.
//!
//! File layout written by [`write_ca`] and [`write_device`]:
//! `{stem}.pem` + `{stem}.key.pem` for a CA, `attestation.pem` (device certificate first, then
//! the batch certificate, never the root) + `attestation.key.pem` for a device. Keys are 0600,
//! and no existing file is ever overwritten.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::error::{CredentialError, Error};
use crate::files;
use crate::keys::{self, DeviceKey, KeyProvider};
use crate::pki::{self, SecretKey};

/// The file name of a device's attestation chain.
pub const DEVICE_CHAIN_FILE: &str = "attestation.pem";
/// The file name of a device's attestation key.
pub const DEVICE_KEY_FILE: &str = "attestation.key.pem";

/// How long factory certificates are valid: a device outlives any short lifetime.
const ROOT_VALIDITY_DAYS: i64 = 25 * 365;
const BATCH_VALIDITY_DAYS: i64 = 20 * 365;
const DEVICE_VALIDITY_DAYS: i64 = 20 * 365;

/// A CA credential: its certificate and key, plus the certificates between it and the root
/// (empty for the root itself).
#[derive(Debug, Clone)]
pub struct CaCredential {
    /// The CA certificate, DER.
    pub certificate: Vec<u8>,
    /// Its key.
    pub key: SecretKey,
    /// Certificates above it up to (not including) the root, DER.
    pub chain_above: Vec<Vec<u8>>,
}

/// A device attestation credential.
#[derive(Debug, Clone)]
pub struct DeviceCredential {
    /// The chain, DER, device certificate first, without the root.
    pub chain: Vec<Vec<u8>>,
    /// The device's attestation key.
    pub key: SecretKey,
}

fn gen_error(e: rcgen::Error) -> Error {
    CredentialError::Generate(e.to_string()).into()
}

fn random_serial(rng: &dyn SecureRandom) -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| CredentialError::Crypto("random serial"))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and 16 bytes long
    Ok(SerialNumber::from_slice(&bytes))
}

fn params(
    common_name: &str,
    days: i64,
    rng: &dyn SecureRandom,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // Backdate an hour to tolerate clock skew between factory and verifier.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params.serial_number = Some(random_serial(rng)?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn issuer(ca: &CaCredential) -> Result<Issuer<'static, rcgen::KeyPair>, Error> {
    let key = pki::rcgen_key(&ca.key)?;
    let der = rustls_pki_types::CertificateDer::from(ca.certificate.as_slice());
    Issuer::from_ca_cert_der(&der, key).map_err(gen_error)
}

/// A new self-signed manufacturer root with a fresh P-256 key.
pub fn new_root(common_name: &str) -> Result<CaCredential, Error> {
    let rng = SystemRandom::new();
    let key = pki::generate_p256(&rng)?;
    let mut params = params(common_name, ROOT_VALIDITY_DAYS, &rng)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = false;
    let cert = params
        .self_signed(&pki::rcgen_key(&key)?)
        .map_err(gen_error)?;
    Ok(CaCredential {
        certificate: cert.der().to_vec(),
        key,
        chain_above: Vec::new(),
    })
}

/// A new batch intermediate under `root`; devices made under it can be distrusted together.
pub fn new_batch(root: &CaCredential, common_name: &str) -> Result<CaCredential, Error> {
    let rng = SystemRandom::new();
    let key = pki::generate_p256(&rng)?;
    let mut params = params(common_name, BATCH_VALIDITY_DAYS, &rng)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .signed_by(&pki::rcgen_key(&key)?, &issuer(root)?)
        .map_err(gen_error)?;
    let mut chain_above = vec![root.certificate.clone()];
    chain_above.extend(root.chain_above.iter().cloned());
    // The root itself is never part of a chain a device presents.
    chain_above.retain(|c| !is_self_signed(c));
    Ok(CaCredential {
        certificate: cert.der().to_vec(),
        key,
        chain_above,
    })
}

/// A new device attestation credential signed by `issuer` (the root or a batch).
///
/// The subject names the product and serial; the key may only sign (digitalSignature).
pub fn new_device(
    issuer_ca: &CaCredential,
    product: &str,
    serial: &str,
) -> Result<DeviceCredential, Error> {
    let rng = SystemRandom::new();
    let key = pki::generate_p256(&rng)?;
    let chain = certify_device_key(
        issuer_ca,
        product,
        serial,
        &keys::FileKeys,
        &DeviceKey::Software(key.clone()),
    )?;
    Ok(DeviceCredential { chain, key })
}

/// The attestation chain for a key a provider holds (`localcert factory device --pkcs11`: a
/// key made inside the token): the device certificate signed by `issuer_ca`, then the
/// certificates above it, without the root.
pub fn certify_device_key(
    issuer_ca: &CaCredential,
    product: &str,
    serial: &str,
    provider: &dyn KeyProvider,
    key: &DeviceKey,
) -> Result<Vec<Vec<u8>>, Error> {
    if product.is_empty() || serial.is_empty() {
        return Err(Error::Config("product and serial must not be empty".into()));
    }
    let rng = SystemRandom::new();
    let mut params = params(&format!("{product} {serial}"), DEVICE_VALIDITY_DAYS, &rng)?;
    params
        .distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial); // serialNumber attribute
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let subject = keys::RcgenKey::new(provider, key, &rng)?;
    let cert = params
        .signed_by(&subject, &issuer(issuer_ca)?)
        .map_err(gen_error)?;
    let mut chain = vec![cert.der().to_vec()];
    if !is_self_signed(&issuer_ca.certificate) {
        chain.push(issuer_ca.certificate.clone());
        chain.extend(issuer_ca.chain_above.iter().cloned());
    }
    Ok(chain)
}

/// A new attestation key generated inside a token under `label` (which no key may have yet),
/// and its chain signed by `issuer_ca`. The key never leaves the token; if the chain cannot
/// be made, the key is deleted again.
#[cfg(feature = "pkcs11")]
pub fn new_device_in_token(
    issuer_ca: &CaCredential,
    product: &str,
    serial: &str,
    token: &crate::pkcs11::TokenKeys,
    label: &str,
) -> Result<(DeviceKey, Vec<Vec<u8>>), Error> {
    if !token.ids_labelled(label)?.is_empty() {
        return Err(Error::Config(format!(
            "the token already holds a key labelled `{label}`"
        )));
    }
    let key = token.generate_labelled(label, &SystemRandom::new())?;
    match certify_device_key(issuer_ca, product, serial, token, &key) {
        Ok(chain) => Ok((key, chain)),
        Err(e) => {
            if let Err(cleanup) = token.destroy(&key) {
                tracing::warn!(error = %cleanup, "cannot delete the new key again");
            }
            Err(e)
        }
    }
}

fn is_self_signed(der: &[u8]) -> bool {
    pki::parse_certificate(der, "certificate")
        .map(|c| c.subject().as_raw() == c.issuer().as_raw())
        .unwrap_or(false)
}

/// The certificate and key paths of a CA with file stem `stem` in `dir`.
pub fn ca_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key.pem")),
    )
}

/// Writes `{stem}.pem` (the certificate, then the ones above it) and `{stem}.key.pem` (0600).
/// Refuses to overwrite either.
pub fn write_ca(dir: &Path, stem: &str, ca: &CaCredential) -> Result<(PathBuf, PathBuf), Error> {
    let (cert_path, key_path) = ca_paths(dir, stem);
    let mut certs = vec![ca.certificate.clone()];
    certs.extend(ca.chain_above.iter().cloned());
    // Key first: if the certificate cannot be written, no certificate without a key is left.
    files::write_new(&key_path, ca.key.to_pem().as_bytes(), true)?;
    files::write_new(
        &cert_path,
        pki::certificates_to_pem(&certs).as_bytes(),
        false,
    )?;
    Ok((cert_path, key_path))
}

/// Reads a CA written by [`write_ca`], checking that the key matches the certificate.
pub fn read_ca(cert_path: &Path, key_path: &Path) -> Result<CaCredential, Error> {
    let mut certs = pki::certificates_from_pem(&files::read(cert_path)?, "CA certificate")?;
    let key = pki::key_from_pem(&files::read(key_path)?, "CA key")?;
    let certificate = certs.remove(0);
    pki::check_key_matches(&key, &certificate, "CA certificate")?;
    Ok(CaCredential {
        certificate,
        key,
        chain_above: certs,
    })
}

/// Writes [`DEVICE_CHAIN_FILE`] and [`DEVICE_KEY_FILE`] (0600) into `dir`, creating `dir`.
pub fn write_device(dir: &Path, device: &DeviceCredential) -> Result<(PathBuf, PathBuf), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    let key_path = dir.join(DEVICE_KEY_FILE);
    files::write_new(&key_path, device.key.to_pem().as_bytes(), true)?;
    let chain_path = write_device_chain(dir, &device.chain)?;
    Ok((chain_path, key_path))
}

/// Writes only [`DEVICE_CHAIN_FILE`] into `dir`, creating `dir`: for a key kept in a token.
pub fn write_device_chain(dir: &Path, chain: &[Vec<u8>]) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    let chain_path = dir.join(DEVICE_CHAIN_FILE);
    files::write_new(
        &chain_path,
        pki::certificates_to_pem(chain).as_bytes(),
        false,
    )?;
    Ok(chain_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{CertificateDer, UnixTime};

    fn verify_chain(root: &CaCredential, chain: &[Vec<u8>]) -> Result<(), webpki::Error> {
        let root_der = CertificateDer::from(root.certificate.as_slice());
        let anchor = webpki::anchor_from_trusted_cert(&root_der)?;
        let ee_der = CertificateDer::from(chain[0].as_slice());
        let ee = webpki::EndEntityCert::try_from(&ee_der)?;
        let inter: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        // Attestation certificates carry no EKU; any purpose is accepted here.
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &inter,
            UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map(|_| ())
    }

    #[test]
    fn device_chains_verify_to_the_root_with_and_without_a_batch() {
        let root = new_root("Test Manufacturer Root").unwrap();
        let direct = new_device(&root, "Media Server", "0001").unwrap();
        assert_eq!(direct.chain.len(), 1);
        verify_chain(&root, &direct.chain).unwrap();
        pki::check_key_matches(&direct.key, &direct.chain[0], "device").unwrap();

        let batch = new_batch(&root, "Batch 2026-01").unwrap();
        let device = new_device(&batch, "Media Server", "0002").unwrap();
        assert_eq!(device.chain.len(), 2);
        verify_chain(&root, &device.chain).unwrap();

        let other_root = new_root("Other").unwrap();
        assert!(verify_chain(&other_root, &device.chain).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn files_round_trip_with_private_keys_and_no_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lc-factory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = new_root("Root").unwrap();
        let (cert, key) = write_ca(&dir, "root", &root).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_ca(&dir, "root", &root).is_err(), "no overwrite");
        let read = read_ca(&cert, &key).unwrap();
        assert_eq!(read.certificate, root.certificate);

        let other = new_root("Other").unwrap();
        let (other_cert, _) = write_ca(&dir, "other", &other).unwrap();
        assert!(matches!(
            read_ca(&other_cert, &key),
            Err(Error::Credential(CredentialError::KeyMismatch))
        ));

        let device = new_device(&read, "TV", "42").unwrap();
        let (chain_path, key_path) = write_device(&dir.join("dev"), &device).unwrap();
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(chain_path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
