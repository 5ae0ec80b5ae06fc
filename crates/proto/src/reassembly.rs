//! Reassembly of fragments into frames (SPEC §3.2).
//!
//! Fragments of one frame may arrive out of order: with Enhanced ATT a stack spreads
//! notifications and writes without response over several bearers, and ATT keeps order only
//! within one. Each fragment has a *position* in its frame (0 for the initial fragment, `n` for
//! the continuation with `SEQ = (n - 1) mod 128`), so the receiver puts them back in place, as
//! long as none is [`REORDER_WINDOW`] or more positions past the first one still missing.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::FrameError;
use crate::frame::{Command, FRAGMENT_TIMEOUT, Frame, MAX_MESSAGE_LEN, MAX_SEQUENCE};
use crate::gatt::MAX_VALUE_LEN;

/// How far ahead of the first missing position a fragment may arrive (SPEC §3.2). It bounds
/// what a receiver holds before the initial fragment: 15 continuations of at most 511 bytes.
pub const REORDER_WINDOW: usize = 16;

/// Sequence numbers count positions modulo this.
const SEQ_MODULUS: usize = MAX_SEQUENCE as usize + 1;

#[derive(Debug)]
struct Partial {
    /// The command and declared length, once the initial fragment has arrived.
    head: Option<(Command, usize)>,
    /// The data of positions `0..next`, in order.
    data: Vec<u8>,
    /// The first position not received yet.
    next: usize,
    /// Continuations received past `next`, by position.
    ahead: BTreeMap<usize, Vec<u8>>,
    /// The bytes held in `ahead`.
    ahead_len: usize,
    deadline: Instant,
}

impl Partial {
    fn new(now: Instant) -> Self {
        Self {
            head: None,
            data: Vec::new(),
            next: 0,
            ahead: BTreeMap::new(),
            ahead_len: 0,
            deadline: now + FRAGMENT_TIMEOUT,
        }
    }

    /// The sequence number of the first continuation not received yet.
    fn expected_seq(&self) -> u8 {
        // The modulus keeps it within 0..=0x7f.
        u8::try_from((self.next.max(1) - 1) % SEQ_MODULUS).unwrap_or(MAX_SEQUENCE)
    }

    /// Moves the continuations that now follow in order from `ahead` into `data`.
    fn advance(&mut self) {
        if self.head.is_none() {
            return;
        }
        while let Some(chunk) = self.ahead.remove(&self.next) {
            self.ahead_len -= chunk.len();
            self.data.extend_from_slice(&chunk);
            self.next += 1;
        }
    }
}

