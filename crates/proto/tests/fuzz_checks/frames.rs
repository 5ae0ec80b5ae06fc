//! Framing: the reassembler against a model of SPEC §3.2, and fragmenter → reassembler.

use std::time::{Duration, Instant};

use localcert_proto::frame::{
    Command, FRAGMENT_TIMEOUT, Fragmenter, Frame, MAX_MESSAGE_LEN, Reassembler,
};
use localcert_proto::gatt::{MAX_VALUE_LEN, MIN_FRAGMENT_LEN};

/// What a receiver makes of one fragment, in the spec's words.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A complete frame: command byte and data.
    Frame(u8, Vec<u8>),
    /// The fragment was taken; more are needed.
    More,
    /// The error kind of the §3.2 table.
    Error(&'static str),
}

#[derive(Debug)]
struct InProgress {
    cmd: u8,
    len: usize,
    data: Vec<u8>,
    next_seq: u8,
    deadline: Instant,
}

/// SPEC §3.2 written down as directly as possible, independent of `frame.rs`.
///
/// Where the table lists several errors that apply to one fragment, the spec gives no order;
/// the model checks them in the order of the table's rows, except that `interrupted` (a rule
/// about the receiver's state) is checked before the LEN rules, as the reference does. Any
/// error drops the frame either way, so only the reported kind depends on this.
#[derive(Debug, Default)]
struct Model {
    in_progress: Option<InProgress>,
}

const COMMANDS: [u8; 5] = [0x81, 0x82, 0x83, 0xbe, 0xbf];
const CANCEL: u8 = 0xbe;

impl Model {
    fn receive(&mut self, now: Instant, fragment: &[u8]) -> Outcome {
        // "A fragment arriving after the deadline is treated as if the receiver had already
        // gone idle."
        if self.in_progress.as_ref().is_some_and(|p| now >= p.deadline) {
            self.in_progress = None;
        }
        let outcome = self.rules(now, fragment);
        if matches!(outcome, Outcome::Error(_)) {
            // "every error drops the frame in progress"
            self.in_progress = None;
        }
        outcome
    }

    fn rules(&mut self, now: Instant, fragment: &[u8]) -> Outcome {
        if fragment.is_empty() {
            return Outcome::Error("empty_fragment");
        }
        if fragment.len() > 512 {
            return Outcome::Error("fragment_too_long");
        }
        let first = fragment[0];
        if first < 0x80 {
            let Some(p) = self.in_progress.as_mut() else {
                return Outcome::Error("unexpected_continuation");
            };
            if first != p.next_seq {
                return Outcome::Error("sequence_gap");
            }
            if p.data.len() + fragment.len() - 1 > p.len {
                return Outcome::Error("overrun");
            }
            p.data.extend_from_slice(&fragment[1..]);
            p.next_seq = (p.next_seq + 1) % 0x80;
            p.deadline = now + Duration::from_secs(5);
            return self.complete();
        }
        if !COMMANDS.contains(&first) {
            return Outcome::Error("unknown_command");
        }
        if fragment.len() < 3 {
            return Outcome::Error("truncated_header");
        }
        if self.in_progress.is_some() && first != CANCEL {
            return Outcome::Error("interrupted");
        }
        // A CANCEL drops the frame in progress without error.
        self.in_progress = None;
        let len = usize::from(fragment[1]) * 256 + usize::from(fragment[2]);
        if len > 8192 {
            return Outcome::Error("message_too_long");
        }
        if fragment.len() - 3 > len {
            return Outcome::Error("overrun");
        }
        self.in_progress = Some(InProgress {
            cmd: first,
            len,
            data: fragment[3..].to_vec(),
            next_seq: 0,
            deadline: now + Duration::from_secs(5),
        });
        self.complete()
    }

    fn complete(&mut self) -> Outcome {
        match self.in_progress.take() {
            Some(p) if p.data.len() == p.len => Outcome::Frame(p.cmd, p.data),
            p => {
                self.in_progress = p;
                Outcome::More
            }
        }
    }

    fn timeout(&mut self, now: Instant) -> Outcome {
        if self.in_progress.as_ref().is_some_and(|p| now >= p.deadline) {
            self.in_progress = None;
            return Outcome::Error("timeout");
        }
        Outcome::More
    }
}

fn outcome(result: Result<Option<Frame>, localcert_proto::FrameError>) -> Outcome {
    match result {
        Ok(Some(frame)) => Outcome::Frame(frame.cmd.to_u8(), frame.data),
        Ok(None) => Outcome::More,
        Err(e) => Outcome::Error(e.kind()),
    }
}

