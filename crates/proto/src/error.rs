//! Errors of the protocol crate: one enum per layer, gathered in [`Error`].
//!
//! Every error maps to a wire [`ErrorCode`], so a device can answer any refusal with the
//! code the spec names, and carries only static context (no attacker-chosen text).

use core::fmt;

/// The numbered error codes of the wire protocol (SPEC.md, "Error codes").
///
/// Carried in the status byte of a response and in ERROR frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or operation code is unknown.
    InvalidCommand,
    /// The message is not valid CBOR for its operation, or breaks a field rule.
    InvalidParameter,
    /// A length field exceeds a limit, or the data does not match it.
    InvalidLength,
    /// A continuation fragment arrived out of order or without an initial fragment.
    InvalidSequence,
    /// A message was not completed in time.
    Timeout,
    /// The device is busy with another request or another central.
    Busy,
    /// The origin is not a valid ASCII-serialized secure origin.
    InvalidOrigin,
    /// The requested device label is not valid.
    InvalidLabel,
    /// The user, or the presence policy, refused the request.
    UserDenied,
    /// The device needs a PIN and none was given.
    PinRequired,
    /// The PIN was wrong.
    PinInvalid,
    /// The user did not answer in time.
    UserTimeout,
    /// INSTALL without a pending ATTEST, or the pending key expired.
    NoPending,
    /// The certificate chain does not match the pending key or names.
    ChainMismatch,
    /// The certificate chain does not lead to an issuer the device trusts.
    UntrustedIssuer,
    /// A certificate cannot be parsed or is not valid now.
    CertificateInvalid,
    /// REMOVE for an origin the device has no binding for.
    NotFound,
    /// The device has no room for another binding.
    StorageFull,
    /// The request was cancelled by the UA.
    Cancelled,
    /// The device failed internally (storage, key generation).
    Other,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 20] = [
        Self::InvalidCommand,
        Self::InvalidParameter,
        Self::InvalidLength,
        Self::InvalidSequence,
        Self::Timeout,
        Self::Busy,
        Self::InvalidOrigin,
        Self::InvalidLabel,
        Self::UserDenied,
        Self::PinRequired,
        Self::PinInvalid,
        Self::UserTimeout,
        Self::NoPending,
        Self::ChainMismatch,
        Self::UntrustedIssuer,
        Self::CertificateInvalid,
        Self::NotFound,
        Self::StorageFull,
        Self::Cancelled,
        Self::Other,
    ];

    /// The byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::InvalidCommand => 0x01,
            Self::InvalidParameter => 0x02,
            Self::InvalidLength => 0x03,
            Self::InvalidSequence => 0x04,
            Self::Timeout => 0x05,
            Self::Busy => 0x06,
            Self::InvalidOrigin => 0x10,
            Self::InvalidLabel => 0x11,
            Self::UserDenied => 0x12,
            Self::PinRequired => 0x13,
            Self::PinInvalid => 0x14,
            Self::UserTimeout => 0x15,
            Self::NoPending => 0x16,
            Self::ChainMismatch => 0x17,
            Self::UntrustedIssuer => 0x18,
            Self::CertificateInvalid => 0x19,
            Self::NotFound => 0x1a,
            Self::StorageFull => 0x1b,
            Self::Cancelled => 0x1c,
            Self::Other => 0x7f,
        }
    }

    /// The code for a wire byte; `None` for 0x00 (success) and unassigned values.
    pub fn from_u8(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.to_u8() == byte)
    }

    /// The name the spec uses, e.g. `INVALID_SEQUENCE`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::InvalidCommand => "INVALID_COMMAND",
            Self::InvalidParameter => "INVALID_PARAMETER",
            Self::InvalidLength => "INVALID_LENGTH",
            Self::InvalidSequence => "INVALID_SEQUENCE",
            Self::Timeout => "TIMEOUT",
            Self::Busy => "BUSY",
            Self::InvalidOrigin => "INVALID_ORIGIN",
            Self::InvalidLabel => "INVALID_LABEL",
            Self::UserDenied => "USER_DENIED",
            Self::PinRequired => "PIN_REQUIRED",
            Self::PinInvalid => "PIN_INVALID",
            Self::UserTimeout => "USER_TIMEOUT",
            Self::NoPending => "NO_PENDING",
            Self::ChainMismatch => "CHAIN_MISMATCH",
            Self::UntrustedIssuer => "UNTRUSTED_ISSUER",
            Self::CertificateInvalid => "CERTIFICATE_INVALID",
            Self::NotFound => "NOT_FOUND",
            Self::StorageFull => "STORAGE_FULL",
            Self::Cancelled => "CANCELLED",
            Self::Other => "OTHER",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.to_u8())
    }
}

