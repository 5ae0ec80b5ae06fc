//! The whole provisioning flow: the issuer on loopback, a device engine over the in-memory link,
//! its HTTPS server on loopback, and the UA in between.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use localcert_ua::LinkProfile;
use localcert_ua::provision::{self, Progress, Step};
use rustls::pki_types::pem::PemObject;

#[derive(Default)]
struct Steps(Vec<Step>, u32);

impl Progress for Steps {
    fn start(&mut self, _: Step) {}
    fn done(&mut self, step: Step, _: &str) {
        self.0.push(step);
    }
    fn retrying(&mut self, _: u32, _: &str) {
        self.1 += 1;
    }
}

#[tokio::test]
async fn provisions_over_both_profiles() {
    let world = World::start().await;
    for profile in LinkProfile::ALL {
        let mut connector = world.connector(profile.clone(), None);
        let mut steps = Steps::default();
        let resolver = world.resolver_for_device();
        let (outcome, stats) =
            provision::provision(&world.plan(), &mut connector, &resolver, &mut steps)
                .await
                .unwrap();
        assert_eq!(steps.0, Step::ALL);
        assert_eq!(outcome.attempts, 1);
        assert_eq!(outcome.check.body, common::BODY.as_bytes());
        assert_eq!(outcome.check.allow_origin, common::ORIGIN);
        let stats = stats.unwrap();
        // Issue 12's budget for one provisioning, both directions, payload and framing.
        assert!(stats.bytes_up + stats.bytes_down <= 2000, "{stats:?}");
        // The status subscription, GET_INFO (the info read pipelined beside it), ATTEST,
        // INSTALL: four dependent turns, and no flow beats their floor.
        assert_eq!(stats.turns, 4, "{stats:?}");
        assert!(
            stats.elapsed >= profile.turn_floor(stats.turns),
            "{stats:?}"
        );
        eprintln!("{}: {stats:?}", profile.name);
    }
}

/// A BLE drop at every fragment of the flow, on both profiles: the UA starts again from
/// GET_INFO, the second attempt succeeds, and the device is left with no pending key.
#[tokio::test]
async fn a_drop_at_every_fragment_is_recovered() {
    let world = World::start().await;
    let resolver = world.resolver_for_device();
    for profile in LinkProfile::ALL {
        let fragments = {
            let mut connector = world.connector(profile.clone(), None);
            let (_, stats) = provision::provision(
                &world.plan(),
                &mut connector,
                &resolver,
                &mut Steps::default(),
            )
            .await
            .unwrap();
            let stats = stats.unwrap();
            (stats.writes + stats.notifications) as usize
        };
        // DER signatures vary by a byte or two, so a flow may take a fragment more or less
        // than the one measured: go a little past the end, and accept an undropped flow only
        // when the drop point lay beyond its last fragment.
        for n in 0..fragments + 2 {
            let mut connector = world.connector(profile.clone(), Some(n));
            let mut steps = Steps::default();
            let (outcome, stats) =
                provision::provision(&world.plan(), &mut connector, &resolver, &mut steps)
                    .await
                    .unwrap_or_else(|e| panic!("{}: drop at fragment {n}: {e}", profile.name));
            if outcome.attempts == 1 {
                let stats = stats.unwrap();
                let crossed = (stats.writes + stats.notifications) as usize;
                assert!(
                    crossed <= n,
                    "{}: no drop at {n} of {crossed}",
                    profile.name
                );
                continue;
            }
            assert_eq!(
                (outcome.attempts, steps.1, connector.connections()),
                (2, 1, 2),
                "{}: {n}",
                profile.name
            );
            assert_eq!(outcome.check.allow_origin, common::ORIGIN);
            // No session is open and no pending key waits: the engine has nothing scheduled.
            assert_eq!(
                world.agent.with_device(|d| d.poll_timeout()),
                None,
                "{}: {n}",
                profile.name
            );
        }
    }
}

/// `--star`: the order uses the `star` profile, and the device is given the URL that serves the
/// current certificate, where the next one appears after a renewal.
#[tokio::test]
async fn star_provisioning_hands_the_device_its_renewal_url() {
    let world = World::start().await;
    let mut plan = world.plan();
    plan.star = true;
    let mut connector = world.connector(LinkProfile::MTU247_15MS_2M, None);
    let (outcome, _) = provision::provision(
        &plan,
        &mut connector,
        &world.resolver_for_device(),
        &mut Steps::default(),
    )
    .await
    .unwrap();
    let binding = world
        .agent
        .with_device(|d| d.bindings().first().expect("installed").clone());
    let url = binding.star_url.clone().expect("a STAR binding");
    assert!(url.contains("/acme/star/"), "{url}");
    assert_eq!(binding.fingerprint(), outcome.fingerprint);
    // Lifetime from the star profile: one day, not the 7-day plain policy.
    assert_eq!(binding.not_after as i64, outcome.not_after);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        binding.not_after <= now + 86_400 + 60,
        "{} vs {now}",
        binding.not_after
    );
}

/// Revoking the relying party revokes the device's certificate: the issuer's CRL lists it, and
/// the endpoint check with that CRL fails while the same check without it still passes.
#[tokio::test]
async fn a_revoked_origin_fails_the_check_with_the_issuer_crl() {
    use localcert_issuer::store::Store;
    use localcert_ua::verify::{self, CheckError, Expectation};

    let world = World::start().await;
    let mut connector = world.connector(LinkProfile::MTU247_15MS_2M, None);
    let (outcome, _) = provision::provision(
        &world.plan(),
        &mut connector,
        &world.resolver_for_device(),
        &mut Steps::default(),
    )
    .await
    .unwrap();
    let tls_root = rustls::pki_types::CertificateDer::from_pem_file(&world.tls_root)
        .unwrap()
        .as_ref()
        .to_vec();
    let crl_url = world.directory_url.replace("/acme/directory", "/crl");
    let mut expect = Expectation {
        name: outcome.name.clone(),
        origin: world.plan().origin,
        issuer_roots: vec![world.issuer_root.clone()],
        pinned_spki: Some(outcome.spki.clone()),
        user_handle: None,
        path: "/".into(),
        crls: vec![
            verify::fetch(&crl_url, std::slice::from_ref(&tls_root))
                .await
                .unwrap(),
        ],
    };
    verify::check(outcome.endpoint, &expect)
        .await
        .expect("not revoked yet");

    let summary = world
        .store
        .revoke_relying_party(&world.plan().origin, std::time::SystemTime::now())
        .unwrap()
        .expect("the origin was registered");
    assert!(summary.certificates >= 1, "{summary:?}");
    expect.crls = vec![
        verify::fetch(&crl_url, std::slice::from_ref(&tls_root))
            .await
            .unwrap(),
    ];
    let error = verify::check(outcome.endpoint, &expect).await.unwrap_err();
    assert!(matches!(&error, CheckError::Tls { .. }), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("revoked"),
        "{error}"
    );
}
