//! `.local` names: one DNS label built from a device label, an origin tag and a device tag.
//!
//! `{device label}-{origin slug}-{origin hash}-{device tag}.local`, e.g.
//! `media-server-vod-example-com-5n1kq3-8w2d.local`. The slug is readable, the origin hash makes
//! the origin part injective over origins, and the device tag keeps two identical products on
//! one LAN from claiming the same name. One label only, because stock Linux resolvers
//! (`mdns4_minimal`) do not resolve multi-label `.local` names.

use core::fmt;

use sha2::{Digest, Sha256};

use crate::error::NameError;
use crate::origin::Origin;

/// The suffix of every name.
pub const LOCAL_SUFFIX: &str = ".local";
/// The longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// The longest device label.
pub const MAX_DEVICE_LABEL_LEN: usize = 20;
/// The longest origin slug.
pub const MAX_ORIGIN_SLUG_LEN: usize = 30;
/// Characters of the origin hash (30 bits).
pub const ORIGIN_HASH_LEN: usize = 6;
/// Characters of the device tag (20 bits).
pub const DEVICE_TAG_LEN: usize = 4;
/// The label a device uses when its product name yields none.
pub const DEFAULT_DEVICE_LABEL: &str = "device";

const ORIGIN_HASH_DOMAIN: &[u8] = b"localcert origin tag v1\0";
const DEVICE_TAG_DOMAIN: &[u8] = b"localcert device tag v1\0";

/// Crockford's base32 alphabet, lower case: no `i`, `l`, `o` or `u` to misread.
const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The first `len` base32 characters of `digest`, most significant bits first.
fn base32_prefix(digest: &[u8], len: usize) -> String {
    (0..len)
        .map(|i| {
            let bit = i * 5;
            let hi = u16::from(digest.get(bit / 8).copied().unwrap_or(0));
            let lo = u16::from(digest.get(bit / 8 + 1).copied().unwrap_or(0));
            let index = (((hi << 8) | lo) >> (11 - bit % 8)) & 0x1f;
            char::from(BASE32[usize::from(index)])
        })
        .collect()
}

