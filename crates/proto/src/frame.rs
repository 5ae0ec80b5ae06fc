//! Framing over the control-point and status characteristics, in the style of FIDO CTAP over
//! BLE: an initial fragment `[command | 0x80, length hi, length lo, data…]` followed by
//! continuation fragments `[sequence, data…]` with the sequence counting 0..=0x7f and wrapping.
//!
//! Sans-IO: the caller passes fragments and `now` in, and polls fragments and timeouts out.
//! The [`Reassembler`] puts fragments back in place when they arrive out of order within a frame.

use std::time::Duration;

use crate::error::{ErrorCode, FrameError};
use crate::gatt::{MAX_VALUE_LEN, MIN_FRAGMENT_LEN};
pub use crate::reassembly::{REORDER_WINDOW, Reassembler};

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

#[cfg(test)]
mod tests {
    use std::time::Instant;

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
}
