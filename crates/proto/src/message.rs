//! Request and response messages, carried in MSG frames.
//!
//! A request is `[operation byte] ++ CBOR map` (GET_INFO and LIST have no map); a response is
//! `[status byte] ++ CBOR map`, status 0 meaning success. Maps have small unsigned integer keys
//! and must be in deterministic encoding (RFC 8949 §4.2); decoding is strict.

use std::time::Duration;

use minicbor::Decoder;

use crate::cbor::{self, Enc, EncResult, IntMap};
use crate::error::{DecodeError, ErrorCode};
use crate::name::{DeviceLabel, LocalName};
use crate::origin::{MAX_ORIGIN_LEN, Origin};

/// The longest user handle (as WebAuthn's `user.id`).
pub const MAX_USER_HANDLE_LEN: usize = 64;
/// The longest ACME key authorization (`token.thumbprint`).
pub const MAX_KEY_AUTHORIZATION_LEN: usize = 256;
/// The shortest PIN.
pub const MIN_PIN_LEN: usize = 4;
/// The longest PIN.
pub const MAX_PIN_LEN: usize = 32;
/// The longest product name.
pub const MAX_PRODUCT_LEN: usize = 64;
/// The longest DER certificate.
pub const MAX_CERTIFICATE_LEN: usize = 2048;
/// The most certificates in a chain (leaf first).
pub const MAX_CHAIN_LEN: usize = 3;
/// The longest DER certificate signing request.
pub const MAX_CSR_LEN: usize = 1024;
/// The longest attestation object.
pub const MAX_ATTESTATION_OBJECT_LEN: usize = 4096;
/// The longest STAR renewal URL.
pub const MAX_URL_LEN: usize = 512;
/// The most origin bindings a LIST reports.
pub const MAX_BINDINGS: usize = 16;
/// The most methods or headers in a CORS policy list.
pub const MAX_CORS_ITEMS: usize = 16;
/// The longest method or header name in a CORS policy.
pub const MAX_TOKEN_LEN: usize = 64;
/// The longest CORS max-age, in seconds.
pub const MAX_CORS_MAX_AGE: u64 = 86_400;
/// The longest error message.
pub const MAX_ERROR_MESSAGE_LEN: usize = 128;
/// A SHA-256 certificate fingerprint.
pub const FINGERPRINT_LEN: usize = 32;

/// How long a device keeps the key of an ATTEST waiting for its INSTALL (a fail-safe: a key
/// that is never installed is dropped).
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// How long a device waits for its user to approve an ATTEST before it answers USER_TIMEOUT.
pub const USER_PRESENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The operation byte of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Product, attestation chain and capabilities.
    GetInfo = 0x01,
    /// Make a key and CSR for an origin and sign the attestation transcript.
    Attest = 0x02,
    /// Install the issued chain and CORS policy for the pending key.
    Install = 0x03,
    /// List origin bindings.
    List = 0x04,
    /// Remove an origin binding.
    Remove = 0x05,
}

impl Operation {
    /// The operation for a byte.
    pub fn from_u8(byte: u8) -> Result<Self, DecodeError> {
        Ok(match byte {
            0x01 => Self::GetInfo,
            0x02 => Self::Attest,
            0x03 => Self::Install,
            0x04 => Self::List,
            0x05 => Self::Remove,
            _ => return Err(DecodeError::UnknownOperation(byte)),
        })
    }
}

/// How the device confirms that its user wants an ATTEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceMethod {
    /// No confirmation (demo and test devices only).
    None = 0,
    /// A physical button on the device.
    Button = 1,
    /// A PIN sent in the ATTEST request.
    Pin = 2,
}

/// GET_INFO response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoResponse {
    /// 1: protocol revision.
    pub revision: u64,
    /// 2: product name, free text.
    pub product: String,
    /// 3: the device label the device suggests.
    pub device_label: DeviceLabel,
    /// 4: attestation certificate chain, DER, device certificate first.
    pub attestation_chain: Vec<Vec<u8>>,
    /// 5: how the device confirms an ATTEST.
    pub presence: PresenceMethod,
    /// 6: origin bindings in use.
    pub bindings: u64,
    /// 7: origin bindings the device can hold.
    pub max_bindings: u64,
}

