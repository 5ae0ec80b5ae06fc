//! The device with its keys in a PKCS#11 token (SoftHSM2): the attestation key made in the
//! token by the factory, a whole provisioning over the in-memory link against the real issuer
//! with the TLS key generated in the token, HTTPS served with the token's key, the key's value
//! refused by the token, and a store that holds only handles.
//!
//! `tests/softhsm/run.sh` makes the token and runs this test with `--ignored`; it then checks
//! the same token and store with other tools (pkcs11-tool, the daemon, openssl). Run alone
//! without the token's variables, the test fails: it is never counted as a pass without a
//! token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::World;
use localcert_device::factory;
use localcert_device::keys::{self, DeviceKey, KeyProvider};
use localcert_device::pkcs11::{TLS_KEY_LABEL, TokenConfig, TokenKeys, TokenPin};
use localcert_device::presence::AutoApprove;
use localcert_device::signer::KeySigner;
use localcert_device::store::DirStore;
use localcert_device::{DeviceBuilder, pki};
use localcert_ua::verify;

/// What run.sh hands over.
struct TokenEnv {
    module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
    /// Where the store, the attestation chain and the issuer root are left for run.sh.
    work: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("${name} is not set: run tests/softhsm/run.sh, which makes a SoftHSM2 token")
    })
}

impl TokenEnv {
    fn from_env() -> Self {
        Self {
            module: var("LOCALCERT_PKCS11_MODULE").into(),
            token_label: var("LOCALCERT_PKCS11_TOKEN"),
            pin_file: var("LOCALCERT_PKCS11_PIN_FILE").into(),
            work: var("LOCALCERT_SOFTHSM_WORK").into(),
        }
    }

    fn open(&self) -> TokenKeys {
        let pin = TokenPin::new(&std::fs::read_to_string(&self.pin_file).unwrap()).unwrap();
        TokenKeys::open(&TokenConfig {
            module: &self.module,
            token_label: &self.token_label,
            pin: &pin,
        })
        .unwrap()
    }
}

fn token_id(key: &DeviceKey) -> String {
    match key {
        DeviceKey::Token(id) => hex::encode(&id.0),
        DeviceKey::Software(_) => panic!("a software key where a token key was expected"),
    }
}

#[tokio::test]
#[ignore = "needs a SoftHSM2 token: tests/softhsm/run.sh runs it"]
async fn keys_in_the_token_provision_serve_and_never_leave_it() {
    let env = TokenEnv::from_env();
    let token = Arc::new(env.open());
    let keys: Arc<dyn KeyProvider> = token.clone();

    // The factory makes the attestation key in the token and certifies it with the
    // manufacturer root the issuer trusts.
    let (cert, key) = factory::ca_paths(&common::fixtures().join("manufacturer"), "root");
    let manufacturer = factory::read_ca(&cert, &key).unwrap();
    let attestation_label = "localcert-attestation";
    let (attestation_key, chain) = factory::new_device_in_token(
        &manufacturer,
        "Media Server 1",
        "hsm-0001",
        &token,
        attestation_label,
    )
    .unwrap();
    assert!(
        factory::new_device_in_token(&manufacturer, "M", "2", &token, attestation_label).is_err(),
        "a second attestation key under the same label is refused"
    );

    let store_dir = env.work.join("store");
    let (store, _) = DirStore::open(&store_dir).unwrap();
    let signer = KeySigner::new(keys.clone(), attestation_key.clone(), chain.clone()).unwrap();
    let world = World::start_with(vec![], |config| {
        DeviceBuilder::new(config, Box::new(signer))
            .keys(keys.clone())
            .store(store)
            .presence(AutoApprove)
    })
    .await;

    // A whole provisioning: ATTEST signs with the token's attestation key, the TLS key and its
    // CSR are made in the token, INSTALL stores a handle, HTTPS signs in the token.
    let first = world.provision(&world.plan()).await.unwrap();
    let binding = world.agent.with_device(|d| d.bindings()[0].clone());
    let tls_id = token_id(&binding.key);
    assert_eq!(keys::spki(keys.as_ref(), &binding.key).unwrap(), first.spki);
    let expectation = world.expectation(&first, common::ORIGIN);
    let report = verify::check(first.endpoint, &expectation).await.unwrap();
    assert_eq!(report.fingerprint, binding.fingerprint());
    assert_eq!(report.fingerprint, first.fingerprint);
    assert_eq!(report.body, common::BODY.as_bytes());

    // The token refuses to give out either private key.
    for key in [&attestation_key, &binding.key] {
        let protection = token.protection(key).unwrap();
        assert!(protection.value_refused, "{key:?}: {protection:?}");
        assert_eq!(protection.sensitive, Some(true), "{key:?}");
        assert_eq!(protection.extractable, Some(false), "{key:?}");
        assert_eq!(protection.never_extractable, Some(true), "{key:?}");
    }

    // The store holds the key's id and nothing of the key.
    let files: Vec<_> = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["token_key_id"], tls_id.as_str());
    assert!(record.get("key").is_none(), "{text}");
    // The PKCS#8 header of an EC key (version 0, id-ecPublicKey) is nowhere in it.
    assert!(!text.contains("020100301306072a8648ce3d0201"), "{text}");

    // Provisioning the origin again makes a new key and deletes the one it replaces; the
    // token keeps one TLS key per binding.
    let second = world.provision(&world.plan()).await.unwrap();
    assert_ne!(second.spki, first.spki);
    let binding = world.agent.with_device(|d| d.bindings()[0].clone());
    let ids: Vec<String> = token
        .ids_labelled(TLS_KEY_LABEL)
        .unwrap()
        .iter()
        .map(|id| hex::encode(&id.0))
        .collect();
    assert_eq!(ids, vec![token_id(&binding.key)]);
    assert!(!ids.contains(&tls_id));

    // For run.sh: the daemon restarts on this token and store and must serve this binding.
    std::fs::write(
        env.work.join("attestation.pem"),
        pki::certificates_to_pem(&chain),
    )
    .unwrap();
    std::fs::write(
        env.work.join("issuer-root.pem"),
        pki::certificates_to_pem(std::slice::from_ref(&world.issuer_root)),
    )
    .unwrap();
    std::fs::write(
        env.work.join("binding.env"),
        format!(
            "NAME={}\nFINGERPRINT={}\nTLS_KEY_ID={}\nATTESTATION_LABEL={attestation_label}\n",
            binding.name,
            hex::encode(binding.fingerprint()),
            token_id(&binding.key),
        ),
    )
    .unwrap();
}
