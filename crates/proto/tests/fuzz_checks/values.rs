//! Decoders of outside input: whatever decodes re-encodes byte for byte (the encodings are
//! deterministic, so a decoder that accepts anything else is too lenient), and the name
//! functions agree with each other.

use localcert_proto::attestation::AttestationObject;
use localcert_proto::binding::OriginBinding;
use localcert_proto::gatt::GattInfo;
use localcert_proto::message::{Operation, Request, Response};
use localcert_proto::name::{DeviceLabel, DeviceTag, LocalName, origin_tag};
use localcert_proto::origin::Origin;

/// Input: a selector byte, then a MSG payload. Selector modulo 7: 0 a request, 1..=5 the
/// response to that operation, 6 the info characteristic's value.
pub(crate) fn message(data: &[u8]) {
    let [selector, bytes @ ..] = data else {
        return;
    };
    let reencoded = match selector % 7 {
        0 => Request::decode(bytes).ok().map(|m| m.encode()),
        6 => GattInfo::decode(bytes).ok().map(|m| m.encode()),
        op => {
            let operation = Operation::from_u8(op).expect("1..=5 are operations");
            Response::decode(operation, bytes).ok().map(|m| m.encode())
        }
    };
    if let Some(reencoded) = reencoded {
        assert_eq!(reencoded, bytes, "decoded, but re-encodes differently");
    }
}

/// Input: an attestation object (SPEC §7.2).
pub(crate) fn attestation_object(data: &[u8]) {
    if let Ok(object) = AttestationObject::decode(data) {
        assert_eq!(object.encode(), data, "decoded, but re-encodes differently");
        assert!((1..=3).contains(&object.x5c.len()), "x5c length");
        assert!((1..=72).contains(&object.sig.len()), "sig length");
        assert!(
            (1..=64).contains(&object.user_handle.len()),
            "userHandle length"
        );
    }
}

/// Input: the DER value of the origin-binding extension (SPEC §8.4).
pub(crate) fn origin_binding(data: &[u8]) {
    if let Ok(binding) = OriginBinding::from_der(data) {
        assert_eq!(
            binding.to_der(),
            data,
            "decoded, but re-encodes differently"
        );
    }
}

/// Input: three strings separated by newlines (lossy UTF-8): an origin, a device label (or
/// free text), a name (or the device certificate's bytes).
pub(crate) fn names(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let origin_text = parts.next().unwrap_or_default();
    let label_text = parts.next().unwrap_or_default();
    let name_text = parts.next().unwrap_or_default();

    let origin = Origin::parse(origin_text).ok();
    if let Some(origin) = &origin {
        assert_eq!(
            origin.as_str(),
            origin_text,
            "an origin is its own serialization"
        );
        let port = origin.port().map(|p| format!(":{p}")).unwrap_or_default();
        assert_eq!(format!("https://{}{port}", origin.host()), origin_text);
        assert!(origin_text.len() <= 267);
        assert_ne!(origin.port(), Some(443));
        let tag = origin_tag(origin);
        assert!(tag.len() <= 30 + 1 + 6, "origin tag {tag}");
    }

    if let Ok(label) = DeviceLabel::parse(label_text) {
        assert_eq!(label.as_str(), label_text);
        assert_eq!(
            DeviceLabel::from_text(label_text),
            label,
            "a label is its own slug"
        );
    }
    let suggested = DeviceLabel::from_text(label_text);
    assert_eq!(
        DeviceLabel::parse(suggested.as_str()).as_ref(),
        Ok(&suggested)
    );

    if let Ok(name) = LocalName::parse(name_text) {
        assert_eq!(name.as_str(), name_text);
        if let Some(origin) = &origin {
            if let Ok((label, tag)) = name.in_origin_namespace(origin) {
                assert_eq!(LocalName::derive(&label, origin, &tag), name);
                assert_eq!(name.check_device(origin, &tag), Ok(label));
            }
        }
    }

    if let Some(origin) = &origin {
        let device = DeviceTag::from_attestation_certificate(name_text.as_bytes());
        let derived = LocalName::derive(&suggested, origin, &device);
        assert_eq!(
            LocalName::parse(derived.as_str()).as_ref(),
            Ok(&derived),
            "derived name"
        );
        assert!(!derived.as_str().contains("--"), "{derived}");
        assert_eq!(
            derived.in_origin_namespace(origin),
            Ok((suggested.clone(), device.clone()))
        );
        assert_eq!(derived.check_device(origin, &device), Ok(suggested));
    }
}
