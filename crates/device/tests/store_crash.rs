//! Crash test for the directory store: a child process installs, renews and removes bindings
//! in a loop and is killed (SIGKILL) at a random moment, hundreds of times; after every kill
//! the store must load with each binding exactly in its old or its new state, nothing
//! unusable, and any half-written leftover reported and cleaned.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use localcert_device::pki::SecretKey;
use localcert_device::store::{Binding, BindingStore, DirStore};
use localcert_proto::message::CorsPolicy;
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

const CHILD_ENV: &str = "LOCALCERT_CRASH_CHILD_DIR";
const ROUNDS: usize = 300;

fn binding(origin: &str, name: &str, key: &rcgen::KeyPair, serial: u8) -> Binding {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.serial_number = Some(vec![serial].into());
    let cert = params.self_signed(key).unwrap();
    Binding {
        granted: 0,
        star_ended: None,
        origin: Origin::parse(origin).unwrap(),
        name: LocalName::parse(name).unwrap(),
        key: SecretKey::from_pkcs8_der(key.serialize_der()).into(),
        // A long chain makes each write big enough to be interrupted mid-way.
        chain: vec![cert.der().to_vec(); 3],
        cors: CorsPolicy {
            methods: vec!["GET".into()],
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: serial % 2 == 0,
            max_age: u64::from(serial),
        },
        star_url: Some(format!("https://issuer.example/star/{serial}")),
        user_handle_digest: [serial; 32],
        not_after: 1_800_000_000 + u64::from(serial),
    }
}

fn make_template(dir: &Path) {
    // DirStore keeps one file per origin, so the two versions of A live in two templates.
    let key_a = rcgen::KeyPair::generate().unwrap();
    let key_b = rcgen::KeyPair::generate().unwrap();
    let (mut one, _) = DirStore::open(dir.join("one")).unwrap();
    one.put(binding("https://a.example", "a.local", &key_a, 1))
        .unwrap();
    one.put(binding("https://b.example", "b.local", &key_b, 3))
        .unwrap();
    let (mut two, _) = DirStore::open(dir.join("two")).unwrap();
    two.put(binding("https://a.example", "a.local", &key_a, 2))
        .unwrap();
}

/// The states a binding may be in: A old (1) or renewed (2), B installed or not.
fn load_states(template: &Path) -> (Binding, Binding, Binding) {
    let (a1, b) = {
        let (store, _) = DirStore::open(template.join("one")).unwrap();
        (store.bindings()[0].clone(), store.bindings()[1].clone())
    };
    let (store, _) = DirStore::open(template.join("two")).unwrap();
    let a2 = store.bindings()[0].clone();
    (a1, a2, b)
}

/// Not a test on its own: the child process the crash test kills.
#[test]
#[ignore = "run by store_survives_being_killed_at_random_points"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let (a1, a2, b) = load_states(&dir.join("template"));
    let (mut store, _) = DirStore::open(dir.join("store")).unwrap();
    println!("READY");
    loop {
        store.put(a2.clone()).unwrap(); // renewal
        store.put(b.clone()).unwrap(); // install
        store.put(a1.clone()).unwrap(); // renewal back
        store.remove(&b.origin).unwrap(); // remove
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn store_survives_being_killed_at_random_points() {
    let dir = std::env::temp_dir().join(format!("lc-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make_template(&dir.join("template"));
    let (a1, a2, b) = load_states(&dir.join("template"));
    {
        let (mut store, _) = DirStore::open(dir.join("store")).unwrap();
        store.put(a1.clone()).unwrap();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = XorShift(seed | 1);
    let mut leftovers = 0;
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.contains("READY"))),
            "child did not start"
        );
        std::thread::sleep(Duration::from_micros(rng.next() % 20_000));
        child.kill().unwrap();
        child.wait().unwrap();

        let (store, report) = DirStore::open(dir.join("store")).unwrap();
        assert!(
            report.unusable.is_empty(),
            "round {round} (seed {seed}): {report:?}"
        );
        leftovers += report.leftovers.len();
        let bindings = store.bindings();
        let a = bindings.iter().find(|x| x.origin == a1.origin);
        assert!(
            a == Some(&a1) || a == Some(&a2),
            "round {round} (seed {seed}): A is neither old nor new"
        );
        let bb = bindings.iter().find(|x| x.origin == b.origin);
        assert!(bb.is_none() || bb == Some(&b), "round {round}: B is torn");
        assert_eq!(bindings.len(), 1 + usize::from(bb.is_some()));
        seen.insert((a == Some(&a2), bb.is_some()));
        // Nothing else is left in the directory after a load.
        let files = std::fs::read_dir(dir.join("store")).unwrap().count();
        assert_eq!(files, bindings.len(), "round {round}: stray files");
    }
    eprintln!(
        "{ROUNDS} kills (seed {seed}): {} of 4 states seen, {leftovers} half-written leftovers cleaned",
        seen.len()
    );
    assert!(
        seen.len() >= 2,
        "the kills did not land at different points"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
