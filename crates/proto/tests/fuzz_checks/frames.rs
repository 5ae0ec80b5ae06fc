//! Framing: the reassembler against a model of SPEC §3.2, and fragmenter → reassembler.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use localcert_proto::frame::{
    Command, FRAGMENT_TIMEOUT, Fragmenter, Frame, MAX_MESSAGE_LEN, REORDER_WINDOW, Reassembler,
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
    /// CMD and LEN of the initial fragment, once it has arrived.
    head: Option<(u8, usize)>,
    /// Every fragment's data so far, by position: 0 is the initial fragment, n the
    /// continuation whose SEQ is (n - 1) mod 128.
    received: BTreeMap<usize, Vec<u8>>,
    deadline: Instant,
}

impl InProgress {
    fn first_missing(&self) -> usize {
        (0..).find(|p| !self.received.contains_key(p)).unwrap_or(0)
    }

    fn held(&self) -> usize {
        self.received.values().map(Vec::len).sum()
    }
}

/// SPEC §3.2 written down as directly as possible, independent of the reassembler.
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
const KEEPALIVE: u8 = 0x82;
const CANCEL: u8 = 0xbe;
/// "A fragment is held only if its position is less than 16 past the first position missing."
const WINDOW: usize = 16;

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
            // A continuation may come first: it starts the frame in progress.
            let p = self.in_progress.get_or_insert_with(|| InProgress {
                head: None,
                received: BTreeMap::new(),
                deadline: now,
            });
            let missing = p.first_missing();
            let position = (missing.max(1)..)
                .find(|n| n % 128 == (usize::from(first) + 1) % 128)
                .unwrap_or(0);
            if position - missing >= WINDOW {
                return Outcome::Error(if p.head.is_none() {
                    "unexpected_continuation"
                } else {
                    "sequence_gap"
                });
            }
            if p.received.contains_key(&position) {
                return Outcome::Error("duplicate_continuation");
            }
            if p.head
                .is_some_and(|(_, len)| p.held() + fragment.len() - 1 > len)
            {
                return Outcome::Error("overrun");
            }
            p.received.insert(position, fragment[1..].to_vec());
            p.deadline = now + Duration::from_secs(5);
            return self.complete();
        }
        if !COMMANDS.contains(&first) {
            return Outcome::Error("unknown_command");
        }
        if fragment.len() < 3 {
            return Outcome::Error("truncated_header");
        }
        let len = usize::from(fragment[1]) * 256 + usize::from(fragment[2]);
        if first == KEEPALIVE && fragment.len() - 3 == len && self.in_progress.is_some() {
            // "A KEEPALIVE whole in its initial fragment is delivered and leaves the frame in
            // progress as it is."
            return Outcome::Frame(first, fragment[3..].to_vec());
        }
        if first == CANCEL {
            // A CANCEL drops the frame in progress without error.
            self.in_progress = None;
        }
        if self.in_progress.as_ref().is_some_and(|p| p.head.is_some()) {
            return Outcome::Error("interrupted");
        }
        if len > 8192 {
            return Outcome::Error("message_too_long");
        }
        let early = self.in_progress.as_ref().map_or(0, InProgress::held);
        if early + fragment.len() - 3 > len {
            return Outcome::Error("overrun");
        }
        let p = self.in_progress.get_or_insert_with(|| InProgress {
            head: None,
            received: BTreeMap::new(),
            deadline: now,
        });
        p.head = Some((first, len));
        p.received.insert(0, fragment[3..].to_vec());
        p.deadline = now + Duration::from_secs(5);
        self.complete()
    }

    fn complete(&mut self) -> Outcome {
        let Some(p) = self.in_progress.as_ref() else {
            return Outcome::More;
        };
        let Some((cmd, len)) = p.head else {
            return Outcome::More;
        };
        let in_order: Vec<u8> = (0..p.first_missing())
            .flat_map(|n| p.received[&n].iter().copied())
            .collect();
        if in_order.len() == len {
            self.in_progress = None;
            return Outcome::Frame(cmd, in_order);
        }
        Outcome::More
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
    assert_eq!(REORDER_WINDOW, WINDOW, "the model's window");
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
/// in full-size fragments with sequence numbers 0..=0x7f wrapping, also when they arrive in
/// blocks of 1..=16 reversed (`selector / 5` picks the block size): reordering within the
/// window.
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
    // SPEC §3.2: a CANCEL initial fragment drops the continuations held before it, so only a
    // CANCEL that arrives first round-trips (CANCEL carries no data in practice, §3.1).
    let block = if cmd == Command::Cancel {
        1
    } else {
        1 + usize::from(*selector / 5) % REORDER_WINDOW
    };
    let mut order: Vec<usize> = (0..fragments.len()).collect();
    for chunk in order.chunks_mut(block) {
        chunk.reverse();
    }
    let now = Instant::now();
    let mut r = Reassembler::new();
    for (i, fragment) in fragments.iter().enumerate() {
        assert!(fragment.len() <= fragment_len, "fragment {i} too long");
        if i + 1 < fragments.len() {
            assert_eq!(fragment.len(), fragment_len, "fragment {i} not full");
        }
        if i > 0 {
            assert_eq!(
                usize::from(fragment[0]),
                (i - 1) % 0x80,
                "sequence of fragment {i}"
            );
        }
    }
    for (n, &i) in order.iter().enumerate() {
        let got = r
            .handle_fragment(now, &fragments[i])
            .expect("own fragments are valid, in any order within the window");
        if n + 1 == order.len() {
            assert_eq!(
                got,
                Some(Frame {
                    cmd,
                    data: payload.to_vec()
                })
            );
        } else {
            assert_eq!(got, None, "frame complete at arrival {n} (fragment {i})");
        }
    }
    assert!(r.is_idle());
}