/// ATTEST request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestRequest {
    /// 1: the web origin the certificate will be bound to.
    pub origin: Origin,
    /// 2: the user handle, opaque, 1 to 64 bytes.
    pub user_handle: Vec<u8>,
    /// 3: the ACME key authorization of the `device-attest-01` challenge.
    pub key_authorization: String,
    /// 4: the device label for the name.
    pub device_label: DeviceLabel,
    /// 5: the PIN, when the device asks for one.
    pub pin: Option<String>,
}

/// ATTEST response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestResponse {
    /// 1: PKCS#10 CSR, DER.
    pub csr: Vec<u8>,
    /// 2: attestation object, CBOR (see [`crate::attestation`]).
    pub attestation_object: Vec<u8>,
}

/// The CORS policy for an origin binding. The allowed origin is the binding's own; there is no
/// wildcard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsPolicy {
    /// 1: methods allowed in preflight answers, e.g. `GET`.
    pub methods: Vec<String>,
    /// 2: request headers allowed, lower case.
    pub allow_headers: Vec<String>,
    /// 3: response headers exposed, lower case.
    pub expose_headers: Vec<String>,
    /// 4: whether credentialed requests are allowed.
    pub allow_credentials: bool,
    /// 5: how long a preflight answer may be cached, in seconds.
    pub max_age: u64,
}

/// INSTALL request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallRequest {
    /// 1: the issued chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// 2: the CORS policy.
    pub cors: CorsPolicy,
    /// 3: the STAR `star-certificate` URL, for auto-renewed certificates.
    pub star_url: Option<String>,
}

/// INSTALL response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallResponse {
    /// 1: the name the device now serves.
    pub name: LocalName,
    /// 2: the HTTPS port.
    pub https_port: u16,
    /// 3: SHA-256 of the installed leaf certificate.
    pub fingerprint: [u8; FINGERPRINT_LEN],
}

/// One origin binding, as LIST reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingSummary {
    /// 1: origin.
    pub origin: Origin,
    /// 2: name.
    pub name: LocalName,
    /// 3: SHA-256 of the leaf certificate.
    pub fingerprint: [u8; FINGERPRINT_LEN],
    /// 4: the leaf's notAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// 5: whether the certificate is renewed through STAR.
    pub star: bool,
}

/// REMOVE request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveRequest {
    /// 1: the origin whose binding to remove.
    pub origin: Origin,
}

/// REMOVE response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveResponse {
    /// 1: the name that is no longer served.
    pub name: LocalName,
}

/// A request, UA to device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// GET_INFO.
    GetInfo,
    /// ATTEST.
    Attest(AttestRequest),
    /// INSTALL.
    Install(InstallRequest),
    /// LIST.
    List,
    /// REMOVE.
    Remove(RemoveRequest),
}

/// A response, device to UA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// GET_INFO succeeded.
    Info(InfoResponse),
    /// ATTEST succeeded.
    Attest(AttestResponse),
    /// INSTALL succeeded.
    Install(InstallResponse),
    /// LIST succeeded.
    List(Vec<BindingSummary>),
    /// REMOVE succeeded.
    Remove(RemoveResponse),
    /// The request failed: an error code and, optionally, a short message for people.
    Error(ErrorCode, Option<String>),
}

impl Request {
    /// The operation.
    pub fn operation(&self) -> Operation {
        match self {
            Self::GetInfo => Operation::GetInfo,
            Self::Attest(_) => Operation::Attest,
            Self::Install(_) => Operation::Install,
            Self::List => Operation::List,
            Self::Remove(_) => Operation::Remove,
        }
    }

