//! Pending keys (SPEC §5.2–§5.3): the key an ATTEST made, waiting for its INSTALL.
//!
//! The rules, all here: one pending key per origin (a new ATTEST replaces it); at most `max`
//! at once (the oldest is dropped); each lives `lifetime` and is then discarded; it survives
//! the end of its connection; an INSTALL finds it by the leaf's key, else by the leaf's origin
//! or name (so that a leaf for another key is a CHAIN_MISMATCH, not a NO_PENDING); it is
//! consumed only once the binding is stored.

use std::time::{Duration, Instant};

use localcert_proto::ErrorCode;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use crate::keys::DeviceKey;
use crate::verify::{Refused, refused};

/// A key made by ATTEST, waiting for the certificate that INSTALL brings.
#[derive(Debug)]
pub(crate) struct PendingKey {
    /// The origin the ATTEST was for.
    pub(crate) origin: Origin,
    /// SHA-256 of the ATTEST's user handle (the origin binding carries it).
    pub(crate) user_handle_digest: [u8; 32],
    /// The names the CSR asked for.
    pub(crate) names: Vec<LocalName>,
    /// The private key.
    pub(crate) key: DeviceKey,
    /// The key's DER SubjectPublicKeyInfo.
    pub(crate) spki: Vec<u8>,
    /// When it is discarded.
    pub(crate) expires: Instant,
}

/// What a leaf certificate claims, to find its pending key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeafLookup<'a> {
    /// The leaf's DER SubjectPublicKeyInfo.
    pub(crate) spki: &'a [u8],
    /// The origin its binding extension names (`None` in tests of the other keys).
    pub(crate) origin: Option<&'a Origin>,
    /// Its DNS names.
    pub(crate) names: &'a [LocalName],
}

/// The pending keys of a device, oldest first.
#[derive(Debug)]
pub(crate) struct PendingKeys {
    keys: Vec<PendingKey>,
    lifetime: Duration,
    max: usize,
}

impl PendingKeys {
    /// No pending key; each new one lives `lifetime`; at most `max` (at least one) at once.
    pub(crate) fn new(lifetime: Duration, max: usize) -> Self {
        Self {
            keys: Vec::new(),
            lifetime,
            max: max.max(1),
        }
    }