/// A fragment could not be accepted by the [`Reassembler`](crate::frame::Reassembler).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A zero-length write.
    EmptyFragment,
    /// A fragment longer than the largest characteristic value.
    FragmentTooLong,
    /// An initial fragment with an unknown command byte.
    UnknownCommand(u8),
    /// An initial fragment shorter than its 3-byte header.
    TruncatedHeader,
    /// The declared message length exceeds the limit.
    MessageTooLong {
        /// The declared length.
        declared: usize,
    },
    /// A fragment carried more data than the declared length.
    Overrun,
    /// A continuation fragment arrived too far ahead (by [`REORDER_WINDOW`] or more) of a
    /// frame whose initial fragment has not arrived.
    ///
    /// [`REORDER_WINDOW`]: crate::frame::REORDER_WINDOW
    UnexpectedContinuation,
    /// A continuation fragment's sequence number is too far ahead (by
    /// [`REORDER_WINDOW`](crate::frame::REORDER_WINDOW) or more) of the first one missing.
    SequenceGap {
        /// The sequence number the receiver expected.
        expected: u8,
        /// The sequence number it got.
        got: u8,
    },
    /// A continuation fragment arrived again for a position already received; the sequence
    /// number it carried.
    DuplicateContinuation(u8),
    /// An initial fragment (other than CANCEL) arrived in the middle of a message.
    Interrupted,
    /// The next fragment did not arrive within the fragment timeout.
    Timeout,
}

impl FrameError {
    /// The wire code a receiver reports in an ERROR frame.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::UnknownCommand(_) => ErrorCode::InvalidCommand,
            Self::EmptyFragment
            | Self::FragmentTooLong
            | Self::TruncatedHeader
            | Self::MessageTooLong { .. }
            | Self::Overrun => ErrorCode::InvalidLength,
            Self::UnexpectedContinuation
            | Self::SequenceGap { .. }
            | Self::DuplicateContinuation(_)
            | Self::Interrupted => ErrorCode::InvalidSequence,
            Self::Timeout => ErrorCode::Timeout,
        }
    }

    /// A stable name for test vectors and logs.
    pub fn kind(self) -> &'static str {
        match self {
            Self::EmptyFragment => "empty_fragment",
            Self::FragmentTooLong => "fragment_too_long",
            Self::UnknownCommand(_) => "unknown_command",
            Self::TruncatedHeader => "truncated_header",
            Self::MessageTooLong { .. } => "message_too_long",
            Self::Overrun => "overrun",
            Self::UnexpectedContinuation => "unexpected_continuation",
            Self::SequenceGap { .. } => "sequence_gap",
            Self::DuplicateContinuation(_) => "duplicate_continuation",
            Self::Interrupted => "interrupted",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyFragment => f.write_str("empty fragment"),
            Self::FragmentTooLong => f.write_str("fragment longer than 512 bytes"),
            Self::UnknownCommand(cmd) => write!(f, "unknown frame command 0x{cmd:02x}"),
            Self::TruncatedHeader => f.write_str("initial fragment shorter than its header"),
            Self::MessageTooLong { declared } => write!(
                f,
                "declared message length {declared} exceeds {}",
                crate::frame::MAX_MESSAGE_LEN
            ),
            Self::Overrun => f.write_str("fragment carries more data than the declared length"),
            Self::UnexpectedContinuation => {
                f.write_str("continuation fragment too far ahead of a message that has not started")
            }
            Self::SequenceGap { expected, got } => {
                let ahead = crate::frame::REORDER_WINDOW - 1;
                write!(
                    f,
                    "sequence gap: expected {expected} or up to {ahead} after it, got {got}"
                )
            }
            Self::DuplicateContinuation(seq) => {
                write!(f, "continuation fragment {seq} received twice")
            }
            Self::Interrupted => f.write_str("initial fragment in the middle of a message"),
            Self::Timeout => f.write_str("message not completed in time"),
        }
    }
}