/// Reassembles fragments into frames, enforcing every framing rule of the spec.
///
/// Any error drops the frame in progress; the receiver reports it (a device sends an ERROR
/// frame with [`FrameError::code`]) and waits for a new frame.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: Option<Partial>,
    out_of_order: u64,
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
        if cmd == Command::KeepAlive && data.len() == declared && self.partial.is_some() {
            // A keep-alive sent just before a response may arrive after the response's first
            // fragments (several bearers): it is whole, so it leaves the frame in progress be.
            return Ok(Some(Frame {
                cmd,
                data: data.to_vec(),
            }));
        }
        let mut partial = match self.partial.take() {
            // CANCEL drops the frame in progress without error.
            Some(_) if cmd == Command::Cancel => Partial::new(now),
            Some(p) if p.head.is_some() => return Err(FrameError::Interrupted),
            // Continuations that overtook their initial fragment.
            Some(p) => p,
            None => Partial::new(now),
        };
        if declared > MAX_MESSAGE_LEN {
            return Err(FrameError::MessageTooLong { declared });
        }
        if data.len() + partial.ahead_len > declared {
            return Err(FrameError::Overrun);
        }
        partial.head = Some((cmd, declared));
        partial.data.reserve_exact(declared);
        partial.data.extend_from_slice(data);
        partial.next = 1;
        partial.deadline = now + FRAGMENT_TIMEOUT;
        Ok(self.settle(partial))
    }

    fn continuation(
        &mut self,
        now: Instant,
        seq: u8,
        data: &[u8],
    ) -> Result<Option<Frame>, FrameError> {
        let mut partial = self.partial.take().unwrap_or_else(|| Partial::new(now));
        // The position is ≡ SEQ + 1 (mod 128): the first such at or after the first missing
        // continuation.
        let base = partial.next.max(1);
        let offset = (usize::from(seq) + 1 + SEQ_MODULUS - base % SEQ_MODULUS) % SEQ_MODULUS;
        let position = base + offset;
        if position - partial.next >= REORDER_WINDOW {
            return Err(match partial.head {
                None => FrameError::UnexpectedContinuation,
                Some(_) => FrameError::SequenceGap {
                    expected: partial.expected_seq(),
                    got: seq,
                },
            });
        }
        if partial.ahead.contains_key(&position) {
            return Err(FrameError::DuplicateContinuation(seq));
        }
        if let Some((_, declared)) = partial.head {
            if partial.data.len() + partial.ahead_len + data.len() > declared {
                return Err(FrameError::Overrun);
            }
        }
        if position > partial.next {
            self.out_of_order += 1;
        }
        partial.ahead.insert(position, data.to_vec());
        partial.ahead_len += data.len();
        partial.deadline = now + FRAGMENT_TIMEOUT;
        Ok(self.settle(partial))
    }

    /// Keeps `partial` in progress, or gives its frame once every byte is in place.
    fn settle(&mut self, mut partial: Partial) -> Option<Frame> {
        partial.advance();
        match partial.head {
            Some((cmd, declared)) if partial.data.len() == declared => Some(Frame {
                cmd,
                data: partial.data,
            }),
            _ => {
                self.partial = Some(partial);
                None
            }
        }
    }

    /// When the frame in progress times out, if one is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial.as_ref().map(|p| p.deadline)
    }

    /// Drops the frame in progress if its deadline has passed; returns
    /// [`FrameError::Timeout`] when it did, so a device can send the ERROR frame.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), FrameError> {
        if self.partial.as_ref().is_some_and(|p| now >= p.deadline) {
            self.partial = None;
            return Err(FrameError::Timeout);
        }
        Ok(())
    }

    /// How many fragments so far arrived while an earlier one of their frame was missing (and
    /// were held until it came), over every frame since this receiver was made.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Whether no frame is in progress.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Drops the frame in progress (for example on disconnect).
    pub fn reset(&mut self) {
        self.partial = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::Fragmenter;

    /// Fragments of `data` at `fragment_len`, delivered in `order` (indices into them).
    fn deliver(data: &[u8], fragment_len: usize, order: &[usize]) -> Result<Frame, FrameError> {
        let frags: Vec<_> = Fragmenter::new(Command::Msg, data, fragment_len)
            .unwrap()
            .collect();
        assert_eq!(order.len(), frags.len(), "a whole permutation");
        let now = Instant::now();
        let mut r = Reassembler::new();
        for (n, &i) in order.iter().enumerate() {
            let got = r.handle_fragment(now, &frags[i])?;
            if n + 1 == order.len() {
                assert!(r.is_idle());
                return Ok(got.expect("the last fragment completes the frame"));
            }
            assert_eq!(got, None, "complete before its last fragment");
        }
        unreachable!("no fragments")
    }

    #[test]
    fn fragments_out_of_order_within_the_window() {
        let data: Vec<u8> = (0..210).collect();
        // 15 + 11 × 17 < 210 <= 15 + 12 × 17: 13 fragments at MTU 23.
        let swapped = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12];
        assert_eq!(deliver(&data, 18, &swapped), Ok(Frame::msg(data.clone())));
        let initial_last: Vec<usize> = (1..13).chain([0]).collect();
        let mut r = Reassembler::new();
        let frags: Vec<_> = Fragmenter::new(Command::Msg, &data, 18).unwrap().collect();
        for &i in &initial_last {
            let _ = r.handle_fragment(Instant::now(), &frags[i]);
        }
        assert_eq!(
            r.out_of_order(),
            12,
            "every continuation came before the initial"
        );
        assert_eq!(
            deliver(&data, 18, &initial_last),
            Ok(Frame::msg(data.clone()))
        );
        let reversed: Vec<usize> = (0..13).rev().collect();
        assert_eq!(deliver(&data, 18, &reversed), Ok(Frame::msg(data)));
    }

    #[test]
    fn reordering_across_the_sequence_wrap() {
        let data = vec![0x5a; MAX_MESSAGE_LEN];
        let count = Fragmenter::new(Command::Msg, &data, 18).unwrap().count();
        // Swap every pair around positions 128/129 (SEQ 0x7f then 0x00) and beyond.
        let mut order: Vec<usize> = (0..count).collect();
        for pair in order[120..count - 1].chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
        for block in order[300..].chunks_mut(REORDER_WINDOW) {
            block.reverse();
        }
        assert_eq!(deliver(&data, 18, &order), Ok(Frame::msg(data)));
    }

    #[test]
    fn the_window_is_a_hard_edge() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        // Position 15 (SEQ 14) is the last one held before the initial fragment.
        assert_eq!(r.handle_fragment(now, &[14, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[15, 1]),
            Err(FrameError::UnexpectedContinuation)
        );
        assert!(r.is_idle());
        assert_eq!(r.handle_fragment(now, &[0x83, 0, 64, 1]), Ok(None));
        assert_eq!(r.handle_fragment(now, &[15, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[16, 1]),
            Err(FrameError::SequenceGap {
                expected: 0,
                got: 16
            })
        );
        assert!(r.is_idle());
    }

    #[test]
    fn keep_alive_overtaking_or_trailing_a_response() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0x82, 0, 1, 1]),
            Ok(Some(Frame::keep_alive(
                crate::frame::KeepAliveStatus::Processing
            )))
        );
        assert_eq!(
            r.handle_fragment(now, &[0, 2, 3, 4]),
            Ok(Some(Frame::msg(vec![1, 2, 3, 4])))
        );
        // A keep-alive that is not whole in its initial fragment interrupts like any other.
        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0x82, 0, 2, 1]),
            Err(FrameError::Interrupted)
        );
    }

    #[test]
    fn early_continuations_count_against_the_length() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(r.handle_fragment(now, &[0, 2, 3]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0x83, 0, 2, 1]),
            Err(FrameError::Overrun)
        );
        assert!(r.is_idle());
        // Orphans time out like half a frame.
        assert_eq!(r.handle_fragment(now, &[3, 2, 3]), Ok(None));
        assert_eq!(r.poll_timeout(), Some(now + FRAGMENT_TIMEOUT));
        assert_eq!(
            r.handle_timeout(now + FRAGMENT_TIMEOUT),
            Err(FrameError::Timeout)
        );
        // CANCEL drops them without error.
        assert_eq!(r.handle_fragment(now, &[3, 2, 3]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0xbe, 0, 0]),
            Ok(Some(Frame::cancel()))
        );
        assert!(r.is_idle());
    }

    #[test]
    fn refusals() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(r.handle_fragment(now, &[]), Err(FrameError::EmptyFragment));
        assert_eq!(
            r.handle_fragment(now, &[0x20, 1]),
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

        assert_eq!(r.handle_fragment(now, &[0x83, 0, 9, 1]), Ok(None));
        assert_eq!(r.handle_fragment(now, &[1, 2]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[1, 2]),
            Err(FrameError::DuplicateContinuation(1))
        );
        assert!(r.is_idle(), "an error drops the frame in progress");

        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0x81, 0, 0]),
            Err(FrameError::Interrupted)
        );
        assert!(r.is_idle());

        assert_eq!(r.handle_fragment(now, &[0x83, 0, 4, 1]), Ok(None));
        assert_eq!(r.handle_fragment(now, &[1, 5]), Ok(None));
        assert_eq!(
            r.handle_fragment(now, &[0, 2, 3, 4]),
            Err(FrameError::Overrun),
            "the held continuation counts"
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
    fn timeout_drops_the_frame() {
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

        // A late continuation after an unpolled timeout is not glued to the old frame: it
        // waits for an initial fragment of its own.
        assert_eq!(r.handle_fragment(t0, &[0x83, 0, 4, 1]), Ok(None));
        let late = t0 + FRAGMENT_TIMEOUT;
        assert_eq!(r.handle_fragment(late, &[0, 2, 3, 4]), Ok(None));
        assert_eq!(r.poll_timeout(), Some(late + FRAGMENT_TIMEOUT));
    }
}
