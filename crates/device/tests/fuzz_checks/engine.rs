//! The device engine driven by a central in radio range, with a memory oracle.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use localcert_device::engine::SessionId;
use localcert_device::factory::{self, DeviceCredential};
use localcert_device::presence::AutoApprove;
use localcert_device::signer::FileSigner;

use localcert_device::{Device, DeviceBuilder, DeviceConfig, IssuerTrust};
use localcert_proto::frame::MAX_MESSAGE_LEN;
use localcert_proto::gatt::MIN_FRAGMENT_LEN;

/// The most bytes one session may have queued for the central: one response frame of the
/// largest size at the smallest MTU (8192 bytes of data, a 3-byte header and a 1-byte header
/// on each continuation), plus room for a few 4-byte keep-alives (issue 13: "at most one
/// response frame is queued, plus keep-alives").
pub(crate) const MAX_QUEUED_BYTES: usize =
    MAX_MESSAGE_LEN + 3 + MAX_MESSAGE_LEN.div_ceil(MIN_FRAGMENT_LEN - 1) + 16 * 4;

struct Fixture {
    device: DeviceCredential,
    root: Vec<u8>,
}

/// Key generation and certificates once per process, not per input.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = factory::new_root("Fuzz Manufacturer").unwrap();
        let device = factory::new_device(&root, "Fuzz Device", "0001").unwrap();
        Fixture {
            device,
            root: root.certificate,
        }
    })
}

fn new_device() -> Device {
    let f = fixture();
    let signer = FileSigner::new(&f.device.key, f.device.chain.clone()).unwrap();
    let mut config = DeviceConfig::new("Fuzz Device");
    config.https_port = 8443;
    config.trust = IssuerTrust::Roots(vec![f.root.clone()]);
    DeviceBuilder::new(config, Box::new(signer))
        .presence(AutoApprove)
        .engine()
}

/// Takes everything queued for the session (what a subscribed central receives) and checks
/// its size against the bound.
fn drain(device: &mut Device, id: SessionId, step: usize) {
    let reported = device.queued_bytes(id);
    let mut queued = 0;
    let mut fragments = 0;
    while let Some(fragment) = device.poll_fragment(id) {
        queued += fragment.len();
        fragments += 1;
    }
    assert!(
        queued <= MAX_QUEUED_BYTES,
        "step {step}: {queued} bytes in {fragments} fragments queued for one session \
         (bound {MAX_QUEUED_BYTES})"
    );
    assert_eq!(
        queued, reported,
        "step {step}: queued_bytes() and the fragments disagree"
    );
}

/// Input: steps. A step is a byte `h`; by its top two bits:
/// - `00`: a control-point write; two bytes give its length (big endian, modulo 520), the
///   fragment follows;
/// - `01`: the central reads every queued notification (the memory check runs here);
/// - `10`: the clock advances `(h & 0x3f) * 250 ms` and the engine handles its timeouts;
/// - `11`: `h & 0x3f` zero: the central disconnects (after the memory check) and a new one
///   connects at MTU 23 and subscribes; one: the central turns status notifications off or
///   on again; otherwise the MTU changes to `23 + 8 * (h & 0x3f)`.
///
/// The central subscribes to status notifications at the start, as a UA does.
///
/// The memory check runs after every step (`queued_bytes`), and at each read it also checks
/// that what the central receives is what `queued_bytes` reported.
pub(crate) fn device_engine(data: &[u8]) {
    let mut device = new_device();
    let mut now = Instant::now();
    let mut id = device.connect(185);
    let mut subscribed = true;
    device.set_subscribed(id, subscribed);
    let mut rest = data;
    let mut step = 0;
    while let Some((&h, tail)) = rest.split_first() {
        rest = tail;
        match h >> 6 {
            0 => {
                let (len, tail) = match rest {
                    [hi, lo, tail @ ..] => {
                        (usize::from(u16::from_be_bytes([*hi, *lo])) % 520, tail)
                    }
                    _ => (0, &[][..]),
                };
                let (fragment, tail) = tail.split_at(len.min(tail.len()));
                rest = tail;
                device.handle_fragment(id, now, fragment);
            }
            1 => drain(&mut device, id, step),
            2 => {
                now += Duration::from_millis(u64::from(h & 0x3f) * 250);
                device.handle_timeout(now);
            }
            _ if h & 0x3f == 0 => {
                drain(&mut device, id, step);
                device.disconnect(id);
                id = device.connect(23);
                subscribed = true;
                device.set_subscribed(id, subscribed);
            }
            _ if h & 0x3f == 1 => {
                subscribed = !subscribed;
                device.set_subscribed(id, subscribed);
            }
            _ => device.set_mtu(id, 23 + 8 * u16::from(h & 0x3f)),
        }
        while device.poll_event().is_some() {}
        let queued = device.queued_bytes(id);
        assert!(
            queued <= MAX_QUEUED_BYTES,
            "step {step}: {queued} bytes queued"
        );
        step += 1;
    }
    drain(&mut device, id, step);
}
