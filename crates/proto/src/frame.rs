//! Framing over the control-point and status characteristics, in the style of FIDO CTAP over
//! BLE: an initial fragment `[command | 0x80, length hi, length lo, data…]` followed by
//! continuation fragments `[sequence, data…]` with the sequence counting 0..=0x7f and wrapping.
//!
//! Sans-IO: the caller passes fragments and `now` in, and polls fragments and timeouts out.

use std::time::{Duration, Instant};

use crate::error::{ErrorCode, FrameError};
use crate::gatt::{MAX_VALUE_LEN, MIN_FRAGMENT_LEN};

/// The largest message, in bytes, after reassembly.
pub const MAX_MESSAGE_LEN: usize = 8192;
/// The header of an initial fragment: command and a 16-bit big-endian length.
pub const INITIAL_HEADER_LEN: usize = 3;
/// The header of a continuation fragment: the sequence number.
pub const CONTINUATION_HEADER_LEN: usize = 1;
/// The largest sequence number; the next one is 0.
pub const MAX_SEQUENCE: u8 = 0x7f;
/// How long a receiver waits for the next fragment of a message before dropping it.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a device sends KEEPALIVE while it works on a request or waits for the user.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(1000);
/// How long a UA waits for a response, or for the next KEEPALIVE, before it gives up.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The command byte of an initial fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Echo: the device answers with a PING frame carrying the same data.
    Ping,
    /// Device to UA: still working; one byte, a [`KeepAliveStatus`].
    KeepAlive,
    /// A request (UA to device) or response (device to UA) message.
    Msg,
    /// UA to device: abandon the request in progress. No data.
    Cancel,
    /// Device to UA: a framing error; one byte, an [`ErrorCode`].
    Error,
}

impl Command {
    /// The byte on the wire (high bit set).
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Ping => 0x81,
            Self::KeepAlive => 0x82,
            Self::Msg => 0x83,
            Self::Cancel => 0xbe,
            Self::Error => 0xbf,
        }
    }

    /// The command for a byte, if defined.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0x81 => Self::Ping,
            0x82 => Self::KeepAlive,
            0x83 => Self::Msg,
            0xbe => Self::Cancel,
            0xbf => Self::Error,
            _ => return None,
        })
    }
}

/// What a KEEPALIVE frame reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAliveStatus {
    /// The device is working on the request (key generation, signing, storage).
    Processing = 0x01,
    /// The device waits for the user to approve (button or PIN on the device).
    UserPresenceNeeded = 0x02,
}

impl KeepAliveStatus {
    /// The status for a byte, if defined.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0x01 => Some(Self::Processing),
            0x02 => Some(Self::UserPresenceNeeded),
            _ => None,
        }
    }
}

/// A complete frame: a command and its reassembled data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub cmd: Command,
    /// The data, at most [`MAX_MESSAGE_LEN`] bytes.
    pub data: Vec<u8>,
}

impl Frame {
    /// A MSG frame.
    pub fn msg(data: Vec<u8>) -> Self {
        Self {
            cmd: Command::Msg,
            data,
        }
    }

    /// An ERROR frame for a wire error code.
    pub fn error(code: ErrorCode) -> Self {
        Self {
            cmd: Command::Error,
            data: vec![code.to_u8()],
        }
    }

    /// A KEEPALIVE frame.
    pub fn keep_alive(status: KeepAliveStatus) -> Self {
        Self {
            cmd: Command::KeepAlive,
            data: vec![status as u8],
        }
    }

    /// A CANCEL frame.
    pub fn cancel() -> Self {
        Self {
            cmd: Command::Cancel,
            data: Vec::new(),
        }
    }

    /// Splits this frame into fragments of at most `fragment_len` bytes.
    pub fn fragments(&self, fragment_len: usize) -> Result<Fragmenter<'_>, FrameError> {
        Fragmenter::new(self.cmd, &self.data, fragment_len)
    }
}

/// Splits one frame into fragments; an iterator of characteristic values to write or notify.
#[derive(Debug)]
pub struct Fragmenter<'a> {
    cmd: Command,
    data: &'a [u8],
    fragment_len: usize,
    next_seq: Option<u8>,
    done: bool,
}

impl<'a> Fragmenter<'a> {
    /// Prepares the fragments of `data`; `fragment_len` is clamped to 18..=512.
    pub fn new(cmd: Command, data: &'a [u8], fragment_len: usize) -> Result<Self, FrameError> {
        if data.len() > MAX_MESSAGE_LEN {
            return Err(FrameError::MessageTooLong {
                declared: data.len(),
            });
        }
        let fragment_len = fragment_len.clamp(MIN_FRAGMENT_LEN, MAX_VALUE_LEN);
        Ok(Self {
            cmd,
            data,
            fragment_len,
            next_seq: None,
            done: false,
        })
    }

