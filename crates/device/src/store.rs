//! Origin bindings and where they are kept.
//!
//! A binding is everything the device needs to serve one origin: the TLS key, the issued
//! chain, the CORS policy and the STAR renewal URL. [`BindingStore`] is the pluggable edge;
//! [`MemoryStore`] keeps bindings in memory (tests, harnesses), [`DirStore`] in one directory,
//! crash-safe.

use localcert_proto::message::{BindingSummary, CorsPolicy};
use localcert_proto::name::LocalName;
use localcert_proto::origin::Origin;

use crate::error::Error;
use crate::keys::{DeviceKey, TokenKeyId};
use crate::pki::SecretKey;

/// One installed origin binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The web origin.
    pub origin: Origin,
    /// The `.local` name served for it.
    pub name: LocalName,
    /// The TLS key (P-256): PKCS#8 bytes, or the handle of a key in a token.
    pub key: DeviceKey,
    /// The issued chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The CORS policy for the origin.
    pub cors: CorsPolicy,
    /// The STAR `star-certificate` URL, when the certificate is auto-renewed.
    pub star_url: Option<String>,
    /// SHA-256 of the user handle the leaf is bound to.
    pub user_handle_digest: [u8; 32],
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// When the origin was granted the binding (its INSTALL), seconds since the Unix epoch;
    /// STAR renewals keep it. 0 in records written before it was kept.
    pub granted: u64,
    /// When the issuer ended the STAR delegation (the device stopped renewing), if it did.
    pub star_ended: Option<u64>,
}

impl Binding {
    /// SHA-256 of the leaf certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        crate::pki::sha256(self.chain.first().map_or(&[][..], Vec::as_slice))
    }

    /// The summary LIST reports.
    pub fn summary(&self) -> BindingSummary {
        BindingSummary {
            origin: self.origin.clone(),
            name: self.name.clone(),
            fingerprint: self.fingerprint(),
            not_after: self.not_after,
            star: self.star_url.is_some(),
        }
    }
}

/// Where bindings live. Writes must be all-or-nothing.
pub trait BindingStore: Send {
    /// All bindings, ordered by origin.
    fn bindings(&self) -> &[Binding];

    /// Adds a binding or replaces the one for the same origin.
    fn put(&mut self, binding: Binding) -> Result<(), Error>;

    /// Removes the binding for `origin`; `None` if there was none.
    fn remove(&mut self, origin: &Origin) -> Result<Option<Binding>, Error>;

    /// The binding for `origin`.
    fn get(&self, origin: &Origin) -> Option<&Binding> {
        self.bindings().iter().find(|b| &b.origin == origin)
    }
}

fn insert_sorted(bindings: &mut Vec<Binding>, binding: Binding) {
    match bindings.binary_search_by(|b| b.origin.cmp(&binding.origin)) {
        Ok(i) => {
            if let Some(slot) = bindings.get_mut(i) {
                *slot = binding;
            }
        }
        Err(i) => bindings.insert(i, binding),
    }
}