    /// The MSG payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.operation() as u8];
        match self {
            Self::GetInfo | Self::List => {}
            Self::Attest(r) => out.extend(cbor::encode(|e| r.encode_map(e))),
            Self::Install(r) => out.extend(cbor::encode(|e| r.encode_map(e))),
            Self::Remove(r) => out.extend(cbor::encode(|e| r.encode_map(e))),
        }
        out
    }

    /// Strict decoding of a MSG payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&op, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let no_body = |request: Request| {
            if body.is_empty() {
                Ok(request)
            } else {
                Err(DecodeError::TrailingBytes("Request"))
            }
        };
        match Operation::from_u8(op)? {
            Operation::GetInfo => no_body(Self::GetInfo),
            Operation::List => no_body(Self::List),
            Operation::Attest => decode_map::<AttestRequest>(body).map(Self::Attest),
            Operation::Install => decode_map::<InstallRequest>(body).map(Self::Install),
            Operation::Remove => decode_map::<RemoveRequest>(body).map(Self::Remove),
        }
    }
}

impl Response {
    /// The MSG payload.
    pub fn encode(&self) -> Vec<u8> {
        let map = match self {
            Self::Info(r) => cbor::encode(|e| r.encode_map(e)),
            Self::Attest(r) => cbor::encode(|e| r.encode_map(e)),
            Self::Install(r) => cbor::encode(|e| r.encode_map(e)),
            Self::List(bindings) => cbor::encode(|e| encode_list(e, bindings)),
            Self::Remove(r) => cbor::encode(|e| r.encode_map(e)),
            Self::Error(code, message) => {
                let mut out = vec![code.to_u8()];
                if let Some(message) = message {
                    out.extend(cbor::encode(|e| {
                        e.map(1)?.u8(1)?.str(message)?;
                        Ok(())
                    }));
                }
                return out;
            }
        };
        let mut out = vec![0];
        out.extend(map);
        out
    }

    /// Strict decoding of the MSG payload that answers a request for `operation`.
    pub fn decode(operation: Operation, bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&status, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if status != 0 {
            let code = ErrorCode::from_u8(status).ok_or(DecodeError::UnknownStatus(status))?;
            if body.is_empty() {
                return Ok(Self::Error(code, None));
            }
            let message =
                cbor::decode_canonical(body, "ErrorResponse", decode_error_message, |m| {
                    cbor::encode(|e| {
                        e.map(1)?.u8(1)?.str(m)?;
                        Ok(())
                    })
                })?;
            return Ok(Self::Error(code, Some(message)));
        }
        match operation {
            Operation::GetInfo => decode_map(body).map(Self::Info),
            Operation::Attest => decode_map(body).map(Self::Attest),
            Operation::Install => decode_map(body).map(Self::Install),
            Operation::List => cbor::decode_canonical(body, "ListResponse", decode_list, |b| {
                cbor::encode(|e| encode_list(e, b))
            })
            .map(Self::List),
            Operation::Remove => decode_map(body).map(Self::Remove),
        }
    }
}

fn decode_error_message(d: &mut Decoder<'_>) -> Result<String, DecodeError> {
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

fn encode_list(e: &mut Enc, bindings: &[BindingSummary]) -> EncResult {
    e.map(1)?.u8(1)?.array(bindings.len() as u64)?;
    bindings.iter().try_for_each(|b| b.encode_map(e))
}

fn decode_list(d: &mut Decoder<'_>) -> Result<Vec<BindingSummary>, DecodeError> {
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
trait CborMap: Sized {
    const CTX: &'static str;
    fn encode_map(&self, e: &mut Enc) -> EncResult;
    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;
}

fn decode_map<T: CborMap>(bytes: &[u8]) -> Result<T, DecodeError> {
    cbor::decode_canonical(bytes, T::CTX, T::decode_map, |v| {
        cbor::encode(|e| v.encode_map(e))
    })
}

fn origin(d: &mut Decoder<'_>, ctx: &'static str) -> Result<Origin, DecodeError> {
    Origin::parse(cbor::text(d, ctx, 1, MAX_ORIGIN_LEN)?)
        .map_err(|_| DecodeError::InvalidValue(ctx))
}

fn local_name(d: &mut Decoder<'_>, ctx: &'static str) -> Result<LocalName, DecodeError> {
    LocalName::parse(cbor::text(d, ctx, 1, 128)?).map_err(|_| DecodeError::InvalidValue(ctx))
}

fn device_label(d: &mut Decoder<'_>, ctx: &'static str) -> Result<DeviceLabel, DecodeError> {
    DeviceLabel::parse(cbor::text(d, ctx, 1, 64)?).map_err(|_| DecodeError::InvalidValue(ctx))
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

fn is_key_authorization(s: &str) -> bool {
    let base64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    s.split_once('.')
        .is_some_and(|(token, thumbprint)| base64url(token) && base64url(thumbprint))
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
        e.map(7)?;
        e.u8(1)?.u64(self.revision)?;
        e.u8(2)?.str(&self.product)?;
        e.u8(3)?.str(self.device_label.as_str())?;
        e.u8(4)?;
        encode_bytes_list(e, &self.attestation_chain)?;
        e.u8(5)?.u8(self.presence as u8)?;
        e.u8(6)?.u64(self.bindings)?;
        e.u8(7)?.u64(self.max_bindings)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = InfoResponse::CTX;
        let (mut revision, mut product, mut label, mut chain) = (None, None, None, None);
        let (mut presence, mut bindings, mut max_bindings) = (None, None, None);
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
        })
    }
}

