//! The CSR of an ATTEST from its parts (SPEC §5.2, revision 2).
//!
//! A device's CSR says nothing the UA does not know but the TLS key and two signatures: its
//! subject is empty and its only attribute asks for the names the UA derived. So the device
//! sends the public key and the signature, and both sides build the same DER from this one
//! template: `CertificationRequestInfo` (RFC 2986) with version 0, an empty subject, the P-256
//! SubjectPublicKeyInfo and an extensionRequest with a non-critical subjectAltName of dNSNames;
//! signed with ecdsa-with-SHA256. Also the conversions between the raw `r || s` signatures the
//! wire carries and the DER ones X.509 and the attestation object carry.

use crate::name::LocalName;

/// An uncompressed SEC1 P-256 point: `0x04 || x || y`.
pub const P256_POINT_LEN: usize = 65;
/// A raw P-256 ECDSA signature: `r || s`, 32 bytes each, big-endian.
pub const RAW_SIGNATURE_LEN: usize = 64;

/// The DER of a P-256 SubjectPublicKeyInfo before its point (id-ecPublicKey, prime256v1, and
/// the BIT STRING header).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// `1.2.840.113549.1.9.14` (PKCS #9 extensionRequest), as an OBJECT IDENTIFIER TLV.
const EXTENSION_REQUEST_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e,
];
/// `2.5.29.17` (subjectAltName), as an OBJECT IDENTIFIER TLV.
const SUBJECT_ALT_NAME_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
/// AlgorithmIdentifier `ecdsa-with-SHA256` (1.2.840.10045.4.3.2, no parameters).
const ECDSA_WITH_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The DER SubjectPublicKeyInfo of a P-256 point.
pub fn p256_spki(point: &[u8; P256_POINT_LEN]) -> Vec<u8> {
    let mut out = P256_SPKI_PREFIX.to_vec();
    out.extend_from_slice(point);
    out
}

/// The point of a P-256 SubjectPublicKeyInfo, if `spki` is one.
pub fn p256_point(spki: &[u8]) -> Option<[u8; P256_POINT_LEN]> {
    spki.strip_prefix(&P256_SPKI_PREFIX[..])?.try_into().ok()
}

/// The `CertificationRequestInfo` DER for a key and names: the bytes the TLS key signs.
pub fn request_info(point: &[u8; P256_POINT_LEN], names: &[LocalName]) -> Vec<u8> {
    let general_names: Vec<u8> = names
        .iter()
        // dNSName is [2] IMPLICIT IA5String.
        .flat_map(|n| tlv(0x82, n.as_str().as_bytes()))
        .collect();
    let san = [
        &SUBJECT_ALT_NAME_OID[..],
        &tlv(0x04, &tlv(0x30, &general_names)),
    ]
    .concat();
    let extensions = tlv(0x30, &tlv(0x30, &san));
    let attribute = tlv(
        0x30,
        &[&EXTENSION_REQUEST_OID[..], &tlv(0x31, &extensions)].concat(),
    );
    let body = [
        &[0x02, 0x01, 0x00][..], // version 0
        &[0x30, 0x00],           // an empty subject
        &p256_spki(point),
        &tlv(0xa0, &attribute), // attributes [0] IMPLICIT SET OF Attribute
    ]
    .concat();
    tlv(0x30, &body)
}

/// The whole CSR DER: `request_info` and its raw signature.
pub fn assemble(request_info: &[u8], signature: &[u8; RAW_SIGNATURE_LEN]) -> Vec<u8> {
    let mut bits = vec![0x00]; // no unused bits
    bits.extend(der_signature(signature));
    tlv(
        0x30,
        &[request_info, &ECDSA_WITH_SHA256[..], &tlv(0x03, &bits)].concat(),
    )
}

/// The DER `ECDSA-Sig-Value` of a raw `r || s` signature.
pub fn der_signature(raw: &[u8; RAW_SIGNATURE_LEN]) -> Vec<u8> {
    let (r, s) = raw.split_at(RAW_SIGNATURE_LEN / 2);
    tlv(0x30, &[der_uint(r), der_uint(s)].concat())
}

/// The raw `r || s` of a DER `ECDSA-Sig-Value` with P-256-sized integers, or `None` for
/// anything else (trailing bytes, negative or over-long integers, long-form lengths).
pub fn raw_signature(der: &[u8]) -> Option<[u8; RAW_SIGNATURE_LEN]> {
    let (&tag, rest) = der.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || usize::from(len) != body.len() {
        return None;
    }
    let (r, body) = read_uint(body)?;
    let (s, body) = read_uint(body)?;
    if !body.is_empty() {
        return None;
    }
    let mut out = [0; RAW_SIGNATURE_LEN];
    out[32 - r.len()..32].copy_from_slice(r);
    out[64 - s.len()..].copy_from_slice(s);
    Some(out)
}

/// One INTEGER of a signature: its magnitude without the sign byte, at most 32 bytes.
fn read_uint(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x02, len, rest @ ..] = der else {
        return None;
    };
    let len = usize::from(*len);
    let (value, rest) = (rest.get(..len)?, rest.get(len..)?);
    let (&first, _) = value.split_first()?;
    if first & 0x80 != 0 {
        return None; // negative
    }
    let magnitude = match value {
        [0, next, ..] if next & 0x80 != 0 => &value[1..],
        [0, _, ..] => return None, // not minimal
        _ => value,
    };
    (magnitude.len() <= 32).then_some((magnitude, rest))
}

/// A DER INTEGER for an unsigned big-endian magnitude.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let mut value = bytes[start..].to_vec();
    if value.first().is_none_or(|b| b & 0x80 != 0) {
        value.insert(0, 0);
    }
    tlv(0x02, &value)
}

/// A DER tag-length-value with a definite, minimal length (values here are under 64 KiB).
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_between_raw_and_der() {
        for raw in [[0u8; 64], [0xff; 64], {
            let mut r = [0u8; 64];
            r[1] = 0x80; // r with a leading zero byte and a high bit after it
            r[32] = 1;
            r[63] = 7;
            r
        }] {
            let der = der_signature(&raw);
            assert!(der.len() <= crate::message::MAX_SIGNATURE_LEN);
            assert_eq!(raw_signature(&der), Some(raw));
        }
        // Not minimal, negative, trailing bytes, truncated.
        assert_eq!(raw_signature(&[0x30, 6, 2, 2, 0, 1, 2, 1, 1]), None);
        assert_eq!(raw_signature(&[0x30, 6, 2, 1, 0x80, 2, 1, 1]), None);
        assert_eq!(raw_signature(&[0x30, 6, 2, 1, 1, 2, 1, 1, 0]), None);
        assert_eq!(raw_signature(&[0x30, 6, 2, 1, 1]), None);
    }

    #[test]
    fn spki_prefix_round_trips() {
        let point = [4u8; P256_POINT_LEN];
        let spki = p256_spki(&point);
        assert_eq!(spki.len(), 91);
        assert_eq!(p256_point(&spki), Some(point));
        assert_eq!(p256_point(&spki[1..]), None);
    }
}
