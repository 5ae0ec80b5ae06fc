//! Engine tests: every command and every refusal, over real framing at several MTUs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use localcert_proto::binding::OriginBinding;
use localcert_proto::frame::{FRAGMENT_TIMEOUT, KEEPALIVE_INTERVAL};
use localcert_proto::gatt::PROTOCOL_REVISION;
use localcert_proto::message::key_authorization_hash;
use localcert_proto::message::{
    AttestResponse, CorsPolicy, InstallRequest, Operation, PresenceMethod, RemoveRequest,
    RemoveResponse,
};
use localcert_proto::transcript::Transcript;
use rcgen::PublicKeyData;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use time::{Duration as TimeDuration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use super::*;
use crate::factory;
use crate::pki;
use crate::presence::{AutoApprove, ButtonPresence, DenyAll, PinPresence, PresenceResponder};
use crate::signer::FileSigner;
use crate::store::MemoryStore;
use crate::test_pki::TestCa;
use crate::verify;

const NOW_UNIX: u64 = 1_800_000_000;

struct TestClock(Arc<AtomicU64>);

impl WallClock for TestClock {
    fn unix_time(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Harness {
    dev: Device,
    id: SessionId,
    now: Instant,
    mtu: u16,
    ca: TestCa,
    device_chain: Vec<Vec<u8>>,
}

fn signer() -> (FileSigner, Vec<Vec<u8>>) {
    let root = factory::new_root("Test Manufacturer").unwrap();
    let batch = factory::new_batch(&root, "Batch").unwrap();
    let device = factory::new_device(&batch, "Media Server", "0001").unwrap();
    let chain = device.chain.clone();
    (FileSigner::new(&device.key, device.chain).unwrap(), chain)
}

/// A connection whose central has subscribed to the status characteristic.
fn subscribed(dev: &mut Device, att_mtu: u16) -> SessionId {
    let id = dev.connect(att_mtu);
    dev.set_subscribed(id, true);
    id
}

fn harness_with(
    presence: Box<dyn UserPresence>,
    edit: impl FnOnce(&mut DeviceConfig, &TestCa),
) -> Harness {
    let ca = TestCa::new("Test Issuer");
    let (signer, device_chain) = signer();
    let mut config = DeviceConfig::new("Media Server");
    config.https_port = 8443;
    config.trust = IssuerTrust::Roots(vec![ca.root.clone()]);
    edit(&mut config, &ca);
    let clock = TestClock(Arc::new(AtomicU64::new(NOW_UNIX)));
    let mut dev = Device::new(
        config,
        Box::new(signer),
        presence,
        Box::new(MemoryStore::new()),
    )
    .with_clock(Box::new(clock));
    let id = subscribed(&mut dev, 247);
    Harness {
        dev,
        id,
        now: Instant::now(),
        mtu: 247,
        ca,
        device_chain,
    }
}

fn harness() -> Harness {
    harness_with(Box::new(AutoApprove), |_, _| {})
}

fn origin(s: &str) -> Origin {
    Origin::parse(s).unwrap()
}

fn attest_request(o: &str) -> AttestRequest {
    AttestRequest {
        origin: origin(o),
        user_handle: b"user-1".to_vec(),
        key_authorization_hash: key_authorization_hash("token123.thumbprint456"),
        device_label: DeviceLabel::parse("media-server").unwrap(),
        pin: None,
    }
}

fn cors() -> CorsPolicy {
    CorsPolicy {
        methods: vec!["GET".into(), "POST".into()],
        allow_headers: vec!["content-type".into()],
        expose_headers: vec![],
        allow_credentials: false,
        max_age: 600,
    }
}

impl Harness {
    fn send_raw(&mut self, fragment: &[u8]) {
        self.dev.handle_fragment(self.id, self.now, fragment);
    }

    fn send(&mut self, request: &Request) {
        let frame = Frame::msg(request.encode());
        let fragments: Vec<_> = frame.fragments(fragment_len(self.mtu)).unwrap().collect();
        for f in fragments {
            self.send_raw(&f);
        }
    }

    /// Everything the device has to say, as frames.
    fn frames(&mut self) -> Vec<Frame> {
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        while let Some(f) = self.dev.poll_fragment(self.id) {
            assert!(f.len() <= fragment_len(self.mtu), "fragment over the MTU");
            if let Some(frame) = r.handle_fragment(self.now, &f).unwrap() {
                out.push(frame);
            }
        }
        assert!(r.is_idle(), "a frame was left incomplete");
        out
    }

    fn response(&mut self, op: Operation) -> Response {
        let frames = self.frames();
        assert_eq!(frames.len(), 1, "one frame expected: {frames:?}");
        assert_eq!(frames[0].cmd, Command::Msg);
        Response::decode(op, &frames[0].data).unwrap()
    }

    fn call(&mut self, request: &Request) -> Response {
        self.send(request);
        self.response(request.operation())
    }

    fn attest(&mut self, o: &str) -> AttestResponse {
        match self.call(&Request::Attest(attest_request(o))) {
            Response::Attest(a) => a,
            other => panic!("attest failed: {other:?}"),
        }
    }

    fn issue(
        &self,
        att: &AttestResponse,
        names: &[&str],
        binding: Option<&OriginBinding>,
    ) -> Vec<Vec<u8>> {
        let spki = att.spki();
        let now = OffsetDateTime::from_unix_timestamp(NOW_UNIX as i64).unwrap();
        self.ca.issue(
            &spki,
            names,
            binding,
            now - TimeDuration::hours(1),
            now + TimeDuration::days(7),
        )
    }

    fn name_for(&self, o: &str) -> LocalName {
        LocalName::derive(
            &DeviceLabel::parse("media-server").unwrap(),
            &origin(o),
            self.dev.device_tag(),
        )
    }

    /// ATTEST then the chain a correct issuer would return.
    fn attest_and_issue(&mut self, o: &str) -> (AttestResponse, Vec<Vec<u8>>) {
        let att = self.attest(o);
        let name = self.name_for(o);
        let binding = OriginBinding::new(origin(o), b"user-1");
        let chain = self.issue(&att, &[name.as_str()], Some(&binding));
        (att, chain)
    }

    fn install(&mut self, chain: Vec<Vec<u8>>) -> Response {
        self.call(&Request::Install(InstallRequest {
            chain,
            cors: cors(),
            star_url: None,
        }))
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.dev.poll_event()).collect()
    }
}

fn assert_refused(response: Response, code: ErrorCode) {
    match response {
        Response::Error(c, _) => assert_eq!(c, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[test]
fn get_info_reports_the_device() {
    let mut h = harness();
    let Response::Info(info) = h.call(&Request::GetInfo) else {
        panic!("no info");
    };
    assert_eq!(info.revision, PROTOCOL_REVISION);
    assert_eq!(info.product, "Media Server");
    assert_eq!(info.device_label.as_str(), "media-server");
    assert_eq!(info.attestation_chain, h.device_chain);
    assert_eq!(info.presence, PresenceMethod::None);
    assert_eq!((info.bindings, info.max_bindings), (0, MAX_BINDINGS as u64));
}

#[test]
fn attest_signs_the_transcript_over_the_csr_key_and_derived_name() {
    let mut h = harness();
    let att = h.attest("https://vod.example.com");
    let name = h.name_for("https://vod.example.com");

    // The CSR rebuilt from the answer carries the attested key and the derived name (subject
    // empty), and its signature verifies: the device signed the same template.
    let der = att.csr(std::slice::from_ref(&name));
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    assert!(rest.is_empty());
    csr.verify_signature().unwrap();
    assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
    let spki = att.spki();
    assert_eq!(
        csr.certification_request_info.subject_pki.raw,
        spki.as_slice()
    );
    let mut names = vec![];
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            names.extend(san.general_names.iter().map(|g| format!("{g:?}")));
        }
    }
    assert_eq!(names, [format!("DNSName({:?})", name.as_str())]);

    assert!(
        name.as_str()
            .ends_with(&format!("-{}.local", h.dev.device_tag().as_str()))
    );
    let transcript = Transcript {
        key_authorization: "token123.thumbprint456",
        origin: &origin("https://vod.example.com"),
        user_handle: b"user-1",
        csr_spki: &spki,
        names: std::slice::from_ref(&name),
    }
    .to_bytes();
    let device_cert = pki::parse_certificate(&h.device_chain[0], "device").unwrap();
    let point = device_cert.public_key().subject_public_key.data.to_vec();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
        .verify(&transcript, &att.der_signature())
        .unwrap();
    assert_eq!(
        h.events(),
        vec![Event::Pending {
            origin: origin("https://vod.example.com"),
            name
        }]
    );
}

#[test]
fn install_list_remove_round_trip() {
    let mut h = harness();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    h.events();
    let Response::Install(installed) = h.install(chain.clone()) else {
        panic!("install failed");
    };
    let name = h.name_for("https://vod.example.com");
    assert_eq!(installed.https_port, 8443);
    let events = h.events();
    assert!(matches!(&events[..], [Event::Installed(b)] if b.chain == chain && b.cors == cors()));

    let Response::List(list) = h.call(&Request::List) else {
        panic!("list failed");
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, name);
    assert!(!list[0].star);
    assert_eq!(list[0].not_after, NOW_UNIX + 7 * 86_400);
    assert_eq!(h.dev.bindings()[0].granted, NOW_UNIX, "the grant is dated");

    // The pending key is consumed: the same chain again has no pending key.
    assert_refused(h.install(chain), ErrorCode::NoPending);

    let remove = Request::Remove(RemoveRequest {
        origin: origin("https://vod.example.com"),
    });
    assert_eq!(
        h.call(&remove),
        Response::Remove(RemoveResponse { name: name.clone() })
    );
    assert_eq!(
        h.events(),
        vec![Event::Removed {
            origin: origin("https://vod.example.com"),
            name
        }]
    );
    assert_refused(h.call(&remove), ErrorCode::NotFound);
    assert_eq!(h.call(&Request::List), Response::List(vec![]));
}

#[test]
fn install_refusals_leave_the_pending_key_usable() {
    let mut h = harness();
    let o = "https://vod.example.com";
    let (att, good) = h.attest_and_issue(o);
    let name = h.name_for(o);
    let binding = OriginBinding::new(origin(o), b"user-1");

    // A key that is not pending.
    let other_key = pki::generate_p256(&SystemRandom::new()).unwrap();
    let other_spki = pki::rcgen_key(&other_key)
        .unwrap()
        .subject_public_key_info();
    let now = OffsetDateTime::from_unix_timestamp(NOW_UNIX as i64).unwrap();
    let window = (now - TimeDuration::hours(1), now + TimeDuration::days(7));
    let wrong_key = h.ca.issue(
        &other_spki,
        &[name.as_str()],
        Some(&binding),
        window.0,
        window.1,
    );
    assert_refused(h.install(wrong_key), ErrorCode::ChainMismatch);

    let other_name = h.name_for("https://other.example.com");
    let wrong_names = h.issue(&att, &[other_name.as_str()], Some(&binding));
    assert_refused(h.install(wrong_names), ErrorCode::ChainMismatch);
    let extra_name = h.issue(&att, &[name.as_str(), other_name.as_str()], Some(&binding));
    assert_refused(h.install(extra_name), ErrorCode::ChainMismatch);

    let no_binding = h.issue(&att, &[name.as_str()], None);
    assert_refused(h.install(no_binding), ErrorCode::ChainMismatch);
    let other_origin = OriginBinding::new(origin("https://evil.example.com"), b"user-1");
    assert_refused(
        h.install(h.issue(&att, &[name.as_str()], Some(&other_origin))),
        ErrorCode::ChainMismatch,
    );
    let other_user = OriginBinding::new(origin(o), b"user-2");
    assert_refused(
        h.install(h.issue(&att, &[name.as_str()], Some(&other_user))),
        ErrorCode::ChainMismatch,
    );

    // The profile's rules on the origin binding (SPEC §8.4): exactly once, non-critical.
    let repeated = h.ca.issue_with_bindings(
        &obj_spki(&att),
        &[name.as_str()],
        &[(&binding, false), (&binding, false)],
        window.0,
        window.1,
    );
    assert_refused(h.install(repeated), ErrorCode::CertificateInvalid);
    let critical = h.ca.issue_with_bindings(
        &obj_spki(&att),
        &[name.as_str()],
        &[(&binding, true)],
        window.0,
        window.1,
    );
    assert_refused(h.install(critical), ErrorCode::CertificateInvalid);

    // Right fields, wrong issuer.
    let rogue = TestCa::new("Rogue");
    let spki = att.spki();
    let rogue_chain = rogue.issue(&spki, &[name.as_str()], Some(&binding), window.0, window.1);
    assert_refused(h.install(rogue_chain), ErrorCode::UntrustedIssuer);
    // The leaf alone, without its intermediate.
    assert_refused(h.install(vec![good[0].clone()]), ErrorCode::UntrustedIssuer);
    // Expired and not yet valid.
    let expired = h.ca.issue(
        &spki,
        &[name.as_str()],
        Some(&binding),
        now - TimeDuration::days(9),
        now - TimeDuration::days(2),
    );
    assert_refused(h.install(expired), ErrorCode::CertificateInvalid);
    let future = h.ca.issue(
        &spki,
        &[name.as_str()],
        Some(&binding),
        now + TimeDuration::days(2),
        now + TimeDuration::days(9),
    );
    assert_refused(h.install(future), ErrorCode::CertificateInvalid);
    // Not a certificate.
    assert_refused(
        h.install(vec![vec![0x30, 0x03, 0x02, 0x01, 0x00]]),
        ErrorCode::CertificateInvalid,
    );

    assert!(
        h.dev.bindings().is_empty(),
        "nothing installed by a refusal"
    );
    assert!(matches!(h.install(good), Response::Install(_)));
}

fn obj_spki(att: &AttestResponse) -> Vec<u8> {
    att.spki()
}

#[test]
fn pending_keys_expire() {
    let mut h = harness();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    assert!(
        h.dev
            .poll_timeout()
            .is_some_and(|t| t <= h.now + DEFAULT_PENDING_LIFETIME)
    );
    h.now += DEFAULT_PENDING_LIFETIME;
    h.dev.handle_timeout(h.now);
    let name = h.name_for("https://vod.example.com");
    assert!(h.events().contains(&Event::PendingDropped { name }));
    assert_refused(h.install(chain), ErrorCode::NoPending);
    assert_eq!(h.dev.poll_timeout(), None);
}

#[test]
fn reinstalling_an_origin_under_another_label_retires_the_old_name() {
    let mut h = harness();
    let o = "https://vod.example.com";
    let (_, chain) = h.attest_and_issue(o);
    assert!(matches!(h.install(chain), Response::Install(_)));
    let old_name = h.name_for(o);

    let mut request = attest_request(o);
    request.device_label = DeviceLabel::parse("living-room").unwrap();
    let Response::Attest(att) = h.call(&Request::Attest(request.clone())) else {
        panic!("attest failed");
    };
    let new_name = LocalName::derive(&request.device_label, &origin(o), h.dev.device_tag());
    let binding = OriginBinding::new(origin(o), b"user-1");
    let chain = h.issue(&att, &[new_name.as_str()], Some(&binding));
    h.events();
    assert!(matches!(h.install(chain), Response::Install(_)));
    let events = h.events();
    assert_eq!(
        events[0],
        Event::Removed {
            origin: origin(o),
            name: old_name
        }
    );
    assert!(matches!(&events[1], Event::Installed(b) if b.name == new_name));
    assert_eq!(h.dev.bindings().len(), 1);
}

#[test]
fn a_new_attest_for_the_same_origin_replaces_the_pending_key() {
    let mut h = harness();
    let (_, first) = h.attest_and_issue("https://vod.example.com");
    let (_, second) = h.attest_and_issue("https://vod.example.com");
    assert_refused(h.install(first), ErrorCode::ChainMismatch);
    assert!(matches!(h.install(second), Response::Install(_)));
}

#[test]
fn a_device_without_configured_roots_trusts_no_issuer() {
    let mut h = harness_with(Box::new(AutoApprove), |c, _| {
        c.trust = IssuerTrust::Roots(vec![])
    });
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    // Not even the chain's own top certificate: the trusted issuer is never taken from a chain.
    let mut with_root = chain.clone();
    with_root.push(h.ca.root.clone());
    assert_refused(h.install(with_root), ErrorCode::UntrustedIssuer);
    assert_refused(h.install(chain), ErrorCode::UntrustedIssuer);
    assert!(h.dev.bindings().is_empty());
}

#[test]
fn install_for_an_origin_and_name_without_pending_key_is_no_pending() {
    let mut h = harness();
    let (att, _) = h.attest_and_issue("https://vod.example.com");
    let other = "https://app.example.com";
    let name = h.name_for(other);
    let other_key = pki::generate_p256(&SystemRandom::new()).unwrap();
    let spki = pki::rcgen_key(&other_key)
        .unwrap()
        .subject_public_key_info();
    let now = OffsetDateTime::from_unix_timestamp(NOW_UNIX as i64).unwrap();
    let chain = h.ca.issue(
        &spki,
        &[name.as_str()],
        Some(&OriginBinding::new(origin(other), b"user-1")),
        now - TimeDuration::hours(1),
        now + TimeDuration::days(1),
    );
    assert_refused(h.install(chain), ErrorCode::NoPending);
    // The pending key of the other origin is untouched.
    let vod = "https://vod.example.com";
    let good = h.issue(
        &att,
        &[h.name_for(vod).as_str()],
        Some(&OriginBinding::new(origin(vod), b"user-1")),
    );
    assert!(matches!(h.install(good), Response::Install(_)));
}

#[test]
fn storage_full_is_refused_at_attest() {
    let mut h = harness_with(Box::new(AutoApprove), |c, _| c.max_bindings = 1);
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    assert!(matches!(h.install(chain), Response::Install(_)));
    assert_refused(
        h.call(&Request::Attest(attest_request("https://app.example.com"))),
        ErrorCode::StorageFull,
    );
    // Re-provisioning the bound origin is still possible.
    h.attest("https://vod.example.com");
}

#[test]
fn presence_refusals() {
    let mut h = harness_with(Box::new(DenyAll), |_, _| {});
    assert_refused(
        h.call(&Request::Attest(attest_request("https://vod.example.com"))),
        ErrorCode::UserDenied,
    );
    assert!(h.events().is_empty(), "no key made");

    let mut h = harness_with(Box::new(PinPresence::new("4711")), |_, _| {});
    let mut req = attest_request("https://vod.example.com");
    assert_refused(
        h.call(&Request::Attest(req.clone())),
        ErrorCode::PinRequired,
    );
    req.pin = Some("0000".into());
    assert_refused(h.call(&Request::Attest(req.clone())), ErrorCode::PinInvalid);
    req.pin = Some("4711".into());
    assert!(matches!(h.call(&Request::Attest(req)), Response::Attest(_)));
}

type Responders = Arc<std::sync::Mutex<Vec<PresenceResponder>>>;

fn button_harness() -> (Harness, Responders) {
    let responders: Responders = Arc::default();
    let r = responders.clone();
    let presence = ButtonPresence::new(move |_, responder| r.lock().unwrap().push(responder));
    (harness_with(Box::new(presence), |_, _| {}), responders)
}

fn keepalive() -> Frame {
    Frame::keep_alive(KeepAliveStatus::UserPresenceNeeded)
}

#[test]
fn button_presence_sends_keepalives_until_approved() {
    let (mut h, responders) = button_harness();
    h.send(&Request::Attest(attest_request("https://vod.example.com")));
    assert_eq!(h.frames(), vec![keepalive()]);
    assert!(h.dev.is_busy(h.id), "waiting for the user");

    // Another request meanwhile is BUSY; the ATTEST stays.
    h.send(&Request::GetInfo);
    assert_eq!(h.frames(), vec![Frame::error(ErrorCode::Busy)]);

    let t0 = h.now;
    h.now = t0 + KEEPALIVE_INTERVAL;
    h.dev.handle_timeout(h.now);
    assert_eq!(h.frames(), vec![keepalive()]);

    responders.lock().unwrap().pop().unwrap().approve();
    let next = h.dev.poll_timeout().unwrap();
    assert!(next <= h.now + KEEPALIVE_INTERVAL);
    h.now = next;
    h.dev.handle_timeout(h.now);
    assert!(matches!(h.response(Operation::Attest), Response::Attest(_)));
}

#[test]
fn button_presence_denied_timed_out_cancelled_or_disconnected() {
    let (mut h, responders) = button_harness();
    let attest = Request::Attest(attest_request("https://vod.example.com"));

    h.send(&attest);
    h.frames();
    responders.lock().unwrap().pop().unwrap().deny();
    h.dev.handle_timeout(h.now);
    assert_refused(h.response(Operation::Attest), ErrorCode::UserDenied);

    h.send(&attest);
    h.frames();
    h.now += DEFAULT_PRESENCE_TIMEOUT;
    h.dev.handle_timeout(h.now);
    assert_refused(h.response(Operation::Attest), ErrorCode::UserTimeout);

    h.send(&attest);
    h.frames();
    h.send_raw(&[0xbe, 0, 0]);
    assert_refused(h.response(Operation::Attest), ErrorCode::Cancelled);
    // CANCEL with nothing in progress is ignored.
    h.send_raw(&[0xbe, 0, 0]);
    assert!(h.frames().is_empty());

    h.send(&attest);
    h.frames();
    h.dev.disconnect(h.id);
    assert!(!h.dev.is_connected(h.id));
    responders.lock().unwrap().pop().unwrap().approve();
    h.dev.handle_timeout(h.now);
    assert!(h.dev.poll_fragment(h.id).is_none());
    assert!(h.events().is_empty(), "no key was made for any of them");
}

#[test]
fn framing_errors_answer_with_error_frames_and_leave_no_state() {
    let mut h = harness();
    let cases: [(&[u8], ErrorCode); 6] = [
        (&[], ErrorCode::InvalidLength),
        (&[0x40, 1, 2], ErrorCode::InvalidSequence),
        (&[0x90, 0, 0], ErrorCode::InvalidCommand),
        (&[0x83, 0x40, 0x00], ErrorCode::InvalidLength),
        (&[0x82, 0, 1, 1], ErrorCode::InvalidCommand),
        (&[0xbf, 0, 1, 1], ErrorCode::InvalidCommand),
    ];
    for (fragment, code) in cases {
        h.send_raw(fragment);
        assert_eq!(h.frames(), vec![Frame::error(code)], "{fragment:02x?}");
    }
    // A message interrupted by another initial fragment.
    h.send_raw(&[0x83, 0, 10, 1]);
    h.send_raw(&[0x83, 0, 1, 1]);
    assert_eq!(h.frames(), vec![Frame::error(ErrorCode::InvalidSequence)]);
    // A stalled message times out.
    assert!(!h.dev.is_busy(h.id));
    h.send_raw(&[0x83, 0, 10, 1]);
    assert!(h.dev.is_busy(h.id), "half a message is in progress");
    assert_eq!(h.dev.poll_timeout(), Some(h.now + FRAGMENT_TIMEOUT));
    h.now += FRAGMENT_TIMEOUT;
    h.dev.handle_timeout(h.now);
    assert_eq!(h.frames(), vec![Frame::error(ErrorCode::Timeout)]);
    assert_eq!(h.dev.poll_timeout(), None);
    assert!(!h.dev.is_busy(h.id));

    // PING echoes.
    h.send_raw(&[0x81, 0, 3, 7, 8, 9]);
    assert_eq!(
        h.frames(),
        vec![Frame {
            cmd: Command::Ping,
            data: vec![7, 8, 9]
        }]
    );

    // And the session still works.
    assert!(matches!(h.call(&Request::GetInfo), Response::Info(_)));
}

#[test]
fn malformed_requests_get_typed_error_responses() {
    let mut h = harness();
    for (payload, code) in [
        (vec![0x09], ErrorCode::InvalidCommand),
        (vec![0x01, 0xa0], ErrorCode::InvalidParameter),
        (vec![0x02, 0xa0], ErrorCode::InvalidParameter),
        (vec![0x03, 0xff], ErrorCode::InvalidParameter),
        (vec![], ErrorCode::InvalidParameter),
    ] {
        let frame = Frame::msg(payload.clone());
        for f in frame.fragments(242).unwrap() {
            h.send_raw(&f);
        }
        let frames = h.frames();
        assert_eq!(frames.len(), 1);
        assert_refused(
            Response::decode(Operation::GetInfo, &frames[0].data).unwrap(),
            code,
        );
    }
    assert!(h.events().is_empty());
}

#[test]
fn works_at_the_smallest_and_largest_mtu() {
    for mtu in [23, 517] {
        let mut h = harness();
        h.dev.disconnect(h.id);
        h.id = subscribed(&mut h.dev, mtu);
        h.mtu = mtu;
        let info = GattInfo::decode(&h.dev.gatt_info(h.id)).unwrap();
        assert_eq!(info.max_fragment_len as usize, fragment_len(mtu));
        let (_, chain) = h.attest_and_issue("https://vod.example.com");
        assert!(matches!(h.install(chain), Response::Install(_)));
    }
}

#[test]
fn sessions_are_independent_and_pending_keys_survive_disconnect() {
    let mut h = harness();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    let first = h.id;
    // A half-sent message on the first connection does not disturb a second one.
    h.send_raw(&[0x83, 0, 10, 1]);
    h.dev.disconnect(first);
    h.id = subscribed(&mut h.dev, 185);
    h.mtu = 185;
    assert!(matches!(h.install(chain), Response::Install(_)));
}

#[test]
fn renewal_swaps_the_chain_for_the_same_key_only() {
    let mut h = harness();
    let o = "https://vod.example.com";
    let (att, chain) = h.attest_and_issue(o);
    assert!(matches!(h.install(chain.clone()), Response::Install(_)));
    h.events();
    let name = h.name_for(o);
    let binding = OriginBinding::new(origin(o), b"user-1");
    let spki = att.spki();
    let now = OffsetDateTime::from_unix_timestamp(NOW_UNIX as i64).unwrap();
    let next = h.ca.issue(
        &spki,
        &[name.as_str()],
        Some(&binding),
        now,
        now + TimeDuration::days(14),
    );
    assert_ne!(next, chain);

    let other_key = pki::generate_p256(&SystemRandom::new()).unwrap();
    let other_spki = pki::rcgen_key(&other_key)
        .unwrap()
        .subject_public_key_info();
    let wrong = h.ca.issue(
        &other_spki,
        &[name.as_str()],
        Some(&binding),
        now,
        now + TimeDuration::days(14),
    );
    assert_eq!(
        h.dev.renew(&origin(o), wrong).unwrap_err().code,
        ErrorCode::ChainMismatch
    );
    let rogue = TestCa::new("Rogue").issue(
        &spki,
        &[name.as_str()],
        Some(&binding),
        now,
        now + TimeDuration::days(14),
    );
    assert_eq!(
        h.dev.renew(&origin(o), rogue).unwrap_err().code,
        ErrorCode::UntrustedIssuer
    );
    assert_eq!(h.dev.bindings()[0].chain, chain);

    h.dev.renew(&origin(o), next.clone()).unwrap();
    assert_eq!(h.dev.bindings()[0].chain, next);
    assert_eq!(h.dev.bindings()[0].not_after, NOW_UNIX + 14 * 86_400);
    assert_eq!(
        h.dev.bindings()[0].granted,
        NOW_UNIX,
        "a renewal keeps the grant's date"
    );
    assert_eq!(h.dev.bindings()[0].star_ended, None);
    assert!(matches!(&h.events()[..], [Event::Installed(b)] if b.chain == next));
    assert_eq!(
        h.dev
            .renew(&origin("https://app.example.com"), next)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    // The issuer ends the delegation: the record says when, the binding stays.
    h.dev.end_renewal(&origin(o)).unwrap();
    assert_eq!(h.dev.bindings()[0].star_url, None);
    assert_eq!(h.dev.bindings()[0].star_ended, Some(NOW_UNIX));
}

#[test]
fn test_leaves_with_the_extension_parse_and_verify_with_webpki() {
    // The test issuer's patched leaves are sound DER that x509-parser and webpki accept.
    let mut h = harness();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    let leaf = pki::parse_certificate(&chain[0], "leaf").unwrap();
    leaf.verify_signature(Some(
        pki::parse_certificate(&chain[1], "ca")
            .unwrap()
            .public_key(),
    ))
    .unwrap();
    assert!(leaf.extensions().iter().any(|e| e.oid.as_bytes()
        == localcert_proto::binding::ORIGIN_BINDING_OID_DER
        && !e.critical));
    let name = h.name_for("https://vod.example.com");
    let served = verify::check_chain(&chain, &[h.ca.root.clone()], &[], &[name], NOW_UNIX).unwrap();
    assert_eq!(served, chain);
}

#[test]
#[ignore = "needs the openssl command: CI runs it with `cargo test -- --ignored openssl`"]
fn openssl_accepts_the_test_leaves() {
    let mut h = harness();
    let (_, chain) = h.attest_and_issue("https://vod.example.com");
    let dir = std::env::temp_dir().join(format!("lc-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, der: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, pki::certificates_to_pem(&[der.to_vec()])).unwrap();
        path
    };
    let root = write("root.pem", &h.ca.root);
    let inter = write("inter.pem", &chain[1]);
    let leaf = write("leaf.pem", &chain[0]);
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-attime", &NOW_UNIX.to_string(), "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(localcert_proto::binding::ORIGIN_BINDING_OID),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // Anything at all.
            proptest::collection::vec(any::<u8>(), 0..600),
            // A well-framed MSG with an arbitrary payload (exercises the message decoders).
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(op, body)| {
                let mut data = vec![op % 8];
                data.extend(body);
                let len = data.len() as u16;
                let mut f = vec![0x83];
                f.extend(len.to_be_bytes());
                f.extend(data);
                f
            }),
            // Headers with plausible lengths and sequence numbers.
            (
                any::<u8>(),
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(cmd, len, data)| {
                    let mut f = vec![cmd, (len >> 8) as u8, len as u8];
                    f.extend(data);
                    f
                }),
        ]
    }

    /// One attestation credential for every case: making keys per case would dominate.
    fn credential() -> &'static factory::DeviceCredential {
        static CREDENTIAL: std::sync::OnceLock<factory::DeviceCredential> =
            std::sync::OnceLock::new();
        CREDENTIAL.get_or_init(|| {
            let root = factory::new_root("Test Manufacturer").unwrap();
            factory::new_device(&root, "Media Server", "0001").unwrap()
        })
    }

    proptest! {
        // Cases from PROPTEST_CASES (CI runs 10,000), 256 by default.
        #![proptest_config(ProptestConfig::default())]

        /// Whatever arrives, the engine answers within the MTU, never panics, keeps no key
        /// and stays usable.
        #[test]
        fn arbitrary_fragments_are_harmless(
            mtu in 23u16..=517,
            fragments in proptest::collection::vec(fragment(), 1..12),
        ) {
            let cred = credential();
            let signer = FileSigner::new(&cred.key, cred.chain.clone()).unwrap();
            let mut dev = Device::new(
                DeviceConfig::new("Media Server"),
                Box::new(signer),
                Box::new(DenyAll),
                Box::new(MemoryStore::new()),
            );
            let id = subscribed(&mut dev, mtu);
            let mut now = Instant::now();
            for f in &fragments {
                dev.handle_fragment(id, now, f);
                while let Some(out) = dev.poll_fragment(id) {
                    prop_assert!(out.len() <= fragment_len(mtu));
                }
            }
            now += FRAGMENT_TIMEOUT;
            dev.handle_timeout(now);
            while dev.poll_fragment(id).is_some() {}
            prop_assert!(dev.poll_event().is_none(), "no key, no binding");
            prop_assert!(!dev.is_busy(id));
            dev.handle_fragment(id, now, &[0x83, 0, 1, 0x01]);
            let mut r = Reassembler::new();
            let frame = std::iter::from_fn(|| dev.poll_fragment(id))
                .find_map(|f| r.handle_fragment(now, &f).unwrap());
            let response = Response::decode(Operation::GetInfo, &frame.unwrap().data).unwrap();
            prop_assert!(matches!(response, Response::Info(_)));
        }
    }
}

mod key_lifecycle;
mod revision2;