    /// The next fragment, or `None` when all were taken.
    pub fn poll_fragment(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut out = Vec::with_capacity(self.fragment_len);
        let room = match self.next_seq {
            None => {
                // The length fits: `new` refused anything over MAX_MESSAGE_LEN.
                let len = u16::try_from(self.data.len()).unwrap_or(u16::MAX);
                out.push(self.cmd.to_u8());
                out.extend_from_slice(&len.to_be_bytes());
                self.next_seq = Some(0);
                self.fragment_len - INITIAL_HEADER_LEN
            }
            Some(seq) => {
                out.push(seq);
                self.next_seq = Some(if seq == MAX_SEQUENCE { 0 } else { seq + 1 });
                self.fragment_len - CONTINUATION_HEADER_LEN
            }
        };
        let (chunk, rest) = self.data.split_at(room.min(self.data.len()));
        out.extend_from_slice(chunk);
        self.data = rest;
        self.done = rest.is_empty();
        Some(out)
    }
}

impl Iterator for Fragmenter<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        self.poll_fragment()
    }
}

#[derive(Debug)]
struct Partial {
    cmd: Command,
    declared: usize,
    data: Vec<u8>,
    next_seq: u8,
    deadline: Instant,
}

/// Reassembles fragments into frames, enforcing every framing rule of the spec.
///
/// Any error drops the message in progress; the receiver reports it (a device sends an ERROR
/// frame with [`FrameError::code`]) and waits for a new initial fragment.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: Option<Partial>,
}

impl Reassembler {
    /// An idle reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one fragment (one characteristic write or notification).
    ///
    /// Returns a frame when it completes one, `None` when more fragments are needed.
    pub fn handle_fragment(
        &mut self,
        now: Instant,
        fragment: &[u8],
    ) -> Result<Option<Frame>, FrameError> {
        if self.partial.as_ref().is_some_and(|p| now >= p.deadline) {
            // The sender stalled; what it sends now starts afresh.
            self.partial = None;
        }
        let result = self.accept(now, fragment);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn accept(&mut self, now: Instant, fragment: &[u8]) -> Result<Option<Frame>, FrameError> {
        let (&first, rest) = fragment.split_first().ok_or(FrameError::EmptyFragment)?;
        if fragment.len() > MAX_VALUE_LEN {
            return Err(FrameError::FragmentTooLong);
        }
        if first & 0x80 == 0 {
            return self.continuation(now, first, rest);
        }
        let cmd = Command::from_u8(first).ok_or(FrameError::UnknownCommand(first))?;
        let [hi, lo, data @ ..] = rest else {
            return Err(FrameError::TruncatedHeader);
        };
        let declared = usize::from(u16::from_be_bytes([*hi, *lo]));
        if self.partial.take().is_some() && cmd != Command::Cancel {
            return Err(FrameError::Interrupted);
        }
        if declared > MAX_MESSAGE_LEN {
            return Err(FrameError::MessageTooLong { declared });
        }
        if data.len() > declared {
            return Err(FrameError::Overrun);
        }
        let partial = Partial {
            cmd,
            declared,
            data: Vec::with_capacity(declared),
            next_seq: 0,
            deadline: now + FRAGMENT_TIMEOUT,
        };
        self.append(partial, data)
    }

    fn continuation(
        &mut self,
        now: Instant,
        seq: u8,
        data: &[u8],
    ) -> Result<Option<Frame>, FrameError> {
        let mut partial = self
            .partial
            .take()
            .ok_or(FrameError::UnexpectedContinuation)?;
        if seq != partial.next_seq {
            return Err(FrameError::SequenceGap {
                expected: partial.next_seq,
                got: seq,
            });
        }
        if partial.data.len() + data.len() > partial.declared {
            return Err(FrameError::Overrun);
        }
        partial.next_seq = if seq == MAX_SEQUENCE { 0 } else { seq + 1 };
        partial.deadline = now + FRAGMENT_TIMEOUT;
        self.append(partial, data)
    }

    fn append(&mut self, mut partial: Partial, data: &[u8]) -> Result<Option<Frame>, FrameError> {
        partial.data.extend_from_slice(data);
        if partial.data.len() == partial.declared {
            return Ok(Some(Frame {
                cmd: partial.cmd,
                data: partial.data,
            }));
        }
        self.partial = Some(partial);
        Ok(None)
    }

    /// When the message in progress times out, if one is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial.as_ref().map(|p| p.deadline)
    }