fn is_ldh(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Collapses every run of characters outside `a-z0-9` to one hyphen and trims hyphens, then cuts
/// to `max` bytes (trimming again).
fn slugify(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    out.trim_end_matches('-').to_owned()
}

/// A device label: 1 to 20 of `a-z`, `0-9` and `-`, no leading, trailing or double hyphen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceLabel(String);

impl DeviceLabel {
    /// Validates a label given on the wire.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_DEVICE_LABEL_LEN {
            return Err(NameError::Length);
        }
        if !is_ldh(s) {
            return Err(NameError::Character);
        }
        if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
            return Err(NameError::Hyphen);
        }
        Ok(Self(s.to_owned()))
    }

    /// Makes a label from free text such as a product name ("Media Server 1" →
    /// `media-server-1`); [`DEFAULT_DEVICE_LABEL`] when nothing usable is left.
    pub fn from_text(text: &str) -> Self {
        let slug = slugify(text, MAX_DEVICE_LABEL_LEN);
        Self(if slug.is_empty() {
            DEFAULT_DEVICE_LABEL.to_owned()
        } else {
            slug
        })
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The part of a name that stands for an origin: `{slug}-{hash}`.
///
/// The slug is the host with dots as hyphens and the port appended, cut to 30 bytes; the hash is
/// 6 base32 characters of SHA-256 over the origin, so origins that share a slug still differ.
pub fn origin_tag(origin: &Origin) -> String {
    let mut slug_source = origin.host().to_owned();
    if let Some(port) = origin.port() {
        slug_source.push_str(&format!("-{port}"));
    }
    let slug = slugify(&slug_source, MAX_ORIGIN_SLUG_LEN);
    let digest = Sha256::new()
        .chain_update(ORIGIN_HASH_DOMAIN)
        .chain_update(origin.as_str())
        .finalize();
    format!("{slug}-{}", base32_prefix(&digest, ORIGIN_HASH_LEN))
}

/// The short, per-device part of a name, derived from the device's attestation certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceTag(String);

impl DeviceTag {
    /// The tag of the device whose attestation (leaf) certificate is `certificate_der`.
    pub fn from_attestation_certificate(certificate_der: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(DEVICE_TAG_DOMAIN)
            .chain_update(certificate_der)
            .finalize();
        Self(base32_prefix(&digest, DEVICE_TAG_LEN))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A single-label `.local` name in lower case, e.g. `tv-vod-example-com-5n1kq3-8w2d.local`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalName(String);

impl LocalName {
    /// The name for a device label, an origin and a device.
    pub fn derive(label: &DeviceLabel, origin: &Origin, device: &DeviceTag) -> Self {
        Self(format!(
            "{label}-{}-{}{LOCAL_SUFFIX}",
            origin_tag(origin),
            device.0
        ))
    }

    /// Validates any single-label `.local` name (RFC 1123 label rules, lower case).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let label = s
            .strip_suffix(LOCAL_SUFFIX)
            .ok_or(NameError::NotSingleLabelLocal)?;
        if label.contains('.') {
            return Err(NameError::NotSingleLabelLocal);
        }
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(NameError::Length);
        }
        if !is_ldh(label) {
            return Err(NameError::Character);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Hyphen);
        }
        Ok(Self(s.to_owned()))
    }

    /// The full name, e.g. `tv-vod-example-com-5n1kq3-8w2d.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name without `.local`.
    pub fn label(&self) -> &str {
        self.0.strip_suffix(LOCAL_SUFFIX).unwrap_or(&self.0)
    }

    /// Splits a name that lies in `origin`'s namespace into its device label and device tag.
    ///
    /// An issuer calls this at new-order time, before it knows the device.
    pub fn in_origin_namespace(
        &self,
        origin: &Origin,
    ) -> Result<(DeviceLabel, DeviceTag), NameError> {
        let label = self.label();
        let tag_start = label
            .len()
            .checked_sub(DEVICE_TAG_LEN)
            .ok_or(NameError::OutsideOriginNamespace)?;
        let (rest, tag) = label
            .split_at_checked(tag_start)
            .ok_or(NameError::OutsideOriginNamespace)?;
        let is_tag = tag.bytes().all(|b| BASE32.contains(&b));
        let suffix = format!("-{}-", origin_tag(origin));
        let device_label = rest.strip_suffix(suffix.as_str()).filter(|_| is_tag);
        let device_label = device_label.ok_or(NameError::OutsideOriginNamespace)?;
        let device_label =
            DeviceLabel::parse(device_label).map_err(|_| NameError::OutsideOriginNamespace)?;
        Ok((device_label, DeviceTag(tag.to_owned())))
    }

    /// Checks that this is the name of `device` for `origin`, with any valid device label.
    ///
    /// An issuer calls this once the attestation has told it the device.
    pub fn check_device(
        &self,
        origin: &Origin,
        device: &DeviceTag,
    ) -> Result<DeviceLabel, NameError> {
        let (label, tag) = self.in_origin_namespace(origin)?;
        if &tag != device {
            return Err(NameError::WrongDevice);
        }
        Ok(label)
    }
}

