//! What one BLE session has waiting to be notified, with a fixed bound: anyone in radio range
//! can write to the control point, so nothing they send may make the device hold more.
//!
//! - Without a subscriber to the status characteristic nothing is queued: answers (PING
//!   echoes and ERROR frames included) are dropped, as nobody could receive them.
//! - At most one response frame is queued. The protocol has one request in flight at a time,
//!   and a UA reads the whole answer before its next request; a central that makes the device
//!   answer again while an answer is still queued is flooding, and its session is dropped.
//! - KEEPALIVEs only go between frames (a KEEPALIVE inside a message's fragments would break
//!   its reassembly); a newer one replaces an unsent one, and a response supersedes both.

use std::collections::VecDeque;

use localcert_proto::frame::{
    CONTINUATION_HEADER_LEN, Command, Frame, INITIAL_HEADER_LEN, MAX_MESSAGE_LEN,
};
use localcert_proto::gatt::MIN_ATT_MTU;

/// Bytes of fragments a session holds at most: one message of [`MAX_MESSAGE_LEN`] with the
/// headers of its fragments at the smallest fragment size, plus one KEEPALIVE.
pub const MAX_QUEUED_BYTES: usize = {
    let min_fragment = localcert_proto::gatt::fragment_len(MIN_ATT_MTU);
    let continuations = MAX_MESSAGE_LEN.div_ceil(min_fragment - CONTINUATION_HEADER_LEN);
    MAX_MESSAGE_LEN + INITIAL_HEADER_LEN + continuations * CONTINUATION_HEADER_LEN + 4
};

/// The central made the device answer while an answer was still queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flooded;

/// The fragments one session has to notify.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    subscribed: bool,
    response: VecDeque<Vec<u8>>,
    keep_alive: Option<Vec<u8>>,
}

impl Outbox {
    /// The central subscribed to (or left) the status characteristic; leaving drops what
    /// was queued.
    pub(crate) fn set_subscribed(&mut self, subscribed: bool) {
        self.subscribed = subscribed;
        if !subscribed {
            self.response.clear();
            self.keep_alive = None;
        }
    }

    /// Queues `frame`, fragmented to `fragment_len`.
    pub(crate) fn push(&mut self, frame: &Frame, fragment_len: usize) -> Result<(), Flooded> {
        if !self.subscribed {
            tracing::debug!(cmd = ?frame.cmd, "no subscriber: answer dropped");
            return Ok(());
        }
        let fragments = match frame.fragments(fragment_len) {
            Ok(fragments) => fragments,
            Err(e) => {
                tracing::error!(error = %e, "answer does not fit in a frame");
                return Ok(());
            }
        };
        if frame.cmd == Command::KeepAlive {
            if self.response.is_empty() {
                self.keep_alive = fragments.into_iter().next().map(exact);
            }
            return Ok(());
        }
        if !self.response.is_empty() {
            return Err(Flooded);
        }
        self.keep_alive = None;
        self.response.extend(fragments.map(exact));
        Ok(())
    }

    /// The next fragment to notify.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.keep_alive.take().or_else(|| self.response.pop_front())
    }

    /// The bytes held, counted as allocated; never over [`MAX_QUEUED_BYTES`].
    pub(crate) fn queued_bytes(&self) -> usize {
        let keep_alive = self.keep_alive.as_ref().map_or(0, Vec::capacity);
        keep_alive + self.response.iter().map(Vec::capacity).sum::<usize>()
    }
}

/// A fragment without the spare capacity of a full-size buffer: a 4-byte ERROR frame at
/// MTU 517 must not hold 512 bytes.
fn exact(mut fragment: Vec<u8>) -> Vec<u8> {
    fragment.shrink_to_fit();
    fragment
}

#[cfg(test)]
mod tests {
    use super::*;
    use localcert_proto::ErrorCode;
    use localcert_proto::frame::KeepAliveStatus;
    use localcert_proto::gatt::fragment_len;

    #[test]
    fn nothing_is_queued_without_a_subscriber() {
        let mut outbox = Outbox::default();
        for _ in 0..10_000 {
            outbox
                .push(&Frame::error(ErrorCode::InvalidCommand), 512)
                .unwrap();
            outbox.push(&Frame::msg(vec![7; 300]), 512).unwrap();
        }
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.pop(), None);
    }

    #[test]
    fn one_response_at_a_time_and_a_second_one_is_a_flood() {
        let mut outbox = Outbox::default();
        outbox.set_subscribed(true);
        outbox.push(&Frame::msg(vec![1; 100]), 18).unwrap();
        assert_eq!(outbox.push(&Frame::msg(vec![2; 4]), 18), Err(Flooded));
        let mut data = vec![];
        while let Some(fragment) = outbox.pop() {
            data.push(fragment);
        }
        assert_eq!(data.len(), 6, "100 bytes in 15 + 5 x 17");
        // Drained: the next answer is welcome.
        outbox.push(&Frame::error(ErrorCode::Busy), 512).unwrap();
        assert_eq!(
            outbox.queued_bytes(),
            4,
            "an ERROR frame holds its 4 bytes, not 512"
        );
    }

    #[test]
    fn keep_alives_go_between_frames_and_replace_each_other() {
        let mut outbox = Outbox::default();
        outbox.set_subscribed(true);
        let waiting = Frame::keep_alive(KeepAliveStatus::UserPresenceNeeded);
        for _ in 0..1000 {
            outbox.push(&waiting, 18).unwrap();
        }
        assert_eq!(outbox.queued_bytes(), 4);
        outbox.push(&Frame::msg(vec![1; 40]), 18).unwrap();
        outbox.push(&waiting, 18).unwrap();
        assert_eq!(outbox.pop().map(|f| f[0]), Some(Command::Msg.to_u8()));
        outbox.set_subscribed(false);
        assert_eq!((outbox.pop(), outbox.queued_bytes()), (None, 0));
    }

    #[test]
    fn the_largest_answer_fits_the_bound() {
        let mut outbox = Outbox::default();
        outbox.set_subscribed(true);
        let len = fragment_len(MIN_ATT_MTU);
        outbox
            .push(&Frame::msg(vec![0; MAX_MESSAGE_LEN]), len)
            .unwrap();
        assert!(outbox.queued_bytes() <= MAX_QUEUED_BYTES);
        assert!(outbox.queued_bytes() >= MAX_MESSAGE_LEN);
    }
}
