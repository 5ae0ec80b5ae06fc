//! User presence: how the device confirms that its user wants an ATTEST for an origin.
//!
//! A check can answer at once ([`AutoApprove`], [`PinPresence`]) or later ([`ButtonPresence`]):
//! then the engine keeps the request open, sends KEEPALIVE frames and polls the
//! [`PendingPresence`] until the [`PresenceResponder`] answers, the user times out or the UA
//! cancels.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use localcert_proto::ErrorCode;
use localcert_proto::message::PresenceMethod;
use localcert_proto::origin::Origin;

use crate::pki::sha256;

/// What the user is asked to approve.
#[derive(Clone)]
pub struct PresenceRequest {
    /// The origin the certificate will be bound to.
    pub origin: Origin,
    /// The PIN from the ATTEST request, if any.
    pub pin: Option<String>,
}

impl core::fmt::Debug for PresenceRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PresenceRequest")
            .field("origin", &self.origin)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a presence check refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The user or the policy said no.
    Denied,
    /// A PIN is needed and none was given.
    PinRequired,
    /// The PIN was wrong (or too many wrong PINs were tried).
    PinInvalid,
}

impl Refusal {
    /// The wire code.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Denied => ErrorCode::UserDenied,
            Self::PinRequired => ErrorCode::PinRequired,
            Self::PinInvalid => ErrorCode::PinInvalid,
        }
    }
}

/// The answer of a presence check.
#[derive(Debug)]
pub enum PresenceCheck {
    /// Go ahead.
    Approved,
    /// Refuse the ATTEST.
    Refused(Refusal),
    /// Ask the user and wait.
    Pending(PendingPresence),
}

/// Approves or refuses an ATTEST. Implementations must not block: ask the user and return
/// [`PresenceCheck::Pending`] instead.
pub trait UserPresence: Send + Sync {
    /// The method GET_INFO reports.
    fn method(&self) -> PresenceMethod;

    /// Checks one request.
    fn check(&self, request: &PresenceRequest) -> PresenceCheck;
}

#[derive(Debug, Default)]
struct Slot(Mutex<Option<bool>>);

impl Slot {
    fn set_once(&self, approved: bool) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(approved);
    }

    fn get(&self) -> Option<bool> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine's side of a question put to the user.
#[derive(Debug)]
pub struct PendingPresence(Arc<Slot>);

/// The user's side: approve or deny once. Dropping it unanswered denies.
#[derive(Debug)]
pub struct PresenceResponder(Arc<Slot>);

/// A new question: the engine keeps the first half, the button hook the second.
pub fn ask_user() -> (PendingPresence, PresenceResponder) {
    let slot = Arc::new(Slot::default());
    (PendingPresence(slot.clone()), PresenceResponder(slot))
}

impl PendingPresence {
    /// `Some(true)` once approved, `Some(false)` once denied, `None` while waiting.
    pub fn poll(&self) -> Option<bool> {
        self.0.get()
    }
}

impl PresenceResponder {
    /// The user approved.
    pub fn approve(self) {
        self.0.set_once(true);
    }

    /// The user refused.
    pub fn deny(self) {
        self.0.set_once(false);
    }
}

impl Drop for PresenceResponder {
    fn drop(&mut self) {
        self.0.set_once(false);
    }
}

/// Approves everything: demo and test devices only.
#[derive(Debug, Default, Clone, Copy)]
pub struct AutoApprove;

impl UserPresence for AutoApprove {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::None
    }

    fn check(&self, _: &PresenceRequest) -> PresenceCheck {
        PresenceCheck::Approved
    }
}

/// Refuses everything (a device whose owner switched provisioning off).
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAll;

impl UserPresence for DenyAll {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Button
    }

    fn check(&self, _: &PresenceRequest) -> PresenceCheck {
        PresenceCheck::Refused(Refusal::Denied)
    }
}

/// How many wrong PINs in a row lock PIN entry until the agent restarts.
pub const MAX_PIN_ATTEMPTS: u32 = 5;

