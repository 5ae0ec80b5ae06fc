//! One full issuance with instant-acme (order, device-attest-01 with the fixture device's key,
//! finalize, download), resumed from the order's state when a step fails on its way through a
//! replica that died or a database that restarted.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, ChallengeType, DeviceAttestation, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use localcert_proto::attestation::AttestationObject;
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName};
use localcert_proto::origin::Origin;
use localcert_proto::transcript::Transcript;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use sha2::Digest;

/// How many times one issuance resumes before it counts as failed.
const ATTEMPTS: usize = 12;

/// A device credential from fixtures/devices/: certificate chain and key.
#[derive(Debug)]
pub(crate) struct FixtureDevice {
    chain: Vec<Vec<u8>>,
    key: EcdsaKeyPair,
    tag: DeviceTag,
    pub(crate) user_handle: Vec<u8>,
}

impl FixtureDevice {
    pub(crate) fn load(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            pem::parse_many(text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let chain: Vec<Vec<u8>> = read("attestation.pem")?
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect();
        let key = read("attestation.key.pem")?
            .into_iter()
            .next()
            .ok_or("no key in attestation.key.pem")?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            key.contents(),
            &SystemRandom::new(),
        )
        .map_err(|e| format!("device key: {e}"))?;
        let tag = DeviceTag::from_attestation_certificate(chain.first().ok_or("no certificate")?);
        Ok(Self {
            chain,
            key,
            tag,
            user_handle: b"fleet-user".to_vec(),
        })
    }

    pub(crate) fn name(&self, label: &str, origin: &Origin) -> Result<LocalName, String> {
        let label = DeviceLabel::parse(label).map_err(|e| format!("label {label}: {e}"))?;
        Ok(LocalName::derive(&label, origin, &self.tag))
    }

    /// The attestation object a real device would send for these inputs.
    pub(crate) fn attest(
        &self,
        key_authorization: &str,
        origin: &Origin,
        tls_spki: &[u8],
        names: &[LocalName],
    ) -> Result<Vec<u8>, String> {
        let transcript = Transcript {
            key_authorization,
            origin,
            user_handle: &self.user_handle,
            csr_spki: tls_spki,
            names,
        };
        let sig = self
            .key
            .sign(&SystemRandom::new(), &transcript.to_bytes())
            .map_err(|_| "device signature failed")?;
        Ok(AttestationObject {
            sig: sig.as_ref().to_vec(),
            x5c: self.chain.clone(),
            spki: tls_spki.to_vec(),
            user_handle: self.user_handle.clone(),
        }
        .encode())
    }
}

/// An issuance the client received: what the database must hold exactly once.
#[derive(Clone, Debug)]
pub(crate) struct Acked {
    pub(crate) order_id: String,
    pub(crate) cert_id: String,
    /// SHA-256 of the leaf, hex.
    pub(crate) leaf_sha256: String,
    pub(crate) leaf_der: Vec<u8>,
}

impl Acked {
    pub(crate) fn line(&self) -> String {
        format!("{} {} {}", self.order_id, self.cert_id, self.leaf_sha256)
    }
}

fn last_segment(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

fn retries() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .timeout(Duration::from_secs(30))
}

/// Answers every pending authorization of `order`.
async fn attest_all(
    order: &mut Order,
    device: &FixtureDevice,
    origin: &Origin,
    names: &[LocalName],
    spki: &[u8],
) -> Result<(), String> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        if authz.status == instant_acme::AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::DeviceAttest01)
            .ok_or("no device-attest-01 challenge")?;
        let att_obj = device.attest(challenge.key_authorization().as_str(), origin, spki, names)?;
        challenge
            .send_device_attestation(&DeviceAttestation {
                att_obj: Cow::Owned(att_obj),
            })
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    Ok(())
}

/// Drives `order` to a certificate, resuming from its state after each failed step.
pub(crate) async fn complete(
    mut order: Order,
    device: &FixtureDevice,
    origin: &Origin,
    names: &[LocalName],
) -> Result<Acked, String> {
    let tls_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let spki = tls_key.subject_public_key_info();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&tls_key)
        .map_err(|e| e.to_string())?;
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        let status = match order.refresh().await {
            Ok(state) => state.status,
            Err(e) => {
                last_error = format!("order: {e}");
                continue;
            }
        };
        let step = match status {
            OrderStatus::Pending => attest_all(&mut order, device, origin, names, &spki).await,
            OrderStatus::Ready => order
                .finalize_csr(csr.der())
                .await
                .map_err(|e| format!("finalize: {e}")),
            OrderStatus::Processing | OrderStatus::Valid => {
                match order.poll_certificate(&retries()).await {
                    Ok(chain) => return acked(&mut order, &chain, names, &spki),
                    Err(e) => Err(format!("certificate: {e}")),
                }
            }
            OrderStatus::Invalid => return Err(format!("order invalid (after: {last_error})")),
        };
        if let Err(e) = step {
            last_error = e;
        }
    }
    Err(format!("gave up after {ATTEMPTS} attempts: {last_error}"))
}

fn acked(
    order: &mut Order,
    chain: &str,
    names: &[LocalName],
    spki: &[u8],
) -> Result<Acked, String> {
    let leaf = pem::parse_many(chain)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("empty chain")?
        .into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| e.to_string())?;
    if cert.public_key().raw != spki {
        return Err("the certificate is not for the key the device attested".into());
    }
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| format!("{:?}", s.value))
        .unwrap_or_default();
    if !names.iter().all(|n| san.contains(n.as_str())) {
        return Err(format!("the certificate names {san}, not {names:?}"));
    }
    let cert_url = order
        .state()
        .certificate
        .clone()
        .ok_or("no certificate URL")?;
    Ok(Acked {
        order_id: last_segment(order.url()),
        cert_id: last_segment(&cert_url),
        leaf_sha256: hex::encode(sha2::Sha256::digest(&leaf)),
        leaf_der: leaf,
    })
}

/// A new plain order for `label`, completed.
pub(crate) async fn issue(
    account: &Account,
    device: &FixtureDevice,
    origin: &Origin,
    label: &str,
) -> Result<Acked, String> {
    let name = device.name(label, origin)?;
    let identifiers = [Identifier::Dns(name.to_string())];
    let mut last_error = String::new();
    // The newOrder itself may be lost with a replica; a lost order is only an orphan.
    for _ in 0..ATTEMPTS {
        match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => return complete(order, device, origin, &[name]).await,
            Err(e) => last_error = format!("newOrder: {e}"),
        }
    }
    Err(last_error)
}