/// Input: a sequence of steps. A step is a byte `h`: the clock advances `(h & 0x7f) * 50 ms`;
/// with `h & 0x80` the step is a timeout poll, otherwise two bytes give the fragment's length
/// (big endian, modulo 600) and the fragment follows (shorter if the input ends).
pub(crate) fn reassembler(data: &[u8]) {
    assert_eq!(
        FRAGMENT_TIMEOUT,
        Duration::from_secs(5),
        "the model's timeout"
    );
    let mut now = Instant::now();
    let mut real = Reassembler::new();
    let mut model = Model::default();
    let mut rest = data;
    let mut step = 0;
    while let Some((&h, tail)) = rest.split_first() {
        now += Duration::from_millis(u64::from(h & 0x7f) * 50);
        let (got, want) = if h & 0x80 != 0 {
            rest = tail;
            let got = match real.handle_timeout(now) {
                Ok(()) => Outcome::More,
                Err(e) => Outcome::Error(e.kind()),
            };
            (got, model.timeout(now))
        } else {
            let (len, tail) = match tail {
                [hi, lo, tail @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])) % 600, tail),
                _ => (0, &[][..]),
            };
            let (fragment, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            (
                outcome(real.handle_fragment(now, fragment)),
                model.receive(now, fragment),
            )
        };
        assert_eq!(
            got, want,
            "step {step}: reassembler and SPEC §3.2 model disagree"
        );
        assert_eq!(
            real.is_idle(),
            model.in_progress.is_none(),
            "step {step}: idle"
        );
        let deadline = model.in_progress.as_ref().map(|p| p.deadline);
        assert_eq!(real.poll_timeout(), deadline, "step {step}: deadline");
        step += 1;
    }
}

/// Input: a command selector, a 16-bit fragment length (any value; the fragmenter clamps it)
/// and the data. Whatever the fragmenter accepts, the reassembler must give back unchanged,
/// in full-size fragments with sequence numbers 0..=0x7f wrapping.
pub(crate) fn round_trip(data: &[u8]) {
    let [selector, hi, lo, payload @ ..] = data else {
        return;
    };
    let commands = [
        Command::Ping,
        Command::KeepAlive,
        Command::Msg,
        Command::Cancel,
        Command::Error,
    ];
    let cmd = commands[usize::from(*selector) % commands.len()];
    let requested = usize::from(u16::from_be_bytes([*hi, *lo]));
    let fragmenter = match Fragmenter::new(cmd, payload, requested) {
        Ok(f) => f,
        Err(e) => {
            assert!(
                payload.len() > MAX_MESSAGE_LEN,
                "refused {} bytes: {e}",
                payload.len()
            );
            return;
        }
    };
    assert!(
        payload.len() <= MAX_MESSAGE_LEN,
        "accepted {} bytes",
        payload.len()
    );
    let fragment_len = requested.clamp(MIN_FRAGMENT_LEN, MAX_VALUE_LEN);
    let fragments: Vec<Vec<u8>> = fragmenter.collect();
    let expected_count = if payload.len() <= fragment_len - 3 {
        1
    } else {
        1 + (payload.len() - (fragment_len - 3)).div_ceil(fragment_len - 1)
    };
    assert_eq!(fragments.len(), expected_count, "fragment count");
    let first = &fragments[0];
    assert_eq!(first[0], cmd.to_u8());
    assert_eq!(
        usize::from(u16::from_be_bytes([first[1], first[2]])),
        payload.len()
    );
    let now = Instant::now();
    let mut r = Reassembler::new();
    for (i, fragment) in fragments.iter().enumerate() {
        assert!(fragment.len() <= fragment_len, "fragment {i} too long");
        let last = i + 1 == fragments.len();
        if !last {
            assert_eq!(fragment.len(), fragment_len, "fragment {i} not full");
        }
        if i > 0 {
            assert_eq!(
                usize::from(fragment[0]),
                (i - 1) % 0x80,
                "sequence of fragment {i}"
            );
        }
        let got = r
            .handle_fragment(now, fragment)
            .expect("own fragments are valid");
        if last {
            assert_eq!(
                got,
                Some(Frame {
                    cmd,
                    data: payload.to_vec()
                })
            );
        } else {
            assert_eq!(got, None, "frame complete at fragment {i}");
        }
    }
    assert!(r.is_idle());
}