    /// Drops the message in progress if its deadline has passed; returns
    /// [`FrameError::Timeout`] when it did, so a device can send the ERROR frame.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), FrameError> {
        if self.partial.as_ref().is_some_and(|p| now >= p.deadline) {
            self.partial = None;
            return Err(FrameError::Timeout);
        }
        Ok(())
    }

    /// Whether no message is in progress.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Drops the message in progress (for example on disconnect).
    pub fn reset(&mut self) {
        self.partial = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reassemble(frags: impl IntoIterator<Item = Vec<u8>>) -> Result<Option<Frame>, FrameError> {
        let now = Instant::now();
        let mut r = Reassembler::new();
        let mut last = Ok(None);
        for f in frags {
            last = r.handle_fragment(now, &f);
            if last.is_err() {
                break;
            }
        }
        last
    }

    #[test]
    fn fragment_layout_at_mtu_23() {
        let data: Vec<u8> = (0..40).collect();
        let frags: Vec<_> = Fragmenter::new(Command::Msg, &data, 18).unwrap().collect();
        assert_eq!(frags.len(), 3);
        assert_eq!(frags[0][..3], [0x83, 0x00, 40]);
        assert_eq!(frags[0].len(), 18);
        assert_eq!(frags[1][0], 0);
        assert_eq!(frags[1].len(), 18);
        assert_eq!(frags[2][0], 1);
        assert_eq!(frags[2].len(), 1 + 40 - 15 - 17);
        assert_eq!(reassemble(frags), Ok(Some(Frame::msg(data))));
    }

    #[test]
    fn empty_message_is_one_header() {
        let frags: Vec<_> = Frame::cancel().fragments(18).unwrap().collect();
        assert_eq!(frags, vec![vec![0xbe, 0, 0]]);
        assert_eq!(reassemble(frags), Ok(Some(Frame::cancel())));
    }

    #[test]
    fn sequence_wraps_after_0x7f() {
        let data = vec![0xaa; MAX_MESSAGE_LEN];
        let frags: Vec<_> = Fragmenter::new(Command::Msg, &data, 18).unwrap().collect();
        assert!(frags.len() > 200);
        assert_eq!(frags[128][0], 0x7f);
        assert_eq!(frags[129][0], 0x00);
        assert_eq!(reassemble(frags), Ok(Some(Frame::msg(data))));
    }

    #[test]
    fn refusals() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(r.handle_fragment(now, &[]), Err(FrameError::EmptyFragment));
        assert_eq!(
            r.handle_fragment(now, &[0x05, 1]),
            Err(FrameError::UnexpectedContinuation)
        );
        assert_eq!(
            r.handle_fragment(now, &[0x90, 0, 0]),
            Err(FrameError::UnknownCommand(0x90))
        );
        assert_eq!(
            r.handle_fragment(now, &[0x83, 0]),
            Err(FrameError::TruncatedHeader)
        );
        assert_eq!(
            r.handle_fragment(now, &[0x83, 0x20, 0x01]),
            Err(FrameError::MessageTooLong { declared: 8193 })
        );
        assert_eq!(
            r.handle_fragment(now, &[0x83, 0, 1, 7, 8]),
            Err(FrameError::Overrun)
        );
        assert_eq!(
            r.handle_fragment(now, &[0x83; 513]),
            Err(FrameError::FragmentTooLong)
        );

        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[1, 2]),
            Err(FrameError::SequenceGap {
                expected: 0,
                got: 1
            })
        );
        assert!(r.is_idle(), "an error drops the message in progress");

        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0x81, 0, 0]),
            Err(FrameError::Interrupted)
        );
        assert!(r.is_idle());

        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0, 2, 3, 4, 5]),
            Err(FrameError::Overrun)
        );
    }

    #[test]
    fn cancel_interrupts_without_error() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0xbe, 0, 0]),
            Ok(Some(Frame::cancel()))
        );
        assert!(r.is_idle());
    }

    #[test]
    fn timeout_drops_the_message() {
        let t0 = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(r.handle_fragment(t0, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(r.poll_timeout(), Some(t0 + FRAGMENT_TIMEOUT));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(
            r.handle_fragment(t0 + Duration::from_secs(4), &[0, 2]),
            Ok(None)
        );
        // Each fragment extends the deadline.
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + Duration::from_secs(4) + FRAGMENT_TIMEOUT)
        );
        assert_eq!(
            r.handle_timeout(t0 + Duration::from_secs(9)),
            Err(FrameError::Timeout)
        );
        assert!(r.is_idle());
        assert_eq!(r.poll_timeout(), None);

        // A late continuation after an unpolled timeout is not glued to the old message.
        assert_eq!(r.handle_fragment(t0, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(t0 + FRAGMENT_TIMEOUT, &[0, 2, 3, 4]),
            Err(FrameError::UnexpectedContinuation)
        );
    }
}