/// Bindings in memory only.
#[derive(Debug, Default)]
pub struct MemoryStore {
    bindings: Vec<Binding>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BindingStore for MemoryStore {
    fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    fn put(&mut self, binding: Binding) -> Result<(), Error> {
        insert_sorted(&mut self.bindings, binding);
        Ok(())
    }

    fn remove(&mut self, origin: &Origin) -> Result<Option<Binding>, Error> {
        let index = self.bindings.iter().position(|b| &b.origin == origin);
        Ok(index.map(|i| self.bindings.remove(i)))
    }
}

const BINDING_PREFIX: &str = "binding-";
const BINDING_SUFFIX: &str = ".json";
/// A binding file is a key, a chain of at most a few certificates and a CORS policy: a few KiB.
const MAX_BINDING_FILE_LEN: u64 = 64 * 1024;
const FORMAT_VERSION: u32 = 1;
/// A `CKA_ID` this long is a handle, not data.
const MAX_TOKEN_KEY_ID_LEN: usize = 64;

/// What [`DirStore::open`] found besides good bindings.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Temp files a crash left mid-write; removed (the old file was kept intact).
    pub leftovers: Vec<std::path::PathBuf>,
    /// Files that could not be used, with the reason; left in place for inspection.
    pub unusable: Vec<(std::path::PathBuf, String)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CorsRecord {
    methods: Vec<String>,
    allow_headers: Vec<String>,
    expose_headers: Vec<String>,
    allow_credentials: bool,
    max_age: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingRecord {
    version: u32,
    origin: String,
    name: String,
    /// A software key: PKCS#8, hex. The file is 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// A token key: its `CKA_ID`, hex (a handle; the key never leaves the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_key_id: Option<String>,
    /// DER certificates, hex, leaf first.
    chain: Vec<String>,
    cors: CorsRecord,
    star_url: Option<String>,
    user_handle_digest: String,
    not_after: u64,
    #[serde(default)]
    granted: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    star_ended: Option<u64>,
}

impl BindingRecord {
    fn from_binding(b: &Binding) -> Self {
        Self {
            version: FORMAT_VERSION,
            origin: b.origin.as_str().to_owned(),
            name: b.name.as_str().to_owned(),
            key: match &b.key {
                DeviceKey::Software(k) => Some(hex::encode(k.pkcs8_der())),
                DeviceKey::Token(_) => None,
            },
            token_key_id: match &b.key {
                DeviceKey::Software(_) => None,
                DeviceKey::Token(id) => Some(hex::encode(&id.0)),
            },
            chain: b.chain.iter().map(hex::encode).collect(),
            cors: CorsRecord {
                methods: b.cors.methods.clone(),
                allow_headers: b.cors.allow_headers.clone(),
                expose_headers: b.cors.expose_headers.clone(),
                allow_credentials: b.cors.allow_credentials,
                max_age: b.cors.max_age,
            },
            star_url: b.star_url.clone(),
            user_handle_digest: hex::encode(b.user_handle_digest),
            not_after: b.not_after,
            granted: b.granted,
            star_ended: b.star_ended,
        }
    }

    fn into_binding(self) -> Result<Binding, String> {
        if self.version != FORMAT_VERSION {
            return Err(format!("unknown format version {}", self.version));
        }
        let origin = Origin::parse(&self.origin).map_err(|e| format!("origin: {e}"))?;
        let name = LocalName::parse(&self.name).map_err(|e| format!("name: {e}"))?;
        let key = match (&self.key, &self.token_key_id) {
            (Some(key), None) => DeviceKey::Software(SecretKey::from_pkcs8_der(
                hex::decode(key).map_err(|_| "key: not hex")?,
            )),
            (None, Some(id)) => {
                let id = hex::decode(id).map_err(|_| "token_key_id: not hex")?;
                if id.is_empty() || id.len() > MAX_TOKEN_KEY_ID_LEN {
                    return Err("token_key_id: 1 to 64 bytes".into());
                }
                DeviceKey::Token(TokenKeyId(id))
            }
            _ => return Err("exactly one of key and token_key_id".into()),
        };
        let chain = self
            .chain
            .iter()
            .map(hex::decode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "chain: not hex")?;
        let leaf = chain.first().ok_or("chain: empty")?;
        // A token key is checked against its leaf when it is served (the token is needed).
        if let DeviceKey::Software(secret) = &key {
            crate::pki::check_key_matches(secret, leaf, "leaf").map_err(|e| e.to_string())?;
        }
        let user_handle_digest = hex::decode(&self.user_handle_digest)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or("user_handle_digest: not 32 hex bytes")?;
        Ok(Binding {
            granted: self.granted,
            star_ended: self.star_ended,
            origin,
            name,
            key,
            chain,
            cors: CorsPolicy {
                methods: self.cors.methods,
                allow_headers: self.cors.allow_headers,
                expose_headers: self.cors.expose_headers,
                allow_credentials: self.cors.allow_credentials,
                max_age: self.cors.max_age,
            },
            star_url: self.star_url,
            user_handle_digest,
            not_after: self.not_after,
        })
    }
}

/// Bindings in one directory: one file per binding (key, chain, CORS policy and STAR URL
/// together, so one atomic rename switches all of them), mode 0600.
#[derive(Debug)]
pub struct DirStore {
    dir: std::path::PathBuf,
    bindings: Vec<Binding>,
}

fn binding_file_name(origin: &Origin) -> String {
    let digest = crate::pki::sha256(origin.as_str().as_bytes());
    let short = digest.get(..16).unwrap_or(&digest);
    format!("{BINDING_PREFIX}{}{BINDING_SUFFIX}", hex::encode(short))
}

impl DirStore {
    /// Opens (creating, mode 0700) the store directory and loads it. Half-written temp files
    /// are removed and reported; unusable files are reported and skipped, never fatal.
    pub fn open(dir: impl Into<std::path::PathBuf>) -> Result<(Self, LoadReport), Error> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let mut report = LoadReport::default();
        let mut bindings = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(Error::io("listing", &dir))?;
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
            else {
                continue;
            };
            if file_name.ends_with(crate::files::TEMP_SUFFIX) {
                tracing::warn!(path = %path.display(), "removing a half-written leftover");
                let _ = std::fs::remove_file(&path);
                report.leftovers.push(path);
            } else if file_name.starts_with(BINDING_PREFIX) && file_name.ends_with(BINDING_SUFFIX) {
                match load_binding(&path) {
                    Ok(b) if binding_file_name(&b.origin) == file_name => {
                        insert_sorted(&mut bindings, b)
                    }
                    Ok(_) => report
                        .unusable
                        .push((path, "file name does not match its origin".into())),
                    Err(reason) => {
                        tracing::warn!(path = %path.display(), %reason, "unusable binding file");
                        report.unusable.push((path, reason));
                    }
                }
            }
        }
        Ok((Self { dir, bindings }, report))
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Removes every binding (factory reset of the agent's state).
    pub fn reset(&mut self) -> Result<(), Error> {
        let origins: Vec<Origin> = self.bindings.iter().map(|b| b.origin.clone()).collect();
        for origin in origins {
            self.remove(&origin)?;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(dir).map_err(Error::io("creating", dir))?;
        // An existing directory others can read would expose the keys: close it.
        let mode = std::fs::metadata(dir)
            .map_err(Error::io("inspecting", dir))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "store directory was open to others; setting 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::io("restricting", dir))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))
}

fn load_binding(path: &std::path::Path) -> Result<Binding, String> {
    let bytes = crate::files::read_private(path, MAX_BINDING_FILE_LEN)?;
    let record: BindingRecord =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a binding record: {e}"))?;
    record.into_binding()
}

impl BindingStore for DirStore {
    fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    fn put(&mut self, binding: Binding) -> Result<(), Error> {
        let record = BindingRecord::from_binding(&binding);
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::Config(format!("encoding binding: {e}")))?;
        let path = self.dir.join(binding_file_name(&binding.origin));
        crate::files::write_atomic(&path, &bytes, true)?;
        insert_sorted(&mut self.bindings, binding);
        Ok(())
    }

    fn remove(&mut self, origin: &Origin) -> Result<Option<Binding>, Error> {
        let Some(index) = self.bindings.iter().position(|b| &b.origin == origin) else {
            return Ok(None);
        };
        crate::files::remove_durably(&self.dir.join(binding_file_name(origin)))?;
        Ok(Some(self.bindings.remove(index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(origin: &str, serial: u8) -> Binding {
        let key = rcgen::KeyPair::generate().unwrap();
        let name = format!("n{serial}.local");
        let cert = rcgen::CertificateParams::new(vec![name.clone()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Binding {
            granted: 0,
            star_ended: None,
            origin: Origin::parse(origin).unwrap(),
            name: LocalName::parse(&name).unwrap(),
            key: DeviceKey::Software(SecretKey::from_pkcs8_der(key.serialize_der())),
            chain: vec![cert.der().to_vec()],
            cors: CorsPolicy {
                methods: vec!["GET".into()],
                allow_headers: vec!["x-a".into()],
                expose_headers: vec![],
                allow_credentials: true,
                max_age: 5,
            },
            star_url: None,
            user_handle_digest: [serial; 32],
            not_after: 7,
        }
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lc-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn dir_store_round_trips_and_reports_bad_files() {
        let dir = temp_dir("rt");
        let a = binding("https://a.example", 1);
        let b = binding("https://b.example", 2);
        {
            let (mut store, report) = DirStore::open(&dir).unwrap();
            assert!(report.leftovers.is_empty() && report.unusable.is_empty());
            store.put(b.clone()).unwrap();
            store.put(a.clone()).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            DirStore::open(&dir).unwrap();
            let path = dir.join(binding_file_name(&a.origin));
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "binding files hold keys");
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        std::fs::write(dir.join("binding-0000.json.tmp"), b"{half").unwrap();
        std::fs::write(dir.join("binding-ffff.json"), b"not json").unwrap();
        let copied = dir.join("binding-eeee.json");
        std::fs::copy(dir.join(binding_file_name(&a.origin)), &copied).unwrap();

        let (mut store, report) = DirStore::open(&dir).unwrap();
        assert_eq!(store.bindings(), &[a.clone(), b.clone()][..]);
        assert_eq!(report.leftovers, vec![dir.join("binding-0000.json.tmp")]);
        assert!(!dir.join("binding-0000.json.tmp").exists());
        let unusable: Vec<_> = report.unusable.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(unusable, vec![copied, dir.join("binding-ffff.json")]);

        assert_eq!(store.remove(&a.origin).unwrap(), Some(a.clone()));
        assert_eq!(store.remove(&a.origin).unwrap(), None);
        store.reset().unwrap();
        let (store, _) = DirStore::open(&dir).unwrap();
        assert!(store.bindings().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused_and_open_files_are_closed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("links");
        let a = binding("https://a.example", 1);
        let b = binding("https://b.example", 2);
        {
            let (mut store, _) = DirStore::open(&dir).unwrap();
            store.put(a.clone()).unwrap();
            store.put(b.clone()).unwrap();
        }
        // b's file moves outside the store and a symlink takes its place.
        let outside = temp_dir("links-outside");
        std::fs::create_dir_all(&outside).unwrap();
        let b_path = dir.join(binding_file_name(&b.origin));
        std::fs::rename(&b_path, outside.join("b.json")).unwrap();
        std::os::unix::fs::symlink(outside.join("b.json"), &b_path).unwrap();
        // a's file is left readable by everyone.
        let a_path = dir.join(binding_file_name(&a.origin));
        std::fs::set_permissions(&a_path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let (store, report) = DirStore::open(&dir).unwrap();
        assert_eq!(store.bindings(), &[a.clone()][..]);
        assert_eq!(report.unusable.len(), 1);
        assert_eq!(report.unusable[0].0, b_path);
        assert!(
            report.unusable[0].1.contains("symlink"),
            "{}",
            report.unusable[0].1
        );
        let mode = std::fs::metadata(&a_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An oversized file is refused before it is read.
        std::fs::write(
            b_path.with_file_name("binding-dddd.json"),
            vec![b' '; 70_000],
        )
        .unwrap();
        std::fs::remove_file(&b_path).unwrap();
        let (_, report) = DirStore::open(&dir).unwrap();
        assert!(
            report.unusable[0].1.contains("over the limit"),
            "{:?}",
            report.unusable
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_key_that_does_not_match_its_chain_is_unusable() {
        let dir = temp_dir("mismatch");
        let mut a = binding("https://a.example", 1);
        a.chain = binding("https://a.example", 2).chain;
        let (mut store, _) = DirStore::open(&dir).unwrap();
        store.put(a).unwrap();
        let (store, report) = DirStore::open(&dir).unwrap();
        assert!(store.bindings().is_empty());
        assert_eq!(report.unusable.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_token_key_is_stored_as_its_id_only() {
        let dir = temp_dir("token");
        let mut a = binding("https://a.example", 1);
        a.key = DeviceKey::Token(TokenKeyId(vec![0xab; 16]));
        {
            let (mut store, _) = DirStore::open(&dir).unwrap();
            store.put(a.clone()).unwrap();
        }
        let path = dir.join(binding_file_name(&a.origin));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("\"token_key_id\": \"{}\"", "ab".repeat(16))));
        assert!(!text.contains("\"key\""), "{text}");
        let (store, report) = DirStore::open(&dir).unwrap();
        assert!(report.unusable.is_empty());
        assert_eq!(store.bindings(), &[a.clone()][..]);

        // Neither or both, a bad or oversized id: unusable, with the reason.
        let software = binding("https://a.example", 1);
        let key_hex = match &software.key {
            DeviceKey::Software(k) => hex::encode(k.pkcs8_der()),
            DeviceKey::Token(_) => unreachable!(),
        };
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        let variants = [
            ("neither", None, None),
            ("both", Some(key_hex.as_str()), Some("abab")),
            ("not hex", None, Some("xyz")),
            ("too long", None, Some(&*"ab".repeat(65))),
            ("empty", None, Some("")),
        ];
        for (what, key, id) in variants {
            let mut r = record.clone();
            let o = r.as_object_mut().unwrap();
            o.remove("token_key_id");
            if let Some(k) = key {
                o.insert("key".into(), k.into());
            }
            if let Some(i) = id {
                o.insert("token_key_id".into(), i.into());
            }
            std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
            let (store, report) = DirStore::open(&dir).unwrap();
            assert!(store.bindings().is_empty(), "{what}");
            assert_eq!(report.unusable.len(), 1, "{what}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