impl CborMap for AttestRequest {
    const CTX: &'static str = "AttestRequest";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(4 + u64::from(self.pin.is_some()))?;
        e.u8(1)?.str(self.origin.as_str())?;
        e.u8(2)?.bytes(&self.user_handle)?;
        e.u8(3)?.str(&self.key_authorization)?;
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
                    const F: &str = "AttestRequest.key_authorization";
                    let ka = cbor::text(d, F, 1, MAX_KEY_AUTHORIZATION_LEN)?;
                    if !is_key_authorization(ka) {
                        return Err(DecodeError::InvalidValue(F));
                    }
                    key_auth = Some(ka.to_owned());
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
            key_authorization: cbor::required(key_auth, C, 3)?,
            device_label: cbor::required(label, C, 4)?,
            pin,
        })
    }
}

impl CborMap for AttestResponse {
    const CTX: &'static str = "AttestResponse";

    fn encode_map(&self, e: &mut Enc) -> EncResult {
        e.map(2)?;
        e.u8(1)?.bytes(&self.csr)?;
        e.u8(2)?.bytes(&self.attestation_object)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = AttestResponse::CTX;
        let (mut csr, mut att) = (None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => csr = Some(cbor::bytes(d, "AttestResponse.csr", 1, MAX_CSR_LEN)?.to_vec()),
                2 => {
                    let obj = cbor::bytes(
                        d,
                        "AttestResponse.attestation_object",
                        1,
                        MAX_ATTESTATION_OBJECT_LEN,
                    )?;
                    att = Some(obj.to_vec());
                }
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            csr: cbor::required(csr, C, 1)?,
            attestation_object: cbor::required(att, C, 2)?,
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
        e.map(3)?;
        e.u8(1)?.str(self.name.as_str())?;
        e.u8(2)?.u16(self.https_port)?;
        e.u8(3)?.bytes(&self.fingerprint)?;
        Ok(())
    }

    fn decode_map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        const C: &str = InstallResponse::CTX;
        let (mut name, mut port, mut fingerprint) = (None, None, None);
        let mut map = IntMap::begin(d, C)?;
        while let Some(key) = map.next_key(d)? {
            match key {
                1 => name = Some(local_name(d, "InstallResponse.name")?),
                2 => {
                    const F: &str = "InstallResponse.https_port";
                    let p = u16::try_from(cbor::uint(d, F)?).ok().filter(|&p| p != 0);
                    port = Some(p.ok_or(DecodeError::InvalidValue(F))?);
                }
                3 => fingerprint = Some(cbor::byte_array(d, "InstallResponse.fingerprint")?),
                _ => return map.unknown(key),
            }
        }
        Ok(Self {
            name: cbor::required(name, C, 1)?,
            https_port: cbor::required(port, C, 2)?,
            fingerprint: cbor::required(fingerprint, C, 3)?,
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
