//! The CBOR maps of the messages: one [`CborMap`] implementation per structure, with the field
//! rules of SPEC §5. Decoding is strict; canonical form is checked by re-encoding.

use minicbor::Decoder;

use super::{
    AttestRequest, AttestResponse, BindingSummary, CERTIFICATE_ID_LEN, CorsPolicy, InfoResponse,
    InstallRequest, InstallResponse, MAX_BINDINGS, MAX_CERTIFICATE_LEN, MAX_CHAIN_LEN,
    MAX_CORS_ITEMS, MAX_CORS_MAX_AGE, MAX_ERROR_MESSAGE_LEN, MAX_KNOWN_ISSUERS, MAX_PIN_LEN,
    MAX_PRODUCT_LEN, MAX_TOKEN_LEN, MAX_URL_LEN, MAX_USER_HANDLE_LEN, MIN_PIN_LEN, PresenceMethod,
    RemoveRequest, RemoveResponse,
};
use crate::cbor::{self, Enc, EncResult, IntMap};
use crate::csr::P256_POINT_LEN;
use crate::error::DecodeError;
use crate::name::{DeviceLabel, LocalName};
use crate::origin::{MAX_ORIGIN_LEN, Origin};

pub(super) fn decode_error_message(d: &mut Decoder<'_>) -> Result<String, DecodeError> {
    const CTX: &str = "ErrorResponse";
    let mut message = None;
    let mut map = IntMap::begin(d, CTX)?;
    while let Some(key) = map.next_key(d)? {
        match key {
            1 => message = Some(cbor::text(d, CTX, 0, MAX_ERROR_MESSAGE_LEN)?.to_owned()),
            _ => return map.unknown(key),
        }
    }
    cbor::required(message, CTX, 1)
}

pub(super) fn encode_list(e: &mut Enc, bindings: &[BindingSummary]) -> EncResult {
    e.map(1)?.u8(1)?.array(bindings.len() as u64)?;
    bindings.iter().try_for_each(|b| b.encode_map(e))
}

pub(super) fn decode_list(d: &mut Decoder<'_>) -> Result<Vec<BindingSummary>, DecodeError> {
    const CTX: &str = "ListResponse";
    let mut bindings = None;
    let mut map = IntMap::begin(d, CTX)?;
    while let Some(key) = map.next_key(d)? {
        match key {
            1 => {
                let n = cbor::array_len(d, CTX, 0, MAX_BINDINGS)?;
                bindings = Some(
                    (0..n)
                        .map(|_| BindingSummary::decode_map(d))
                        .collect::<Result<_, _>>()?,
                );
            }
            _ => return map.unknown(key),
        }
    }
    cbor::required(bindings, CTX, 1)
}

/// A structure encoded as a CBOR map with integer keys.
pub(super) trait CborMap: Sized {
    const CTX: &'static str;
    fn encode_map(&self, e: &mut Enc) -> EncResult;
    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;
}

pub(super) fn decode_map<T: CborMap>(bytes: &[u8]) -> Result<T, DecodeError> {
    cbor::decode_canonical(bytes, T::CTX, T::decode_map, |v| {
        cbor::encode(|e| v.encode_map(e))
    })
}

/// An Origin field: a bad one is `invalid_origin` (INVALID_ORIGIN), SPEC §4.
fn origin(d: &mut Decoder<'_>, ctx: &'static str) -> Result<Origin, DecodeError> {
    Origin::parse(cbor::text(d, ctx, 1, MAX_ORIGIN_LEN)?)
        .map_err(|_| DecodeError::InvalidOrigin(ctx))
}

fn local_name(d: &mut Decoder<'_>, ctx: &'static str) -> Result<LocalName, DecodeError> {
    LocalName::parse(cbor::text(d, ctx, 1, 128)?).map_err(|_| DecodeError::InvalidValue(ctx))
}

/// A Label field: a bad one is `invalid_label` (INVALID_LABEL), SPEC §4.
fn device_label(d: &mut Decoder<'_>, ctx: &'static str) -> Result<DeviceLabel, DecodeError> {
    DeviceLabel::parse(cbor::text(d, ctx, 1, 64)?).map_err(|_| DecodeError::InvalidLabel(ctx))
}