    /// How many keys are pending.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Keeps a new key for `origin` until `now + lifetime`, replacing the origin's earlier key
    /// and dropping the oldest beyond the bound. Returns the keys dropped (to destroy, and
    /// their names to stop announcing).
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        origin: Origin,
        user_handle_digest: [u8; 32],
        names: Vec<LocalName>,
        key: DeviceKey,
        spki: Vec<u8>,
    ) -> Vec<PendingKey> {
        let (mut dropped, kept): (Vec<_>, Vec<_>) =
            self.keys.drain(..).partition(|p| p.origin == origin);
        self.keys = kept;
        while self.keys.len() >= self.max {
            dropped.push(self.keys.remove(0));
        }
        self.keys.push(PendingKey {
            origin,
            user_handle_digest,
            names,
            key,
            spki,
            expires: now + self.lifetime,
        });
        dropped
    }

    /// Discards the keys expired at `now` and returns them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PendingKey> {
        let (expired, kept): (Vec<_>, Vec<_>) = self.keys.drain(..).partition(|p| now >= p.expires);
        self.keys = kept;
        expired
    }

    /// When the next key expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.keys.iter().map(|p| p.expires).min()
    }

    /// The pending key a leaf is meant for: the one with its key, else the one whose origin or
    /// name it claims (the caller's checks then refuse it as a CHAIN_MISMATCH). NO_PENDING if
    /// none (callers expire first, so an expired key is never found).
    pub(crate) fn find(&self, leaf: LeafLookup<'_>) -> Result<&PendingKey, Refused> {
        self.keys
            .iter()
            .find(|p| p.spki == leaf.spki)
            .or_else(|| {
                self.keys.iter().find(|p| {
                    leaf.origin == Some(&p.origin) || leaf.names.iter().any(|n| p.names.contains(n))
                })
            })
            .ok_or(refused(
                ErrorCode::NoPending,
                "no pending ATTEST for this origin or name (or it expired)",
            ))
    }

    /// Forgets the origin's key once its binding is stored.
    pub(crate) fn consume(&mut self, origin: &Origin) -> Option<PendingKey> {
        let index = self.keys.iter().position(|p| &p.origin == origin)?;
        Some(self.keys.remove(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use localcert_proto::name::{DeviceLabel, DeviceTag};

    const LIFETIME: Duration = Duration::from_secs(600);

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    fn name(o: &str) -> LocalName {
        let tag = DeviceTag::from_attestation_certificate(b"device");
        LocalName::derive(&DeviceLabel::parse("tv").unwrap(), &origin(o), &tag)
    }

    fn key() -> DeviceKey {
        DeviceKey::Software(crate::pki::generate_p256(&ring::rand::SystemRandom::new()).unwrap())
    }

    fn names(dropped: Vec<PendingKey>) -> Vec<LocalName> {
        dropped.into_iter().flat_map(|p| p.names).collect()
    }

    fn add(keys: &mut PendingKeys, now: Instant, o: &str, spki: &[u8]) -> Vec<LocalName> {
        names(keys.insert(now, origin(o), [7; 32], vec![name(o)], key(), spki.to_vec()))
    }

    fn lookup<'a>(
        spki: &'a [u8],
        origin: Option<&'a Origin>,
        names: &'a [LocalName],
    ) -> LeafLookup<'a> {
        LeafLookup {
            spki,
            origin,
            names,
        }
    }

    const A: &str = "https://a.example";
    const B: &str = "https://b.example";
    const C: &str = "https://c.example";

    #[test]
    fn found_by_key_then_by_origin_then_by_name() {
        let now = Instant::now();
        let mut keys = PendingKeys::new(LIFETIME, 4);
        add(&mut keys, now, A, b"key-a");
        add(&mut keys, now, B, b"key-b");
        let a = origin(A);
        // By key, even when the origin claimed is another one's.
        assert_eq!(
            keys.find(lookup(b"key-b", Some(&a), &[])).unwrap().origin,
            origin(B)
        );
        // By origin, for a leaf with another key.
        assert_eq!(
            keys.find(lookup(b"other", Some(&a), &[])).unwrap().origin,
            a
        );
        // By name.
        let names = vec![name(B)];
        assert_eq!(
            keys.find(lookup(b"other", None, &names)).unwrap().origin,
            origin(B)
        );
        // Nothing matches.
        let c = origin(C);
        let names = vec![name(C)];
        let refusal = keys.find(lookup(b"other", Some(&c), &names)).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::NoPending);
    }

    #[test]
    fn a_new_key_for_the_origin_replaces_the_old_one() {
        let now = Instant::now();
        let mut keys = PendingKeys::new(LIFETIME, 4);
        assert!(add(&mut keys, now, A, b"first").is_empty());
        assert_eq!(add(&mut keys, now, A, b"second"), vec![name(A)]);
        assert_eq!(keys.len(), 1);
        let a = origin(A);
        assert_eq!(
            keys.find(lookup(b"first", Some(&a), &[])).unwrap().spki,
            b"second"
        );
    }

    #[test]
    fn the_oldest_is_dropped_beyond_the_bound() {
        let now = Instant::now();
        let mut keys = PendingKeys::new(LIFETIME, 2);
        add(&mut keys, now, A, b"a");
        add(&mut keys, now, B, b"b");
        assert_eq!(add(&mut keys, now, C, b"c"), vec![name(A)]);
        assert_eq!(keys.len(), 2);
        assert!(keys.find(lookup(b"a", None, &[])).is_err());
        // A bound of 0 still keeps the newest key.
        let mut one = PendingKeys::new(LIFETIME, 0);
        add(&mut one, now, A, b"a");
        assert_eq!(add(&mut one, now, B, b"b"), vec![name(A)]);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn keys_expire_after_their_lifetime_and_not_before() {
        let t0 = Instant::now();
        let mut keys = PendingKeys::new(LIFETIME, 4);
        add(&mut keys, t0, A, b"a");
        add(&mut keys, t0 + Duration::from_secs(10), B, b"b");
        assert_eq!(keys.next_expiry(), Some(t0 + LIFETIME));
        assert!(
            keys.expire(t0 + LIFETIME - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(names(keys.expire(t0 + LIFETIME)), vec![name(A)]);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys.next_expiry(),
            Some(t0 + Duration::from_secs(10) + LIFETIME)
        );
        assert_eq!(
            names(keys.expire(t0 + Duration::from_secs(3600))),
            vec![name(B)]
        );
        assert_eq!(keys.next_expiry(), None);
    }

    #[test]
    fn consumed_once() {
        let now = Instant::now();
        let mut keys = PendingKeys::new(LIFETIME, 4);
        add(&mut keys, now, A, b"a");
        add(&mut keys, now, B, b"b");
        assert_eq!(keys.consume(&origin(A)).unwrap().spki, b"a");
        assert!(keys.consume(&origin(A)).is_none());
        assert!(keys.find(lookup(b"a", None, &[])).is_err());
        assert_eq!(keys.len(), 1);
    }
}
