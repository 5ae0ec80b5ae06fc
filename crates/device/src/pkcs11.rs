//! Keys in a PKCS#11 token (feature `pkcs11`), on the `cryptoki` crate.
//!
//! Every key is generated inside the token as a P-256 pair whose private half is
//! `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`: its value can never be read out, only used to
//! sign. The device knows a key by its `CKA_ID` ([`TokenKeyId`]), which is all the store keeps.
//! Keys carry a label: [`TLS_KEY_LABEL`] for the keys of ATTEST, the attestation key the one
//! the factory gave it ([`DEFAULT_ATTESTATION_LABEL`]).
//!
//! One logged-in read-write session serves the whole process behind a mutex: a device signs a
//! handful of handshakes at a time, and tokens serialise operations anyway.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ring::rand::SecureRandom;

use crate::error::{CredentialError, Error};
use crate::keys::{self, DeviceKey, KeyProvider, TokenKeyId};

/// The label of the TLS keys ATTEST makes.
pub const TLS_KEY_LABEL: &str = "localcert-tls";
/// The label `localcert factory device --pkcs11` gives the attestation key by default.
pub const DEFAULT_ATTESTATION_LABEL: &str = "localcert-attestation";
/// DER of the prime256v1 OID, the `CKA_EC_PARAMS` of every key.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// An uncompressed P-256 point: 0x04, X, Y.
const P256_POINT_LEN: usize = 65;
/// Random bytes in a new key's `CKA_ID`.
const KEY_ID_LEN: usize = 16;

/// The user PIN of a token. Read from a file or the environment, never from the command line;
/// never printed.
pub struct TokenPin(AuthPin);

impl core::fmt::Debug for TokenPin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TokenPin(..)")
    }
}

impl TokenPin {
    /// A PIN from its text (surrounding whitespace and a trailing newline are not part of it).
    pub fn new(text: &str) -> Result<Self, Error> {
        let pin = text.lines().next().unwrap_or("").trim();
        if pin.is_empty() || pin.len() > 255 {
            return Err(Error::Config("the token PIN must be 1 to 255 bytes".into()));
        }
        Ok(Self(AuthPin::new(pin.into())))
    }
}

/// Where the token is and how to log in.
#[derive(Debug)]
pub struct TokenConfig<'a> {
    /// The PKCS#11 module (`.so`), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: &'a Path,
    /// The token's label.
    pub token_label: &'a str,
    /// The user PIN.
    pub pin: &'a TokenPin,
}