fn certificates(d: &mut Decoder<'_>, ctx: &'static str) -> Result<Vec<Vec<u8>>, DecodeError> {
    cbor::bytes_array(d, ctx, (1, MAX_CHAIN_LEN), (1, MAX_CERTIFICATE_LEN))
}

/// An HTTP token (RFC 9110 §5.6.2), but never the `*` wildcard.
fn is_token(s: &str) -> bool {
    s != "*"
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_header_name(s: &str) -> bool {
    is_token(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

fn is_https_url(s: &str) -> bool {
    s.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty())
        && s.bytes().all(|b| b.is_ascii_graphic())
}

fn encode_texts(e: &mut Enc, items: &[String]) -> EncResult {
    e.array(items.len() as u64)?;
    items.iter().try_for_each(|s| e.str(s).map(|_| ()))
}

fn encode_bytes_list(e: &mut Enc, items: &[Vec<u8>]) -> EncResult {
    e.array(items.len() as u64)?;
    items.iter().try_for_each(|b| e.bytes(b).map(|_| ()))
}

impl CborMap for InfoResponse {
    const CTX: &'static str = "InfoResponse";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(8)?;
        e.u8(1)?.u64(self.revision)?;
        e.u8(2)?.str(&self.product)?;
        e.u8(3)?.str(self.device_label.as_str())?;
        e.u8(4)?;
        encode_bytes_list(e, &self.attestation_chain)?;
        e.u8(5)?.u8(self.presence as u8)?;
        e.u8(6)?.u64(self.bindings)?;
        e.u8(7)?.u64(self.max_bindings)?;
        e.u8(8)?.array(self.known_issuers.len() as u64)?;
        self.known_issuers
            .iter()
            .try_for_each(|id| e.bytes(id).map(|_| ()))
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = InfoResponse::CTX;
        let (mut revision, mut product, mut label, mut chain) = (None, None, None, None);
        let (mut presence, mut bindings, mut max_bindings, mut known) = (None, None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => revision = Some(cbor::uint(d, "InfoResponse.revision")?),
                2 => {
                    product =
                        Some(cbor::text(d, "InfoResponse.product", 1, MAX_PRODUCT_LEN)?.to_owned())
                }
                3 => label = Some(device_label(d, "InfoResponse.device_label")?),
                4 => chain = Some(certificates(d, "InfoResponse.attestation_chain")?),
                5 => {
                    presence = Some(match cbor::uint(d, "InfoResponse.presence")? {
                        0 => PresenceMethod::None,
                        1 => PresenceMethod::Button,
                        2 => PresenceMethod::Pin,
                        _ => return Err(DecodeError::InvalidValue("InfoResponse.presence")),
                    })
                }
                6 => bindings = Some(cbor::uint(d, "InfoResponse.bindings")?),
                7 => max_bindings = Some(cbor::uint(d, "InfoResponse.max_bindings")?),
                8 => {
                    const F: &str = "InfoResponse.known_issuers";
                    let n = cbor::array_len(d, F, 0, MAX_KNOWN_ISSUERS)?;
                    known = Some(
                        (0..n)
                            .map(|_| cbor::byte_array::<CERTIFICATE_ID_LEN>(d, F))
                            .collect::<Result<_, _>>()?,
                    );
                }
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            revision: cbor::required(revision, C, 1)?,
            product: cbor::required(product, C, 2)?,
            device_label: cbor::required(label, C, 3)?,
            attestation_chain: cbor::required(chain, C, 4)?,
            presence: cbor::required(presence, C, 5)?,
            bindings: cbor::required(bindings, C, 6)?,
            max_bindings: cbor::required(max_bindings, C, 7)?,
            known_issuers: cbor::required(known, C, 8)?,
        })
    }
}