impl core::error::Error for FrameError {}

/// A message, attestation object or extension could not be decoded.
///
/// `context` names the structure or field, e.g. `"AttestRequest.origin"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early or is not well-formed CBOR/DER.
    Malformed(&'static str),
    /// A value has the wrong CBOR type.
    WrongType(&'static str),
    /// A required key is missing.
    MissingKey(&'static str, u64),
    /// A key the spec does not define for this structure.
    UnknownKey(&'static str, u64),
    /// A text key the spec does not define for this structure.
    UnknownTextKey(&'static str),
    /// A required text key is missing.
    MissingTextKey(&'static str),
    /// Keys are repeated or not in ascending order.
    KeyOrder(&'static str),
    /// A string, byte string or array is longer than its limit (or empty when it must not be).
    BadLength(&'static str),
    /// A value is of the right type but not allowed (e.g. a zero port).
    InvalidValue(&'static str),
    /// An Origin field that is not a valid origin (SPEC §8.1).
    InvalidOrigin(&'static str),
    /// A Label field that is not a valid device label (SPEC §8.2).
    InvalidLabel(&'static str),
    /// Bytes follow the end of the message.
    TrailingBytes(&'static str),
    /// Valid CBOR, but not in the deterministic encoding the spec requires.
    NonCanonical(&'static str),
    /// A message with no bytes at all.
    Empty,
    /// An operation code the spec does not define.
    UnknownOperation(u8),
    /// A response status byte the spec does not define.
    UnknownStatus(u8),
}

impl DecodeError {
    /// A stable name for test vectors and logs.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongType(_) => "wrong_type",
            Self::MissingKey(..) | Self::MissingTextKey(_) => "missing_key",
            Self::UnknownKey(..) | Self::UnknownTextKey(_) => "unknown_key",
            Self::KeyOrder(_) => "key_order",
            Self::BadLength(_) => "bad_length",
            Self::InvalidValue(_) => "invalid_value",
            Self::InvalidOrigin(_) => "invalid_origin",
            Self::InvalidLabel(_) => "invalid_label",
            Self::TrailingBytes(_) => "trailing_bytes",
            Self::NonCanonical(_) => "non_canonical",
            Self::Empty => "empty",
            Self::UnknownOperation(_) => "unknown_operation",
            Self::UnknownStatus(_) => "unknown_status",
        }
    }

    /// The wire code a device answers with.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::UnknownOperation(_) => ErrorCode::InvalidCommand,
            Self::BadLength(_) => ErrorCode::InvalidLength,
            Self::InvalidOrigin(_) => ErrorCode::InvalidOrigin,
            Self::InvalidLabel(_) => ErrorCode::InvalidLabel,
            _ => ErrorCode::InvalidParameter,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(c) => write!(f, "{c}: malformed or truncated encoding"),
            Self::WrongType(c) => write!(f, "{c}: wrong type"),
            Self::MissingKey(c, k) => write!(f, "{c}: missing required key {k}"),
            Self::UnknownKey(c, k) => write!(f, "{c}: unknown key {k}"),
            Self::UnknownTextKey(c) => write!(f, "{c}: unknown key"),
            Self::MissingTextKey(c) => write!(f, "{c}: missing required key"),
            Self::KeyOrder(c) => write!(f, "{c}: keys repeated or out of order"),
            Self::BadLength(c) => write!(f, "{c}: length outside its limits"),
            Self::InvalidValue(c) => write!(f, "{c}: value not allowed"),
            Self::InvalidOrigin(c) => write!(f, "{c}: not a valid origin"),
            Self::InvalidLabel(c) => write!(f, "{c}: not a valid device label"),
            Self::TrailingBytes(c) => write!(f, "{c}: trailing bytes after the value"),
            Self::NonCanonical(c) => write!(f, "{c}: not in deterministic encoding"),
            Self::Empty => f.write_str("empty message"),
            Self::UnknownOperation(op) => write!(f, "unknown operation 0x{op:02x}"),
            Self::UnknownStatus(s) => write!(f, "unknown status 0x{s:02x}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// An origin is not an ASCII-serialized secure web origin as the spec allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginError {
    /// Longer than [`MAX_ORIGIN_LEN`](crate::origin::MAX_ORIGIN_LEN).
    TooLong,
    /// Not `https://`.
    NotHttps,
    /// Contains a path, query, fragment, user info or trailing slash.
    NotAnOrigin,
    /// Contains non-ASCII or upper-case characters (use the punycode, lower-case serialization).
    NotSerialized,
    /// The host is empty, has an empty or over-long label, or a label with bad characters.
    InvalidHost,
    /// The host is an IP address; only DNS names are allowed.
    IpAddress,
    /// The port is not a number in 1..=65535, or is the default 443 written out.
    InvalidPort,
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "origin too long",
            Self::NotHttps => "origin scheme must be https",
            Self::NotAnOrigin => "not an origin: path, query, fragment or user info present",
            Self::NotSerialized => {
                "origin must be the lower-case ASCII serialization (punycode for IDN hosts)"
            }
            Self::InvalidHost => "origin host is not a valid DNS name",
            Self::IpAddress => "origin host is an IP address",
            Self::InvalidPort => "origin port invalid (must be 1-65535 and omitted when 443)",
        })
    }
}

impl core::error::Error for OriginError {}

/// A device label or `.local` name breaks the naming rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The label is empty or longer than its limit.
    Length,
    /// A character outside `a-z`, `0-9` and `-`.
    Character,
    /// A hyphen at the start or end, or two hyphens in a row.
    Hyphen,
    /// The name does not end in `.local` or has more than one label before it.
    NotSingleLabelLocal,
    /// The name is not in the namespace of the given origin.
    OutsideOriginNamespace,
    /// The name's device tag is not the given device's.
    WrongDevice,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Length => "label empty or too long",
            Self::Character => "label has a character outside a-z, 0-9 and '-'",
            Self::Hyphen => "label starts or ends with '-' or has '--'",
            Self::NotSingleLabelLocal => "name must be one label followed by .local",
            Self::OutsideOriginNamespace => "name is outside the origin's namespace",
            Self::WrongDevice => "name belongs to another device",
        })
    }
}

impl core::error::Error for NameError {}

/// Any error of this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Framing.
    Frame(FrameError),
    /// Message, attestation object or extension decoding.
    Decode(DecodeError),
    /// Origin syntax.
    Origin(OriginError),
    /// Label or name rules.
    Name(NameError),
}

impl Error {
    /// The wire code for this error.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Frame(e) => e.code(),
            Self::Decode(e) => e.code(),
            Self::Origin(_) => ErrorCode::InvalidOrigin,
            Self::Name(_) => ErrorCode::InvalidLabel,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => e.fmt(f),
            Self::Decode(e) => e.fmt(f),
            Self::Origin(e) => e.fmt(f),
            Self::Name(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for Error {}

macro_rules! from_sub {
    ($($sub:ident => $variant:ident),*) => {$(
        impl From<$sub> for Error {
            fn from(e: $sub) -> Self {
                Self::$variant(e)
            }
        }
    )*};
}
from_sub!(FrameError => Frame, DecodeError => Decode, OriginError => Origin, NameError => Name);
