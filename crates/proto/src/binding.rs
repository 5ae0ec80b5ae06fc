//! The origin-binding certificate extension: which web origin (and which user, by digest) a
//! leaf certificate was issued for.
//!
//! ```asn1
//! id-localcert-originBinding OBJECT IDENTIFIER ::=
//!     { joint-iso-itu-t uuid(25) 123252009050424329067405108796839169409 }
//! OriginBinding ::= SEQUENCE {
//!     origin            IA5String,                  -- ASCII serialization
//!     userHandleDigest  OCTET STRING (SIZE (32))    -- SHA-256 of the user handle
//! }
//! ```
//!
//! The extension is non-critical. Its OID is minted under 2.25 from a UUID (ITU-T X.667); the
//! arc is 127 bits wide, more than the `const-oid` crate accepts, so the OID is given here as
//! DER content bytes and compared as bytes.

use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode, Sequence};
use sha2::{Digest, Sha256};

use crate::error::DecodeError;
use crate::origin::Origin;

/// The extension's OID in dotted form.
pub const ORIGIN_BINDING_OID: &str = "2.25.123252009050424329067405108796839169409";
/// The UUID the OID is minted from.
pub const ORIGIN_BINDING_UUID: &str = "5cb97936-e091-4eaf-8aa3-3dda0dc80d81";
/// The DER content octets of the OID (without tag and length).
pub const ORIGIN_BINDING_OID_DER: &[u8] = &[
    0x69, 0x81, 0xb9, 0xb9, 0xbc, 0xcd, 0xdc, 0x89, 0x8a, 0xba, 0xdf, 0x8a, 0xd1, 0xcf, 0xbb, 0xa0,
    0xee, 0xa0, 0x9b, 0x01,
];

#[derive(Sequence)]
struct OriginBindingAsn1 {
    origin: Ia5String,
    user_handle_digest: OctetString,
}

/// The value of the origin-binding extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginBinding {
    /// The origin.
    pub origin: Origin,
    /// SHA-256 of the user handle.
    pub user_handle_digest: [u8; 32],
}

impl OriginBinding {
    /// The binding for an origin and a user handle.
    pub fn new(origin: Origin, user_handle: &[u8]) -> Self {
        Self {
            origin,
            user_handle_digest: Sha256::digest(user_handle).into(),
        }
    }

    /// The DER encoding (the extension's `extnValue` content).
    pub fn to_der(&self) -> Vec<u8> {
        let value = Ia5String::new(self.origin.as_str()).and_then(|origin| {
            let digest = OctetString::new(self.user_handle_digest)?;
            OriginBindingAsn1 {
                origin,
                user_handle_digest: digest,
            }
            .to_der()
        });
        // An Origin is ASCII by construction and the digest is 32 bytes, so encoding cannot fail.
        value.unwrap_or_default()
    }

    /// Strict DER decoding.
    pub fn from_der(bytes: &[u8]) -> Result<Self, DecodeError> {
        const CTX: &str = "OriginBinding";
        let value = OriginBindingAsn1::from_der(bytes).map_err(|_| DecodeError::Malformed(CTX))?;
        let origin =
            Origin::parse(value.origin.as_str()).map_err(|_| DecodeError::InvalidValue(CTX))?;
        let user_handle_digest = value
            .user_handle_digest
            .as_bytes()
            .try_into()
            .map_err(|_| DecodeError::BadLength(CTX))?;
        Ok(Self {
            origin,
            user_handle_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base-128 encoding of 2.25.<uuid as integer>, computed independently of the constant.
    #[test]
    fn oid_bytes_match_the_uuid() {
        let uuid = u128::from_str_radix(&ORIGIN_BINDING_UUID.replace('-', ""), 16).unwrap();
        assert_eq!(ORIGIN_BINDING_OID, format!("2.25.{uuid}"));
        let mut arc = vec![(uuid & 0x7f) as u8];
        let mut rest = uuid >> 7;
        while rest != 0 {
            arc.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        arc.push(2 * 40 + 25);
        arc.reverse();
        assert_eq!(ORIGIN_BINDING_OID_DER, arc.as_slice());
    }

    #[test]
    fn round_trip_and_refusals() {
        let b = OriginBinding::new(Origin::parse("https://vod.example.com").unwrap(), b"user-1");
        let der = b.to_der();
        assert_eq!(OriginBinding::from_der(&der), Ok(b));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(OriginBinding::from_der(&trailing).is_err());
        assert!(OriginBinding::from_der(&der[..der.len() - 1]).is_err());
    }
}
