//! Every key the engine stops using is handed back to its provider for deletion (a token has
//! room for a few keys only): pending keys replaced, dropped beyond the bound or expired, and
//! the keys of bindings replaced or removed; never a key still pending or served.

use std::sync::Mutex;

use super::*;
use crate::keys::{self, DeviceKey, FileKeys, KeyProvider};

/// File keys that remember which keys (by SubjectPublicKeyInfo) were deleted.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<Vec<u8>>>);

impl KeyProvider for Recording {
    fn generate(&self, rng: &dyn SecureRandom) -> Result<DeviceKey, crate::CredentialError> {
        FileKeys.generate(rng)
    }

    fn public_point(&self, key: &DeviceKey) -> Result<Vec<u8>, crate::CredentialError> {
        FileKeys.public_point(key)
    }

    fn sign(
        &self,
        key: &DeviceKey,
        message: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, crate::CredentialError> {
        FileKeys.sign(key, message, rng)
    }

    fn destroy(&self, key: &DeviceKey) -> Result<(), crate::CredentialError> {
        let spki = keys::spki(&FileKeys, key)?;
        self.0.lock().unwrap().push(spki);
        Ok(())
    }
}

fn recorded() -> (Harness, Arc<Recording>) {
    let mut h = harness_with(Box::new(AutoApprove), |c, _| c.max_pending = 2);
    let keys = Arc::new(Recording::default());
    h.dev = h.dev.with_keys(keys.clone());
    (h, keys)
}

fn spki_of(att: &AttestResponse) -> Vec<u8> {
    att.spki()
}

fn destroyed(keys: &Recording) -> Vec<Vec<u8>> {
    std::mem::take(&mut *keys.0.lock().unwrap())
}

#[test]
fn pending_keys_dropped_or_expired_are_deleted() {
    let (mut h, keys) = recorded();
    let (first, _) = h.attest_and_issue("https://vod.example.com");
    let (second, _) = h.attest_and_issue("https://vod.example.com");
    assert_eq!(destroyed(&keys), vec![spki_of(&first)], "replaced");

    // A bound of two: a third origin drops the oldest.
    let (other, _) = h.attest_and_issue("https://app.example.com");
    assert!(destroyed(&keys).is_empty());
    h.attest_and_issue("https://third.example.com");
    assert_eq!(
        destroyed(&keys),
        vec![spki_of(&second)],
        "oldest beyond the bound"
    );

    h.now += DEFAULT_PENDING_LIFETIME;
    h.dev.handle_timeout(h.now);
    let mut expired = destroyed(&keys);
    expired.sort();
    assert_eq!(expired.len(), 2);
    assert!(expired.contains(&spki_of(&other)));
}

#[test]
fn keys_of_replaced_or_removed_bindings_are_deleted_and_refusals_delete_nothing() {
    let (mut h, keys) = recorded();
    let o = "https://vod.example.com";
    let (first, chain) = h.attest_and_issue(o);
    // A refused INSTALL keeps the pending key.
    assert_refused(
        h.install(vec![vec![0x30, 0x00]]),
        ErrorCode::CertificateInvalid,
    );
    assert!(destroyed(&keys).is_empty());
    assert!(matches!(h.install(chain), Response::Install(_)));
    assert!(destroyed(&keys).is_empty(), "installed, not deleted");

    // Provisioning the origin again: the served key goes once the new one is stored.
    let (second, chain) = h.attest_and_issue(o);
    assert!(destroyed(&keys).is_empty(), "still served until INSTALL");
    assert!(matches!(h.install(chain), Response::Install(_)));
    assert_eq!(destroyed(&keys), vec![spki_of(&first)]);

    let removed = h.call(&Request::Remove(RemoveRequest { origin: origin(o) }));
    assert!(matches!(removed, Response::Remove(_)));
    assert_eq!(destroyed(&keys), vec![spki_of(&second)]);
    // REMOVE of nothing deletes nothing.
    let again = h.call(&Request::Remove(RemoveRequest { origin: origin(o) }));
    assert_refused(again, ErrorCode::NotFound);
    assert!(destroyed(&keys).is_empty());
}
