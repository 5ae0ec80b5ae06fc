//! Whatever arrives from the network, the decoders and the server answer with a value or a
//! refusal, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use common::client::BASE;
use common::{Manufacturer, TlsKey};
use localcert_issuer::acme::{AcmeServer, Policy};
use localcert_issuer::ca::{self, CaFiles, IssuingCa};
use localcert_issuer::jws::Jws;
use localcert_issuer::store::SqliteStore;
use localcert_issuer::validate::{self, ChallengeContext, TrustConfig};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;
use proptest::prelude::*;

struct Fixture {
    _dir: tempfile::TempDir,
    server: AcmeServer,
    trust: TrustConfig,
    origin: Origin,
    names: Vec<LocalName>,
    spki: Vec<u8>,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let files = CaFiles::in_dir(dir.path());
        ca::init_ca(&files, "prop", now).unwrap();
        let maker = Manufacturer::new("Acme");
        let trust = TrustConfig::new(std::slice::from_ref(&maker.root_der), []).unwrap();
        let server_trust = TrustConfig::new(std::slice::from_ref(&maker.root_der), []).unwrap();
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let server = AcmeServer::new(
            store,
            IssuingCa::load(&files).unwrap(),
            server_trust,
            Policy::default(),
            BASE,
        );
        let origin = Origin::parse("https://vod.example.com").unwrap();
        let names = vec![maker.device("1").name("tv", &origin)];
        Fixture {
            _dir: dir,
            server,
            trust,
            origin,
            names,
            spki: TlsKey::new().spki(),
            now,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn jws_parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Jws::parse(&body);
    }

    #[test]
    fn attestation_check_never_panics(att in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let f = fixture();
        let ctx = ChallengeContext {
            origin: &f.origin,
            key_authorization: "t.k",
            names: &f.names,
            expires: f.now + Duration::from_secs(60),
            already_answered: false,
        };
        prop_assert!(validate::check_attestation(&att, &ctx, &f.trust, f.now).is_err());
    }

    #[test]
    fn csr_check_never_panics(csr in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let f = fixture();
        prop_assert!(validate::check_csr(&csr, &f.names, &f.spki).is_err());
    }

    #[test]
    fn server_answers_anything_with_a_refusal(
        method in prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("PUT")],
        path in "(/acme/(new-account|new-order|order/[a-z]{0,4}|chall/x|star/x|cert/x|revoke-cert)|/crl|/[ -~]{0,20})",
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let f = fixture();
        let response = f.server.handle(method, &path, Some("application/jose+json"), &body, f.now);
        let ok_get = method == "GET" && (path == "/crl" || path == "/acme/directory");
        prop_assert!(response.status >= 400 || ok_get, "{} {} -> {}", method, path, response.status);
        prop_assert!(response.header("replay-nonce").is_some());
    }
}