impl CborMap for AttestRequest {
    const CTX: &'static str = "AttestRequest";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(4 + u64::from(self.pin.is_some()))?;
        e.u8(1)?.str(self.origin.as_str())?;
        e.u8(2)?.bytes(&self.user_handle)?;
        e.u8(3)?.bytes(&self.key_authorization_hash)?;
        e.u8(4)?.str(self.device_label.as_str())?;
        if let Some(pin) = &self.pin {
            e.u8(5)?.str(pin)?;
        }
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = AttestRequest::CTX;
        let (mut origin_v, mut user_handle, mut key_auth, mut label, mut pin) =
            (None, None, None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => origin_v = Some(origin(d, "AttestRequest.origin")?),
                2 => {
                    let handle =
                        cbor::bytes(d, "AttestRequest.user_handle", 1, MAX_USER_HANDLE_LEN)?;
                    user_handle = Some(handle.to_vec());
                }
                3 => {
                    const F: &str = "AttestRequest.key_authorization_hash";
                    key_auth = Some(cbor::byte_array(d, F)?);
                }
                4 => label = Some(device_label(d, "AttestRequest.device_label")?),
                5 => {
                    pin = Some(
                        cbor::text(d, "AttestRequest.pin", MIN_PIN_LEN, MAX_PIN_LEN)?.to_owned(),
                    )
                }
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            origin: cbor::required(origin_v, C, 1)?,
            user_handle: cbor::required(user_handle, C, 2)?,
            key_authorization_hash: cbor::required(key_auth, C, 3)?,
            device_label: cbor::required(label, C, 4)?,
            pin,
        })
    }
}

impl CborMap for AttestResponse {
    const CTX: &'static str = "AttestResponse";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(3)?;
        e.u8(1)?.bytes(&self.public_key)?;
        e.u8(2)?.bytes(&self.csr_signature)?;
        e.u8(3)?.bytes(&self.signature)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = AttestResponse::CTX;
        let (mut key, mut csr_sig, mut sig) = (None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(k) = map.next_key(d)? {
            match k {
                1 => {
                    const F: &str = "AttestResponse.public_key";
                    let point: [u8; P256_POINT_LEN] = cbor::byte_array(d, F)?;
                    // Uncompressed SEC1; whether it is on the curve is the verifier's check.
                    if point[0] != 0x04 {
                        return Err(DecodeError::InvalidValue(F));
                    }
                    key = Some(point);
                }
                2 => csr_sig = Some(cbor::byte_array(d, "AttestResponse.csr_signature")?),
                3 => sig = Some(cbor::byte_array(d, "AttestResponse.signature")?),
                _ => return map.unknown(k),
            }
        }
        Ok(Self {
            public_key: cbor::required(key, C, 1)?,
            csr_signature: cbor::required(csr_sig, C, 2)?,
            signature: cbor::required(sig, C, 3)?,
        })
    }
}

impl CborMap for CorsPolicy {
    const CTX: &'static str = "CorsPolicy";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(5)?;
        e.u8(1)?;
        encode_texts(e, &self.methods)?;
        e.u8(2)?;
        encode_texts(e, &self.allow_headers)?;
        e.u8(3)?;
        encode_texts(e, &self.expose_headers)?;
        e.u8(4)?.bool(self.allow_credentials)?;
        e.u8(5)?.u64(self.max_age)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = CorsPolicy::CTX;
        let (mut methods, mut allow, mut expose, mut credentials, mut max_age) =
            (None, None, None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            let list = |d: &mut Decoder<'_>, ctx, min, valid: fn(&str) -> bool| {
                cbor::text_array(d, ctx, (min, MAX_CORS_ITEMS), MAX_TOKEN_LEN, valid)
            };
            match key {
                1 => methods = Some(list(d, "CorsPolicy.methods", 1, is_token)?),
                2 => allow = Some(list(d, "CorsPolicy.allow_headers", 0, is_header_name)?),
                3 => expose = Some(list(d, "CorsPolicy.expose_headers", 0, is_header_name)?),
                4 => credentials = Some(cbor::boolean(d, "CorsPolicy.allow_credentials")?),
                5 => {
                    let age = cbor::uint(d, "CorsPolicy.max_age")?;
                    if age > MAX_CORS_MAX_AGE {
                        return Err(DecodeError::InvalidValue("CorsPolicy.max_age"));
                    }
                    max_age = Some(age);
                }
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            methods: cbor::required(methods, C, 1)?,
            allow_headers: cbor::required(allow, C, 2)?,
            expose_headers: cbor::required(expose, C, 3)?,
            allow_credentials: cbor::required(credentials, C, 4)?,
            max_age: cbor::required(max_age, C, 5)?,
        })
    }
}