/// A PIN printed on or shown by the device, sent in the ATTEST request.
///
/// Only its SHA-256 is kept; comparison is constant-time; after [`MAX_PIN_ATTEMPTS`] wrong
/// PINs in a row every attempt is refused until restart (no brute force over the air).
pub struct PinPresence {
    digest: [u8; 32],
    failures: AtomicU32,
}

impl core::fmt::Debug for PinPresence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PinPresence").finish_non_exhaustive()
    }
}

impl PinPresence {
    /// Checks against `pin`.
    pub fn new(pin: &str) -> Self {
        Self {
            digest: sha256(pin.as_bytes()),
            failures: AtomicU32::new(0),
        }
    }
}

impl UserPresence for PinPresence {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Pin
    }

    fn check(&self, request: &PresenceRequest) -> PresenceCheck {
        let Some(pin) = &request.pin else {
            return PresenceCheck::Refused(Refusal::PinRequired);
        };
        if self.failures.load(Ordering::SeqCst) >= MAX_PIN_ATTEMPTS {
            return PresenceCheck::Refused(Refusal::PinInvalid);
        }
        let given = sha256(pin.as_bytes());
        let diff = given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            self.failures.store(0, Ordering::SeqCst);
            PresenceCheck::Approved
        } else {
            self.failures.fetch_add(1, Ordering::SeqCst);
            PresenceCheck::Refused(Refusal::PinInvalid)
        }
    }
}

/// The hook a physical button (or an on-screen prompt) implements.
pub type ButtonHook = dyn Fn(PresenceRequest, PresenceResponder) + Send + Sync;

/// Asks the user through a hook (light an LED, show a prompt) and waits for the answer.
pub struct ButtonPresence {
    hook: Box<ButtonHook>,
}

impl core::fmt::Debug for ButtonPresence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ButtonPresence").finish_non_exhaustive()
    }
}

impl ButtonPresence {
    /// `hook` is called once per ATTEST; it must return at once and answer later through the
    /// responder (from a GPIO thread, a UI event…).
    pub fn new(hook: impl Fn(PresenceRequest, PresenceResponder) + Send + Sync + 'static) -> Self {
        Self {
            hook: Box::new(hook),
        }
    }
}

impl UserPresence for ButtonPresence {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Button
    }

    fn check(&self, request: &PresenceRequest) -> PresenceCheck {
        let (pending, responder) = ask_user();
        (self.hook)(request.clone(), responder);
        PresenceCheck::Pending(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pin: Option<&str>) -> PresenceRequest {
        PresenceRequest {
            origin: Origin::parse("https://vod.example.com").unwrap(),
            pin: pin.map(str::to_owned),
        }
    }

    #[test]
    fn pin_checks_and_locks_out() {
        let p = PinPresence::new("1234");
        assert!(matches!(
            p.check(&request(None)),
            PresenceCheck::Refused(Refusal::PinRequired)
        ));
        assert!(matches!(
            p.check(&request(Some("1234"))),
            PresenceCheck::Approved
        ));
        for _ in 0..MAX_PIN_ATTEMPTS {
            assert!(matches!(
                p.check(&request(Some("9999"))),
                PresenceCheck::Refused(Refusal::PinInvalid)
            ));
        }
        assert!(
            matches!(
                p.check(&request(Some("1234"))),
                PresenceCheck::Refused(Refusal::PinInvalid)
            ),
            "locked out after too many wrong PINs"
        );
        assert!(!format!("{:?}", request(Some("1234"))).contains("1234"));
    }

    #[test]
    fn responder_answers_once_and_dropping_denies() {
        let (pending, responder) = ask_user();
        assert_eq!(pending.poll(), None);
        responder.approve();
        assert_eq!(pending.poll(), Some(true));

        let (pending, responder) = ask_user();
        drop(responder);
        assert_eq!(pending.poll(), Some(false));
    }
}