impl fmt::Display for LocalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    #[test]
    fn base32_takes_bits_in_order() {
        assert_eq!(base32_prefix(&[0xff, 0xff, 0xff], 4), "zzzz");
        assert_eq!(base32_prefix(&[0x00, 0x00, 0x00], 4), "0000");
        // 00001 00010 00011 0010(0) → 1 2 3 4
        assert_eq!(base32_prefix(&[0x08, 0x86, 0x40], 4), "1234");
    }

    #[test]
    fn labels_from_text() {
        assert_eq!(
            DeviceLabel::from_text("Media Server 1").as_str(),
            "media-server-1"
        );
        assert_eq!(
            DeviceLabel::from_text("  --TV__Living--Room!! ").as_str(),
            "tv-living-room"
        );
        assert_eq!(
            DeviceLabel::from_text("Ünïcode only äöü").as_str(),
            "n-code-only"
        );
        assert_eq!(
            DeviceLabel::from_text("日本").as_str(),
            DEFAULT_DEVICE_LABEL
        );
        assert_eq!(
            DeviceLabel::from_text("a very long product name indeed").as_str(),
            "a-very-long-product"
        );
        for text in ["Media Server 1", "x", "日本", "a-----b", "-a-"] {
            let label = DeviceLabel::from_text(text);
            assert_eq!(DeviceLabel::parse(label.as_str()), Ok(label));
        }
    }

    #[test]
    fn label_rules() {
        assert_eq!(DeviceLabel::parse(""), Err(NameError::Length));
        assert_eq!(DeviceLabel::parse(&"a".repeat(21)), Err(NameError::Length));
        assert_eq!(DeviceLabel::parse("TV"), Err(NameError::Character));
        assert_eq!(DeviceLabel::parse("tv.1"), Err(NameError::Character));
        assert_eq!(DeviceLabel::parse("-tv"), Err(NameError::Hyphen));
        assert_eq!(DeviceLabel::parse("tv-"), Err(NameError::Hyphen));
        assert_eq!(DeviceLabel::parse("t--v"), Err(NameError::Hyphen));
    }

    #[test]
    fn derived_names_are_valid_and_parse_back() {
        let device = DeviceTag::from_attestation_certificate(b"device cert");
        let label = DeviceLabel::parse(&"m".repeat(MAX_DEVICE_LABEL_LEN)).unwrap();
        for o in [
            "https://vod.example.com",
            "https://app.test:8443",
            "https://xn--bcher-kva.example",
            &format!("https://{}.example.com", "long".repeat(15)),
        ] {
            let o = origin(o);
            let name = LocalName::derive(&label, &o, &device);
            assert!(name.label().len() <= MAX_LABEL_LEN, "{name}");
            assert_eq!(LocalName::parse(name.as_str()).as_ref(), Ok(&name));
            assert_eq!(name.check_device(&o, &device), Ok(label.clone()));
            assert!(!name.as_str().contains("--"), "{name}");
        }
    }

    #[test]
    fn names_outside_namespace_are_refused() {
        let device = DeviceTag::from_attestation_certificate(b"device cert");
        let other = DeviceTag::from_attestation_certificate(b"other cert");
        let label = DeviceLabel::from_text("tv");
        let vod = origin("https://vod.example.com");
        let name = LocalName::derive(&label, &vod, &device);
        assert_eq!(
            name.in_origin_namespace(&origin("https://vod.example.com:8443")),
            Err(NameError::OutsideOriginNamespace)
        );
        assert_eq!(name.check_device(&vod, &other), Err(NameError::WrongDevice));
        for bad in [
            "tv.local",
            "vod-example-com.local",
            "-vod-example-com-000000-0000.local",
        ] {
            let n = LocalName::parse(bad).unwrap_or_else(|_| LocalName(bad.to_owned()));
            assert_eq!(
                n.in_origin_namespace(&vod).map(|_| ()),
                Err(NameError::OutsideOriginNamespace),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_rules() {
        assert_eq!(
            LocalName::parse("tv.example.com"),
            Err(NameError::NotSingleLabelLocal)
        );
        assert_eq!(
            LocalName::parse("a.b.local"),
            Err(NameError::NotSingleLabelLocal)
        );
        assert_eq!(LocalName::parse(".local"), Err(NameError::Length));
        assert_eq!(LocalName::parse("TV.local"), Err(NameError::Character));
        assert_eq!(LocalName::parse("-tv.local"), Err(NameError::Hyphen));
        assert_eq!(
            LocalName::parse(&format!("{}.local", "a".repeat(64))),
            Err(NameError::Length)
        );
        assert!(LocalName::parse(&format!("{}.local", "a".repeat(63))).is_ok());
    }
}
