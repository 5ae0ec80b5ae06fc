//! User presence: how the device confirms that its user wants an ATTEST for an origin.
//!
//! A check can answer at once ([`AutoApprove`], [`PinPresence`]) or later ([`ButtonPresence`]):
//! then the engine keeps the request open, sends KEEPALIVE frames and polls the
//! [`PendingPresence`] until the [`PresenceResponder`] answers, the user times out or the UA
//! cancels.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A [`ButtonPresence`] whose hook runs `argv` + the origin in a thread: exit 0 approves,
/// anything else (or no answer within `timeout`, when the process is killed) denies.
pub fn command_presence(argv: Vec<String>, timeout: Duration) -> ButtonPresence {
    ButtonPresence::new(
        move |request: PresenceRequest, responder: PresenceResponder| {
            let argv = argv.clone();
            let spawned = std::thread::Builder::new()
                .name("presence-command".into())
                .spawn(move || {
                    if run_presence_command(&argv, &request, timeout) {
                        responder.approve();
                    } else {
                        responder.deny();
                    }
                });
            if let Err(e) = spawned {
                // The responder went with the closure and was dropped: that denies.
                tracing::error!(error = %e, "cannot start the presence command");
            }
        },
    )
}

fn run_presence_command(argv: &[String], request: &PresenceRequest, timeout: Duration) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let child = std::process::Command::new(program)
        .args(args)
        .arg(request.origin.as_str())
        .env("LOCALCERT_ORIGIN", request.origin.as_str())
        .stdin(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, program, "cannot run the presence command");
            return false;
        }
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
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

    #[cfg(unix)]
    #[test]
    fn the_presence_command_decides() {
        let ask = |script: &str| {
            let presence = command_presence(
                vec!["sh".into(), "-c".into(), script.into(), "sh".into()],
                Duration::from_secs(30),
            );
            let request = PresenceRequest {
                origin: localcert_proto::origin::Origin::parse("https://vod.example.com").unwrap(),
                pin: None,
            };
            let PresenceCheck::Pending(pending) = presence.check(&request) else {
                panic!("a command answers later");
            };
            loop {
                if let Some(answer) = pending.poll() {
                    return answer;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert!(ask(
            r#"test "$1" = https://vod.example.com && test "$LOCALCERT_ORIGIN" = "$1""#
        ));
        assert!(!ask("exit 1"));
    }
}