/// What a token says about a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE` (absent: the token did not say).
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`.
    pub extractable: Option<bool>,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: Option<bool>,
    /// Whether `C_GetAttributeValue(CKA_VALUE)` was refused (sensitive or unavailable).
    pub value_refused: bool,
}

/// A logged-in token: the [`KeyProvider`] whose keys never leave it.
pub struct TokenKeys {
    session: Mutex<Session>,
    // The module stays loaded (and initialised) while the session lives.
    _context: Pkcs11,
}

impl core::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenKeys").finish_non_exhaustive()
    }
}

fn token_error(what: &str) -> impl FnOnce(cryptoki::error::Error) -> CredentialError + '_ {
    move |e| CredentialError::Token(format!("{what}: {e}"))
}

impl TokenKeys {
    /// Loads the module, finds the token by label and logs in as the user.
    pub fn open(config: &TokenConfig<'_>) -> Result<Self, Error> {
        let context = Pkcs11::new(config.module)
            .map_err(token_error("loading the module"))
            .map_err(|e| Error::Config(format!("{}: {e}", config.module.display())))?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(token_error("initialising the module"))?;
        let mut found = None;
        for slot in context
            .get_slots_with_initialized_token()
            .map_err(token_error("listing slots"))?
        {
            let info = context
                .get_token_info(slot)
                .map_err(token_error("reading token info"))?;
            if info.label().trim_end() == config.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            Error::Config(format!(
                "no initialised PKCS#11 token labelled `{}`",
                config.token_label
            ))
        })?;
        let session = context
            .open_rw_session(slot)
            .map_err(token_error("opening a session"))?;
        session
            .login(UserType::User, Some(&config.pin.0))
            .map_err(token_error("logging in"))?;
        Ok(Self {
            session: Mutex::new(session),
            _context: context,
        })
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new P-256 pair generated inside the token under `label`, its private half sensitive
    /// and not extractable.
    pub fn generate_labelled(
        &self,
        label: &str,
        rng: &dyn SecureRandom,
    ) -> Result<DeviceKey, CredentialError> {
        let mut id = vec![0u8; KEY_ID_LEN];
        rng.fill(&mut id)
            .map_err(|_| CredentialError::Crypto("key id generation"))?;
        let common = [
            Attribute::Token(true),
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let public = [
            &common[..],
            &[
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::EcParams(P256_PARAMS.to_vec()),
            ],
        ]
        .concat();
        let private = [
            &common[..],
            &[
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Derive(false),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
            ],
        ]
        .concat();
        self.session()
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(token_error("generating a key pair"))?;
        Ok(DeviceKey::Token(TokenKeyId(id)))
    }

    /// The one key labelled `label` (the attestation key).
    pub fn find_labelled(&self, label: &str) -> Result<DeviceKey, CredentialError> {
        let ids = self.ids_labelled(label)?;
        match ids.as_slice() {
            [id] => Ok(DeviceKey::Token(id.clone())),
            [] => Err(CredentialError::Token(format!(
                "no private key labelled `{label}` in the token"
            ))),
            _ => Err(CredentialError::Token(format!(
                "{} private keys labelled `{label}` in the token",
                ids.len()
            ))),
        }
    }

    /// The ids of the private keys labelled `label`.
    pub fn ids_labelled(&self, label: &str) -> Result<Vec<TokenKeyId>, CredentialError> {
        let session = self.session();
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(token_error("finding keys"))?;
        let mut ids = Vec::with_capacity(handles.len());
        for handle in handles {
            for attribute in session
                .get_attributes(handle, &[AttributeType::Id])
                .map_err(token_error("reading a key id"))?
            {
                if let Attribute::Id(id) = attribute {
                    ids.push(TokenKeyId(id));
                }
            }
        }
        Ok(ids)
    }

    /// Deletes the TLS keys ([`TLS_KEY_LABEL`]) not in `keep`: the pending keys of a process
    /// that stopped before their INSTALL (pending keys live in memory only). Returns how many.
    pub fn delete_unused_tls_keys(&self, keep: &[&DeviceKey]) -> Result<usize, CredentialError> {
        let mut deleted = 0;
        for id in self.ids_labelled(TLS_KEY_LABEL)? {
            let key = DeviceKey::Token(id);
            if !keep.contains(&&key) {
                self.destroy(&key)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// How the token protects a key: what its attributes say, and what the token answers
    /// when asked for the private value.
    pub fn protection(&self, key: &DeviceKey) -> Result<KeyProtection, CredentialError> {
        let id = token_id(key)
            .ok_or_else(|| CredentialError::Token("a software key is not in the token".into()))?;
        let session = self.session();
        let handle = Self::handle(&session, id, ObjectClass::PRIVATE_KEY)?;
        let flags = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(token_error("reading key attributes"))?;
        let flag = |wanted: AttributeType| {
            flags.iter().find_map(|a| match (a, wanted) {
                (Attribute::Sensitive(v), AttributeType::Sensitive)
                | (Attribute::Extractable(v), AttributeType::Extractable)
                | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable) => Some(*v),
                _ => None,
            })
        };
        let value = session
            .get_attribute_info(handle, &[AttributeType::Value])
            .map_err(token_error("asking for the key's value"))?;
        Ok(KeyProtection {
            sensitive: flag(AttributeType::Sensitive),
            extractable: flag(AttributeType::Extractable),
            never_extractable: flag(AttributeType::NeverExtractable),
            value_refused: matches!(
                value.as_slice(),
                [AttributeInfo::Sensitive | AttributeInfo::Unavailable]
            ),
        })
    }

    /// The handle of the object of `class` with this id.
    fn handle(
        session: &Session,
        id: &TokenKeyId,
        class: ObjectClass,
    ) -> Result<ObjectHandle, CredentialError> {
        let handles = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.0.clone())])
            .map_err(token_error("finding a key"))?;
        match handles.as_slice() {
            [one] => Ok(*one),
            [] => Err(CredentialError::Token(format!(
                "no key with id {} in the token",
                hex::encode(&id.0)
            ))),
            _ => Err(CredentialError::Token(format!(
                "several keys with id {} in the token",
                hex::encode(&id.0)
            ))),
        }
    }
}

fn token_id(key: &DeviceKey) -> Option<&TokenKeyId> {
    match key {
        DeviceKey::Token(id) => Some(id),
        DeviceKey::Software(_) => None,
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (some modules give the bare point).
fn point_from_attribute(value: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let point = match value {
        [0x04, len, rest @ ..]
            if usize::from(*len) == P256_POINT_LEN && rest.len() == P256_POINT_LEN =>
        {
            rest
        }
        bare if bare.len() == P256_POINT_LEN => bare,
        _ => return Err(CredentialError::Token("not a P-256 public key".into())),
    };
    if point.first() != Some(&0x04) {
        return Err(CredentialError::Token("compressed or unknown point".into()));
    }
    Ok(point.to_vec())
}

/// Raw `r || s` (each 32 bytes, as PKCS#11 `CKM_ECDSA` returns it) as an ASN.1 DER
/// `Ecdsa-Sig-Value`.
fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, CredentialError> {
    if raw.len() != 64 {
        return Err(CredentialError::Token(format!(
            "ECDSA signature of {} bytes, expected 64",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(32);
    let mut body = der_uint(r);
    body.extend(der_uint(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    Ok(out)
}

/// A DER INTEGER of a big-endian unsigned value (at most 32 bytes, so lengths fit one byte).
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let trimmed = bytes.get(start..).unwrap_or(&[0]);
    let pad = trimmed.first().is_none_or(|&b| b & 0x80 != 0);
    let len = trimmed.len() + usize::from(pad);
    let mut out = vec![0x02, len as u8];
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

impl KeyProvider for TokenKeys {
    fn generate(&self, rng: &dyn SecureRandom) -> Result<DeviceKey, CredentialError> {
        self.generate_labelled(TLS_KEY_LABEL, rng)
    }

    fn public_point(&self, key: &DeviceKey) -> Result<Vec<u8>, CredentialError> {
        let Some(id) = token_id(key) else {
            return keys::FileKeys.public_point(key);
        };
        let session = self.session();
        let handle = Self::handle(&session, id, ObjectClass::PUBLIC_KEY)?;
        let attributes = session
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(token_error("reading a public key"))?;
        match attributes.as_slice() {
            [Attribute::EcPoint(value)] => point_from_attribute(value),
            _ => Err(CredentialError::Token("public key without a point".into())),
        }
    }

    fn sign(
        &self,
        key: &DeviceKey,
        message: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CredentialError> {
        let Some(id) = token_id(key) else {
            return keys::FileKeys.sign(key, message, rng);
        };
        // CKM_ECDSA signs a digest: every token has it, not every token has CKM_ECDSA_SHA256.
        let digest = crate::pki::sha256(message);
        let session = self.session();
        let handle = Self::handle(&session, id, ObjectClass::PRIVATE_KEY)?;
        let raw = session
            .sign(&Mechanism::Ecdsa, handle, &digest)
            .map_err(token_error("signing"))?;
        ecdsa_raw_to_der(&raw)
    }

    fn destroy(&self, key: &DeviceKey) -> Result<(), CredentialError> {
        let Some(id) = token_id(key) else {
            return Ok(());
        };
        let session = self.session();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            let handles = session
                .find_objects(&[Attribute::Class(class), Attribute::Id(id.0.clone())])
                .map_err(token_error("finding a key"))?;
            for handle in handles {
                session
                    .destroy_object(handle)
                    .map_err(token_error("deleting a key"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

    #[test]
    fn raw_signatures_become_der_that_verifies() {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).unwrap();
        let public = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        for i in 0..64u8 {
            let message = [i; 40];
            let raw = pair.sign(&rng, &message).unwrap();
            let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
            ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
                .verify(&message, &der)
                .unwrap();
        }
        // Leading zeros are trimmed, a high bit gets its zero byte.
        let mut raw = [0u8; 64];
        raw[31] = 1;
        raw[32] = 0x80;
        assert_eq!(
            ecdsa_raw_to_der(&raw).unwrap(),
            [
                &[0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80][..],
                &[0; 31]
            ]
            .concat()
        );
        assert!(ecdsa_raw_to_der(&[0; 63]).is_err());
    }

    #[test]
    fn points_are_read_wrapped_or_bare_and_nothing_else() {
        let point = [&[0x04][..], &[7; 64]].concat();
        let wrapped = [&[0x04, 65][..], &point].concat();
        assert_eq!(point_from_attribute(&wrapped).unwrap(), point);
        assert_eq!(point_from_attribute(&point).unwrap(), point);
        assert!(point_from_attribute(&point[..64]).is_err());
        let compressed = [&[0x04, 65, 0x02][..], &[7; 64]].concat();
        assert!(point_from_attribute(&compressed).is_err());
        assert!(point_from_attribute(&[]).is_err());
    }

    #[test]
    fn pins_are_trimmed_bounded_and_never_printed() {
        let pin = TokenPin::new("1234\n").unwrap();
        assert_eq!(format!("{pin:?}"), "TokenPin(..)");
        assert!(TokenPin::new("\n").is_err());
        assert!(TokenPin::new(&"9".repeat(256)).is_err());
    }
}
