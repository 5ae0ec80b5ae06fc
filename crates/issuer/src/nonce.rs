//! ACME nonces (RFC 8555 §6.5) without a database write: a nonce is its expiry, 16 random
//! bytes and an HMAC-SHA256 tag over both, so any replica holding the key can tell a nonce it
//! (or a sibling) minted from a forged one. Single use is the store's job
//! ([`crate::store::Store::consume_nonce`]); [`ReplayWindow`] is the in-memory record for one
//! process.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::Error;
use crate::jws;

/// Bytes of a nonce before base64url: expiry (8), random id (16), HMAC-SHA256 tag (32).
const NONCE_BYTES: usize = 8 + ID_BYTES + TAG_BYTES;
/// The random part that names a nonce in the replay record.
pub const ID_BYTES: usize = 16;
const TAG_BYTES: usize = 32;

/// The key that mints and authenticates nonces. Replicas behind one name share it.
pub struct NonceKey {
    key: hmac::Key,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// An authenticated, unexpired nonce: what must now be consumed exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceId {
    /// The random part.
    pub id: [u8; ID_BYTES],
    /// When it expires, in seconds since the Unix epoch.
    pub expires: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NonceKey {
    /// A random key: nonces die with the process (single node).
    pub fn random() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Certificate("random number generator failed".into()))?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A key shared by replicas (at least 32 bytes of secret).
    pub fn from_bytes(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A fresh nonce that expires at `expires`.
    pub fn mint(&self, expires: SystemTime) -> Result<String, Error> {
        let mut bytes = [0u8; NONCE_BYTES];
        bytes[..8].copy_from_slice(&secs(expires).to_be_bytes());
        SystemRandom::new()
            .fill(&mut bytes[8..8 + ID_BYTES])
            .map_err(|_| Error::Certificate("random number generator failed".into()))?;
        let tag = hmac::sign(&self.key, &bytes[..8 + ID_BYTES]);
        bytes[8 + ID_BYTES..].copy_from_slice(tag.as_ref());
        Ok(jws::b64(&bytes))
    }

    /// The nonce's id if this key minted it and it has not expired at `now`.
    pub fn check(&self, nonce: &str, now: SystemTime) -> Option<NonceId> {
        let bytes = jws::b64_decode("nonce", nonce).ok()?;
        let bytes: [u8; NONCE_BYTES] = bytes.try_into().ok()?;
        let (signed, tag) = bytes.split_at(8 + ID_BYTES);
        hmac::verify(&self.key, signed, tag).ok()?;
        let expires = u64::from_be_bytes(signed[..8].try_into().ok()?);
        if expires <= secs(now) {
            return None;
        }
        Some(NonceId {
            id: signed[8..].try_into().ok()?,
            expires,
        })
    }
}

/// Nonces consumed in this process, kept until they expire (after which [`NonceKey::check`]
/// refuses them anyway) and [`CLOCK_STEP_TOLERANCE_SECS`] more. Bounded: past `capacity` ids the soonest-expiring ones are dropped
/// and every nonce expiring by then is refused, so memory never grows without limit and a
/// dropped id can never be replayed.
#[derive(Debug)]
pub struct ReplayWindow {
    inner: Mutex<Window>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Window {
    by_expiry: BTreeMap<u64, HashSet<[u8; ID_BYTES]>>,
    /// Nonces expiring at or before this are refused.
    horizon: u64,
    len: usize,
}

/// How far back the clock may step without reopening a consumed nonce.
pub const CLOCK_STEP_TOLERANCE_SECS: u64 = 3600;

/// Consumed nonces one process remembers by default (about 64 MB at most).
pub const DEFAULT_REPLAY_CAPACITY: usize = 1 << 20;

impl ReplayWindow {
    /// A window remembering up to `capacity` consumed nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Window::default()),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `nonce` is consumed before its expiry, false ever after.
    pub fn consume(&self, nonce: &NonceId, now: SystemTime) -> Result<bool, Error> {
        let mut w = self
            .inner
            .lock()
            .map_err(|_| Error::Store("nonce window lock poisoned".into()))?;
        // Expired ids are forgotten only a while after expiry, so that a clock stepped back
        // by up to that long cannot make a consumed nonce look fresh again.
        let forget_before = secs(now).saturating_sub(CLOCK_STEP_TOLERANCE_SECS);
        while let Some(entry) = w.by_expiry.first_entry() {
            if *entry.key() > forget_before {
                break;
            }
            let expiry = *entry.key();
            let gone = entry.remove().len();
            w.len -= gone;
            w.horizon = w.horizon.max(expiry);
        }
        if nonce.expires <= w.horizon || nonce.expires <= secs(now) {
            return Ok(false);
        }
        if !w
            .by_expiry
            .entry(nonce.expires)
            .or_default()
            .insert(nonce.id)
        {
            return Ok(false);
        }
        w.len += 1;
        while w.len > self.capacity {
            let Some((expiry, ids)) = w.by_expiry.pop_first() else {
                break;
            };
            w.len -= ids.len();
            w.horizon = w.horizon.max(expiry);
        }
        Ok(nonce.expires > w.horizon)
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn minted_nonces_check_until_they_expire() {
        let key = NonceKey::from_bytes(&[1; 32]);
        let nonce = key.mint(t(100)).unwrap();
        assert!(key.check(&nonce, t(99)).is_some());
        assert!(key.check(&nonce, t(100)).is_none(), "expired");
        assert!(NonceKey::from_bytes(&[2; 32]).check(&nonce, t(0)).is_none());
        let mut forged = jws::b64_decode("n", &nonce).unwrap();
        forged[0] ^= 1;
        assert!(
            key.check(&jws::b64(&forged), t(0)).is_none(),
            "tampered expiry"
        );
        assert!(key.check("short", t(0)).is_none());
    }

    #[test]
    fn the_window_refuses_replays_and_stays_bounded() {
        let key = NonceKey::from_bytes(&[1; 32]);
        let window = ReplayWindow::new(2);
        let ids: Vec<NonceId> = (0..3)
            .map(|i| key.check(&key.mint(t(100 + i)).unwrap(), t(0)).unwrap())
            .collect();
        assert!(window.consume(&ids[0], t(0)).unwrap());
        assert!(!window.consume(&ids[0], t(0)).unwrap(), "replay");
        assert!(window.consume(&ids[1], t(0)).unwrap());
        // Over capacity: the soonest-expiring id is dropped and its expiry becomes the horizon.
        assert!(window.consume(&ids[2], t(0)).unwrap());
        assert!(
            !window.consume(&ids[0], t(0)).unwrap(),
            "dropped, still refused"
        );
        assert!(window.inner.lock().unwrap().len <= 2);
    }
}