impl CborMap for InstallRequest {
    const CTX: &'static str = "InstallRequest";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(2 + u64::from(self.star_url.is_some()))?;
        e.u8(1)?;
        encode_bytes_list(e, &self.chain)?;
        e.u8(2)?;
        self.cors.encode_map(e)?;
        if let Some(url) = &self.star_url {
            e.u8(3)?.str(url)?;
        }
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = InstallRequest::CTX;
        let (mut chain, mut cors, mut star_url) = (None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => chain = Some(certificates(d, "InstallRequest.chain")?),
                2 => cors = Some(CorsPolicy::decode_map(d)?),
                3 => {
                    const F: &str = "InstallRequest.star_url";
                    let url = cbor::text(d, F, 1, MAX_URL_LEN)?;
                    if !is_https_url(url) {
                        return Err(DecodeError::InvalidValue(F));
                    }
                    star_url = Some(url.to_owned());
                }
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            chain: cbor::required(chain, C, 1)?,
            cors: cbor::required(cors, C, 2)?,
            star_url,
        })
    }
}

impl CborMap for InstallResponse {
    const CTX: &'static str = "InstallResponse";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(1)?.u8(1)?.u16(self.https_port)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = InstallResponse::CTX;
        let mut port = None;
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => {
                    const F: &str = "InstallResponse.https_port";
                    let p = u16::try_from(cbor::uint(d, F)?).ok().filter(|&p| p != 0);
                    port = Some(p.ok_or(DecodeError::InvalidValue(F))?);
                }
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            https_port: cbor::required(port, C, 1)?,
        })
    }
}

impl CborMap for BindingSummary {
    const CTX: &'static str = "BindingSummary";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(5)?;
        e.u8(1)?.str(self.origin.as_str())?;
        e.u8(2)?.str(self.name.as_str())?;
        e.u8(3)?.bytes(&self.fingerprint)?;
        e.u8(4)?.u64(self.not_after)?;
        e.u8(5)?.bool(self.star)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = BindingSummary::CTX;
        let (mut origin_v, mut name, mut fingerprint, mut not_after, mut star) =
            (None, None, None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => origin_v = Some(origin(d, "BindingSummary.origin")?),
                2 => name = Some(local_name(d, "BindingSummary.name")?),
                3 => fingerprint = Some(cbor::byte_array(d, "BindingSummary.fingerprint")?),
                4 => not_after = Some(cbor::uint(d, "BindingSummary.not_after")?),
                5 => star = Some(cbor::boolean(d, "BindingSummary.star")?),
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            origin: cbor::required(origin_v, C, 1)?,
            name: cbor::required(name, C, 2)?,
            fingerprint: cbor::required(fingerprint, C, 3)?,
            not_after: cbor::required(not_after, C, 4)?,
            star: cbor::required(star, C, 5)?,
        })
    }
}

impl CborMap for RemoveRequest {
    const CTX: &'static str = "RemoveRequest";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(1)?.u8(1)?.str(self.origin.as_str())?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let mut origin_v = None;
        let mut map = IntMap::begin(d, Self::CTX)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => origin_v = Some(origin(d, "RemoveRequest.origin")?),
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            origin: cbor::required(origin_v, Self::CTX, 1)?,
        })
    }
}

impl CborMap for RemoveResponse {
    const CTX: &'static str = "RemoveResponse";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(1)?.u8(1)?.str(self.name.as_str())?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let mut name = None;
        let mut map = IntMap::begin(d, Self::CTX)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => name = Some(local_name(d, "RemoveResponse.name")?),
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            name: cbor::required(name, Self::CTX, 1)?,
        })
    }
}
